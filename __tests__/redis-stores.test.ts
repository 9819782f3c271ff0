import { Redis } from 'ioredis';
import { MemoryCreditStore, type CreditStore, type GenerationDraft } from '../lib';
import { LedgerUnavailableError, RedisCreditStore, RedisLimitStore } from '../lib/services/redis';
import { describeRedis, itRestartingRedis, startRedis, stopAllRedis, type RedisHandle } from './helpers/redis-server';

/**
 * The Redis stores against a real redis-server: the same contract as the in-memory ones (run on both), then
 * what only a shared store has to do — atomicity across clients, holds and slots that expire when their
 * instance dies, fail-closed errors and the settlement queue when Redis goes away.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const milli = (credits: number) => Math.round(credits * 1000);

let server: RedisHandle;
const clients: Redis[] = [];
const closers: Array<{ close(): void }> = [];

function client(url = server.url): Redis {
  const redis = new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, retryStrategy: () => 50, lazyConnect: true });
  redis.on('error', () => undefined);
  clients.push(redis);
  return redis;
}

async function connected(url?: string): Promise<Redis> {
  const redis = client(url);
  await redis.connect();
  return redis;
}

let prefixes = 0;
/** A fresh key prefix per test, so tests never see each other's accounts. */
const freshPrefix = () => `t${process.pid}-${++prefixes}:`;

async function redisStore(credits: Record<string, number>, options: ConstructorParameters<typeof RedisCreditStore>[1] = {}, redis?: Redis): Promise<RedisCreditStore> {
  const store = new RedisCreditStore(redis ?? (await connected()), { prefix: freshPrefix(), ...options });
  closers.push(store);
  for (const [account, amount] of Object.entries(credits)) await store.open(account, amount);
  return store;
}

function draft(id: string, providerId: string | null = null): GenerationDraft {
  return {
    id,
    provider_id: providerId,
    endpoint: 'chat.completions',
    model: 'm',
    upstream: 'default',
    failed_upstreams: [],
    stream: true,
    outcome: 'completed',
    usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 },
    cancelled: false,
    finish_reason: 'stop',
    error: null,
    time_to_first_token_ms: 5,
    duration_ms: 9,
    created_at: new Date(0).toISOString(),
  };
}

