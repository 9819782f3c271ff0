import http from 'node:http';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import { createApp, parseApiKeys, type AppConfig } from '../example-app/app';
import { BUILT_IN_PRICES, CreditLedger, MOCK_PRICES, PriceList, priceOf, UnpricedModelError } from '../example-app/ledger';
import { startMockProvider, type MockProvider } from '../example-app/mock-provider';
import type { Usage } from '../lib';

// ---------------------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------------------

interface Listening {
  url: string;
  close(): Promise<void>;
}

/** Listens a request listener (an Express app or a plain handler) on 127.0.0.1, port 0. */
async function listen(handler: http.RequestListener): Promise<Listening> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Starts the example app on a real socket; `close` also closes the gateway's upstream keep-alive sockets. */
async function startExampleApp(config: AppConfig): Promise<ReturnType<typeof createApp> & Listening> {
  const created = createApp(config);
  const server = await listen(created.app);
  return {
    ...created,
    url: server.url,
    close: async () => {
      await server.close();
      created.gateway.close();
    },
  };
}

interface SseEvent {
  data: string;
  /** Date.now() when the bytes that completed this event arrived. */
  at: number;
}

interface SseResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The data: payloads in arrival order (`[DONE]` included; comments excluded). */
  events: SseEvent[];
  raw: string;
}

/** POSTs JSON over a real socket and collects the SSE answer event by event, with arrival times. */
function postSse(url: string, body: unknown, headers: Record<string, string> = {}, timeoutMs = 10_000): Promise<SseResult> {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify(body);
    const req = http.request(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)), ...headers },
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer from ${url} within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.on('response', (res) => {
      res.setEncoding('utf8');
      const result: SseResult = { status: res.statusCode ?? 0, headers: res.headers, events: [], raw: '' };
      let buffer = '';
      res.on('data', (text: string) => {
        const now = Date.now();
        result.raw += text;
        buffer += text;
        let end = buffer.indexOf('\n\n');
        while (end !== -1) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block
            .split('\n')
            .filter((line) => line.startsWith('data:'))
            .map((line) => line.slice(5).replace(/^ /, ''));
          if (data.length > 0) result.events.push({ data: data.join('\n'), at: now });
          end = buffer.indexOf('\n\n');
        }
      });
      res.on('end', () => resolve(result));
      res.on('error', reject);
    });
    req.end(payload);
  });
}

type Chunk = {
  id?: string;
  choices?: Array<{ index: number; delta: Record<string, unknown>; finish_reason: string | null }>;
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | null;
  credits_used?: number;
  error?: unknown;
};

/** The JSON chunks of a stream (everything but `[DONE]`). */
function chunksOf(result: SseResult): Chunk[] {
  return result.events.filter((e) => e.data !== '[DONE]').map((e) => JSON.parse(e.data) as Chunk);
}

function contentOf(chunks: Chunk[]): string {
  return chunks.map((c) => (typeof c.choices?.[0]?.delta.content === 'string' ? c.choices[0].delta.content : '')).join('');
}

/** Thousandths of a credit as an integer: the ledger's own unit, so sums compare exactly. */
const milli = (credits: number): number => Math.round(credits * 1000);

/** Expects an OpenAI-shaped error body `{ error: { message, type, code } }`. */
function expectOpenAIError(body: unknown, code: string): void {
  const err = (body as { error?: Record<string, unknown> }).error;
  expect(err).toBeDefined();
  expect(typeof err!.message).toBe('string');
  expect((err!.message as string).length).toBeGreaterThan(0);
  expect(typeof err!.type).toBe('string');
  expect(err!.code).toBe(code);
}

const chatBody = (content: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  model: 'mock-1',
  stream: true,
  max_tokens: 8,
  messages: [{ role: 'user', content }],
  ...extra,
});

// ---------------------------------------------------------------------------------------------------------
// 1. parseApiKeys
// ---------------------------------------------------------------------------------------------------------

