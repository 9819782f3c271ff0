import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { completion, streamCompletion } from './chat';
import { handleCompletions } from './completions';
import { handleEmbeddings } from './embeddings';
import { handleCountTokens, handleMessages } from './messages';
import { MockHttpError, readBody, sendError, sendJson } from './http';
import { ResponseStore, handleCreateResponse, handleResponseRead } from './responses';

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
 * `POST /v1/messages` and `POST /v1/messages/count_tokens` (Anthropic's Messages API, see `messages.ts`); `GET /v1/models`. On /responses, /completions and /embeddings the same model names misbehave (non-streamed:
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

/** Starts the mock provider on 127.0.0.1. With `apiKey` set it answers 401 to any other key, as a provider would. */
export async function startMockProvider(options: { port?: number; apiKey?: string } = {}): Promise<MockProvider> {
  const responses = new ResponseStore();
  const server = http.createServer((req, res) => {
    void (async () => {
      // the key as OpenAI's API takes it, or as Anthropic's does (`x-api-key`)
      if (options.apiKey && req.headers.authorization !== `Bearer ${options.apiKey}` && req.headers['x-api-key'] !== options.apiKey) {
        sendJson(res, 401, { error: { message: 'Incorrect API key provided.', type: 'invalid_request_error', code: 'invalid_api_key', param: null } });
        return;
      }
      const [path = '', search = ''] = (req.url ?? '').split('?');
      if (req.method === 'GET' && path === '/v1/models') {
        sendJson(res, 200, { object: 'list', data: MODELS.map((id) => ({ id, object: 'model', created: 0, owned_by: 'infery-mock' })) });
        return;
      }
      if (req.method === 'POST' && path === '/v1/messages') return await handleMessages(req, res);
      if (req.method === 'POST' && path === '/v1/messages/count_tokens') return await handleCountTokens(req, res);
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
