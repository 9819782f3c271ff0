import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { countTokens } from 'gpt-tokenizer';
import { createApp, type AppConfig } from '../example-app/app';
import { priceOf, type Balance } from '../example-app/ledger';
import { startMockProvider, type MockProvider } from '../example-app/mock-provider';
import { InferyError, type ReserveContext, type ReserveResult } from '../lib';
import { estimatePrompt } from '../lib/ledgers/billing/prompt-estimate';
import { textsCounter } from '../lib/core/usage';

const counter = textsCounter(undefined, (err) => {
  throw err;
});
/** The prompt bound the gateway reserves for `body` (the strict bound for a short prompt, else the o200k count plus 10% and 16). */
const promptTokenBound = async (body: Record<string, unknown>): Promise<number> => (await estimatePrompt(body, (texts) => counter(texts, 'mock-1'))).bound;
import { KEY, startGateway, type Account, type TestGateway } from './helpers/gateway';
import { refusedURL, ScriptedProvider, sleep, textSteps, type Reply } from './helpers/provider';
import { postStream, waitFor } from './helpers/sse-client';

// Reserve, then settle: the worst case is held before the upstream call, and exactly one `meter` call settles it.

const HELLO = [{ role: 'user', content: 'Say hello' }];
const milli = (credits: number): number => Math.round(credits * 1000);
const bodyOf = (extra: Record<string, unknown> = {}) => ({ model: 'mock-1', stream: true, messages: HELLO, ...extra });

async function postJson(url: string, body: unknown, key = KEY): Promise<{ status: number; json: any }> {
  const res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: await res.json() };
}

async function startExampleApp(config: AppConfig) {
  const created = createApp({ maxConcurrent: 0, requestsPerMinute: 0, ...config });
  const server = http.createServer(created.app);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const credits = async (key: string): Promise<Balance> => ((await (await fetch(`${url}/v1/credits`, { headers: { authorization: `Bearer ${key}` } })).json()) as { data: Balance }).data;
  const close = async (): Promise<void> => {
    created.gateway.close();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  };
  return { ...created, url, credits, close };
}

let provider: ScriptedProvider;
let gw: TestGateway;
let seen: Array<ReserveContext<Account>>;
let decide: (ctx: ReserveContext<Account>) => ReserveResult | Promise<ReserveResult>;
const holdOf = (ctx: ReserveContext<Account>) => ({ hold: `hold-${ctx.generationId}` });

beforeAll(async () => {
  provider = await new ScriptedProvider().start();
  gw = await startGateway(provider.url, { upstreamTimeout: 300, reserve: (ctx) => (seen.push(ctx), decide(ctx)) });
});
afterAll(async () => {
  await gw.close();
  await provider.stop();
});
beforeEach(() => {
  seen = [];
  decide = holdOf;
  gw.meterCalls.length = 0;
  provider.requests.length = 0;
  provider.reply = () => ({ steps: textSteps(['Hello', ' world'], { usage: [12, 2] }) });
});