describe('parseApiKeys', () => {
  test.each<[string, Record<string, number>]>([
    ['a', { a: 1000 }],
    ['a:5,b:7.5', { a: 5, b: 7.5 }],
    ['k0:0', { k0: 0 }],
    ['  a:5 ,  b: 7.5 ,c  ', { a: 5, b: 7.5, c: 1000 }],
    ['a,,b,', { a: 1000, b: 1000 }],
    ['\ta:1\t,\nb:2\n', { a: 1, b: 2 }],
    ['sk-live_abc.123:0.25', { 'sk-live_abc.123': 0.25 }],
  ])('%j → %j', (input, expected) => {
    expect(parseApiKeys(input)).toEqual(expected);
  });

  test.each<[string, RegExp]>([
    ['a:-1', /"a:-1" needs a non-negative number of credits/],
    ['a:x', /"a:x" needs a non-negative number of credits/],
    ['a:Infinity', /"a:Infinity" needs a non-negative number of credits/],
    ['good:5,a:-1', /"a:-1" needs a non-negative number of credits/],
    [':5', /bad key in ":5"/],
    ['', /INFERY_API_KEYS is set but names no key/],
    [' , ,', /INFERY_API_KEYS is set but names no key/],
  ])('%j throws a clear message', (input, message) => {
    expect(() => parseApiKeys(input)).toThrow(message);
    expect(() => parseApiKeys(input)).toThrow(/INFERY_API_KEYS/);
  });

  // Regression: Number('') is 0, so "a:" used to be accepted as a key with 0 credits.
  test('"a:" (empty credits after the colon) throws instead of meaning 0 credits', () => {
    expect(() => parseApiKeys('a:')).toThrow(/"a:" needs a non-negative number of credits/);
  });
});

// ---------------------------------------------------------------------------------------------------------
// 2. CreditLedger / priceOf
// ---------------------------------------------------------------------------------------------------------

describe('priceOf', () => {
  const usage = (prompt_tokens: number, completion_tokens: number) => ({ prompt_tokens, completion_tokens });

  test('the mock provider\'s models have prices of their own, credits per 1K tokens', () => {
    expect(MOCK_PRICES.mock).toEqual({ prompt: 10, completion: 30 });
    expect(MOCK_PRICES['mock-embed']).toEqual({ prompt: 1, completion: 0 });
  });

  test.each<[string, number, number, number]>([
    // the catalog at $0.0001 a credit: gpt-4o $2.50 / $10 per 1M tokens = 25 / 100 credits per 1K
    ['gpt-4o', 1000, 0, 25],
    ['gpt-4o', 0, 1000, 100],
    ['gpt-4o', 1000, 1000, 125],
    ['gpt-4o', 2000, 500, 100],
    ['gpt-4o-mini', 1000, 1000, 7.5],
    ['gpt-4o-mini', 1, 0, 0.002], // 1.5 thousandths → rounded up
    ['gpt-4o-mini', 3, 1, 0.011], // 4.5 + 6 = 10.5 thousandths → 11
    ['gpt-4o-mini', 2, 0, 0.003],
    ['gpt-4o', 1, 1, 0.125],
    ['mock-1', 1000, 1000, 40], // the mock's own: 10 + 30
    ['mock-slow', 7, 3, 0.16], // 70 + 90 thousandths
    ['mock-1', 0, 0, 0],
  ])('%s, %d prompt + %d completion tokens → %d credits', (model, prompt, completion, expected) => {
    expect(priceOf(model, usage(prompt, completion))).toBe(expected);
  });

  test.each([
    ['negative', -1000, 10],
    ['NaN', NaN, 10],
    ['Infinity', 10, Infinity],
    ['1e308 (not a safe integer)', 1e308, 0],
    ['fractional', 1.5, 2],
  ])('bad counts (%s) throw a RangeError, never price as 0', (_name, prompt, completion) => {
    expect(() => priceOf('gpt-4o', usage(prompt, completion))).toThrow(RangeError);
    expect(() => priceOf('mock-1', usage(prompt, completion))).toThrow(RangeError);
  });

  test.each([
    ['gpt-4o-2024-08-06', 'gpt-4o'],
    ['GPT-4o', 'gpt-4o'],
    [' gpt-4o ', 'gpt-4o'],
    ['gpt-4o-mini-2024-07-18', 'gpt-4o-mini'],
    ['gpt-4.1-mini-2025-04-14', 'gpt-4.1-mini'],
    ['claude-sonnet-4-5-20250929', 'claude-sonnet-4-5'],
  ])('a model named %s is priced as the catalog\'s %s (dated versions and spellings need no edit)', (model, as) => {
    expect(BUILT_IN_PRICES.sourceOf(model)).toMatchObject({ source: 'catalog', id: as });
  });

  test.each(['some-unknown-model', 'gpt-4o-minix-9', 'constructor', 'toString', '__proto__', ''])('a model nothing prices (%j) is refused, never priced at 0', (model) => {
    expect(BUILT_IN_PRICES.knows(model)).toBe(false);
    expect(() => priceOf(model, usage(1000, 1000))).toThrow(UnpricedModelError);
  });

  test('a missing completion count throws instead of pricing the prompt alone', () => {
    expect(() => priceOf('gpt-4o', { prompt_tokens: 5000 } as unknown as Usage)).toThrow(RangeError);
  });

  test('results are whole thousandths, never below the exact price', () => {
    const list = { 'gpt-4o': [25, 100], 'gpt-4o-mini': [1.5, 6], 'mock-1': [10, 30] } as const;
    for (let p = 0; p < 60; p += 7) {
      for (let c = 0; c < 60; c += 5) {
        for (const [model, [prompt, completion]] of Object.entries(list)) {
          const credits = priceOf(model, usage(p, c));
          expect(Math.abs(credits * 1000 - Math.round(credits * 1000))).toBeLessThan(1e-6);
          const exact = (p * prompt + c * completion) / 1000;
          expect(credits).toBeGreaterThanOrEqual(exact - 1e-12);
          expect(credits - exact).toBeLessThan(0.001);
        }
      }
    }
  });

  test('a host price list wins over the catalog, with its own default for every other model', () => {
    const prices = new PriceList({ default: { prompt: 1, completion: 2 }, cheap: { prompt: 0.5, completion: 0.5 }, 'gpt-4o': { prompt: 30, completion: 120 } });
    expect(priceOf('cheap', usage(4, 4), prices)).toBe(0.004);
    expect(priceOf('cheap', usage(1, 0), prices)).toBe(0.001);
    expect(priceOf('other', usage(100, 100), prices)).toBe(0.3);
    expect(priceOf('gpt-4o-2024-08-06', usage(1000, 1000), prices)).toBe(150);
    expect(priceOf('gpt-4o-mini', usage(1000, 1000), prices)).toBe(7.5); // still the catalog's
  });

  // Regression: rounding up on a float product (100 * 0.07 = 7.000000000000001) used to add a thousandth.
  test('a custom price that is not binary-exact is not over-rounded', () => {
    const prices = new PriceList({ default: { prompt: 0.07, completion: 0 } });
    expect(priceOf('m', usage(100, 0), prices)).toBe(0.007);
  });
});

