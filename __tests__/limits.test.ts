/**
 * Per-account limits: `limits: { maxConcurrent, requestsPerMinute, store, key }`. Over a limit the gateway
 * answers 429 `rate_limit_exceeded` with `Retry-After` before anything goes upstream, and a concurrency slot
 * comes back however the generation ends. Real sockets on 127.0.0.1, a scripted provider behind the gateway.
 */
import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { inferyStream, InferyOptionsError, MemoryLimitStore, type LimitOptions, type LimitStore, type Options } from '../lib';
import { createApp } from '../example-app/app';
import { startMockProvider } from '../example-app/mock-provider';
import { KEY, startGateway, type Account, type TestGateway } from './helpers/gateway';
import { contentChunk, refusedURL, ScriptedProvider, textSteps, type Reply, type SeenRequest } from './helpers/provider';
import { postStream, waitFor } from './helpers/sse-client';

const KEY_2 = 'client-key-2';
/** KEY is account acct-1, KEY_2 is acct-2. */
const twoAccounts: Options<Account>['authenticate'] = (req) => {
  const auth = req.headers.authorization;
  return auth === `Bearer ${KEY}` ? { id: 'acct-1' } : auth === `Bearer ${KEY_2}` ? { id: 'acct-2' } : null;
};

/** A chat request; the user's words tell the scripted provider how to answer (see `answer`). */
const chat = (say: string, stream = true) => ({ model: 'test-model', stream, messages: [{ role: 'user', content: say }] });

function answer(seen: SeenRequest): Reply {
  if (seen.method === 'GET') return { json: { object: 'list', data: [{ id: 'test-model', object: 'model' }] } };
  const say = (seen.json?.messages as Array<{ content: string }> | undefined)?.[0]?.content;
  if (say === 'hold') return { steps: [{ data: contentChunk('Hi') }, { hang: true }] }; // open until the client leaves
  if (say === 'slow') return { steps: textSteps(['Hi'], { gap: 800 }) }; // completes after ~800 ms
  if (say === 'never') return { delay: Infinity }; // no response headers, ever
  if (say === 'fail') return { status: 500, json: { error: { message: 'boom', type: 'server_error' } } };
  if (say === 'drop') return { steps: [{ data: contentChunk('Hi') }, { destroy: true }] };
  if (seen.json?.stream) return { steps: textSteps(['Hello', ' world']) };
  const message = { role: 'assistant', content: 'Hello' };
  return { json: { id: 'chatcmpl-1', object: 'chat.completion', created: 1, model: 'test-model', choices: [{ index: 0, message, finish_reason: 'stop' }], usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 } } };
}

type Opened = { status: number; headers: IncomingHttpHeaders; text(): string; ended: Promise<void>; close(): void };

/** Sends a request on its own connection; resolves at the response headers and leaves the body open. */
function open(base: string, o: { body?: unknown; key?: string; path?: string; signal?: AbortSignal } = {}): Promise<Opened> {
  return new Promise((resolve, reject) => {
    const payload = o.body === undefined ? undefined : JSON.stringify(o.body);
    const req = http.request(`${base}${o.path ?? '/v1/chat/completions'}`, {
      method: payload === undefined ? 'GET' : 'POST',
      agent: false,
      signal: o.signal,
      headers: { authorization: `Bearer ${o.key ?? KEY}`, ...(payload === undefined ? {} : { 'content-type': 'application/json' }) },
    });
    req.on('error', reject);
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      const ended = new Promise<void>((done) => res.on('close', done));
      resolve({ status: res.statusCode ?? 0, headers: res.headers, text: () => text, ended, close: () => void (res.destroy(), req.destroy()) });
    });
    req.end(payload);
  });
}

/** A whole JSON answer. */
async function call(base: string, o: Parameters<typeof open>[1] = {}) {
  const r = await open(base, o);
  await r.ended;
  return { status: r.status, headers: r.headers, json: JSON.parse(r.text()) as Record<string, unknown> };
}

function expectRateLimited(r: { status: number; headers: IncomingHttpHeaders; json: unknown }): void {
  expect(r.status).toBe(429);
  expect(r.json).toEqual({ error: { message: expect.any(String), type: 'requests', code: 'rate_limit_exceeded', param: null } });
  expect(r.headers['retry-after']).toMatch(/^[1-9]\d*$/);
  expect(Number(r.headers['retry-after-ms'])).toBeGreaterThanOrEqual(1);
  expect(r.headers['x-generation-id']).toBeUndefined();
}