describe('the worst case, computed before the upstream call', () => {
  test('no cap: reserve sees defaultMaxTokens (4096), which is sent upstream as max_completion_tokens', async () => {
    const res = await postStream(gw.url, bodyOf());
    expect(res.status).toBe(200);
    const prompt = (await promptTokenBound(bodyOf()));
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({
      account: { id: 'acct-1' }, generationId: res.headers['x-generation-id'], path: '/chat/completions', model: 'mock-1', body: bodyOf(),
      worstCase: { prompt_tokens: prompt, completion_tokens: 4096, total_tokens: prompt + 4096 }, maxCompletionTokens: 4096, capSource: 'default', choices: 1,
      req: expect.objectContaining({ method: 'POST' }),
    });
    expect(provider.last.json).toMatchObject({ max_completion_tokens: 4096 });
    expect(provider.last.json).not.toHaveProperty('max_tokens');
    await waitFor(() => gw.meterCalls.length === 1);
    expect(gw.meterCalls[0]).toMatchObject({ outcome: 'completed', reservation: `hold-${seen[0]!.generationId}`, worstCase: seen[0]!.worstCase });
  });

  test.each([
    ['prose with accents, CJK and emoji', 'Tokenizers merge common words; rare ones split: naïve café, 東京タワー, 🚀🚀, x=42*y. '.repeat(40)],
    ['letters and digits interleaved (one token per byte)', 'a1b2c3d4e5'.repeat(100)],
    ['rare scripts (about a token per byte)', Array.from({ length: 500 }, (_, i) => String.fromCodePoint(0x13000 + i)).join('')],
    ['random printable ASCII', Array.from({ length: 3000 }, (_, i) => String.fromCharCode(33 + ((i * 7919) % 94))).join('')],
  ])('the prompt estimate is generous, never below what the text makes for OpenAI tokenizers: %s', async (_name, text) => {
    await postStream(gw.url, bodyOf({ messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: text }] }));
    expect(seen[0]!.worstCase.prompt_tokens).toBeGreaterThanOrEqual(countTokens(text) + countTokens('Be brief.'));
  });

  test('a client max_tokens stays max_tokens upstream, and n multiplies the completion worst case', async () => {
    await postStream(gw.url, bodyOf({ max_tokens: 50, n: 3 }));
    expect(seen[0]).toMatchObject({ capSource: 'max_tokens', maxCompletionTokens: 50, choices: 3, worstCase: { completion_tokens: 150 } });
    expect(provider.last.json).toMatchObject({ max_tokens: 50, n: 3 });
    expect(provider.last.json).not.toHaveProperty('max_completion_tokens');
  });

  test('max_completion_tokens is the cap when set; defaultMaxTokens replaces 4096', async () => {
    await postStream(gw.url, bodyOf({ max_completion_tokens: 70 }));
    expect(seen[0]).toMatchObject({ capSource: 'max_completion_tokens', maxCompletionTokens: 70, worstCase: { completion_tokens: 70 } });
    expect(provider.last.json).toMatchObject({ max_completion_tokens: 70 });
    const small = await startGateway(provider.url, { defaultMaxTokens: 300 });
    try {
      await postStream(small.url, bodyOf());
      expect(provider.last.json).toMatchObject({ max_completion_tokens: 300 });
    } finally {
      await small.close();
    }
  });

  test.each([
    ['max_tokens', 0], ['max_tokens', -1], ['max_completion_tokens', 1.5], ['max_completion_tokens', '10'], ['n', 129], ['n', 0],
  ])('%s = %j is 400 invalid_value with its param, and nothing goes upstream', async (param, value) => {
    const res = await postJson(gw.url, bodyOf({ [param]: value }));
    expect(res.status).toBe(400);
    expect(res.json.error).toMatchObject({ code: 'invalid_value', param });
    expect(seen).toHaveLength(0);
    expect(provider.requests).toHaveLength(0);
    expect(gw.meterCalls).toHaveLength(0);
  });
});

