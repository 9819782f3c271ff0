import { type IncomingMessage, type ServerResponse } from 'node:http';
import { ANSWER_MS, FIRST_TOKEN_MS, Json, MISBEHAVE_AT, MockHttpError, STORE_MAX_BYTES, STORE_MAX_ENTRIES, answerLater, isObject, newId, nowSeconds, optionalBoolean, optionalInteger, optionalNumber, optionalString, readObject, requireModel, sendError, sendJson, sendRateLimited } from './http';
import { answerWords, argumentSlices, argumentsFor, estimateTokens, gap } from './words';

/** `POST /v1/responses` (typed events, usage in the final event) and the stored responses: `GET`/`DELETE /v1/responses/{id}`, `…/input_items`. */

interface ResponsesRequest {
  model: string;
  /** The input as stored items (`input_items`): messages get an id and `input_text` parts. */
  items: Json[];
  inputTokens: number;
  instructions: string | null;
  maxOutputTokens: number | null;
  stream: boolean;
  tools: Json[];
  /** The function tool the mock calls, if any (the first, or the one `tool_choice` names; none with `none`). */
  tool: { name: string; parameters: unknown } | undefined;
  toolChoice: unknown;
  background: boolean;
  store: boolean;
  previousResponseId: string | null;
  temperature: number;
  topP: number;
  text: unknown;
  metadata: Json;
  parallelToolCalls: boolean;
  user: string | null;
}

const ROLES = new Set(['user', 'assistant', 'system', 'developer']);

function normalizeInputItem(item: unknown, i: number): Json {
  const at = `input[${i}]`;
  if (!isObject(item)) throw new MockHttpError(400, `Invalid type for '${at}': expected an object.`, at, 'invalid_type');
  const type = item.type ?? 'message';
  if (typeof type !== 'string') throw new MockHttpError(400, `Invalid type for '${at}.type': expected a string.`, `${at}.type`, 'invalid_type');
  const id = typeof item.id === 'string' && item.id !== '' ? item.id : undefined;
  if (type !== 'message') return { ...item, id: id ?? newId('item_', 12) };
  if (typeof item.role !== 'string' || !ROLES.has(item.role)) {
    throw new MockHttpError(400, `Invalid value for '${at}.role': expected one of 'user', 'assistant', 'system', 'developer'.`, `${at}.role`, 'invalid_value');
  }
  const textType = item.role === 'assistant' ? 'output_text' : 'input_text';
  let content: unknown[];
  if (typeof item.content === 'string') content = [{ type: textType, text: item.content }];
  else if (Array.isArray(item.content)) {
    content = item.content.map((part: unknown, j) => {
      const partAt = `${at}.content[${j}]`;
      if (!isObject(part) || typeof part.type !== 'string') throw new MockHttpError(400, `Invalid type for '${partAt}': expected an object with a 'type'.`, partAt, 'invalid_type');
      if ((part.type === 'input_text' || part.type === 'output_text') && typeof part.text !== 'string') {
        throw new MockHttpError(400, `Invalid type for '${partAt}.text': expected a string.`, `${partAt}.text`, 'invalid_type');
      }
      return part;
    });
  } else throw new MockHttpError(400, `Invalid type for '${at}.content': expected a string or an array of content parts.`, `${at}.content`, 'invalid_type');
  return { id: id ?? newId('msg_', 24), type: 'message', role: item.role, content, status: 'completed' };
}