describe('CreditLedger (reserve, then settle)', () => {
  test('knows its keys', () => {
    const ledger = new CreditLedger({ a: 10, z: 0 });
    expect(ledger.has('a')).toBe(true);
    expect(ledger.has('z')).toBe(true);
    expect(ledger.has('nope')).toBe(false);
    expect(ledger.balanceOf('a')).toEqual({ balance: 10, held: 0, used: 0, by_model: {} });
    expect(ledger.balanceOf('nope')).toBeUndefined();
    expect(() => ledger.reserve('nope', 'h', 1)).toThrow(/unknown key/);
    expect(() => ledger.settle('nope', 'h', 'm', 1)).toThrow(/unknown key/);
  });

  test('a hold comes out of the available balance; settling charges the real cost and releases the rest', () => {
    const ledger = new CreditLedger({ a: 10 });
    expect(ledger.reserve('a', 'g1', 4)).toBe(true);
    expect(ledger.balanceOf('a')).toMatchObject({ balance: 6, held: 4, used: 0 });
    expect(ledger.reserve('a', 'g2', 6.001)).toBe(false); // more than is available: nothing held
    expect(ledger.balanceOf('a')).toMatchObject({ balance: 6, held: 4, used: 0 });
    expect(ledger.settle('a', 'g1', 'm', 1.25)).toEqual({ charged: 1.25, unpaid: 0 });
    expect(ledger.balanceOf('a')).toEqual({ balance: 8.75, held: 0, used: 1.25, by_model: { m: 1.25 } });
  });

  test('settling is idempotent by hold id: a retried settle never charges twice', () => {
    const ledger = new CreditLedger({ a: 10 });
    ledger.reserve('a', 'g1', 2);
    expect(ledger.settle('a', 'g1', 'm', 1)).toEqual({ charged: 1, unpaid: 0 });
    expect(ledger.settle('a', 'g1', 'm', 1)).toEqual({ charged: 1, unpaid: 0 });
    expect(ledger.settle('a', 'g1', 'm', 5)).toEqual({ charged: 1, unpaid: 0 });
    expect(ledger.balanceOf('a')).toMatchObject({ balance: 9, held: 0, used: 1 });
    expect(() => ledger.reserve('a', 'g1', 1)).toThrow(/exists already/);
  });

  test('an unserved request (charge 0) only releases its hold', () => {
    const ledger = new CreditLedger({ a: 3 });
    ledger.reserve('a', 'g1', 3);
    expect(ledger.balanceOf('a')).toMatchObject({ balance: 0, held: 3 });
    expect(ledger.settle('a', 'g1', 'm', 0)).toEqual({ charged: 0, unpaid: 0 });
    expect(ledger.balanceOf('a')).toEqual({ balance: 3, held: 0, used: 0, by_model: {} });
  });

  test('a cost above the hold takes what is available, never below zero, and reports the rest as unpaid', () => {
    const ledger = new CreditLedger({ a: 1 });
    ledger.reserve('a', 'g1', 0.5);
    expect(ledger.settle('a', 'g1', 'm', 0.8)).toEqual({ charged: 0.8, unpaid: 0 }); // the hold plus what was free
    ledger.reserve('a', 'g2', 0.2);
    expect(ledger.settle('a', 'g2', 'm', 2.5)).toEqual({ charged: 0.2, unpaid: 2.3 });
    expect(ledger.balanceOf('a')).toMatchObject({ balance: 0, held: 0, used: 1 });
    expect(ledger.reserve('a', 'g3', 0.001)).toBe(false);
  });

  test('balance + held + used equals the starting credits after many holds and settles, fractional ones included', () => {
    const start = 5000;
    const ledger = new CreditLedger({ a: start, b: 1 });
    let chargedMilli = 0;
    const fixed = [0.001, 0.007, 0.1, 0.2, 0.3, 1.5, 0.333, 2.999];
    const open: string[] = [];
    for (let i = 0; i < 2000; i++) {
      const credits =
        i % 3 === 0
          ? fixed[i % fixed.length]!
          : priceOf(['gpt-4o', 'gpt-4o-mini', 'mock-1'][i % 3]!, { prompt_tokens: (i * 37) % 513, completion_tokens: (i * 11) % 97 });
      expect(ledger.reserve('a', `g${i}`, credits + 0.5)).toBe(true);
      open.push(`g${i}`);
      if (i % 2 === 1) {
        // settle two at a time, the older one first
        for (const id of open.splice(0, 2)) {
          const n = Number(id.slice(1));
          const cost = n === i ? credits : credits / 2;
          const { charged } = ledger.settle('a', id, 'm', Math.round(cost * 1000) / 1000);
          chargedMilli += milli(charged);
        }
      }
      const mid = ledger.balanceOf('a')!;
      expect(milli(mid.balance) + milli(mid.held) + milli(mid.used)).toBe(start * 1000);
      expect(mid.balance).toBeGreaterThanOrEqual(0);
    }
    const { balance, held, used } = ledger.balanceOf('a')!;
    expect(held).toBe(0);
    expect(milli(used)).toBe(chargedMilli);
    expect(milli(balance) + milli(used)).toBe(start * 1000);
    expect(ledger.balanceOf('b')).toMatchObject({ balance: 1, held: 0, used: 0 });
  });

  test('0.1 + 0.2 style charges do not drift', () => {
    const ledger = new CreditLedger({ a: 1 });
    for (let i = 0; i < 10; i++) {
      ledger.reserve('a', `g${i}`, 0.1);
      ledger.settle('a', `g${i}`, 'm', 0.1);
    }
    expect(ledger.balanceOf('a')).toMatchObject({ balance: 0, held: 0, used: 1 });
    expect(ledger.reserve('a', 'more', 0.001)).toBe(false);
  });

  test('bad amounts are refused, never turned into 0', () => {
    const ledger = new CreditLedger({ a: 1 });
    for (const bad of [NaN, Infinity, -1]) {
      expect(() => ledger.reserve('a', 'h', bad)).toThrow(RangeError);
      expect(() => ledger.settle('a', 'h', 'm', bad)).toThrow(RangeError);
    }
    expect(ledger.balanceOf('a')).toMatchObject({ balance: 1, held: 0, used: 0 });
  });
});