describe('what reserve returns', () => {
  test('false is 402 insufficient_quota: nothing upstream, and meter is not called (nothing was held)', async () => {
    decide = () => false;
    const res = await postJson(gw.url, bodyOf());
    expect(res.status).toBe(402);
    expect(res.json.error.code).toBe('insufficient_quota');
    expect(provider.requests).toHaveLength(0);
    expect(gw.meterCalls).toHaveLength(0);
  });

  test('a thrown InferyError answers with its status and code', async () => {
    decide = () => {
      throw new InferyError(403, 'account_suspended', 'This account is suspended.');
    };
    const res = await postJson(gw.url, bodyOf());
    expect([res.status, res.json.error.code]).toEqual([403, 'account_suspended']);
    expect(provider.requests).toHaveLength(0);
    expect(gw.meterCalls).toHaveLength(0);
  });

  test('{ hold, maxCompletionTokens } lowers the cap sent upstream, in the field the client used', async () => {
    decide = () => ({ hold: 'h-7', maxCompletionTokens: 10 });
    await postStream(gw.url, bodyOf({ max_tokens: 100 }));
    expect(provider.last.json).toMatchObject({ max_tokens: 10 });
    await postStream(gw.url, bodyOf());
    expect(provider.last.json).toMatchObject({ max_completion_tokens: 10 });
    await waitFor(() => gw.meterCalls.length === 2);
    for (const call of gw.meterCalls) expect(call).toMatchObject({ reservation: 'h-7', worstCase: { completion_tokens: 10 } });
  });

  test('lowering the cap never raises a field the client set lower (both max_tokens and max_completion_tokens sent)', async () => {
    decide = () => ({ hold: 'h', maxCompletionTokens: 50 });
    await postStream(gw.url, bodyOf({ max_tokens: 10, max_completion_tokens: 100 }));
    expect(seen[0]).toMatchObject({ maxCompletionTokens: 100 }); // the larger of the two is the worst case
    expect(provider.last.json).toMatchObject({ max_completion_tokens: 50, max_tokens: 10 });
  });

  test('any other value is the hold, given back as MeterEvent.reservation', async () => {
    const hold = { ledgerRow: 42 };
    decide = () => hold;
    await postStream(gw.url, bodyOf());
    await waitFor(() => gw.meterCalls.length === 1);
    expect(gw.meterCalls[0]!.reservation).toBe(hold);
  });
});

