import http from 'node:http';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import { createApp } from '../example-app/app';
import { CreditLedger } from '../example-app/ledger';
import type { GenerationDraft } from '../lib';
import { LedgerUnavailableError } from '../lib/services/redis';
import { startMockProvider, type MockProvider } from '../example-app/mock-provider';
import { jsonEvents, parseSse, waitFor } from './helpers/sse-client';

let mock: MockProvider;
let app: ReturnType<typeof createApp>;
let server: http.Server;
let url: string;

beforeAll(async () => {
  mock = await startMockProvider();
  app = createApp({ upstreamURL: mock.url, apiKeys: { alice: 100, bob: 100 } });
  server = http.createServer(app.app);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  app.gateway.close();
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  await mock.close();
});

/** Streams a chat completion with fetch, optionally aborting after `abortAfter` content events. */
async function stream(key: string, body: object, abortAfter?: number): Promise<{ id: string; generationId: string; credits?: number; events: string[] }> {
  const controller = new AbortController();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ stream: true, messages: [{ role: 'user', content: 'hello' }], ...body }),
    signal: controller.signal,
  });
  const decoder = new TextDecoder();
  let raw = '';
  let contents = 0;
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      raw += decoder.decode(chunk, { stream: true });
      contents = (raw.match(/"content":"[^"]/g) ?? []).length;
      if (abortAfter !== undefined && contents >= abortAfter) {
        controller.abort();
        break;
      }
    }
  } catch {
    // aborted
  }
  const { events } = parseSse(raw.slice(0, raw.lastIndexOf('\n\n') + 2));
  const chunks = jsonEvents({ events } as never);
  return { id: chunks[0]!.id as string, generationId: res.headers.get('x-generation-id') ?? '', credits: chunks.at(-1)?.credits_used as number | undefined, events };
}

