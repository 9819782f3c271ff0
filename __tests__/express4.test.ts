import http from 'node:http';
import type { AddressInfo } from 'node:net';
import compression from 'compression';
import { bearerToken, inferyStream, type InferyStreamMiddleware, type MeterEvent } from '../lib';
import { KEY, UPSTREAM_KEY, type Account } from './helpers/gateway';
import { ScriptedProvider, textSteps } from './helpers/provider';
import { jsonEvents, postStream, waitFor } from './helpers/sse-client';

/**
 * The same middleware in an Express 4 app (the `express4` dev dependency is express@4), with compression() and
 * express.json() mounted first as most existing backends do: streaming, cancellation, errors, pass-through.
 */
const express4 = require('express4') as (() => Express4App) & { json: (opts?: object) => unknown };
interface Express4App {
  use: (...handlers: unknown[]) => void;
  get: (path: string, handler: (req: unknown, res: { send: (body: string) => void }) => void) => void;
}

const chat = { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] };

let provider: ScriptedProvider;
let server: http.Server;
let url: string;
let gateway: InferyStreamMiddleware;
const meterCalls: Array<MeterEvent<Account>> = [];

beforeAll(async () => {
  provider = await new ScriptedProvider().start();
  const app = express4();
  app.use(compression());
  app.use(express4.json({ limit: '1mb' }));
  gateway = inferyStream<Account>({
    upstream: { baseURL: provider.url, apiKey: UPSTREAM_KEY },
    authenticate: (req) => (bearerToken(req) === KEY ? { id: 'acct-1' } : null),
    meter: (event) => (meterCalls.push(event), event.usage.total_tokens),
    heartbeatInterval: 0,
  });
  app.use(gateway);
  app.get('/health', (_req, res) => res.send('ok'));
  server = http.createServer(app as unknown as http.RequestListener);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  gateway.close();
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  await provider.stop();
});
beforeEach(() => {
  meterCalls.length = 0;
});

test('express 4: streams content → finish → usage → credits → [DONE], uncompressed, metered once', async () => {
  provider.reply = () => ({ steps: textSteps(['Hello', ' world'], { gap: 20 }) });
  const result = await postStream(url, chat, { headers: { 'accept-encoding': 'gzip' } });
  expect(result.headers['content-encoding']).toBeUndefined();
  expect(result.events.at(-1)).toBe('[DONE]');
  expect(jsonEvents(result).at(-1)).toMatchObject({ choices: [], credits_used: 14 });
  expect(meterCalls).toHaveLength(1);
  expect(meterCalls[0]!.outcome).toBe('completed');
});

test('express 4: a client that leaves mid-stream aborts the upstream within 250 ms and is metered as cancelled', async () => {
  provider.reply = () => ({ steps: textSteps(Array.from({ length: 40 }, (_, i) => ` w${i}`), { gap: 50 }) });
  let left = 0;
  await postStream(url, chat, { onEvent: (_d, i) => (i === 2 ? ((left = Date.now()), 'abort') : undefined) });
  await waitFor(() => provider.last.closedEarlyAt !== undefined, 2000, 'the upstream to be aborted');
  expect(provider.last.closedEarlyAt! - left).toBeLessThan(250);
  await waitFor(() => meterCalls.length === 1, 2000, 'meter');
  expect(meterCalls[0]!.outcome).toBe('cancelled');
});

test.each<[string, () => Promise<Response>, number, string]>([
  ['malformed JSON (express.json() fails)', () => fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body: '{"model":' }), 400, 'invalid_json'],
  ['an unknown route', () => fetch(`${url}/v1/moderations`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body: '{}' }), 404, 'unknown_route'],
  ['no key', () => fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(chat) }), 401, 'invalid_api_key'],
])('express 4: %s is answered in OpenAI shape', async (_name, send, status, code) => {
  const res = await send();
  expect(res.status).toBe(status);
  expect(((await res.json()) as { error: { code: string } }).error.code).toBe(code);
});

test('express 4: a non-canonical raw path is 400 invalid_path, and GET /v1/models passes through with the gateway key', async () => {
  const raw = await new Promise<number>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: Number(new URL(url).port), path: '/v1//chat/completions', method: 'POST', agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
  expect(raw).toBe(400);
  provider.reply = () => ({ json: { object: 'list', data: [{ id: 'm1' }] } });
  const models = await fetch(`${url}/v1/models`, { headers: { authorization: `Bearer ${KEY}` } });
  expect(models.status).toBe(200);
  expect(provider.last.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
});

test('express 4: a non-streaming answer carries credits_used', async () => {
  provider.reply = () => ({ json: { id: 'chatcmpl-1', choices: [{ index: 0, message: { role: 'assistant', content: 'hi' }, finish_reason: 'stop' }], usage: { prompt_tokens: 3, completion_tokens: 1 } } });
  const res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ ...chat, stream: false }) });
  expect(res.status).toBe(200);
  expect(((await res.json()) as { credits_used: number }).credits_used).toBe(4);
});