function parseResponsesRequest(body: Json): ResponsesRequest {
  const model = requireModel(body);
  if (body.input === undefined || body.input === null) throw new MockHttpError(400, "Missing required parameter: 'input'.", 'input', 'missing_required_parameter');
  let items: Json[];
  if (typeof body.input === 'string') items = [normalizeInputItem({ role: 'user', content: body.input }, 0)];
  else if (Array.isArray(body.input)) {
    if (body.input.length === 0) throw new MockHttpError(400, "Invalid 'input': expected at least one input item.", 'input', 'empty_array');
    items = body.input.map(normalizeInputItem);
  } else throw new MockHttpError(400, "Invalid type for 'input': expected a string or an array of input items.", 'input', 'invalid_type');
  const instructions = optionalString(body, 'instructions') ?? null;
  const maxOutputTokens = optionalInteger(body, 'max_output_tokens', 1, 1_000_000) ?? null;
  const stream = optionalBoolean(body, 'stream') ?? false;
  const background = optionalBoolean(body, 'background') ?? false;
  const store = optionalBoolean(body, 'store') ?? true;
  if (background && !store) throw new MockHttpError(400, "Background mode requires 'store' to be true.", 'background', 'invalid_value');
  const previousResponseId = optionalString(body, 'previous_response_id') ?? null;
  const parallelToolCalls = optionalBoolean(body, 'parallel_tool_calls') ?? true;
  const temperature = optionalNumber(body, 'temperature') ?? 1;
  const topP = optionalNumber(body, 'top_p') ?? 1;
  const user = optionalString(body, 'user') ?? null;
  if (body.metadata !== undefined && body.metadata !== null && !isObject(body.metadata)) throw new MockHttpError(400, "Invalid type for 'metadata': expected an object.", 'metadata', 'invalid_type');
  if (body.text !== undefined && body.text !== null && !isObject(body.text)) throw new MockHttpError(400, "Invalid type for 'text': expected an object.", 'text', 'invalid_type');

  if (body.tools !== undefined && body.tools !== null && !Array.isArray(body.tools)) throw new MockHttpError(400, "Invalid type for 'tools': expected an array.", 'tools', 'invalid_type');
  const tools = ((body.tools ?? []) as unknown[]).map((tool, i): Json => {
    if (!isObject(tool) || typeof tool.type !== 'string') throw new MockHttpError(400, `Invalid type for 'tools[${i}]': expected an object with a 'type'.`, `tools[${i}]`, 'invalid_type');
    if (tool.type !== 'function') return tool;
    if (typeof tool.name !== 'string' || tool.name === '') throw new MockHttpError(400, `Missing required parameter: 'tools[${i}].name'.`, `tools[${i}].name`, 'missing_required_parameter');
    if (tool.parameters !== undefined && tool.parameters !== null && !isObject(tool.parameters)) {
      throw new MockHttpError(400, `Invalid type for 'tools[${i}].parameters': expected an object.`, `tools[${i}].parameters`, 'invalid_type');
    }
    return { type: 'function', name: tool.name, description: tool.description ?? null, parameters: tool.parameters ?? null, strict: tool.strict ?? true };
  });
  const functions = tools.filter((tool) => tool.type === 'function');
  const toolChoice = body.tool_choice ?? 'auto';
  let chosen: Json | undefined = functions[0];
  if (toolChoice === 'none') chosen = undefined;
  else if (isObject(toolChoice) && toolChoice.type === 'function') {
    chosen = functions.find((tool) => tool.name === toolChoice.name);
    if (!chosen) throw new MockHttpError(400, "Tool choice 'function' not found in 'tools' parameter.", 'tool_choice', 'invalid_value');
  }
  return {
    model,
    items,
    inputTokens: estimateTokens([instructions, body.input]),
    instructions,
    maxOutputTokens,
    stream,
    tools,
    tool: chosen ? { name: chosen.name as string, parameters: chosen.parameters } : undefined,
    toolChoice,
    background,
    store,
    previousResponseId,
    temperature,
    topP,
    text: body.text ?? { format: { type: 'text' } },
    metadata: isObject(body.metadata) ? body.metadata : {},
    parallelToolCalls,
    user,
  };
}

/** The text of the last user message: its string, or its `input_text` parts joined. */
function lastUserText(items: Json[]): string {
  for (let i = items.length - 1; i >= 0; i--) {
    const item = items[i]!;
    if (item.type !== 'message' || item.role !== 'user' || !Array.isArray(item.content)) continue;
    return (item.content as unknown[])
      .filter((part): part is Json => isObject(part) && part.type === 'input_text' && typeof part.text === 'string')
      .map((part) => part.text as string)
      .join(' ');
  }
  return '';
}