describe('example app: credits by model and generation lookup', () => {
  test('/v1/credits breaks `used` down by model, and the parts add up', async () => {
    const a = await stream('alice', { model: 'mock-1', max_tokens: 5 });
    const b = await stream('alice', { model: 'gpt-4o-mini', max_tokens: 5 });
    const res = await request(url).get('/v1/credits').set('Authorization', 'Bearer alice');
    expect(res.body.data.by_model).toEqual({ 'mock-1': a.credits, 'gpt-4o-mini': b.credits });
    expect(res.body.data.used).toBeCloseTo(a.credits! + b.credits!, 9);
    expect(res.body.data.balance + res.body.data.used).toBeCloseTo(100, 9);
  });

  test('/v1/generation?id= returns what was recorded for the id the client saw, and agrees with the stream', async () => {
    const s = await stream('alice', { model: 'mock-1', max_tokens: 6 });
    const res = await request(url).get('/v1/generation').query({ id: s.id }).set('Authorization', 'Bearer alice');
    expect(res.status).toBe(200);
    const gatewayChunk = JSON.parse(s.events.at(-2)!) as { usage: object; credits_used: number };
    expect(s.generationId).toMatch(/^gen-/);
    expect(res.body.data).toEqual({
      id: s.generationId,
      provider_id: s.id,
      endpoint: 'chat.completions',
      model: 'mock-1',
      upstream: 'default',
      failed_upstreams: [],
      stream: true,
      outcome: 'completed',
      unpaid: 0,
      // the billed usage the client saw, and every priced class of it
      usage: { ...gatewayChunk.usage, classes: { input_tokens: expect.any(Number), uncached_input_tokens: expect.any(Number), cache_read_tokens: 0, cache_write_tokens: 0, output_tokens: 6, output_reasoning_tokens: 0 } },
      credits_used: gatewayChunk.credits_used,
      cancelled: false,
      finish_reason: 'stop',
      error: null,
      time_to_first_token_ms: expect.any(Number),
      duration_ms: expect.any(Number),
      created_at: expect.any(String),
    });
    expect(res.body.data.time_to_first_token_ms).toBeGreaterThan(100); // the mock's first token comes after 150 ms
    // the X-Generation-Id finds the same record
    const byGatewayId = await request(url).get('/v1/generation').query({ id: s.generationId }).set('Authorization', 'Bearer alice');
    expect(byGatewayId.body.data).toEqual(res.body.data);
  });

  test('a cancelled generation is recorded as cancelled, with the smaller charge', async () => {
    const full = await stream('bob', { model: 'mock-1' });
    const s = await stream('bob', { model: 'mock-1' }, 5);
    let record: { cancelled: boolean; credits_used: number; usage: { completion_tokens: number; estimated?: boolean } } | undefined;
    await waitFor(() => {
      void request(url).get('/v1/generation').query({ id: s.id }).set('Authorization', 'Bearer bob').then((r) => (record = r.status === 200 ? r.body.data : undefined));
      return record !== undefined;
    }, 3000, 'the cancelled generation to be recorded');
    expect(record!.cancelled).toBe(true);
    expect(record!.usage.estimated).toBe(true);
    expect(record!.credits_used).toBeLessThan(full.credits!);
    const credits = await request(url).get('/v1/credits').set('Authorization', 'Bearer bob');
    expect(credits.body.data.used).toBeCloseTo(full.credits! + record!.credits_used, 9);
  });

  test.each([
    ['an unknown id', 404, 'generation_not_found', 'alice', 'chatcmpl-nope'],
    ["another key's generation", 404, 'generation_not_found', 'bob', 'OWNED_BY_ALICE'],
    ['no id', 400, 'missing_required_parameter', 'alice', ''],
    ['no key', 401, 'invalid_api_key', '', 'x'],
  ])('%s → %i %s in OpenAI shape', async (_name, status, code, key, id) => {
    let lookup = id;
    if (id === 'OWNED_BY_ALICE') lookup = (await stream('alice', { model: 'mock-1', max_tokens: 2 })).id;
    const req = request(url).get('/v1/generation').query(lookup ? { id: lookup } : {});
    if (key) void req.set('Authorization', `Bearer ${key}`);
    const res = await req;
    expect(res.status).toBe(status);
    expect(res.body).toEqual({ error: { message: expect.any(String), type: 'invalid_request_error', code, param: status === 401 ? null : 'id' } });
  });
});

