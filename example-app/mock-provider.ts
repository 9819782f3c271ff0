import { createHash, randomBytes } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A small OpenAI-compatible provider that runs in-process, so the example app works with no key and no
 * network. Deterministic: the same request gets the same words, streamed one by one with realistic gaps.
 * Like OpenAI, it sends usage in a stream only when `stream_options.include_usage` is set, and answers
 * with tool calls when `tools` are sent.
 *
 * Some model names make it misbehave on purpose, to try the gateway's error paths from a shell:
 * `mock-slow` (1 s between words), `mock-error` (dies after a few words), `mock-garbage` (sends invalid JSON
 * mid-stream), `mock-429` (rate limited), `mock-stall` (stops sending after a few words), `mock-no-usage`
 * (never sends usage).
 *
 * Routes: `POST /v1/chat/completions`; `POST /v1/responses` (the Responses API: typed events
 * `response.created` → `response.in_progress` → `response.output_item.added` → `response.content_part.added` →
 * `response.output_text.delta`… → `response.output_text.done` → `response.content_part.done` →
 * `response.output_item.done` → `response.completed` (or `response.incomplete` when `max_output_tokens` cut it),
 * usage always in the last event; with function `tools`, a `function_call` item whose arguments stream as
 * `response.function_call_arguments.delta`/`.done`), `GET`/`DELETE /v1/responses/{id}` (the newest 200 kept,
 * `?stream=true` replays the events), `GET /v1/responses/{id}/input_items`; `POST /v1/completions` (legacy);
 * `POST /v1/embeddings` (`float` or `base64`, deterministic unit vectors of `dimensions`, default 8);
 * `GET /v1/models`. On /responses, /completions and /embeddings the same model names misbehave (non-streamed:
 * mock-error drops the connection, mock-stall never answers, mock-garbage sends invalid JSON, mock-slow takes
 * 3 s), and `mock-fail` sends the Responses API's `error` event then `response.failed` after a few deltas
 * (500 when not streamed; not listed in GET /v1/models, and a plain model on the chat route). A bad request is
 * a 400 in OpenAI's error shape.
 */
export interface MockProvider {
  url: string;
  close(): Promise<void>;
}

/** What GET /v1/models lists. */
const MODELS = ['mock-1', 'mock-slow', 'mock-error', 'mock-garbage', 'mock-429', 'mock-stall', 'mock-no-usage', 'mock-embed'];

const SENTENCES = [
  'Streaming lets a reader see the first words while the rest are still being written.',
  'This answer comes from the infery-stream mock provider, one word at a time.',
  'Each word travels as its own server-sent event through the gateway to your client.',
  'When the answer is done the gateway adds a usage chunk with the credits it charged.',
];

/** A deterministic gap in ms for word `i`: 20–60 ms, like a fast model. */
function gap(i: number, slow: boolean): number {
  return slow ? 1000 : 20 + ((i * 37) % 41);
}

function answerFor(body: Record<string, unknown>): string {
  const messages = Array.isArray(body.messages) ? (body.messages as Array<{ role?: string; content?: unknown }>) : [];
  const last = [...messages].reverse().find((m) => m.role === 'user');
  const said = typeof last?.content === 'string' ? last.content.split(/\s+/).slice(0, 8).join(' ') : '';
  const maxTokens = typeof body.max_tokens === 'number' ? body.max_tokens : typeof body.max_completion_tokens === 'number' ? body.max_completion_tokens : Infinity;
  const words = `You said: "${said}". ${SENTENCES.join(' ')}`.split(' ');
  return words.slice(0, Math.max(1, Math.min(words.length, maxTokens))).join(' ');
}

function promptTokens(body: Record<string, unknown>): number {
  return Math.max(1, Math.ceil(JSON.stringify(body.messages ?? []).length / 4));
}

function toolCallFor(body: Record<string, unknown>): { name: string; args: string } | undefined {
  const tools = Array.isArray(body.tools) ? (body.tools as Array<{ function?: { name?: string; parameters?: { properties?: Record<string, { type?: string }> } } }>) : [];
  const fn = tools[0]?.function;
  if (!fn?.name) return undefined;
  const args: Record<string, unknown> = {};
  for (const [key, schema] of Object.entries(fn.parameters?.properties ?? {})) {
    args[key] = schema.type === 'number' || schema.type === 'integer' ? 42 : schema.type === 'boolean' ? true : `${key} value`;
  }
  if (Object.keys(args).length === 0) args.location = 'Paris';
  return { name: fn.name, args: JSON.stringify(args) };
}

