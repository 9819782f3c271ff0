import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createApp, type AppConfig } from '../example-app/app';
import { loadConfig, parseBudget } from '../example-app/config';
import { connectRedisState, type RedisState } from '../example-app/redis';
import { startMockProvider, type MockProvider } from '../example-app/mock-provider';
import { BudgetExhaustedError, budgetWindow, MemoryCreditStore, MemoryLimitStore } from '../lib';
import { resetDuration } from '../lib/core/rate-headers';
import { describeRedis, startRedis, stopAllRedis, type RedisHandle } from './helpers/redis-server';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * Budgets over time and token-rate limits (issue: "budgets over time", "token-rate limits"): a spend cap per UTC
 * window enforced with the holds (in-flight holds count, so concurrency cannot overrun a window), 402 with
 * `Retry-After` and the reset in ISO 8601 when it is used up, whole again the next window; tokens per minute
 * checked at admission against the worst case and settled with the real count, 429 with `Retry-After`, and
 * OpenAI's `x-ratelimit-*` headers counting down and back up.
 */

const T = Date.UTC(2026, 11, 4, 15, 30, 0); // Friday 4 December 2026, 15:30 UTC

describe('budget windows', () => {
  test.each<[Parameters<typeof budgetWindow>[0]['window'], string, string, string]>([
    ['day', 'day:2026-12-04', '2026-12-04T00:00:00.000Z', '2026-12-05T00:00:00.000Z'],
    ['week', 'week:2026-11-30', '2026-11-30T00:00:00.000Z', '2026-12-07T00:00:00.000Z'], // weeks start on Monday
    ['month', 'month:2026-12', '2026-12-01T00:00:00.000Z', '2027-01-01T00:00:00.000Z'],
    [{ hours: 6 }, `6h:${Math.floor(T / 21_600_000)}`, '2026-12-04T12:00:00.000Z', '2026-12-04T18:00:00.000Z'],
  ])('%j: UTC, with its id, start and reset', (window, id, starts, resets) => {
    const w = budgetWindow({ credits: 5, window }, T);
    expect(w).toMatchObject({ id, limit: 5, soft: 4 });
    expect(new Date(w.startsAt).toISOString()).toBe(starts);
    expect(new Date(w.resetsAt).toISOString()).toBe(resets);
  });

  test('INFERY_BUDGET and INFERY_CONFIG keys take <credits>/<day|week|month>; anything else is refused with the reason', () => {
    expect(parseBudget('5/day', 'INFERY_BUDGET')).toEqual({ credits: 5, window: 'day' });
    expect(parseBudget(' 2.5 / Month ', 'INFERY_BUDGET')).toEqual({ credits: 2.5, window: 'month' });
    for (const bad of ['5', 'day', '5/year', '-1/day', '5/day/week', '']) expect(() => parseBudget(bad, 'INFERY_BUDGET')).toThrow(/INFERY_BUDGET must be <credits>\/<day\|week\|month>/);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'infery-keys-'));
    try {
      const file = path.join(dir, 'config.json');
      fs.writeFileSync(file, JSON.stringify({ upstreams: [{ name: 'm', baseURL: 'mock' }], keys: { alice: { budget: '5/day', tpm: 10000 }, bob: { budget: null } } }));
      expect(loadConfig(file).keys).toEqual({ alice: { budget: { credits: 5, window: 'day' }, tpm: 10000 }, bob: { budget: null } });
      for (const keys of [{ a: { budget: 5 } }, { a: { tpm: -1 } }, { a: { rpm: 1 } }, { a: [] }]) {
        fs.writeFileSync(file, JSON.stringify({ upstreams: [{ name: 'm', baseURL: 'mock' }], keys }));
        expect(() => loadConfig(file)).toThrow(/INFERY_CONFIG: keys\["a"\]/);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('the memory store counts every hold in flight against the window, and a new window is whole again', () => {
    const store = new MemoryCreditStore({ a: 100 });
    const today = budgetWindow({ credits: 5, window: 'day' }, T);
    expect(store.reserve('a', 'h1', 3, undefined, today)).toBe(true);
    // 3 held + 3 more would pass 5: refused, nothing held
    expect(() => store.reserve('a', 'h2', 3, undefined, today)).toThrow(BudgetExhaustedError);
    expect(store.balanceOf('a')!.held).toBe(3);
    const first = store.settle('a', 'h1', 'm', 2, undefined, undefined, today);
    expect(first.budget).toEqual({ id: today.id, spent: 2, limit: 5, softLimitCrossed: false });
    expect(store.reserve('a', 'h2', 3, undefined, today)).toBe(true);
    expect(store.settle('a', 'h2', 'm', 2.5, undefined, undefined, today).budget).toMatchObject({ spent: 4.5, softLimitCrossed: true });
    expect(() => store.reserve('a', 'h3', 1, undefined, today)).toThrow(BudgetExhaustedError);
    const tomorrow = budgetWindow({ credits: 5, window: 'day' }, T + 86_400_000);
    expect(store.reserve('a', 'h3', 5, undefined, tomorrow)).toBe(true);
    // a settlement of yesterday's window (admitted before the reset) never takes today's back
    store.settle('a', 'h3', 'm', 1, undefined, undefined, today);
    expect(store.reserve('a', 'h4', 5, undefined, tomorrow)).toBe(true);
  });

  test('a rolling window: the spend of the last N hours; a refusal says when the oldest spend ages out', () => {
    let now = T;
    const clock = jest.spyOn(Date, 'now').mockImplementation(() => now);
    try {
      const store = new MemoryCreditStore({ a: 100 });
      const spec = { credits: 5, window: { rollingHours: 24 } } as const;
      const w = budgetWindow(spec);
      expect(w).toMatchObject({ id: 'rolling:24h', rolling: { spanMs: 86_400_000, sliceMs: 1_440_000 } });
      expect(store.reserve('a', 'h1', 3, undefined, w)).toBe(true);
      store.settle('a', 'h1', 'm', 3, undefined, undefined, w);
      now += 12 * 3_600_000;
      expect(store.reserve('a', 'h2', 2, undefined, budgetWindow(spec))).toBe(true);
      store.settle('a', 'h2', 'm', 2, undefined, undefined, budgetWindow(spec));
      let refusal: BudgetExhaustedError | undefined;
      try {
        store.reserve('a', 'h3', 1, undefined, budgetWindow(spec));
      } catch (err) {
        refusal = err as BudgetExhaustedError;
      }
      expect(refusal).toBeInstanceOf(BudgetExhaustedError);
      expect(refusal!.spent).toBe(5);
      // the first 3 credits age out a day (and at most one slice) after they were spent
      expect(refusal!.resetsAt - T).toBeGreaterThanOrEqual(86_400_000);
      expect(refusal!.resetsAt - T).toBeLessThanOrEqual(86_400_000 + 1_440_000);
      now = refusal!.resetsAt;
      // the first spend aged out, the second has not: 3 credits free again, not 5
      expect(store.reserve('a', 'h3', 3, undefined, budgetWindow(spec))).toBe(true);
      expect(() => store.reserve('a', 'h4', 0.5, undefined, budgetWindow(spec))).toThrow(BudgetExhaustedError);
    } finally {
      clock.mockRestore();
    }
  });

  test('x-ratelimit-reset-* durations are written as OpenAI writes them', () => {
    expect([0, 250, 1000, 1500, 60_000, 360_000, 3_723_000].map(resetDuration)).toEqual(['0ms', '250ms', '1s', '1.5s', '1m0s', '6m0s', '1h2m3s']);
  });
});

interface Running {
  url: string;
  app: ReturnType<typeof createApp>;
  close(): Promise<void>;
}

async function runApp(config: Partial<AppConfig> & Pick<AppConfig, 'upstreamURL' | 'apiKeys'>): Promise<Running> {
  const app = createApp({ maxConcurrent: 0, requestsPerMinute: 0, ...config });
  const server = http.createServer({ keepAliveTimeout: 1_000 }, app.app);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    app,
    close: async () => {
      app.gateway.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const chat = (over: Record<string, unknown> = {}) => ({ model: 'mock-1', max_tokens: 5, messages: [{ role: 'user', content: 'Hi there' }], ...over });

async function post(url: string, key: string, body: unknown): Promise<{ status: number; headers: Headers; body: Record<string, unknown> }> {
  const res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    parsed = { stream: text };
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/** The 402 of a used-up budget: Retry-After to the reset, the reset in ISO 8601 UTC in the message. */
function expectBudgetRefusal(r: Awaited<ReturnType<typeof post>>): void {
  expect(r.status).toBe(402);
  const error = r.body.error as { code: string; type: string; message: string };
  expect(error).toMatchObject({ code: 'budget_exceeded', type: 'insufficient_quota' });
  const reset = /resets at (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)/.exec(error.message)?.[1];
  expect(reset).toBeDefined();
  const seconds = Number(r.headers.get('retry-after'));
  expect(seconds).toBeGreaterThanOrEqual(1);
  // seconds to the reset when it was answered (a little before now: the test reads it after the whole burst)
  const left = (Date.parse(reset!) - Date.now()) / 1000;
  expect(seconds).toBeGreaterThanOrEqual(Math.floor(left));
  expect(seconds).toBeLessThanOrEqual(left + 60);
}

describe('the example app: a daily budget under concurrency (in memory)', () => {
  let mock: MockProvider;
  beforeAll(async () => {
    mock = await startMockProvider();
  });
  afterAll(() => mock.close());

  test('500 concurrent streams on a 5-credit daily budget never spend past it; the rest get 402; whole again the next day', async () => {
    const gw = await runApp({ upstreamURL: mock.url, apiKeys: { k: 1_000 }, budget: { credits: 5, window: 'day' } });
    try {
      const results = await Promise.all(Array.from({ length: 500 }, () => post(gw.url, 'k', chat({ stream: true }))));
      const served = results.filter((r) => r.status === 200);
      const refused = results.filter((r) => r.status !== 200);
      expect(served.length).toBeGreaterThan(0);
      expect(refused.length).toBeGreaterThan(0);
      for (const r of refused) expectBudgetRefusal(r);
      const balance = await gw.app.store.balanceOf('k');
      expect(balance!.held).toBe(0);
      expect(balance!.used).toBeLessThanOrEqual(5);
      expect(balance!.used).toBeGreaterThan(4); // the window was used, not refused early
      // the next window: whole again (the window is read from the clock)
      const now = Date.now();
      const clock = jest.spyOn(Date, 'now').mockReturnValue(now + 86_400_000);
      try {
        const next = await post(gw.url, 'k', chat());
        expect(next.status).toBe(200);
      } finally {
        clock.mockRestore();
      }
    } finally {
      await gw.close();
    }
  }, 60_000);

  test('a default cap that would pass the budget is lowered to what the window has left; per-key budgets win, null is none', async () => {
    const gw = await runApp({ upstreamURL: mock.url, apiKeys: { k: 1_000, poor: 50, free: 1_000 }, budget: { credits: 1, window: 'day' }, keyLimits: { free: { budget: null } } });
    try {
      // no max_tokens: the default cap (4096) would cost up to 123 credits; the budget leaves 1
      const r = await post(gw.url, 'k', chat({ max_tokens: undefined }));
      expect(r.status).toBe(200);
      expect((r.body.usage as { completion_tokens: number }).completion_tokens).toBeLessThanOrEqual(30);
      expect((await gw.app.store.balanceOf('k'))!.used).toBeLessThanOrEqual(1);
      // the balance (50) refuses first, the cap lowered to it then passes the budget: lowered again to the budget
      const poor = await post(gw.url, 'poor', chat({ max_tokens: undefined }));
      expect(poor.status).toBe(200);
      expect((await gw.app.store.balanceOf('poor'))!.used).toBeLessThanOrEqual(1);
      const unlimited = await post(gw.url, 'free', chat({ max_tokens: 200 }));
      expect(unlimited.status).toBe(200);
      expect((await gw.app.store.balanceOf('free'))!.used).toBeGreaterThan(1);
    } finally {
      await gw.close();
    }
  });
});

describe('the example app: tokens per minute', () => {
  let mock: MockProvider;
  beforeAll(async () => {
    mock = await startMockProvider();
  });
  afterAll(() => mock.close());

  test('the x-ratelimit-* headers count down; a burst over the rate gets 429 with a correct Retry-After; the bucket refills', async () => {
    // 1,200 tokens a minute: 20 a second
    const gw = await runApp({ upstreamURL: mock.url, apiKeys: { k: 1_000 }, tokensPerMinute: 1_200, requestsPerMinute: 600 });
    try {
      const remaining: number[] = [];
      let refusal: Awaited<ReturnType<typeof post>> | undefined;
      for (let i = 0; i < 30 && !refusal; i++) {
        const r = await post(gw.url, 'k', chat({ max_tokens: 100 }));
        if (r.status === 429) refusal = r;
        else {
          expect(r.status).toBe(200);
          expect(r.headers.get('x-ratelimit-limit-tokens')).toBe('1200');
          expect(r.headers.get('x-ratelimit-limit-requests')).toBe('600');
          expect(Number(r.headers.get('x-ratelimit-remaining-requests'))).toBeLessThan(600);
          expect(r.headers.get('x-ratelimit-reset-tokens')).toMatch(/^(\d+ms|\d+(\.\d+)?s|\d+m\d+(\.\d+)?s)$/);
          remaining.push(Number(r.headers.get('x-ratelimit-remaining-tokens')));
        }
      }
      expect(refusal).toBeDefined();
      expect(remaining.length).toBeGreaterThan(3);
      // each request took its worst case (prompt bound + 100), so what remains counts down
      for (let i = 1; i < remaining.length; i++) if (remaining[i - 1]! > 0) expect(remaining[i]!).toBeLessThan(remaining[i - 1]!);
      expect(refusal!.body.error).toMatchObject({ code: 'rate_limit_exceeded', type: 'tokens' });
      expect(refusal!.headers.get('x-ratelimit-remaining-tokens')).toBe('0');
      const retryMs = Number(refusal!.headers.get('retry-after-ms'));
      expect(Number(refusal!.headers.get('retry-after'))).toBe(Math.max(1, Math.ceil(retryMs / 1000)));
      expect(retryMs).toBeGreaterThan(0);
      expect(retryMs).toBeLessThanOrEqual(60_000);
      // after the wait it says, the request goes through again, and the bucket has refilled meanwhile
      await new Promise((r) => setTimeout(r, retryMs + 50));
      const again = await post(gw.url, 'k', chat({ max_tokens: 5 }));
      expect(again.status).toBe(200);
    } finally {
      await gw.close();
    }
  }, 60_000);

  test('settled with the real count: what the worst case took beyond the usage goes back', () => {
    const store = new MemoryLimitStore(() => 0);
    expect(store.takeTokens('a', 500, 1000)).toMatchObject({ waitMs: 0, remaining: 500 });
    store.returnTokens('a', 480, 1000); // it used 20
    expect(store.takeTokens('a', 0, 1000)).toMatchObject({ remaining: 980 });
    // overdrawn by a big worst case: refused until it refills above zero
    store.takeTokens('a', 1500, 1000);
    expect(store.takeTokens('a', 1, 1000).waitMs).toBeGreaterThan(0);
  });
});

describeRedis('budgets across two instances on one Redis (real redis-server)', () => {
  let server: RedisHandle;
  let mock: MockProvider;
  beforeAll(async () => {
    server = await startRedis();
    mock = await startMockProvider();
  });
  afterAll(async () => {
    await mock.close();
    await stopAllRedis();
  });

  test('tokens per minute are one bucket across instances, taken and settled atomically', async () => {
    const a = await connectRedisState(server.url, {}, { holdTtlMs: 10_000 });
    const b = await connectRedisState(server.url, {}, { holdTtlMs: 10_000 });
    try {
      const key = `tpm-${process.pid}-${Date.now()}`;
      const takes = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).limitStore.takeTokens(key, 100, 1_000)));
      // 1,000 a minute: ten takes of 100 empty it (an eleventh may go on what refilled meanwhile, overdrawing
      // it: check before, charge after), the rest wait
      const allowed = takes.filter((t) => t.waitMs === 0).length;
      expect(allowed).toBeGreaterThanOrEqual(10);
      expect(allowed).toBeLessThanOrEqual(11);
      expect(takes.filter((t) => t.waitMs > 0).every((t) => t.remaining === 0 && t.waitMs <= 60_000)).toBe(true);
      await a.limitStore.returnTokens(key, 500, 1_000); // five used nothing
      expect((await b.limitStore.takeTokens(key, 0, 1_000)).remaining).toBeGreaterThanOrEqual(allowed === 10 ? 500 : 400);
    } finally {
      await a.close(1_000);
      await b.close(1_000);
    }
  });

  test('the rate taken with the hold (one script) still tells the x-ratelimit-*-requests headers', async () => {
    const key = `rl-${process.pid}-${Date.now()}`;
    const state = await connectRedisState(server.url, { [key]: 1_000 }, { holdTtlMs: 10_000 });
    const gw = await runApp({ upstreamURL: mock.url, apiKeys: { [key]: 1_000 }, store: state.store, limitStore: state.limitStore, requestsPerMinute: 100 });
    try {
      const first = await post(gw.url, key, chat());
      const second = await post(gw.url, key, chat());
      expect(first.headers.get('x-ratelimit-limit-requests')).toBe('100');
      expect(first.headers.get('x-ratelimit-remaining-requests')).toBe('99');
      expect(Number(second.headers.get('x-ratelimit-remaining-requests'))).toBeLessThanOrEqual(99);
      expect(second.headers.get('x-ratelimit-reset-requests')).toMatch(/^\d+(ms|(\.\d+)?s)$/);
    } finally {
      await gw.close();
      await state.close(1_000);
    }
  });

  test('a rolling window on Redis: holds and spend of the last hours count; the refusal says when spend ages out', async () => {
    const key = `roll-${process.pid}-${Date.now()}`;
    const state = await connectRedisState(server.url, { [key]: 100 }, { holdTtlMs: 10_000 });
    try {
      const w = budgetWindow({ credits: 5, window: { rollingHours: 2 } });
      expect(await state.store.reserve(key, 'r1', 3, undefined, w)).toBe(true);
      await expect(state.store.reserve(key, 'r2', 3, undefined, w)).rejects.toThrow(BudgetExhaustedError); // 3 held
      const settled = await state.store.settle(key, 'r1', 'm', 2, undefined, undefined, w);
      expect(settled.budget).toMatchObject({ id: 'rolling:2h', spent: 2 });
      expect(await state.store.reserve(key, 'r2', 3, undefined, w)).toBe(true);
      await state.store.settle(key, 'r2', 'm', 3, undefined, undefined, w);
      const refusal = await state.store.reserve(key, 'r3', 0.5, undefined, w).catch((err: unknown) => err as BudgetExhaustedError);
      expect(refusal).toBeInstanceOf(BudgetExhaustedError);
      expect((refusal as BudgetExhaustedError).spent).toBe(5);
      const ages = (refusal as BudgetExhaustedError).resetsAt - Date.now();
      expect(ages).toBeGreaterThan(2 * 3_600_000 - 10_000);
      expect(ages).toBeLessThanOrEqual(2 * 3_600_000 + 120_000 + 10_000);
    } finally {
      await state.close(1_000);
    }
  });

  test('500 concurrent streams over two instances on a 5-credit daily budget never spend past it', async () => {
    const key = `budget-${process.pid}-${Date.now()}`;
    const states: RedisState[] = [];
    const apps: Running[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const state = await connectRedisState(server.url, { [key]: 1_000 }, { holdTtlMs: 10_000 });
        states.push(state);
        apps.push(await runApp({ upstreamURL: mock.url, apiKeys: { [key]: 1_000 }, store: state.store, limitStore: state.limitStore, maxConcurrent: 1_000, requestsPerMinute: 0, budget: { credits: 5, window: 'day' } }));
      }
      const results = await Promise.all(Array.from({ length: 500 }, (_, i) => post(apps[i % 2]!.url, key, chat({ stream: true }))));
      const refused = results.filter((r) => r.status !== 200);
      expect(results.filter((r) => r.status === 200).length).toBeGreaterThan(0);
      expect(refused.length).toBeGreaterThan(0);
      for (const r of refused) expectBudgetRefusal(r);
      const balance = await states[0]!.store.balanceOf(key);
      expect(balance!.held).toBe(0);
      expect(balance!.used).toBeLessThanOrEqual(5);
      expect(balance!.used).toBeGreaterThan(4);
    } finally {
      for (const app of apps) await app.close();
      for (const state of states) await state.close(1_000);
    }
  }, 90_000);
});
