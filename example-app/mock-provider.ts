import { randomBytes } from 'node:crypto';
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
 */
export interface MockProvider {
  url: string;
  close(): Promise<void>;
}

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
  for await (const chunk of req) chunks.push(chunk as Buffer);
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

/** Starts the mock provider on 127.0.0.1. With `apiKey` set it answers 401 to any other key, as a provider would. */
export async function startMockProvider(options: { port?: number; apiKey?: string } = {}): Promise<MockProvider> {
  const server = http.createServer((req, res) => {
    void (async () => {
      if (options.apiKey && req.headers.authorization !== `Bearer ${options.apiKey}`) {
        sendJson(res, 401, { error: { message: 'Incorrect API key provided.', type: 'invalid_request_error', code: 'invalid_api_key', param: null } });
        return;
      }
      const path = (req.url ?? '').split('?')[0];
      if (req.method === 'GET' && path === '/v1/models') {
        sendJson(res, 200, { object: 'list', data: ['mock-1', 'mock-slow', 'mock-error', 'mock-garbage', 'mock-429', 'mock-stall', 'mock-no-usage'].map((id) => ({ id, object: 'model', created: 0, owned_by: 'infery-mock' })) });
        return;
      }
      if (req.method === 'POST' && path === '/v1/embeddings') {
        const body = await readBody(req);
        const inputs = Array.isArray(body.input) ? body.input : [body.input];
        sendJson(res, 200, { object: 'list', model: body.model, data: inputs.map((_, index) => ({ object: 'embedding', index, embedding: [0.1, 0.2, 0.3] })), usage: { prompt_tokens: inputs.length, total_tokens: inputs.length } });
        return;
      }
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
    })().catch(() => sendJson(res, 400, { error: { message: 'Bad request body', type: 'invalid_request_error', code: 'invalid_json', param: null } }));
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