describe('example app with a shared (async) credit store', () => {
  test('every ledger operation goes through the CreditStore interface, awaited', async () => {
    const inner = new CreditLedger({ shared: 50, empty: 0 });
    const calls: string[] = [];
    const delay = <T>(name: string, value: T): Promise<T> => {
      calls.push(name);
      return new Promise((r) => setTimeout(() => r(value), 5));
    };
    const store = {
      has: (k: string) => delay('has', inner.has(k)),
      reserve: (k: string, h: string, c: number) => delay('reserve', inner.reserve(k, h, c)),
      settle: (k: string, h: string, m: string, c: number, r?: GenerationDraft) => delay('settle', inner.settle(k, h, m, c, r)),
      balanceOf: (k: string) => delay('balanceOf', inner.balanceOf(k)),
      findGeneration: (k: string, id: string) => delay('findGeneration', inner.findGeneration(k, id)),
    };
    const shared = createApp({ upstreamURL: mock.url, apiKeys: {}, store });
    const srv = http.createServer(shared.app);
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    try {
      const res = await fetch(`${base}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: 'Bearer shared', 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'mock-1', stream: true, max_tokens: 3, messages: [{ role: 'user', content: 'hi' }] }),
      });
      const text = await res.text();
      const credits = (JSON.parse(parseSse(text).events.at(-2)!) as { credits_used: number }).credits_used;
      const balance = await request(base).get('/v1/credits').set('Authorization', 'Bearer shared');
      expect(balance.body.data.used).toBe(credits);
      const refused = await request(base).post('/v1/chat/completions').set('Authorization', 'Bearer empty').send({ model: 'mock-1', messages: [{ role: 'user', content: 'x' }] });
      expect(refused.status).toBe(402);
      expect(calls).toEqual(expect.arrayContaining(['has', 'reserve', 'settle', 'balanceOf']));
    } finally {
      shared.gateway.close();
      srv.closeAllConnections();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });

  test('a ledger that cannot be reached: 503 ledger_unavailable in OpenAI shape on the gateway and on the app\'s own /v1 routes', async () => {
    const inner = new CreditLedger({ k: 50 });
    let down = false;
    const guard = <T>(value: () => T): T => {
      if (down) throw new LedgerUnavailableError('Redis is reconnecting');
      return value();
    };
    const store = {
      has: (k: string) => guard(() => inner.has(k)),
      reserve: (k: string, h: string, c: number) => guard(() => inner.reserve(k, h, c)),
      settle: (k: string, h: string, m: string, c: number, r?: GenerationDraft) => inner.settle(k, h, m, c, r),
      balanceOf: (k: string) => guard(() => inner.balanceOf(k)),
      findGeneration: (k: string, id: string) => guard(() => inner.findGeneration(k, id)),
    };
    const shared = createApp({ upstreamURL: mock.url, apiKeys: {}, store });
    const srv = http.createServer(shared.app);
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    try {
      down = true;
      for (const res of [
        await request(base).get('/v1/credits').set('Authorization', 'Bearer k'),
        await request(base).get('/v1/generation?id=x').set('Authorization', 'Bearer k'),
        await request(base).post('/v1/chat/completions').set('Authorization', 'Bearer k').send({ model: 'mock-1', messages: [{ role: 'user', content: 'x' }] }),
      ]) {
        expect(res.status).toBe(503);
        expect(res.headers['retry-after']).toBe('1');
        expect(res.body.error).toMatchObject({ code: 'ledger_unavailable', type: 'server_error' });
      }
      down = false;
      const ok = await request(base).get('/v1/credits').set('Authorization', 'Bearer k');
      expect(ok.body.data).toMatchObject({ balance: 50, used: 0 });
    } finally {
      shared.gateway.close();
      srv.closeAllConnections();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });

  test('GET /metrics: asks for INFERY_METRICS_TOKEN when set, and reports the streams, credits and ledger queue', async () => {
    const shared = createApp({ upstreamURL: mock.url, apiKeys: { k: 50 }, metricsToken: 'm-token', ledgerQueueDepth: () => 3 });
    const srv = http.createServer(shared.app);
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    try {
      expect((await request(base).get('/metrics')).status).toBe(401);
      expect((await request(base).get('/metrics').set('Authorization', 'Bearer wrong')).status).toBe(401);
      const res = await fetch(`${base}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: 'Bearer k', 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'mock-1', stream: true, max_tokens: 3, messages: [{ role: 'user', content: 'hi' }] }),
      });
      const credits = (JSON.parse(parseSse(await res.text()).events.at(-2)!) as { credits_used: number }).credits_used;
      await request(base).post('/v1/chat/completions').set('Authorization', 'Bearer nope').send({ model: 'mock-1', messages: [] });
      const metrics = await request(base).get('/metrics').set('Authorization', 'Bearer m-token');
      expect(metrics.status).toBe(200);
      expect(metrics.headers['content-type']).toMatch(/^text\/plain/);
      const text = metrics.text;
      expect(text).toMatch(/infery_requests_total\{route="\/chat\/completions",method="POST",status="200"\} 1/);
      expect(text).toMatch(/infery_requests_total\{route="\/chat\/completions",method="POST",status="401"\} 1/);
      expect(text).toContain(`infery_credits_total{model="mock-1"} ${credits}`);
      expect(text).toMatch(/infery_time_to_first_token_seconds_count\{route="\/chat\/completions",model="mock-1"\} 1/);
      expect(text).toMatch(/infery_open_streams 0/);
      expect(text).toMatch(/infery_ledger_queue_depth 3/);
    } finally {
      shared.gateway.close();
      srv.closeAllConnections();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });
});