let provider: ScriptedProvider;
let gateways: TestGateway[] = [];

beforeEach(async () => {
  provider = await new ScriptedProvider().start();
  provider.reply = answer;
});

afterEach(async () => {
  for (const gw of gateways.splice(0)) await gw.close();
  await provider.stop();
});

async function gateway(limits: LimitOptions<Account>, overrides: Partial<Options<Account>> = {}, upstream = provider.url): Promise<TestGateway> {
  const gw = await startGateway(upstream, { limits, ...overrides });
  gateways.push(gw);
  return gw;
}

/** Opens `n` generations at once and holds them: every one must be admitted (200 and sent upstream). */
async function expectAllAdmitted(gw: TestGateway, n: number, key = KEY): Promise<void> {
  const before = provider.requests.length;
  const held = await Promise.all(Array.from({ length: n }, () => open(gw.url, { body: chat('hold'), key })));
  try {
    expect(held.map((h) => h.status)).toEqual(Array(n).fill(200));
    expect(provider.requests.length).toBe(before + n);
  } finally {
    for (const h of held) h.close();
  }
}

test('maxConcurrent: 2 serves two open streams; a third, streaming or not, gets 429 before any upstream call, and is admitted once one finishes', async () => {
  const store = new MemoryLimitStore();
  const gw = await gateway({ maxConcurrent: 2, store });
  const first = postStream(gw.url, chat('slow'));
  const second = await open(gw.url, { body: chat('hold') });
  await provider.waitForRequests(2);
  expect(second.status).toBe(200);
  expect(store.inUse('acct-1')).toBe(2);

  for (const stream of [true, false]) {
    const refused = await call(gw.url, { body: chat('one more', stream) });
    expectRateLimited(refused);
    expect(refused.headers['retry-after']).toBe('1');
    expect(refused.headers['retry-after-ms']).toBe('1000');
  }
  expect(provider.requests).toHaveLength(2);
  expect(gw.meterCalls).toHaveLength(0);

  expect((await first).events.at(-1)).toBe('[DONE]');
  await waitFor(() => store.inUse('acct-1') === 1, 3000, 'the finished stream to give its slot back');
  const third = await open(gw.url, { body: chat('hold') });
  expect(third.status).toBe(200);
  expectRateLimited(await call(gw.url, { body: chat('full again') }));
  second.close();
  third.close();
  await waitFor(() => store.inUse('acct-1') === 0, 3000, 'every slot back');
  expect(gw.meterCalls.map((m) => m.outcome).sort()).toEqual(['cancelled', 'cancelled', 'completed']);
});

test('limits are per account: acct-2 is served while acct-1 has every slot', async () => {
  const gw = await gateway({ maxConcurrent: 2 }, { authenticate: twoAccounts });
  const held = await Promise.all([open(gw.url, { body: chat('hold') }), open(gw.url, { body: chat('hold') })]);
  expectRateLimited(await call(gw.url, { body: chat('hi') }));
  await expectAllAdmitted(gw, 2, KEY_2);
  for (const h of held) h.close();
});