describe('meter settles every reserved request exactly once, on every path', () => {
  const words = Array.from({ length: 30 }, (_, i) => ` w${i}`);
  test.each<[string, Reply, number | undefined, string, number]>([
    ['completed', { steps: textSteps(['Hi']) }, undefined, 'completed', 200],
    ['cancelled: the client left mid-stream', { steps: textSteps(words, { gap: 30 }) }, 3, 'cancelled', 200],
    ['failed mid-stream', { steps: [...textSteps(['a', 'b']).slice(0, 3), { wait: 50 }, { destroy: true }] }, undefined, 'failed', 200],
    ['unserved: upstream 429 before the first byte', { status: 429, json: { error: { message: 'slow down', code: 'rate_limit_exceeded' } } }, undefined, 'unserved', 429],
    ['unserved: upstream 500 before the first byte', { status: 500, json: { error: { message: 'boom' } } }, undefined, 'unserved', 502],
    ['unserved: upstream timeout', { delay: Infinity }, undefined, 'unserved', 504],
  ])('%s', async (_name, reply, abortAfter, outcome, status) => {
    provider.reply = () => reply;
    const res = await postStream(gw.url, bodyOf(), { onEvent: (_d, i) => (abortAfter !== undefined && i + 1 >= abortAfter ? 'abort' : undefined) });
    if (outcome !== 'unserved') expect(res.status).toBe(status);
    else expect(res.status).toBeGreaterThanOrEqual(400);
    await waitFor(() => gw.meterCalls.length === 1, 3000, 'meter');
    const call = gw.meterCalls[0]!;
    expect(call).toMatchObject({ outcome, generationId: seen[0]!.generationId, reservation: `hold-${seen[0]!.generationId}` });
    if (outcome === 'unserved') expect(call.usage).toEqual({ prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, classes: { input_tokens: 0, uncached_input_tokens: 0, cache_read_tokens: 0, cache_write_tokens: 0, output_tokens: 0, output_reasoning_tokens: 0 } });
    else expect(call.usage.completion_tokens).toBeGreaterThan(0);
    expect(gw.logs.filter((l) => l.generationId === call.generationId && l.msg === 'infery-stream request')).toHaveLength(1);
  });

  test('unserved: upstream unreachable', async () => {
    const meterCalls: unknown[] = [];
    const down = await startGateway(await refusedURL(), { reserve: () => 'h', meter: (e) => void meterCalls.push(e) });
    try {
      expect((await postJson(down.url, bodyOf())).status).toBe(502);
      await waitFor(() => meterCalls.length === 1);
      expect(meterCalls[0]).toMatchObject({ outcome: 'unserved', reservation: 'h', usage: { total_tokens: 0 } });
    } finally {
      await down.close();
    }
  });

  test('unserved: the client left while reserve ran, before the upstream call', async () => {
    let release = (): void => {};
    decide = (ctx) => new Promise((resolve) => (release = () => resolve(holdOf(ctx))));
    const req = http.request(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' } });
    req.on('error', () => {});
    req.end(JSON.stringify(bodyOf()));
    await waitFor(() => seen.length === 1, 3000, 'reserve');
    const socketClosed = new Promise((r) => seen[0]!.req.socket.once('close', r));
    req.destroy();
    await socketClosed;
    release();
    await waitFor(() => gw.meterCalls.length === 1, 3000, 'meter');
    expect(gw.meterCalls[0]).toMatchObject({ outcome: 'unserved', usage: { total_tokens: 0 }, reservation: `hold-${seen[0]!.generationId}` });
    expect(provider.requests).toHaveLength(0);
  });
});

describe('example app: hold what is available, or lower a default cap to what fits', () => {
  test('a capped request above the balance is 402 with its price; an uncapped one is lowered to fit', async () => {
    const app = await startExampleApp({ upstreamURL: provider.url, apiKeys: { poor: 1, broke: 0.1 } });
    try {
      const worst = priceOf('mock-1', { prompt_tokens: (await promptTokenBound(bodyOf())), completion_tokens: 100 });
      const refused = await postJson(app.url, bodyOf({ max_tokens: 100 }), 'poor');
      expect(refused.status).toBe(402);
      expect(refused.json.error.code).toBe('insufficient_quota');
      expect(refused.json.error.message).toContain(`can cost up to ${worst} credits`);
      expect(refused.json.error.message).toContain('1 are available');
      expect(provider.requests).toHaveLength(0);

      const served = await postStream(app.url, bodyOf(), { headers: { authorization: 'Bearer poor' } });
      expect(served.status).toBe(200);
      const promptCost = priceOf('mock-1', { prompt_tokens: (await promptTokenBound(bodyOf())), completion_tokens: 0 });
      const fits = Math.floor(((1 - promptCost) * 1000) / 30);
      expect(fits).toBeGreaterThanOrEqual(16);
      expect(provider.last.json).toMatchObject({ max_completion_tokens: fits });
      await waitFor(() => app.ledger.balanceOf('poor')!.held === 0);
      // the provider reported 12 prompt and 2 completion tokens: 0.12 + 0.06 credits
      expect(await app.credits('poor')).toEqual({ balance: 0.82, held: 0, used: 0.18, by_model: { 'mock-1': 0.18 } });

      const tooPoor = await postJson(app.url, bodyOf(), 'broke'); // not even 16 completion tokens fit
      expect([tooPoor.status, tooPoor.json.error.code]).toEqual([402, 'insufficient_quota']);
      expect(provider.requests).toHaveLength(1);
    } finally {
      await app.close();
    }
  });
});

// Invariants under load: many concurrent requests on ONE key, random cancellations, the built-in mock provider.

/** mulberry32: a seeded generator, so every run draws the same requests. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Plan { body: Record<string, unknown>; startMs: number; abortAfter?: number; abortMs?: number }
interface Client { status: number; generationId?: string; credits?: number; cancelled: boolean }

/** Sends one request; drops the connection after `abortAfter` data events, or `abortMs` after sending. */
function send(url: string, key: string, plan: Plan): Promise<Client> {
  return new Promise((resolve) => {
    const client: Client = { status: 0, cancelled: false };
    let text = '';
    const req = http.request(`${url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' } });
    const abort = (): void => void ((client.cancelled = true), req.destroy());
    const timer = plan.abortMs === undefined ? undefined : setTimeout(abort, plan.abortMs);
    req.on('error', () => {});
    req.on('close', () => {
      clearTimeout(timer);
      for (const part of [text, ...text.split('\n\n').map((b) => b.replace(/^data: /, ''))]) {
        try {
          const credits = (JSON.parse(part) as { credits_used?: unknown }).credits_used;
          if (typeof credits === 'number') client.credits = credits;
        } catch {} // a partial or non-JSON block
      }
      resolve(client);
    });
    req.on('response', (res) => {
      client.status = res.statusCode ?? 0;
      client.generationId = res.headers['x-generation-id'] as string | undefined;
      res.setEncoding('utf8');
      res.on('error', () => {});
      res.on('data', (chunk: string) => {
        text += chunk;
        if (plan.abortAfter !== undefined && (text.match(/(^|\n)data: /g) ?? []).length >= plan.abortAfter) abort();
      });
    });
    req.end(JSON.stringify(plan.body));
  });
}

/** Runs `plans` concurrently on one key while sampling the ledger, and checks the four invariants. */
async function expectInvariants(credits: number, plans: Plan[]) {
  const key = 'storm';
  const app = await startExampleApp({ upstreamURL: mock.url, apiKeys: { [key]: credits } });
  const { ledger } = app;
  const holds = new Map<string, number>();
  const settled = new Map<string, number>();
  const samples: Balance[] = [];
  // a sample after every hold and every settlement, in-process, plus GET /v1/credits in a loop
  const [reserve, settle] = [ledger.reserve.bind(ledger), ledger.settle.bind(ledger)];
  const sampled = <T>(value: T): T => (samples.push(ledger.balanceOf(key)!), value);
  jest.spyOn(ledger, 'reserve').mockImplementation((k, id, amount) => {
    const ok = reserve(k, id, amount);
    if (ok) holds.set(id, amount);
    return sampled(ok);
  });
  jest.spyOn(ledger, 'settle').mockImplementation((k, id, model, amount, record) => {
    settled.set(id, (settled.get(id) ?? 0) + 1);
    return sampled(settle(k, id, model, amount, record));
  });
  let running = true;
  const sampler = (async () => {
    for (let i = 0; running && i < 2000; i++) samples.push(await app.credits(key)); // (a)+(b) over HTTP too
  })();
  try {
    const clients = await Promise.all(plans.map((p) => sleep(p.startMs).then(() => send(app.url, key, p))));
    await waitFor(() => ledger.balanceOf(key)!.held === 0, 8000, 'every hold settled'); // (c)
    running = false;
    await sampler;
    const final = await app.credits(key);
    for (const s of [...samples, final]) {
      expect(s.balance).toBeGreaterThanOrEqual(0); // (a)
      expect(milli(s.balance) + milli(s.used) + milli(s.held)).toBe(milli(credits)); // (b)
    }
    expect(final.held).toBe(0);
    // meter ran exactly once for each hold, and for nothing else; (d) used is the sum of the records
    expect([...settled.keys()].sort()).toEqual([...holds.keys()].sort());
    expect([...settled.values()].every((n) => n === 1)).toBe(true);
    const records = [...holds.keys()].map((id) => ledger.findGeneration(key, id)!);
    expect(records.every(Boolean)).toBe(true);
    expect(records.reduce((sum, r) => sum + milli(r.credits_used), 0)).toBe(milli(final.used));
    for (const r of records) {
      expect(r.unpaid).toBe(0);
      expect(milli(r.credits_used)).toBeLessThanOrEqual(milli(holds.get(r.id)!)); // the cap held the charge to the hold
      if (r.outcome === 'unserved') expect([r.usage.total_tokens, r.credits_used]).toEqual([0, 0]);
    }
    for (const c of clients) {
      expect([0, 200, 402]).toContain(c.status);
      const record = c.generationId === undefined ? undefined : ledger.findGeneration(key, c.generationId);
      if (c.status === 402) expect(record).toBeUndefined();
      if (c.credits !== undefined) expect(record?.credits_used).toBe(c.credits); // what the client saw is what was recorded
    }
    const served = clients.filter((c) => c.status === 200).length;
    const refused = clients.filter((c) => c.status === 402).length;
    expect(served).toBeGreaterThan(0);
    expect(refused).toBeGreaterThan(0);
    if (process.env.RESERVATION_FIGURES) {
      const outcomes = records.map((r) => r.outcome).sort().join(' ');
      console.log(JSON.stringify({ requests: clients.length, served, refused, cancelled: clients.filter((c) => c.cancelled).length, holds: holds.size, samples: samples.length, used: final.used, outcomes }));
    }
    return { clients, holds, records };
  } finally {
    running = false;
    await sampler;
    await app.close();
  }
}

let mock: MockProvider;
describe('invariants under concurrency (example app, built-in mock provider)', () => {
  beforeAll(async () => void (mock = await startMockProvider()));
  afterAll(() => mock.close());

  /** A cancellation point: none (share `keep`), before the first byte (k = 0, after 0–200 ms), or after k = 1–`k` events. */
  const cancellation = (rnd: () => number, keep: number, k: number): Pick<Plan, 'abortAfter' | 'abortMs'> => {
    const r = rnd();
    if (r < keep) return {};
    if (r < keep + (1 - keep) / 3) return { abortMs: Math.floor(rnd() * 200) };
    return { abortAfter: 1 + Math.floor(rnd() * k) };
  };

  test('90 requests on 3 credits, capped at 20–60 tokens: streams, JSON, mock-error, random cancellations', async () => {
    const rnd = seeded(20240611);
    const plans = Array.from({ length: 90 }, (): Plan => {
      const kind = rnd();
      const body = { messages: HELLO, max_tokens: 20 + Math.floor(rnd() * 41) };
      const startMs = 100 + Math.floor(rnd() * 1400);
      if (kind < 0.15) return { body: { ...body, model: 'mock-1' }, startMs, ...(rnd() < 0.3 ? { abortMs: Math.floor(rnd() * 400) } : {}) };
      return { body: { ...body, model: kind < 0.3 ? 'mock-error' : 'mock-1', stream: true }, startMs, ...cancellation(rnd, 0.3, 12) };
    });
    // first, four that fit together (0.66 credits each): a stream and a JSON answer complete, one is cancelled, one fails
    const first = { messages: HELLO, max_tokens: 16, stream: true, model: 'mock-1' };
    plans.unshift(...[first, { ...first, stream: false }, { ...first, model: 'mock-error' }].map((body) => ({ body, startMs: 0 })), { body: first, startMs: 0, abortAfter: 3 });
    const { records, clients } = await expectInvariants(3, plans);
    expect(records.map((r) => r.outcome)).toEqual(expect.arrayContaining(['completed', 'completed', 'cancelled', 'failed']));
    expect(clients.slice(0, 2).map((c) => c.credits)).toEqual([expect.any(Number), expect.any(Number)]); // a credits chunk, a credits_used field
  });

  test('200 streams on 5 credits without max_tokens: the default cap is lowered to what is available', async () => {
    const rnd = seeded(7);
    const plans = Array.from({ length: 200 }, (): Plan => ({ body: { model: 'mock-1', stream: true, messages: HELLO }, startMs: Math.floor(rnd() * 2500), ...cancellation(rnd, 0.1, 6) }));
    const { holds } = await expectInvariants(5, plans);
    const defaultWorst = priceOf('mock-1', { prompt_tokens: (await promptTokenBound(plans[0]!.body)), completion_tokens: 4096 });
    expect([...holds.values()].every((h) => h <= 5 && h < defaultWorst)).toBe(true);
  });
});