/** A unique completion id, as OpenAI's are (`chatcmpl-` and 24 random characters). */
function completionId(): string {
  return `chatcmpl-mock${randomBytes(12).toString('base64url')}`;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size <= MAX_BODY_BYTES) chunks.push(chunk as Buffer); // beyond it, drained unread
  }
  if (size > MAX_BODY_BYTES) throw new MockHttpError(413, `The request body is larger than ${MAX_BODY_BYTES} bytes.`, null, 'request_too_large');
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
}

function streamCompletion(req: IncomingMessage, res: ServerResponse, body: Record<string, unknown>, model: string): void {
  const id = completionId();
  const created = Math.floor(Date.now() / 1000);
  const base = { id, object: 'chat.completion.chunk', created, model, system_fingerprint: 'fp_mock' };
  const includeUsage = (body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true && model !== 'mock-no-usage';
  const tool = toolCallFor(body);
  const pieces: Array<Record<string, unknown>> = [];
  pieces.push({ role: 'assistant', content: '' });
  let completionTokens = 0;
  if (tool) {
    pieces.push({ tool_calls: [{ index: 0, id: 'call_mock0', type: 'function', function: { name: tool.name, arguments: '' } }] });
    for (let i = 0; i < tool.args.length; i += 6) {
      pieces.push({ tool_calls: [{ index: 0, function: { arguments: tool.args.slice(i, i + 6) } }] });
      completionTokens += 1;
    }
  } else {
    const words = answerFor(body).split(' ');
    words.forEach((word, i) => pieces.push({ content: i === 0 ? word : ` ${word}` }));
    completionTokens = words.length;
  }
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.write(': mock provider keep-alive\n\n');
  let i = 0;
  let timer: NodeJS.Timeout | undefined;
  const send = (obj: unknown): boolean => res.write(`data: ${JSON.stringify(obj)}\n\n`);
  const step = (): void => {
    if (i < pieces.length) {
      if (model === 'mock-error' && i === 4) {
        res.destroy();
        return;
      }
      if (model === 'mock-garbage' && i === 4) res.write('data: {"choices": [{"delta": {"content": "oops\n\n');
      if (model === 'mock-stall' && i === 4) return;
      send({ ...base, choices: [{ index: 0, delta: pieces[i], logprobs: null, finish_reason: null }], ...(includeUsage ? { usage: null } : {}) });
      timer = setTimeout(step, gap(i++, model === 'mock-slow'));
      return;
    }
    send({ ...base, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: tool ? 'tool_calls' : 'stop' }], ...(includeUsage ? { usage: null } : {}) });
    if (includeUsage) {
      const prompt = promptTokens(body);
      send({ ...base, choices: [], usage: { prompt_tokens: prompt, completion_tokens: completionTokens, total_tokens: prompt + completionTokens } });
    }
    res.end('data: [DONE]\n\n');
  };
  timer = setTimeout(step, 150); // time to first token
  res.on('close', () => clearTimeout(timer));
  req.on('error', () => clearTimeout(timer));
}