describe('a slot comes back on every exit path', () => {
  let store: MemoryLimitStore;
  let gw: TestGateway;
  let unreachable: TestGateway; // a second instance sharing the store, in front of a port where nothing listens

  beforeEach(async () => {
    store = new MemoryLimitStore();
    const reserve: Options<Account>['reserve'] = ({ body }) => (body.messages as Array<{ content: string }>)[0]?.content !== 'broke';
    gw = await gateway({ maxConcurrent: 2, store }, { reserve });
    unreachable = await gateway({ maxConcurrent: 2, store }, { reserve }, await refusedURL());
  });

  const paths: Array<[string, () => Promise<void>]> = [
    ['completed stream', async () => expect((await postStream(gw.url, chat('hi'))).events.at(-1)).toBe('[DONE]')],
    ['completed non-streaming answer', async () => expect((await call(gw.url, { body: chat('hi', false) })).json.credits_used).toBe(6)],
    ['client cancelled mid-stream', async () => {
      expect((await postStream(gw.url, chat('hold'), { onEvent: () => 'abort' })).events).toHaveLength(1);
      await waitFor(() => gw.meterCalls.some((m) => m.outcome === 'cancelled'));
    }],
    ['client left before the upstream answered', async () => {
      const abort = new AbortController();
      const pending = open(gw.url, { body: chat('never'), signal: abort.signal }).catch(() => undefined);
      await provider.waitForRequests(1);
      abort.abort();
      await pending;
      await waitFor(() => gw.meterCalls.some((m) => m.outcome === 'cancelled'));
    }],
    ['upstream error before the first byte', async () => expect((await call(gw.url, { body: chat('fail') })).status).toBeGreaterThanOrEqual(500)],
    ['upstream unreachable', async () => expect((await call(unreachable.url, { body: chat('hi') })).status).toBe(502)],
    ['upstream dropped mid-stream', async () => expect((await postStream(gw.url, chat('drop'))).raw).toContain('data: {"error":{')],
    ['body validation error (no slot taken)', async () => {
      const acquire = jest.spyOn(store, 'acquire');
      expect((await call(gw.url, { body: { model: 'test-model' } })).status).toBe(400);
      expect(acquire).not.toHaveBeenCalled();
    }],
    ['reserve refused (402)', async () => expect((await call(gw.url, { body: chat('broke') })).status).toBe(402)],
  ];

  test.each(paths)('%s', async (_name, exit) => {
    await exit();
    await waitFor(() => store.inUse('acct-1') === 0, 3000, 'the slot to come back');
    await expectAllAdmitted(gw, 2);
    await waitFor(() => store.inUse('acct-1') === 0, 3000, 'the slots to come back');
  });
});

test('requestsPerMinute: 3 refuses the 4th request of the minute (pass-through routes count) and refills at 60/3 s per request', async () => {
  let now = 1_700_000_000_000;
  const gw = await gateway({ requestsPerMinute: 3, store: new MemoryLimitStore(() => now) });
  expect((await call(gw.url, { path: '/v1/models' })).status).toBe(200);
  expect((await call(gw.url, { body: chat('hi', false) })).status).toBe(200);
  expect((await call(gw.url, { path: '/v1/models' })).status).toBe(200);

  for (const o of [{ body: chat('hi', false) }, { body: chat('hi') }, { path: '/v1/models' }]) {
    const refused = await call(gw.url, o);
    expectRateLimited(refused);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(Number(refused.headers['retry-after'])).toBeLessThanOrEqual(20);
    expect(refused.json).toMatchObject({ error: { type: 'requests' } });
  }
  expect(provider.requests).toHaveLength(3);
  expect(gw.meterCalls).toHaveLength(1);

  now += 20_000; // one request's worth of refill
  expect((await call(gw.url, { body: chat('hi', false) })).status).toBe(200);
  expectRateLimited(await call(gw.url, { path: '/v1/models' }));
  expect(provider.requests).toHaveLength(4);
});

test('0 disables each limit', async () => {
  const store = new MemoryLimitStore();
  const acquire = jest.spyOn(store, 'acquire');
  const gw = await gateway({ maxConcurrent: 0, requestsPerMinute: 100, store });
  await expectAllAdmitted(gw, 20);
  expect(acquire).not.toHaveBeenCalled();

  const hit = jest.spyOn(store, 'hit');
  const gw2 = await gateway({ maxConcurrent: 1, requestsPerMinute: 0, store });
  const statuses = await Promise.all(Array.from({ length: 20 }, () => call(gw2.url, { path: '/v1/models' }).then((r) => r.status)));
  expect(statuses).toEqual(Array(20).fill(200));
  expect(hit).not.toHaveBeenCalled();
});

test('the openai SDK gets an OpenAI.RateLimitError (429, rate_limit_exceeded)', async () => {
  const gw = await gateway({ maxConcurrent: 1 });
  const held = await open(gw.url, { body: chat('hold') });
  const client = new OpenAI({ apiKey: KEY, baseURL: gw.url + '/v1', maxRetries: 0 });
  const request = client.chat.completions.create({ model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] });
  const err = await request.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(OpenAI.RateLimitError);
  expect(err).toMatchObject({ status: 429, code: 'rate_limit_exceeded', type: 'requests' });
  expect((err as InstanceType<typeof OpenAI.RateLimitError>).headers.get('retry-after')).toBe('1');
  expect(provider.requests).toHaveLength(1);
  held.close();
});