describeRedis('Redis stores (real redis-server)', () => {
  beforeAll(async () => {
    server = await startRedis({ persistent: true });
  });
  afterAll(async () => {
    for (const c of closers) c.close();
    await Promise.all(clients.map((c) => c.quit().catch(() => c.disconnect())));
    await stopAllRedis();
  });

  const stores: Array<[string, (credits: Record<string, number>) => Promise<CreditStore>]> = [
    ['MemoryCreditStore', async (credits) => new MemoryCreditStore(credits)],
    ['RedisCreditStore', (credits) => redisStore(credits)],
  ];

  describe.each(stores)('the CreditStore contract: %s', (_name, make) => {
    test('knows its accounts', async () => {
      const store = await make({ a: 10, z: 0 });
      expect(await store.has('a')).toBe(true);
      expect(await store.has('z')).toBe(true);
      expect(await store.has('nope')).toBe(false);
      expect(await store.balanceOf('a')).toEqual({ balance: 10, held: 0, used: 0, by_model: {} });
      expect(await store.balanceOf('nope')).toBeUndefined();
      await expect(async () => store.reserve('nope', 'h', 1)).rejects.toThrow(/unknown key/);
      await expect(async () => store.settle('nope', 'h', 'm', 1)).rejects.toThrow(/unknown key/);
    });

    test('hold, then settle the real cost; the rest comes back', async () => {
      const store = await make({ a: 10 });
      expect(await store.reserve('a', 'g1', 4)).toBe(true);
      expect(await store.balanceOf('a')).toMatchObject({ balance: 6, held: 4, used: 0 });
      expect(await store.reserve('a', 'g2', 6.001)).toBe(false);
      expect(await store.balanceOf('a')).toMatchObject({ balance: 6, held: 4, used: 0 });
      expect(await store.settle('a', 'g1', 'm', 1.25)).toEqual({ charged: 1.25, unpaid: 0 });
      expect(await store.balanceOf('a')).toEqual({ balance: 8.75, held: 0, used: 1.25, by_model: { m: 1.25 } });
    });

    test('settling is idempotent by hold id', async () => {
      const store = await make({ a: 10 });
      await store.reserve('a', 'g1', 2);
      expect(await store.settle('a', 'g1', 'm', 1)).toEqual({ charged: 1, unpaid: 0 });
      expect(await store.settle('a', 'g1', 'm', 1)).toEqual({ charged: 1, unpaid: 0 });
      expect(await store.settle('a', 'g1', 'm', 5)).toEqual({ charged: 1, unpaid: 0 });
      expect(await store.balanceOf('a')).toMatchObject({ balance: 9, held: 0, used: 1 });
      await expect(async () => store.reserve('a', 'g1', 1)).rejects.toThrow(/exists already/);
    });

    test('a cost above the hold takes what is available, never below zero; the rest is unpaid', async () => {
      const store = await make({ a: 1 });
      await store.reserve('a', 'g1', 0.5);
      expect(await store.settle('a', 'g1', 'm', 0.8)).toEqual({ charged: 0.8, unpaid: 0 });
      await store.reserve('a', 'g2', 0.2);
      expect(await store.settle('a', 'g2', 'm', 2.5)).toEqual({ charged: 0.2, unpaid: 2.3 });
      expect(await store.balanceOf('a')).toMatchObject({ balance: 0, held: 0, used: 1 });
      expect(await store.reserve('a', 'g3', 0.001)).toBe(false);
    });

    test('bad amounts are refused, never turned into 0', async () => {
      const store = await make({ a: 1 });
      for (const bad of [NaN, Infinity, -1]) {
        await expect(async () => store.reserve('a', 'h', bad)).rejects.toThrow(RangeError);
        await expect(async () => store.settle('a', 'h', 'm', bad)).rejects.toThrow(RangeError);
      }
      expect(await store.balanceOf('a')).toMatchObject({ balance: 1, held: 0, used: 0 });
    });

    test('the record is written with the charge; found by gateway id or provider id, by its own account only', async () => {
      const store = await make({ a: 10, b: 10 });
      await store.reserve('a', 'gen-1', 2);
      await store.settle('a', 'gen-1', 'm', 1.5, draft('gen-1', 'chatcmpl-x'));
      await store.reserve('b', 'gen-2', 2);
      await store.settle('b', 'gen-2', 'm', 0.5, draft('gen-2', 'chatcmpl-x'));
      expect(await store.findGeneration('a', 'gen-1')).toMatchObject({ id: 'gen-1', credits_used: 1.5, unpaid: 0, usage: { total_tokens: 7 } });
      expect(await store.findGeneration('a', 'chatcmpl-x')).toMatchObject({ id: 'gen-1' });
      expect(await store.findGeneration('b', 'chatcmpl-x')).toMatchObject({ id: 'gen-2', credits_used: 0.5 });
      expect(await store.findGeneration('b', 'gen-1')).toBeUndefined();
      expect(await store.findGeneration('a', 'nothing')).toBeUndefined();
    });

    test('balance + held + used stays the starting credits through many fractional holds and settles', async () => {
      const store = await make({ a: 500 });
      let charged = 0;
      for (let i = 0; i < 200; i++) {
        expect(await store.reserve('a', `g${i}`, 0.333 + (i % 7) / 10)).toBe(true);
        if (i % 2 === 1) {
          for (const id of [`g${i - 1}`, `g${i}`]) charged += milli((await store.settle('a', id, `m${i % 3}`, 0.1 + (i % 5) / 1000)).charged);
          const b = (await store.balanceOf('a'))!;
          expect(milli(b.balance) + milli(b.held) + milli(b.used)).toBe(500_000);
        }
      }
      const b = (await store.balanceOf('a'))!;
      expect(b.held).toBe(0);
      expect(milli(b.used)).toBe(charged);
      expect(milli(Object.values(b.by_model).reduce((x, y) => x + y, 0))).toBe(charged);
    });
  });

  test('open never resets an existing account', async () => {
    const store = await redisStore({ a: 5 });
    await store.reserve('a', 'g', 2);
    await store.settle('a', 'g', 'm', 2);
    expect(await store.open('a', 5)).toBe(false);
    expect(await store.balanceOf('a')).toMatchObject({ balance: 3, used: 2 });
  });

  test('reserves from two instances at once never overdraw: exactly the affordable number is held', async () => {
    const prefix = freshPrefix();
    const one = new RedisCreditStore(await connected(), { prefix });
    const two = new RedisCreditStore(await connected(), { prefix });
    closers.push(one, two);
    await one.open('k', 50);
    const results = await Promise.all(Array.from({ length: 300 }, (_, i) => (i % 2 ? one : two).reserve('k', `h${i}`, 1)));
    expect(results.filter(Boolean)).toHaveLength(50);
    expect(await two.balanceOf('k')).toMatchObject({ balance: 0, held: 50, used: 0 });
    // and each hold settles once, whichever instance settles it
    const held = results.flatMap((ok, i) => (ok ? [`h${i}`] : []));
    await Promise.all(held.flatMap((id) => [one.settle('k', id, 'm', 0.5), two.settle('k', id, 'm', 0.5)]));
    expect(await one.balanceOf('k')).toMatchObject({ balance: 25, held: 0, used: 25 });
  });

  test('account ids (API keys) never reach Redis: only their hash', async () => {
    const redis = await connected();
    const store = await redisStore({ 'sk-client-secret-key-123': 5 }, {}, redis);
    await store.reserve('sk-client-secret-key-123', 'gen-a', 1);
    await store.settle('sk-client-secret-key-123', 'gen-a', 'm', 1, draft('gen-a', 'chatcmpl-a'));
    const keys = await redis.keys('*');
    expect(keys.length).toBeGreaterThan(0);
    expect(keys.join('\n')).not.toContain('client-secret');
  });

  test('the holds of an instance that died expire and the balance is whole again; a live instance renews its own', async () => {
    const prefix = freshPrefix();
    const dying = new RedisCreditStore(await connected(), { prefix, holdTtlMs: 1_000 });
    const alive = new RedisCreditStore(await connected(), { prefix, holdTtlMs: 1_000 });
    closers.push(alive);
    await alive.open('k', 10);
    expect(await dying.reserve('k', 'lost', 4)).toBe(true);
    expect(await alive.reserve('k', 'kept', 3)).toBe(true);
    dying.close(); // stops renewing, as a killed process would
    expect(await alive.balanceOf('k')).toMatchObject({ balance: 3, held: 7 });
    await sleep(2_500); // more than twice the TTL: the live hold was renewed meanwhile
    expect(await alive.balanceOf('k')).toMatchObject({ balance: 7, held: 3, used: 0 });
    expect(await alive.settle('k', 'kept', 'm', 1)).toEqual({ charged: 1, unpaid: 0 });
    // a settle that comes after its hold expired still charges, from what is available
    expect(await dying.settle('k', 'lost', 'm', 2)).toEqual({ charged: 2, unpaid: 0 });
    expect(await alive.balanceOf('k')).toMatchObject({ balance: 7, held: 0, used: 3 });
  });

  test('concurrency slots are shared by instances, released, and expire with a dead instance', async () => {
    const prefix = freshPrefix();
    const one = new RedisLimitStore(await connected(), { prefix, leaseTtlMs: 1_000 });
    const two = new RedisLimitStore(await connected(), { prefix, leaseTtlMs: 1_000 });
    closers.push(two);
    const granted = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? one : two).acquire('k', 5)));
    expect(granted.filter(Boolean)).toHaveLength(5);
    expect(one.inUse('k') + two.inUse('k')).toBe(5);
    const onesSlots = one.inUse('k');
    one.close(); // dies with its slots
    expect(await two.acquire('k', 5)).toBe(false);
    await sleep(2_500);
    // the dead one's slots expired, the living one's were renewed
    let more = 0;
    for (let i = 0; i < 10; i++) if (await two.acquire('k', 5)) more++;
    expect(more).toBe(onesSlots);
    await two.release('k');
    expect(await two.acquire('k', 5)).toBe(true);
    expect(await two.acquire('k', 5)).toBe(false);
  });

  test('the per-minute bucket is shared by instances', async () => {
    const prefix = freshPrefix();
    const one = new RedisLimitStore(await connected(), { prefix });
    const two = new RedisLimitStore(await connected(), { prefix });
    const states = await Promise.all(Array.from({ length: 30 }, (_, i) => (i % 2 ? one : two).hit('k', 20)));
    const waits = states.map((state) => state.waitMs);
    expect(waits.filter((w) => w === 0)).toHaveLength(20);
    for (const w of waits.filter((w) => w > 0)) {
      expect(w).toBeGreaterThan(0);
      expect(w).toBeLessThanOrEqual(3_000);
    }
    // what is left, for the x-ratelimit-* headers: counted down to 0 across both instances
    expect(Math.min(...states.map((state) => state.remaining))).toBe(0);
    expect(await one.hit('other', 20)).toMatchObject({ waitMs: 0, remaining: 19 });
  });

  test('a Redis that does not answer: a 503 ledger_unavailable within the command timeout, not a hang', async () => {
    const redis = await connected();
    const store = await redisStore({ a: 5 }, { commandTimeoutMs: 200 }, redis);
    const admin = await connected();
    await admin.call('CLIENT', 'PAUSE', '1500', 'ALL');
    try {
      const started = Date.now();
      const err = await store.reserve('a', 'g', 1).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(LedgerUnavailableError);
      expect((err as LedgerUnavailableError).status).toBe(503);
      expect((err as LedgerUnavailableError).code).toBe('ledger_unavailable');
      expect(Date.now() - started).toBeLessThan(1_400);
    } finally {
      await admin.call('CLIENT', 'UNPAUSE');
    }
    // a late answer to the timed-out reserve may have held; it expires like any orphan, and nothing was charged
    expect(await store.balanceOf('a')).toMatchObject({ used: 0 });
  });

  itRestartingRedis(
    'Redis gone: new work fails closed; a settlement waits in the queue and is written once when Redis is back',
    async () => {
      const redis = await connected();
      const store = await redisStore({ a: 10 }, {}, redis);
      const limits = new RedisLimitStore(redis, { prefix: freshPrefix() });
      closers.push(limits);
      expect(await store.reserve('a', 'gen-q', 3)).toBe(true);
      await server.stop();
      await sleep(100);
      for (const call of [() => store.has('a'), () => store.reserve('a', 'x', 1), () => store.balanceOf('a'), () => limits.acquire('a', 2), () => limits.hit('a', 10)]) {
        await expect(call()).rejects.toMatchObject({ status: 503, code: 'ledger_unavailable' });
      }
      // the generation ran: its settlement is answered as pending, and queued
      expect(await store.settle('a', 'gen-q', 'm', 1.5, draft('gen-q', 'chatcmpl-q'))).toEqual({ charged: 1.5, unpaid: 0, pending: true });
      expect(store.pendingSettles).toBe(1);
      await server.restart();
      const until = Date.now() + 10_000;
      while (store.pendingSettles > 0 && Date.now() < until) await sleep(50);
      expect(store.pendingSettles).toBe(0);
      expect(await store.balanceOf('a')).toMatchObject({ balance: 8.5, held: 0, used: 1.5 });
      expect(await store.findGeneration('a', 'chatcmpl-q')).toMatchObject({ id: 'gen-q', credits_used: 1.5 });
      // a retry of the same settlement (a reply lost on the way back) charges nothing more
      expect(await store.settle('a', 'gen-q', 'm', 1.5)).toEqual({ charged: 1.5, unpaid: 0 });
      expect(await store.balanceOf('a')).toMatchObject({ used: 1.5 });
    },
    30_000,
  );

  test('bad options throw at construction', () => {
    const redis = client();
    expect(() => new RedisCreditStore(redis, { holdTtlMs: 10 })).toThrow(/holdTtlMs/);
    expect(() => new RedisCreditStore(redis, { commandTimeoutMs: -1 })).toThrow(/commandTimeoutMs/);
    expect(() => new RedisLimitStore(redis, { leaseTtlMs: 1.5 })).toThrow(/leaseTtlMs/);
    expect(() => new RedisCreditStore({} as never)).toThrow(/ioredis client/);
  });
});