/** The finished Response object (status `completed`, or `incomplete` when `max_output_tokens` cut it). */
function generateResponse(request: ResponsesRequest): Json {
  const cap = request.maxOutputTokens ?? Infinity;
  let item: Json;
  let outputTokens: number;
  let incomplete: boolean;
  if (request.tool) {
    const slices = argumentSlices(argumentsFor(request.tool.parameters));
    const kept = slices.slice(0, cap);
    incomplete = kept.length < slices.length;
    outputTokens = kept.length;
    item = { id: newId('fc_', 24), type: 'function_call', status: incomplete ? 'incomplete' : 'completed', arguments: kept.join(''), call_id: newId('call_', 12), name: request.tool.name };
  } else {
    const words = answerWords(lastUserText(request.items));
    const kept = words.slice(0, cap);
    incomplete = kept.length < words.length;
    outputTokens = kept.length;
    item = {
      id: newId('msg_', 24),
      type: 'message',
      status: incomplete ? 'incomplete' : 'completed',
      role: 'assistant',
      content: [{ type: 'output_text', text: kept.join(' '), annotations: [], logprobs: [] }],
    };
  }
  const createdAt = nowSeconds();
  const usage =
    request.model === 'mock-no-usage'
      ? null
      : {
          input_tokens: request.inputTokens,
          input_tokens_details: { cached_tokens: 0 },
          output_tokens: outputTokens,
          output_tokens_details: { reasoning_tokens: 0 },
          total_tokens: request.inputTokens + outputTokens,
        };
  return {
    id: newId('resp_', 24),
    object: 'response',
    created_at: createdAt,
    status: incomplete ? 'incomplete' : 'completed',
    background: request.background,
    completed_at: incomplete ? null : createdAt,
    error: null,
    incomplete_details: incomplete ? { reason: 'max_output_tokens' } : null,
    instructions: request.instructions,
    max_output_tokens: request.maxOutputTokens,
    max_tool_calls: null,
    model: request.model,
    output: [item],
    parallel_tool_calls: request.parallelToolCalls,
    previous_response_id: request.previousResponseId,
    reasoning: { effort: null, summary: null },
    service_tier: 'default',
    store: request.store,
    temperature: request.temperature,
    text: request.text,
    tool_choice: request.toolChoice,
    tools: request.tools,
    top_logprobs: 0,
    top_p: request.topP,
    truncation: 'disabled',
    usage,
    user: request.user,
    metadata: request.metadata,
  };
}

/** The response as `response.created` shows it: in progress, no output, no usage. */
function startedSnapshot(response: Json, status = 'in_progress'): Json {
  return { ...response, status, completed_at: null, error: null, incomplete_details: null, output: [], usage: null };
}

function isTerminal(status: unknown): boolean {
  return status === 'completed' || status === 'incomplete' || status === 'failed' || status === 'cancelled';
}

/** The deltas an output item streams as: a message's words (` word` after the first), a call's argument slices. */
function itemDeltas(item: Json): string[] {
  if (item.type === 'function_call') return argumentSlices(String(item.arguments ?? ''));
  const part = Array.isArray(item.content) ? (item.content[0] as Json | undefined) : undefined;
  return String(part?.text ?? '')
    .split(' ')
    .map((word, i) => (i === 0 ? word : ` ${word}`));
}

/** The response after `deltasSent` deltas, failed (mock-fail; a stream that broke off). */
function failedResponse(response: Json, deltasSent: number, message: string): Json {
  const output = (response.output as Json[]).map((item): Json => {
    const partial = itemDeltas(item).slice(0, deltasSent).join('');
    if (item.type === 'function_call') return { ...item, status: 'incomplete', arguments: partial };
    const part = (item.content as Json[])[0];
    return { ...item, status: 'incomplete', content: [{ ...part, text: partial }] };
  });
  const usage = response.usage as Json | null;
  return {
    ...response,
    status: 'failed',
    completed_at: null,
    error: { code: 'server_error', message },
    incomplete_details: null,
    output,
    usage: usage ? { ...usage, output_tokens: deltasSent, total_tokens: (usage.input_tokens as number) + deltasSent } : null,
  };
}

/**
 * The events that stream `response` (no sequence numbers yet): created, in_progress, per output item
 * added → (content_part.added →) deltas → done events → output_item.done, and the terminal event
 * (response.completed / .incomplete / .failed). A response that is not finished yet streams only the first two.
 */
