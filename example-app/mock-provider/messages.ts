import { type IncomingMessage, type ServerResponse } from 'node:http';
import { answerLater, isObject, newId, readBody, sendJson } from './http';
import { argumentSlices, argumentsFor, answerWords, estimateTokens, gap } from './words';

/**
 * `POST /v1/messages`, Anthropic's Messages API as Anthropic answers it: the stream's typed events
 * (`message_start` with the input usage → `content_block_start` → `ping` → `content_block_delta`… →
 * `content_block_stop` → `message_delta` with the stop reason and the cumulative output usage → `message_stop`),
 * a `tool_use` block whose input streams as `input_json_delta` when `tools` are sent, or the JSON message.
 * Errors in its shape (`{"type":"error","error":{"type","message"}}`). The misbehaving model names of the other
 * routes misbehave here too (`mock-error`, `mock-garbage`, `mock-stall`, `mock-slow`, `mock-429`,
 * `mock-no-usage`: its `message_delta` carries no usage, and `message_start` none either).
 */

function anthropicError(res: ServerResponse, status: number, type: string, message: string): void {
  sendJson(res, status, { type: 'error', error: { type, message } });
}

/** The text the user sent last: a string content, or its text blocks. */
function lastUserText(body: Record<string, unknown>): string {
  const messages = Array.isArray(body.messages) ? (body.messages as unknown[]) : [];
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (!isObject(m) || m.role !== 'user') continue;
    if (typeof m.content === 'string') return m.content;
    if (Array.isArray(m.content)) return m.content.flatMap((b) => (isObject(b) && typeof b.text === 'string' ? [b.text] : [])).join(' ');
  }
  return '';
}

/** The first tool of the request, with input made from its JSON schema. */
function toolUse(body: Record<string, unknown>): { name: string; input: string } | undefined {
  const tools = Array.isArray(body.tools) ? (body.tools as unknown[]) : [];
  const first = tools.find((t) => isObject(t) && typeof t.name === 'string');
  if (!isObject(first)) return undefined;
  return { name: first.name as string, input: argumentsFor(first.input_schema) };
}

interface Plan {
  id: string;
  model: string;
  input: number;
  words: string[];
  tool: { name: string; input: string } | undefined;
  stopReason: string;
  output: number;
}

function plan(body: Record<string, unknown>, model: string): Plan {
  const maxTokens = typeof body.max_tokens === 'number' ? body.max_tokens : 4096;
  const all = answerWords(lastUserText(body));
  const tool = toolUse(body);
  const words = tool ? [] : all.slice(0, Math.max(1, Math.min(all.length, maxTokens)));
  const output = tool ? argumentSlices(tool.input).length + 1 : words.length;
  const stopReason = tool ? 'tool_use' : words.length < all.length ? 'max_tokens' : 'end_turn';
  return { id: newId('msg_mock', 12), model, input: estimateTokens([body.system ?? '', body.messages ?? []]), words, tool, stopReason, output };
}

/** `POST /v1/messages/count_tokens`: `{"input_tokens": N}`, the same count the messages' usage reports. */
export async function handleCountTokens(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const body = await readBody(req);
  if (typeof body.model !== 'string' || body.model === '') return anthropicError(res, 400, 'invalid_request_error', 'model: Field required');
  if (!Array.isArray(body.messages) || body.messages.length === 0) return anthropicError(res, 400, 'invalid_request_error', 'messages: at least one message is required');
  sendJson(res, 200, { input_tokens: estimateTokens([body.system ?? '', body.messages]) });
}

export async function handleMessages(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const body = await readBody(req);
  const model = typeof body.model === 'string' && body.model !== '' ? body.model : undefined;
  if (!model) return anthropicError(res, 400, 'invalid_request_error', 'model: Field required');
  if (typeof body.max_tokens !== 'number') return anthropicError(res, 400, 'invalid_request_error', 'max_tokens: Field required');
  if (!Array.isArray(body.messages) || body.messages.length === 0) return anthropicError(res, 400, 'invalid_request_error', 'messages: at least one message is required');
  if (model === 'mock-429') return anthropicError(res, 429, 'rate_limit_error', 'Number of request tokens has exceeded your per-minute rate limit (mock-429).');
  const p = plan(body, model);
  const usage = model === 'mock-no-usage' ? undefined : { input_tokens: p.input, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: p.output };
  if (body.stream !== true) {
    const content = p.tool ? [{ type: 'tool_use', id: newId('toolu_mock', 9), name: p.tool.name, input: JSON.parse(p.tool.input) as unknown }] : [{ type: 'text', text: p.words.join(' ') }];
    answerLater(res, model, 300, () => ({ status: 200, body: { id: p.id, type: 'message', role: 'assistant', model, content, stop_reason: p.stopReason, stop_sequence: null, ...(usage ? { usage } : {}) } }));
    return;
  }
  streamMessage(req, res, p, usage);
}

function streamMessage(req: IncomingMessage, res: ServerResponse, p: Plan, usage: Record<string, number> | undefined): void {
  const events: Array<[string, Record<string, unknown>]> = [];
  const add = (type: string, payload: Record<string, unknown> = {}): number => events.push([type, { type, ...payload }]);
  add('message_start', { message: { id: p.id, type: 'message', role: 'assistant', model: p.model, content: [], stop_reason: null, stop_sequence: null, ...(usage ? { usage: { ...usage, output_tokens: 1 } } : {}) } });
  if (p.tool) {
    add('content_block_start', { index: 0, content_block: { type: 'tool_use', id: newId('toolu_mock', 9), name: p.tool.name, input: {} } });
    add('ping');
    for (const slice of argumentSlices(p.tool.input)) add('content_block_delta', { index: 0, delta: { type: 'input_json_delta', partial_json: slice } });
  } else {
    add('content_block_start', { index: 0, content_block: { type: 'text', text: '' } });
    add('ping');
    p.words.forEach((word, i) => add('content_block_delta', { index: 0, delta: { type: 'text_delta', text: i === 0 ? word : ` ${word}` } }));
  }
  add('content_block_stop', { index: 0 });
  add('message_delta', { delta: { stop_reason: p.stopReason, stop_sequence: null }, ...(usage ? { usage: { output_tokens: p.output } } : {}) });
  add('message_stop');

  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  let i = 0;
  let timer: NodeJS.Timeout | undefined;
  const step = (): void => {
    if (i >= events.length) {
      res.end();
      return;
    }
    if (i === 5 && p.model === 'mock-error') {
      res.destroy();
      return;
    }
    if (i === 5 && p.model === 'mock-stall') return;
    if (i === 5 && p.model === 'mock-garbage') res.write('event: content_block_delta\ndata: {"type": "content_block_delta", "delta": {"text": "oops\n\n');
    const [type, payload] = events[i]!;
    res.write(`event: ${type}\ndata: ${JSON.stringify(payload)}\n\n`);
    timer = setTimeout(step, type === 'content_block_delta' ? gap(i++, p.model === 'mock-slow') : (i++, 0));
  };
  timer = setTimeout(step, 150); // time to first token
  res.on('close', () => clearTimeout(timer));
  req.on('error', () => clearTimeout(timer));
}