function completion(body: Record<string, unknown>, model: string): Record<string, unknown> {
  const tool = toolCallFor(body);
  const text = tool ? null : answerFor(body);
  const prompt = promptTokens(body);
  const completionTokens = tool ? Math.ceil(tool.args.length / 6) : (text ?? '').split(' ').length;
  return {
    id: completionId(),
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [
      {
        index: 0,
        message: tool
          ? { role: 'assistant', content: null, tool_calls: [{ id: 'call_mock0', type: 'function', function: { name: tool.name, arguments: tool.args } }] }
          : { role: 'assistant', content: text },
        finish_reason: tool ? 'tool_calls' : 'stop',
      },
    ],
    ...(model === 'mock-no-usage' ? {} : { usage: { prompt_tokens: prompt, completion_tokens: completionTokens, total_tokens: prompt + completionTokens } }),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The other OpenAI surfaces: POST /v1/responses (+ GET/DELETE /v1/responses/{id}, GET …/input_items),
// POST /v1/completions (legacy) and POST /v1/embeddings. Same deterministic words, same misbehaving model names.

/** The largest request body the mock reads; the rest is drained unread and answered 413. */
const MAX_BODY_BYTES = 32 * 1024 * 1024;
/** Stored responses (GET /v1/responses/{id}): the newest this many, holding at most this many bytes of JSON. */
const STORE_MAX_ENTRIES = 200;
const STORE_MAX_BYTES = 64 * 1024 * 1024;
/** Inputs per embeddings request and prompts per completions request, as OpenAI allows. */
const MAX_INPUTS = 2048;
const MAX_CHOICES = 128;
/** Small vectors unless `dimensions` asks for more (up to text-embedding-3-large's 3072). */
const EMBEDDING_DEFAULT_DIMENSIONS = 8;
const EMBEDDING_MAX_DIMENSIONS = 3072;
/** How many deltas a misbehaving model sends before it misbehaves, as on the chat route. */
const MISBEHAVE_AT = 4;
/** Time to first token, and how long a non-streamed answer takes (mock-slow: 3 s). */
const FIRST_TOKEN_MS = 150;
const ANSWER_MS = 300;
const SLOW_ANSWER_MS = 3000;

type Json = Record<string, unknown>;

/** An error answered in OpenAI's shape: `{"error":{"message","type","param","code"}}`. */
class MockHttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type: string = 'invalid_request_error',
  ) {
    super(message);
  }
}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function sendError(res: ServerResponse, err: MockHttpError): void {
  sendJson(res, err.status, { error: { message: err.message, type: err.type, param: err.param, code: err.code } });
}

function sendRateLimited(res: ServerResponse, model: string): void {
  res.setHeader('retry-after', '20');
  sendError(res, new MockHttpError(429, `Rate limit reached for ${model}. Try again in 20s.`, null, 'rate_limit_exceeded', 'requests'));
}

function newId(prefix: string, bytes = 16): string {
  return `${prefix}${randomBytes(bytes).toString('hex')}`;
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** A request body that must be a JSON object (400 otherwise). */
async function readObject(req: IncomingMessage): Promise<Json> {
  const body: unknown = await readBody(req);
  if (!isObject(body)) throw new MockHttpError(400, 'The request body must be a JSON object.', null, 'invalid_json');
  return body;
}

function requireModel(body: Json): string {
  if (body.model === undefined || body.model === null) throw new MockHttpError(400, "Missing required parameter: 'model'.", 'model', 'missing_required_parameter');
  if (typeof body.model !== 'string' || body.model === '') throw new MockHttpError(400, "Invalid type for 'model': expected a non-empty string.", 'model', 'invalid_type');
  return body.model;
}

function optionalBoolean(body: Json, key: string): boolean | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'boolean') throw new MockHttpError(400, `Invalid type for '${key}': expected a boolean.`, key, 'invalid_type');
  return value;
}

function optionalInteger(body: Json, key: string, min: number, max: number): number | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value)) throw new MockHttpError(400, `Invalid type for '${key}': expected an integer.`, key, 'invalid_type');
  if (value < min || value > max) throw new MockHttpError(400, `Invalid '${key}': expected an integer from ${min} to ${max}, got ${value}.`, key, 'invalid_value');
  return value;
}

function optionalNumber(body: Json, key: string): number | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new MockHttpError(400, `Invalid type for '${key}': expected a number.`, key, 'invalid_type');
  return value;
}

function optionalString(body: Json, key: string): string | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new MockHttpError(400, `Invalid type for '${key}': expected a string.`, key, 'invalid_type');
  return value;
}

/** The answer's words for what the user said: `You said: "<first 8 words>".` and the four sentences. */
function answerWords(said: string): string[] {
  const first = said.split(/\s+/).filter(Boolean).slice(0, 8).join(' ');
  return `You said: "${first}". ${SENTENCES.join(' ')}`.split(' ');
}

function estimateTokens(value: unknown): number {
  return Math.max(1, Math.ceil((JSON.stringify(value ?? '')?.length ?? 0) / 4));
}

/** Arguments for a function tool from its JSON schema: 42 for numbers, true for booleans, "<key> value" else. */
function argumentsFor(parameters: unknown): string {
  const properties = isObject(parameters) && isObject(parameters.properties) ? parameters.properties : {};
  const args: Json = {};
  for (const [key, schema] of Object.entries(properties)) {
    const type = isObject(schema) ? schema.type : undefined;
    args[key] = type === 'number' || type === 'integer' ? 42 : type === 'boolean' ? true : `${key} value`;
  }
  if (Object.keys(args).length === 0) args.location = 'Paris';
  return JSON.stringify(args);
}