function responseEvents(response: Json): Json[] {
  const started = startedSnapshot(response);
  const events: Json[] = [
    { type: 'response.created', response: started },
    { type: 'response.in_progress', response: started },
  ];
  if (!isTerminal(response.status)) return events;
  (response.output as Json[]).forEach((item, output_index) => {
    const item_id = item.id;
    if (item.type === 'message') {
      const part = (item.content as Json[])[0]!;
      events.push({ type: 'response.output_item.added', output_index, item: { id: item_id, type: 'message', status: 'in_progress', role: 'assistant', content: [] } });
      events.push({ type: 'response.content_part.added', item_id, output_index, content_index: 0, part: { type: 'output_text', text: '', annotations: [], logprobs: [] } });
      for (const delta of itemDeltas(item)) events.push({ type: 'response.output_text.delta', item_id, output_index, content_index: 0, delta, logprobs: [] });
      events.push({ type: 'response.output_text.done', item_id, output_index, content_index: 0, text: part.text, logprobs: [] });
      events.push({ type: 'response.content_part.done', item_id, output_index, content_index: 0, part });
    } else if (item.type === 'function_call') {
      events.push({ type: 'response.output_item.added', output_index, item: { ...item, status: 'in_progress', arguments: '' } });
      for (const delta of itemDeltas(item)) events.push({ type: 'response.function_call_arguments.delta', item_id, output_index, delta });
      events.push({ type: 'response.function_call_arguments.done', item_id, output_index, name: item.name, arguments: item.arguments });
    } else {
      events.push({ type: 'response.output_item.added', output_index, item });
    }
    events.push({ type: 'response.output_item.done', output_index, item });
  });
  const terminal = response.status === 'incomplete' ? 'response.incomplete' : response.status === 'failed' ? 'response.failed' : response.status === 'cancelled' ? 'response.cancelled' : 'response.completed';
  events.push({ type: terminal, response });
  return events;
}

function isDeltaEvent(event: Json): boolean {
  return event.type === 'response.output_text.delta' || event.type === 'response.function_call_arguments.delta';
}

/**
 * Streams Responses API events (`event: <type>` + `data: {"type","sequence_number",…}`), paced like the chat
 * route: created and in_progress at once, the first delta after 150 ms, 20–60 ms between deltas. Misbehaves
 * by model name after a few deltas. `onEnd` gets the response as stored at the end (final, or failed).
 */
function streamResponseEvents(
  req: IncomingMessage,
  res: ServerResponse,
  response: Json,
  options: { model: string; paced: boolean; startingAfter?: number; onEnd?: (stored: Json) => void },
): void {
  const { model, paced } = options;
  const events = responseEvents(response);
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  let sequence = 0;
  let next = 0;
  let deltas = 0;
  let ended = false;
  let timer: NodeJS.Timeout | undefined;
  const send = (event: Json): void => {
    const sequence_number = sequence++;
    if (options.startingAfter !== undefined && sequence_number <= options.startingAfter) return;
    res.write(`event: ${String(event.type)}\ndata: ${JSON.stringify({ type: event.type, sequence_number, ...event })}\n\n`);
  };
  const end = (stored: Json): void => {
    ended = true;
    options.onEnd?.(stored);
  };
  const step = (): void => {
    while (next < events.length) {
      const event = events[next]!;
      if (isDeltaEvent(event)) {
        if (deltas === MISBEHAVE_AT && paced) {
          if (model === 'mock-error') {
            end(failedResponse(response, deltas, 'The mock provider dropped the connection (mock-error).'));
            res.destroy();
            return;
          }
          if (model === 'mock-stall') return; // silent; the client's idle time-out, or close(), ends it
          if (model === 'mock-fail') {
            const message = 'The mock provider failed mid-response (mock-fail).';
            const failed = failedResponse(response, deltas, message);
            const error = { type: 'server_error', code: 'server_error', message, param: null };
            send({ type: 'error', code: error.code, message, param: null, error });
            send({ type: 'response.failed', response: failed });
            end(failed);
            res.end();
            return;
          }
          if (model === 'mock-garbage') res.write('event: response.output_text.delta\ndata: {"type": "response.output_text.delta", "delta": "oops\n\n');
        }
        send(event);
        next++;
        if (paced) {
          timer = setTimeout(step, gap(deltas++, model === 'mock-slow'));
          return;
        }
        deltas++;
        continue;
      }
      send(event);
      next++;
      if (event.type === 'response.in_progress' && paced && next < events.length) {
        timer = setTimeout(step, FIRST_TOKEN_MS);
        return;
      }
    }
    end(response);
    res.end();
  };
  res.on('close', () => {
    clearTimeout(timer);
    if (!ended) end(failedResponse(response, deltas, 'The response stream was interrupted before it completed.'));
  });
  req.on('error', () => clearTimeout(timer));
  step();
}

/** Stored responses and their input items: the newest STORE_MAX_ENTRIES, within STORE_MAX_BYTES. */
export class ResponseStore {
  private readonly entries = new Map<string, { response: Json; items: Json[]; bytes: number }>();
  private bytes = 0;