// ---------------------------------------------------------------------------------------------------------
// 3–6. The app and the mock provider over real sockets
// ---------------------------------------------------------------------------------------------------------

describe('example app against the built-in mock provider', () => {
  let mock: MockProvider;

  beforeAll(async () => {
    mock = await startMockProvider();
  });

  afterAll(async () => {
    await mock.close();
  });

  test('a streamed generation is charged, and /v1/credits shows exactly what the client was told', async () => {
    const start = 100;
    const gw = await startExampleApp({ upstreamURL: mock.url, apiKeys: { k1: start, other: 7 } });
    try {
      const result = await postSse(`${gw.url}/v1/chat/completions`, chatBody('Hello there'), { authorization: 'Bearer k1' });
      expect(result.status).toBe(200);
      expect(result.headers['content-type']).toMatch(/^text\/event-stream/);

      const events = result.events;
      expect(events.length).toBeGreaterThan(5);
      expect(events[events.length - 1]!.data).toBe('[DONE]');
      const chunks = chunksOf(result);
      const contentChunks = chunks.filter((c) => typeof c.choices?.[0]?.delta.content === 'string' && c.choices[0].delta.content !== '');
      expect(contentChunks.length).toBe(8); // max_tokens: 8 words
      expect(contentOf(chunks)).toBe('You said: "Hello there". Streaming lets a reader');
      expect(chunks.some((c) => c.choices?.[0]?.finish_reason === 'stop')).toBe(true);

      const creditsChunk = JSON.parse(events[events.length - 2]!.data) as Chunk;
      expect(typeof creditsChunk.credits_used).toBe('number');
      const creditsUsed = creditsChunk.credits_used!;
      expect(creditsUsed).toBeGreaterThan(0);
      expect(creditsChunk.usage).toBeDefined();
      expect(creditsChunk.usage!.completion_tokens).toBe(8);
      // mock-1 is not in the price table: the default price applies to the provider's usage.
      expect(creditsUsed).toBe(priceOf('mock-1', creditsChunk.usage!));
      expect(chunks.filter((c) => c.credits_used !== undefined)).toHaveLength(1);

      const credits = await request(gw.app).get('/v1/credits').set('Authorization', 'Bearer k1');
      expect(credits.status).toBe(200);
      const { balance, used } = (credits.body as { data: { balance: number; used: number } }).data;
      expect(used).toBe(creditsUsed);
      expect(milli(balance)).toBe(start * 1000 - milli(creditsUsed));
      expect(balance).toBeCloseTo(start - used, 9);

      // The other key was not charged.
      const other = await request(gw.app).get('/v1/credits').set('Authorization', 'Bearer other');
      expect(other.body).toEqual({ data: { balance: 7, held: 0, used: 0, by_model: {} } });
    } finally {
      await gw.close();
    }
  });

  // Regression, end to end: such a model used to be charged NaN and poison the key's account. Now nothing prices
  // it: it is refused before the call, nothing held or charged.
  test.each(['constructor', 'some-unknown-model'])('a model nothing prices (%j) is refused with 400 model_not_priced before the call', async (model) => {
    const gw = await startExampleApp({ upstreamURL: mock.url, apiKeys: { k: 10 } });
    try {
      const result = await request(gw.app).post('/v1/chat/completions').set('Authorization', 'Bearer k').send(chatBody('Hi', { model }));
      expect(result.status).toBe(400);
      expect(result.body.error).toMatchObject({ code: 'model_not_priced', type: 'invalid_request_error', param: 'model' });
      expect(result.body.error.message).toContain(`\`${model}\``);
      const credits = await request(gw.app).get('/v1/credits').set('Authorization', 'Bearer k');
      expect(credits.body.data).toEqual({ balance: 10, held: 0, used: 0, by_model: {} });
    } finally {
      await gw.close();
    }
  });

  test('a key with 0 credits gets 402 insufficient_quota and nothing goes upstream', async () => {
    let upstreamRequests = 0;
    const counter = await listen((req, res) => {
      upstreamRequests += 1;
      req.resume();
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end('{"error":{"message":"should not be called","type":"server_error","code":"unexpected"}}');
    });
    const gw = createApp({ upstreamURL: `${counter.url}/v1`, apiKeys: parseApiKeys('k0:0') });
    try {
      for (const stream of [true, false]) {
        const res = await request(gw.app)
          .post('/v1/chat/completions')
          .set('Authorization', 'Bearer k0')
          .send(chatBody('Hello', { stream }));
        expect(res.status).toBe(402);
        expect(res.headers['content-type']).toMatch(/^application\/json/);
        expectOpenAIError(res.body, 'insufficient_quota');
      }
      expect(upstreamRequests).toBe(0);

      const credits = await request(gw.app).get('/v1/credits').set('Authorization', 'Bearer k0');
      expect(credits.status).toBe(200);
      expect(credits.body).toEqual({ data: { balance: 0, held: 0, used: 0, by_model: {} } });
    } finally {
      gw.gateway.close();
      await counter.close();
    }
  });

  test('a key whose balance is all used or held is refused too, against the real mock', async () => {
    const gw = await startExampleApp({ upstreamURL: mock.url, apiKeys: { k: 1 } });
    try {
      gw.ledger.reserve('k', 'elsewhere', 1); // e.g. a generation under way holds everything
      const res = await request(gw.app).post('/v1/chat/completions').set('Authorization', 'Bearer k').send(chatBody('Hi'));
      expect(res.status).toBe(402);
      expectOpenAIError(res.body, 'insufficient_quota');
      expect(gw.ledger.balanceOf('k')).toMatchObject({ balance: 0, held: 1, used: 0 });
    } finally {
      await gw.close();
    }
  });

  test('no key or an unknown key → 401 in OpenAI shape', async () => {
    const gw = createApp({ upstreamURL: mock.url, apiKeys: { k1: 10 } });
    try {
      const none = await request(gw.app).get('/v1/credits');
      expect(none.status).toBe(401);
      expectOpenAIError(none.body, 'invalid_api_key');

      const wrong = await request(gw.app).get('/v1/credits').set('Authorization', 'Bearer not-a-key');
      expect(wrong.status).toBe(401);
      expectOpenAIError(wrong.body, 'invalid_api_key');

      const chat = await request(gw.app).post('/v1/chat/completions').send(chatBody('Hi'));
      expect(chat.status).toBe(401);
      expectOpenAIError(chat.body, 'invalid_api_key');

      expect(gw.ledger.balanceOf('k1')).toEqual({ balance: 10, held: 0, used: 0, by_model: {} });
    } finally {
      gw.gateway.close();
    }
  });

  test('8 concurrent streams on one key: the credits the clients saw add up to `used` exactly', async () => {
    const start = 50;
    const gw = await startExampleApp({ upstreamURL: mock.url, apiKeys: { k: start } });
    try {
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          // Different prompt lengths, so the eight charges differ.
          postSse(`${gw.url}/v1/chat/completions`, chatBody(`request ${i} ${'word '.repeat(i * 3)}`), { authorization: 'Bearer k' }),
        ),
      );
      const seen: number[] = [];
      for (const result of results) {
        expect(result.status).toBe(200);
        expect(result.events[result.events.length - 1]!.data).toBe('[DONE]');
        const creditsChunk = JSON.parse(result.events[result.events.length - 2]!.data) as Chunk;
        expect(typeof creditsChunk.credits_used).toBe('number');
        seen.push(creditsChunk.credits_used!);
      }
      expect(new Set(seen).size).toBeGreaterThan(1);

      const { balance, used } = gw.ledger.balanceOf('k')!;
      const seenMilli = seen.reduce((sum, c) => sum + milli(c), 0);
      expect(milli(used)).toBe(seenMilli);
      expect(Math.abs(used * 1000 - seenMilli)).toBeLessThan(1e-6);
      expect(milli(balance) + milli(used)).toBe(start * 1000);
      expect(balance + used).toBeCloseTo(start, 9);

      const credits = await request(gw.app).get('/v1/credits').set('Authorization', 'Bearer k');
      expect(credits.body).toEqual({ data: { balance, held: 0, used, by_model: { 'mock-1': used } } });
    } finally {
      await gw.close();
    }
  });

  test('compression() and express.json() do not buffer or compress the stream', async () => {
    const gw = await startExampleApp({ upstreamURL: mock.url, apiKeys: { k: 100 } });
    try {
      const result = await postSse(
        `${gw.url}/v1/chat/completions`,
        chatBody('Stream me', { max_tokens: 12 }),
        { authorization: 'Bearer k', 'accept-encoding': 'gzip, deflate' },
      );
      expect(result.status).toBe(200);
      expect(result.headers['content-type']).toMatch(/^text\/event-stream/);
      expect(result.headers['content-encoding']).toBeUndefined();
      // The body is plain SSE text, not gzip bytes.
      expect(result.raw.startsWith('data: ') || result.raw.startsWith(':')).toBe(true);

      const times = result.events.map((e) => e.at);
      expect(times.length).toBeGreaterThan(10);
      const first = times[0]!;
      const last = times[times.length - 1]!;
      expect(last - first).toBeGreaterThan(200);
      // Events arrive spread out, not in one burst at the end.
      expect(new Set(times).size).toBeGreaterThan(5);
      expect(contentOf(chunksOf(result)).split(' ')).toHaveLength(12);
    } finally {
      await gw.close();
    }
  });

  describe('the mock provider itself', () => {
    const direct = (body: Record<string, unknown>): Promise<SseResult> => postSse(`${mock.url}/chat/completions`, body);

    test('sends usage in a stream only when stream_options.include_usage is true', async () => {
      const [without, withFalse, withUsage] = await Promise.all([
        direct(chatBody('Hi', { max_tokens: 5 })),
        direct(chatBody('Hi', { max_tokens: 5, stream_options: { include_usage: false } })),
        direct(chatBody('Hi', { max_tokens: 5, stream_options: { include_usage: true } })),
      ]);

      for (const result of [without, withFalse]) {
        expect(result.status).toBe(200);
        expect(result.events[result.events.length - 1]!.data).toBe('[DONE]');
        const chunks = chunksOf(result);
        expect(chunks.every((c) => !('usage' in c))).toBe(true);
        expect(contentOf(chunks).split(' ')).toHaveLength(5);
      }

      expect(withUsage.status).toBe(200);
      const chunks = chunksOf(withUsage);
      const usageChunks = chunks.filter((c) => c.usage !== null && c.usage !== undefined);
      expect(usageChunks).toHaveLength(1);
      const usageChunk = usageChunks[0]!;
      // Like OpenAI: the usage chunk is the last one before [DONE], with empty choices; others carry usage: null.
      expect(chunks[chunks.length - 1]).toBe(usageChunk);
      expect(usageChunk.choices).toEqual([]);
      expect(usageChunk.usage!.completion_tokens).toBe(5);
      expect(usageChunk.usage!.prompt_tokens).toBeGreaterThan(0);
      expect(usageChunk.usage!.total_tokens).toBe(usageChunk.usage!.prompt_tokens + 5);
      expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
    });

    test('with tools it streams tool_call deltas ending in finish_reason tool_calls', async () => {
      const result = await direct(
        chatBody('Weather in Paris?', {
          stream_options: { include_usage: true },
          tools: [
            {
              type: 'function',
              function: {
                name: 'get_weather',
                parameters: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' }, metric: { type: 'boolean' } } },
              },
            },
          ],
        }),
      );
      expect(result.status).toBe(200);
      const chunks = chunksOf(result);
      const deltas = chunks.flatMap((c) => c.choices ?? []).map((choice) => choice.delta);
      const toolDeltas = deltas.flatMap((d) => (Array.isArray(d.tool_calls) ? (d.tool_calls as Array<Record<string, unknown>>) : []));
      expect(toolDeltas.length).toBeGreaterThan(2);
      expect(toolDeltas[0]).toMatchObject({ index: 0, id: 'call_mock0', type: 'function', function: { name: 'get_weather' } });
      expect(toolDeltas.every((t) => t.index === 0)).toBe(true);
      expect(deltas.every((d) => d.content === undefined || d.content === '')).toBe(true);

      const args = toolDeltas.map((t) => ((t.function as { arguments?: string } | undefined)?.arguments ?? '')).join('');
      expect(JSON.parse(args)).toEqual({ city: 'city value', days: 42, metric: true });

      const finishReasons = chunks.flatMap((c) => c.choices ?? []).map((c) => c.finish_reason).filter((r) => r !== null);
      expect(finishReasons).toEqual(['tool_calls']);
      const choiceChunks = chunks.filter((c) => (c.choices ?? []).length > 0);
      expect(choiceChunks[choiceChunks.length - 1]!.choices![0]!.finish_reason).toBe('tool_calls');
      expect(result.events[result.events.length - 1]!.data).toBe('[DONE]');
    });

    test('mock-429 answers 429 rate_limit_exceeded, streaming or not', async () => {
      for (const stream of [true, false]) {
        const res = await request(mock.url).post('/chat/completions').send(chatBody('Hi', { model: 'mock-429', stream }));
        expect(res.status).toBe(429);
        expectOpenAIError(res.body, 'rate_limit_exceeded');
      }
    });
  });
});