/** Tool-call arguments stream in slices of this many characters, one token each (as on the chat route). */
const ARGUMENT_SLICE = 6;

function argumentSlices(args: string): string[] {
  const slices: string[] = [];
  for (let i = 0; i < args.length; i += ARGUMENT_SLICE) slices.push(args.slice(i, i + ARGUMENT_SLICE));
  return slices;
}

/**
 * A non-streamed answer after `delayMs`, misbehaving by model name: mock-429 is answered before this, mock-stall
 * never answers, mock-error drops the connection, mock-garbage sends invalid JSON, mock-slow takes 3 s.
 */
function answerLater(res: ServerResponse, model: string, delayMs: number, produce: () => { status: number; body: unknown }, onDrop?: () => void): void {
  if (model === 'mock-stall') return; // the client's time-out, or close(), ends it
  const timer = setTimeout(
    () => {
      if (model === 'mock-error') {
        onDrop?.();
        res.destroy();
        return;
      }
      if (model === 'mock-garbage') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"id": "oops", "object": "broken", "data": [{"embedd');
        return;
      }
      const { status, body } = produce();
      sendJson(res, status, body);
    },
    model === 'mock-slow' ? SLOW_ANSWER_MS : delayMs,
  );
  res.on('close', () => clearTimeout(timer));
}

// --- POST /v1/responses ------------------------------------------------------------------------------------------

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
class ResponseStore {
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

async function handleCreateResponse(req: IncomingMessage, res: ServerResponse, store: ResponseStore): Promise<void> {
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

function handleResponseRead(req: IncomingMessage, res: ServerResponse, store: ResponseStore, id: string, sub: string | undefined, query: URLSearchParams): void {
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

// --- POST /v1/completions (legacy) ----------------------------------------------------------------------------------

function isTokenArray(value: unknown): value is number[] {
  return Array.isArray(value) && value.length > 0 && value.every((token) => Number.isSafeInteger(token) && (token as number) >= 0);
}

/** `prompt`/`input` as a list of texts (token arrays become their numbers) with a token count each. */
function textInputs(value: unknown, key: string): Array<{ text: string; tokens: number; key: string }> {
  if (value === undefined || value === null) throw new MockHttpError(400, `Missing required parameter: '${key}'.`, key, 'missing_required_parameter');
  const fromString = (text: string) => ({ text, tokens: Math.max(1, Math.ceil(text.length / 4)), key: `text:${text}` });
  const fromTokens = (tokens: number[]) => ({ text: tokens.join(' '), tokens: tokens.length, key: `tokens:${tokens.join(',')}` });
  if (typeof value === 'string') return [fromString(value)];
  const invalid = new MockHttpError(400, `Invalid type for '${key}': expected a string, an array of strings, an array of integers, or an array of integer arrays.`, key, 'invalid_type');
  if (!Array.isArray(value)) throw invalid;
  if (value.length === 0) throw new MockHttpError(400, `Invalid '${key}': expected at least one input.`, key, 'empty_array');
  if (value.length > MAX_INPUTS) throw new MockHttpError(400, `Invalid '${key}': at most ${MAX_INPUTS} inputs, got ${value.length}.`, key, 'array_above_max_length');
  if (value.every((v) => typeof v === 'string')) return (value as string[]).map(fromString);
  if (isTokenArray(value)) return [fromTokens(value)];
  if (value.every(isTokenArray)) return (value as number[][]).map(fromTokens);
  throw invalid;
}

async function handleCompletions(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const body = await readObject(req);
  const model = requireModel(body);
  const prompts = textInputs(body.prompt, 'prompt');
  const maxTokens = optionalInteger(body, 'max_tokens', 0, 1_000_000) ?? 16;
  const n = optionalInteger(body, 'n', 1, MAX_CHOICES) ?? 1;
  const stream = optionalBoolean(body, 'stream') ?? false;
  const echo = optionalBoolean(body, 'echo') ?? false;
  if (body.stream_options !== undefined && body.stream_options !== null && !isObject(body.stream_options)) {
    throw new MockHttpError(400, "Invalid type for 'stream_options': expected an object.", 'stream_options', 'invalid_type');
  }
  if (prompts.length * n > MAX_INPUTS) throw new MockHttpError(400, `Invalid 'n': at most ${MAX_INPUTS} choices in all.`, 'n', 'invalid_value');
  if (model === 'mock-429') return sendRateLimited(res, model);

  const choices = prompts.flatMap((prompt, p) =>
    Array.from({ length: n }, (_, j) => {
      const words = answerWords(prompt.text);
      const kept = words.slice(0, maxTokens);
      return { index: p * n + j, echo: echo ? prompt.text : '', words: kept, finish_reason: kept.length < words.length ? 'length' : 'stop' };
    }),
  );
  const promptTokens = prompts.reduce((sum, prompt) => sum + prompt.tokens, 0);
  const completionTokens = choices.reduce((sum, choice) => sum + choice.words.length, 0);
  const usage = { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
  const base = { id: newId('cmpl-mock', 12), object: 'text_completion', created: nowSeconds(), model, system_fingerprint: 'fp_mock' };

  if (!stream) {
    answerLater(res, model, ANSWER_MS, () => ({
      status: 200,
      body: {
        ...base,
        choices: choices.map((choice) => ({ text: choice.echo + choice.words.map((word) => ` ${word}`).join(''), index: choice.index, logprobs: null, finish_reason: choice.finish_reason })),
        ...(model === 'mock-no-usage' ? {} : { usage }),
      },
    }));
    return;
  }

  const includeUsage = isObject(body.stream_options) && body.stream_options.include_usage === true && model !== 'mock-no-usage';
  // word k of every choice, then word k+1 of every choice (as OpenAI interleaves n > 1)
  const pieces: Array<{ index: number; text: string }> = [];
  for (const choice of choices) if (choice.echo) pieces.push({ index: choice.index, text: choice.echo });
  const longest = Math.max(0, ...choices.map((choice) => choice.words.length));
  for (let k = 0; k < longest; k++) for (const choice of choices) if (k < choice.words.length) pieces.push({ index: choice.index, text: ` ${choice.words[k]}` });
  const chunk = (choice: Json): Json => ({ ...base, choices: [choice], ...(includeUsage ? { usage: null } : {}) });

  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.write(': mock provider keep-alive\n\n');
  const send = (obj: unknown): boolean => res.write(`data: ${JSON.stringify(obj)}\n\n`);
  let i = 0;
  let timer: NodeJS.Timeout | undefined;
  const step = (): void => {
    if (i < pieces.length) {
      if (i === MISBEHAVE_AT) {
        if (model === 'mock-error') {
          res.destroy();
          return;
        }
        if (model === 'mock-stall') return;
        if (model === 'mock-garbage') res.write('data: {"choices": [{"text": "oops\n\n');
      }
      const piece = pieces[i]!;
      send(chunk({ text: piece.text, index: piece.index, logprobs: null, finish_reason: null }));
      timer = setTimeout(step, gap(i++, model === 'mock-slow'));
      return;
    }
    for (const choice of choices) send(chunk({ text: '', index: choice.index, logprobs: null, finish_reason: choice.finish_reason }));
    if (includeUsage) send({ ...base, choices: [], usage });
    res.end('data: [DONE]\n\n');
  };
  timer = setTimeout(step, FIRST_TOKEN_MS);
  res.on('close', () => clearTimeout(timer));
  req.on('error', () => clearTimeout(timer));
}

// --- POST /v1/embeddings ----------------------------------------------------------------------------------------------

/** A deterministic unit vector for `key`: SHA-256 blocks in counter mode, so a shorter vector is a prefix, rescaled. */
function embeddingFor(key: string, dimensions: number): Float32Array {
  const raw = new Float64Array(dimensions);
  let norm = 0;
  for (let block = 0; block * 8 < dimensions; block++) {
    const hash = createHash('sha256').update(`${block}:${key}`).digest();
    for (let j = 0; j < 8 && block * 8 + j < dimensions; j++) {
      const value = (hash.readUInt32LE(j * 4) / 0xffffffff) * 2 - 1;
      raw[block * 8 + j] = value;
      norm += value * value;
    }
  }
  const scale = norm > 0 ? 1 / Math.sqrt(norm) : 0;
  return Float32Array.from(raw, (value) => value * scale);
}

/** base64 of the little-endian float32 bytes, as OpenAI sends them and the openai SDK decodes them. */
function float32Base64(vector: Float32Array): string {
  const bytes = Buffer.alloc(vector.length * 4);
  vector.forEach((value, i) => bytes.writeFloatLE(value, i * 4));
  return bytes.toString('base64');
}

async function handleEmbeddings(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const body = await readObject(req);
  const model = requireModel(body);
  const inputs = textInputs(body.input, 'input');
  if (inputs.some((input) => input.text === '')) throw new MockHttpError(400, "Invalid 'input': an input must not be an empty string.", 'input', 'invalid_value');
  const format = body.encoding_format ?? 'float';
  if (format !== 'float' && format !== 'base64') throw new MockHttpError(400, "Invalid value for 'encoding_format': expected 'float' or 'base64'.", 'encoding_format', 'invalid_value');
  const dimensions = optionalInteger(body, 'dimensions', 1, EMBEDDING_MAX_DIMENSIONS) ?? EMBEDDING_DEFAULT_DIMENSIONS;
  if (model === 'mock-429') return sendRateLimited(res, model);
  const tokens = inputs.reduce((sum, input) => sum + input.tokens, 0);
  answerLater(res, model, 50, () => ({
    status: 200,
    body: {
      object: 'list',
      data: inputs.map((input, index) => {
        const vector = embeddingFor(input.key, dimensions);
        const embedding = format === 'base64' ? float32Base64(vector) : Array.from(vector);
        return { object: 'embedding', index, embedding };
      }),
      model,
      ...(model === 'mock-no-usage' ? {} : { usage: { prompt_tokens: tokens, total_tokens: tokens } }),
    },
  }));
}

/** Starts the mock provider on 127.0.0.1. With `apiKey` set it answers 401 to any other key, as a provider would. */
export async function startMockProvider(options: { port?: number; apiKey?: string } = {}): Promise<MockProvider> {
  const responses = new ResponseStore();
  const server = http.createServer((req, res) => {
    void (async () => {
      if (options.apiKey && req.headers.authorization !== `Bearer ${options.apiKey}`) {
        sendJson(res, 401, { error: { message: 'Incorrect API key provided.', type: 'invalid_request_error', code: 'invalid_api_key', param: null } });
        return;
      }
      const [path = '', search = ''] = (req.url ?? '').split('?');
      if (req.method === 'GET' && path === '/v1/models') {
        sendJson(res, 200, { object: 'list', data: MODELS.map((id) => ({ id, object: 'model', created: 0, owned_by: 'infery-mock' })) });
        return;
      }
      if (req.method === 'POST' && path === '/v1/embeddings') return await handleEmbeddings(req, res);
      if (req.method === 'POST' && path === '/v1/completions') return await handleCompletions(req, res);
      if (req.method === 'POST' && path === '/v1/responses') return await handleCreateResponse(req, res, responses);
      const read = /^\/v1\/responses\/([A-Za-z0-9_-]{1,200})(\/input_items)?$/.exec(path);
      if (read && (req.method === 'GET' || (req.method === 'DELETE' && !read[2]))) return handleResponseRead(req, res, responses, read[1]!, read[2], new URLSearchParams(search));
      if (req.method === 'POST' && path === '/v1/chat/completions') {
        const body = await readBody(req);
        const model = typeof body.model === 'string' ? body.model : 'mock-1';
        if (model === 'mock-429') {
          sendJson(res, 429, { error: { message: 'Rate limit reached for mock-429. Try again in 20s.', type: 'requests', code: 'rate_limit_exceeded', param: null } });
          return;
        }
        if (body.stream === true) streamCompletion(req, res, body, model);
        else setTimeout(() => sendJson(res, 200, completion(body, model)), 300);
        return;
      }
      sendJson(res, 404, { error: { message: `Unknown route ${req.method} ${path}`, type: 'invalid_request_error', code: 'not_found', param: null } });
    })().catch((err: unknown) => {
      if (res.headersSent || res.destroyed) {
        res.destroy();
        return;
      }
      if (err instanceof MockHttpError) sendError(res, err);
      else sendJson(res, 400, { error: { message: 'Bad request body', type: 'invalid_request_error', code: 'invalid_json', param: null } });
    });
  });
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