  put(response: Json, items: Json[]): void {
    const id = String(response.id);
    this.delete(id);
    const bytes = JSON.stringify(response).length + JSON.stringify(items).length;
    if (bytes > STORE_MAX_BYTES) return;
    this.entries.set(id, { response, items, bytes });
    this.bytes += bytes;
    while (this.entries.size > STORE_MAX_ENTRIES || this.bytes > STORE_MAX_BYTES) {
      const oldest = this.entries.keys().next().value as string;
      this.delete(oldest);
    }
  }

  /** Replaces a stored response (its items kept); a response no longer stored stays gone. */
  update(response: Json): void {
    const entry = this.entries.get(String(response.id));
    if (!entry) return;
    const bytes = JSON.stringify(response).length + JSON.stringify(entry.items).length;
    this.bytes += bytes - entry.bytes;
    entry.response = response;
    entry.bytes = bytes;
  }

  get(id: string): { response: Json; items: Json[] } | undefined {
    return this.entries.get(id);
  }

  delete(id: string): boolean {
    const entry = this.entries.get(id);
    if (!entry) return false;
    this.bytes -= entry.bytes;
    return this.entries.delete(id);
  }

  get size(): number {
    return this.entries.size;
  }
}

function notFound(id: string): MockHttpError {
  return new MockHttpError(404, `Response with id '${id}' not found.`, null, null);
}

export async function handleCreateResponse(req: IncomingMessage, res: ServerResponse, store: ResponseStore): Promise<void> {
  const request = parseResponsesRequest(await readObject(req));
  const { model } = request;
  if (model === 'mock-429') return sendRateLimited(res, model);
  const response = generateResponse(request);
  if (request.stream) {
    if (request.store) store.put(startedSnapshot(response), request.items);
    streamResponseEvents(req, res, response, { model, paced: true, onEnd: (stored) => request.store && store.update(stored) });
    return;
  }
  if (request.background) {
    // answered at once, queued; finished by the time anyone polls GET /v1/responses/{id}
    store.put(response, request.items);
    sendJson(res, 200, startedSnapshot(response, 'queued'));
    return;
  }
  if (request.store) store.put(startedSnapshot(response), request.items);
  if (model === 'mock-fail') {
    const failed = failedResponse(response, 0, 'The mock provider failed (mock-fail).');
    if (request.store) store.update(failed);
    sendError(res, new MockHttpError(500, 'The mock provider failed (mock-fail).', null, 'server_error', 'server_error'));
    return;
  }
  answerLater(
    res,
    model,
    ANSWER_MS,
    () => {
      if (request.store) store.update(response);
      return { status: 200, body: response };
    },
    () => request.store && store.update(failedResponse(response, 0, 'The mock provider dropped the connection (mock-error).')),
  );
}

export function handleResponseRead(req: IncomingMessage, res: ServerResponse, store: ResponseStore, id: string, sub: string | undefined, query: URLSearchParams): void {
  const entry = store.get(id);
  if (!entry) throw notFound(id);
  if (req.method === 'DELETE' && !sub) {
    store.delete(id);
    sendJson(res, 200, { id, object: 'response', deleted: true });
    return;
  }
  if (!sub) {
    if (query.get('stream') === 'true') {
      const after = Number(query.get('starting_after') ?? '');
      streamResponseEvents(req, res, entry.response, { model: String(entry.response.model), paced: false, startingAfter: Number.isInteger(after) && query.has('starting_after') ? after : undefined });
      return;
    }
    sendJson(res, 200, entry.response);
    return;
  }
  // input_items: OpenAI's cursor page (newest first unless order=asc), `limit` 1–100 (default 20), `after` an item id
  const limitRaw = query.get('limit');
  const limit = limitRaw === null ? 20 : Number(limitRaw);
  if (!Number.isInteger(limit) || limit < 1 || limit > 100) throw new MockHttpError(400, "Invalid 'limit': expected an integer from 1 to 100.", 'limit', 'invalid_value');
  const order = query.get('order') ?? 'desc';
  if (order !== 'asc' && order !== 'desc') throw new MockHttpError(400, "Invalid 'order': expected 'asc' or 'desc'.", 'order', 'invalid_value');
  let items = order === 'asc' ? entry.items : [...entry.items].reverse();
  const after = query.get('after');
  if (after !== null) {
    const at = items.findIndex((item) => item.id === after);
    items = at === -1 ? [] : items.slice(at + 1);
  }
  const data = items.slice(0, limit);
  sendJson(res, 200, { object: 'list', data, first_id: data[0]?.id ?? null, last_id: data[data.length - 1]?.id ?? null, has_more: items.length > limit });
}