test.each<[unknown, RegExp]>([
  [{ maxConcurrent: -1 }, /`limits\.maxConcurrent` must be a whole number ≥ 0 \(0 disables it\), got -1/],
  [{ maxConcurrent: 1.5 }, /`limits\.maxConcurrent` must be a whole number.*got 1\.5/],
  [{ requestsPerMinute: 'x' }, /`limits\.requestsPerMinute` must be a whole number.*got x/],
  [{ maxConcurrnt: 2 }, /unknown option `limits\.maxConcurrnt`.*maxConcurrent/],
  [{ store: {} }, /`limits\.store` must implement acquire\(key, max\), release\(key\) and hit\(key, perMinute\)/],
  [5, /`limits` must be an object/],
])('limits: %p throws at creation', (limits, message) => {
  const create = () => inferyStream({ upstream: { baseURL: 'http://127.0.0.1:9/v1' }, authenticate: () => ({ id: 'a' }), limits: limits as never });
  expect(create).toThrow(InferyOptionsError);
  expect(create).toThrow(message);
});

/** A store as a shared one (Redis) would be: every call answers asynchronously, a few ms later. */
class SlowStore implements LimitStore {
  held = 0; granted = 0; released = 0; refused = 0; // prettier-ignore
  hits: string[] = [];
  private later = <T>(answer: () => T): Promise<T> => new Promise((resolve) => setTimeout(() => resolve(answer()), 3));
  acquire(_key: string, max: number): Promise<boolean> {
    return this.later(() => (this.held >= max ? (this.refused++, false) : (this.held++, this.granted++, true)));
  }
  release(): Promise<void> {
    return this.later(() => void (this.held--, this.released++));
  }
  hit(key: string): Promise<number> {
    this.hits.push(key);
    return this.later(() => (key === 'acct-2' ? 2500 : 0));
  }
}

test('a custom asynchronous LimitStore is awaited, and acquire and release balance out', async () => {
  const store = new SlowStore();
  const gw = await gateway({ maxConcurrent: 2, requestsPerMinute: 100, store }, { authenticate: twoAccounts });
  const held = await Promise.all([open(gw.url, { body: chat('hold') }), open(gw.url, { body: chat('hold') })]);
  expectRateLimited(await call(gw.url, { body: chat('hi') })); // acquire resolved false
  const other = await call(gw.url, { body: chat('hi'), key: KEY_2 }); // hit resolved 2500 ms
  expectRateLimited(other);
  expect(other.headers).toMatchObject({ 'retry-after': '3', 'retry-after-ms': '2500' });
  held[0]!.close();
  await waitFor(() => store.held === 1);
  expect((await postStream(gw.url, chat('hi'))).events.at(-1)).toBe('[DONE]');
  expect((await call(gw.url, { body: chat('hi', false) })).status).toBe(200);
  await postStream(gw.url, chat('hold'), { onEvent: () => 'abort' });
  held[1]!.close();
  await waitFor(() => store.held === 0 && store.released === store.granted, 3000, 'every granted slot released');
  expect(store).toMatchObject({ granted: 5, released: 5, refused: 1 });
  expect(store.hits).toHaveLength(7);
  expect(provider.requests).toHaveLength(5);
});

test('example app: with maxConcurrent 1, a second generation while a mock-slow stream is open gets 429', async () => {
  const mock = await startMockProvider();
  const { app, gateway: gw } = createApp({ upstreamURL: mock.url, apiKeys: { k: 1000 }, maxConcurrent: 1, requestsPerMinute: 0 });
  const quick = { key: 'k', body: { model: 'mock-1', messages: [{ role: 'user', content: 'Hi' }] } };
  const server = http.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const slow = await open(url, { key: 'k', body: { model: 'mock-slow', stream: true, messages: [{ role: 'user', content: 'Hi' }] } });
    expect(slow.status).toBe(200);
    expectRateLimited(await call(url, quick));
    slow.close();
    await waitFor(() => gw.inFlight === 0, 3000, 'the cancelled stream to settle');
    expect((await call(url, quick)).status).toBe(200);
  } finally {
    gw.close();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await mock.close();
  }
});

test('a clock that steps back never blocks an account (elapsed time is never negative)', () => {
  let now = 1_700_000_000_000;
  const store = new MemoryLimitStore(() => now);
  expect(store.hit('a', 600).waitMs).toBe(0);
  now -= 3_600_000;
  expect(store.hit('a', 600).waitMs).toBe(0);
});
