import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { createApp } from '../example-app/app';
import { connectRedisState, type RedisState } from '../example-app/redis';
import { InferyOptionsError, LimitRefusedError, MemoryLimitStore, inferyStream, type LimitStore, type ReserveLimits } from '../lib';
import { RedisCreditStore } from '../lib/services/redis';
import { accountKeys, limitKeys } from '../lib/services/redis/keys';
import { startGateway } from './helpers/gateway';
import { ScriptedProvider, textSteps } from './helpers/provider';
import { describeRedis, startRedis, stopAllRedis, type RedisHandle } from './helpers/redis-server';
import { postStream } from './helpers/sse-client';

/**
 * One round trip for a generation's admission and one for its settlement (issue: "the admission path on
 * Redis"): with a `RedisLimitStore` that is `takenByReserve`, the credit store's reserve takes the rate, the
 * concurrency slot and the hold in one script, and its settle gives the slot back in the settlement's script.
 * Counted as the commands the gateway's Redis client sends, on a real redis-server; then the limits still hold,
 * for one account and for a limit key that groups accounts (another hash slot: two scripts), and the gateway
 * takes the limits itself when a `reserve` ignores them.
 */

const request = { model: 'mock-1', stream: true, messages: [{ role: 'user', content: 'Count the round trips' }] };
const limitsOf = (key: string, over: Partial<ReserveLimits> = {}): ReserveLimits => ({ key, requestsPerMinute: 0, maxConcurrent: 0, slot: 'gen-x', rateCounted: false, taken: false, ...over });

let provider: ScriptedProvider;
beforeAll(async () => {
  provider = await new ScriptedProvider().start();
});
afterAll(() => provider.stop());

describe('limits taken by reserve: options and the fallback', () => {
  const takenByReserve = (): LimitStore => {
    const memory = new MemoryLimitStore();
    return { acquire: (k, m) => memory.acquire(k, m), release: (k) => memory.release(k), hit: (k, p) => memory.hit(k, p), takenByReserve: true };
  };

  test('a limit store that leaves the limits to reserve, without a reserve hook, is refused at startup', () => {
    expect(() => inferyStream({ upstream: { baseURL: provider.url }, authenticate: () => 'a', meter: () => 0, limits: { maxConcurrent: 1, store: takenByReserve() } })).toThrow(InferyOptionsError);
  });

  test('a reserve that ignores the limits it was handed: the gateway takes them after the hold, settles a refused one unserved, and says so once', async () => {
    const handed: Array<ReserveLimits | undefined> = [];
    const gw = await startGateway(provider.url, {
      limits: { maxConcurrent: 1, store: takenByReserve() },
      reserve: (ctx) => {
        handed.push(ctx.limits);
        return { hold: ctx.generationId };
      },
    });
    try {
      let release!: () => void;
      const open = new Promise<void>((resolve) => (release = resolve));
      provider.reply = () => ({ steps: [{ until: open }, ...textSteps(['first'])] });
      const first = postStream(gw.url, request);
      await provider.waitForRequests(provider.requests.length + 1);
      provider.reply = () => ({ steps: textSteps(['second']) });
      const second = await postStream(gw.url, request);
      expect(second.status).toBe(429);
      expect(second.headers['retry-after']).toBe('1');
      expect(JSON.parse(second.raw)).toMatchObject({ error: { code: 'rate_limit_exceeded' } });
      release();
      expect((await first).events.at(-1)).toBe('[DONE]');
      expect(handed).toHaveLength(2);
      expect(handed[0]).toMatchObject({ key: 'acct-1', maxConcurrent: 1, taken: false });
      // the refused one was held, so it is settled (unserved: nothing charged), and the first one normally
      expect(gw.meterCalls.map((m) => m.outcome).sort()).toEqual(['completed', 'unserved']);
      expect(gw.logs.filter((l) => String(l.msg).includes('did not take the limits'))).toHaveLength(1);
      // its slot came back: the next one is served
      const third = await postStream(gw.url, request);
      expect(third.events.at(-1)).toBe('[DONE]');
    } finally {
      await gw.close();
    }
  });
});

test('a generation refused before its reserve (a bad body, an unknown model) still uses up the per-minute budget', async () => {
  const memory = new MemoryLimitStore();
  const gw = await startGateway(provider.url, {
    limits: { requestsPerMinute: 2, store: { acquire: (k, m) => memory.acquire(k, m), release: (k) => memory.release(k), hit: (k, p) => memory.hit(k, p), takenByReserve: true } },
    reserve: (ctx) => ({ hold: ctx.generationId }),
  });
  try {
    provider.reply = () => ({ steps: textSteps(['ok']) });
    expect((await postStream(gw.url, { model: 'mock-1', stream: true })).status).toBe(400);
    expect((await postStream(gw.url, { ...request, stream: 'yes' })).status).toBe(400);
    const third = await postStream(gw.url, request);
    expect(third.status).toBe(429);
    expect(JSON.parse(third.raw)).toMatchObject({ error: { message: expect.stringMatching(/2 requests per minute/) } });
    expect(gw.meterCalls.map((m) => m.outcome)).toEqual(['unserved']);
  } finally {
    await gw.close();
  }
});

describeRedis('limits taken by reserve on Redis (real redis-server)', () => {
  let server: RedisHandle;
  const clients: Redis[] = [];
  let prefixes = 0;
  const connect = async (): Promise<Redis> => {
    const redis = new Redis(server.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, lazyConnect: true });
    redis.on('error', () => undefined);
    clients.push(redis);
    await redis.connect();
    return redis;
  };
  beforeAll(async () => {
    server = await startRedis();
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.quit().catch(() => c.disconnect())));
    await stopAllRedis();
  });

  describe('the example app on Redis', () => {
    let state: RedisState;
    let url: string;
    let httpServer: http.Server;
    const commands: string[] = [];
    const key = `rt-${process.pid}-${Date.now()}`;
    const auth = { authorization: `Bearer ${key}` };

    beforeAll(async () => {
      state = await connectRedisState(server.url, { [key]: 1_000 }, { holdTtlMs: 10_000 });
      const send = state.redis.sendCommand.bind(state.redis);
      state.redis.sendCommand = ((command: { name: string }, ...rest: unknown[]) => {
        commands.push(command.name);
        return (send as (...args: unknown[]) => unknown)(command, ...rest);
      }) as typeof state.redis.sendCommand;
      const { app } = createApp({ upstreamURL: provider.url, apiKeys: { [key]: 1_000 }, store: state.store, limitStore: state.limitStore, maxConcurrent: 1, requestsPerMinute: 3 });
      httpServer = http.createServer(app);
      await new Promise<void>((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
      url = `http://127.0.0.1:${(httpServer.address() as AddressInfo).port}`;
    });
    afterAll(async () => {
      httpServer.closeAllConnections();
      await new Promise<void>((resolve) => httpServer.close(() => resolve()));
      await state.close(1_000);
    });

    test('a streamed generation costs two round trips: one script admits it (key, rate, slot, hold), one settles it (charge, record, slot)', async () => {
      provider.reply = () => ({ steps: textSteps(['Hello', ' there'], { usage: [5, 2] }) });
      // the first request of a key looks it up once (remembered for a minute) and loads the scripts
      expect((await postStream(url, request, { headers: auth })).events.at(-1)).toBe('[DONE]');
      commands.length = 0;
      const result = await postStream(url, request, { headers: auth });
      expect(result.events.at(-1)).toBe('[DONE]');
      const credits = (JSON.parse(result.events.at(-2)!) as { credits_used: number }).credits_used;
      expect(credits).toBeGreaterThan(0);
      expect(commands).toEqual(['evalsha', 'evalsha']);
      console.log(`Redis round trips per streamed generation (example app, limits on): ${commands.length} (${commands.join(', ')}); before this change: 6 (exists, hit, acquire, reserve, settle, zrem)`);
      // the slot was given back with the settlement, and the charge is in the ledger
      const redis = await connect();
      expect(await redis.zcard(limitKeys('infery:', key).leases)).toBe(0);
      expect((await state.store.findGeneration(key, result.headers['x-generation-id'] as string))?.credits_used).toBe(credits);
    });

    test('the concurrency slot taken with the hold refuses a second stream until the first is settled; the rate counts every request, /models included', async () => {
      const redis = await connect();
      await redis.del(limitKeys('infery:', key).bucket);
      let release!: () => void;
      const open = new Promise<void>((resolve) => (release = resolve));
      provider.reply = () => ({ steps: [{ until: open }, ...textSteps(['held'])] });
      const first = postStream(url, request, { headers: auth });
      await provider.waitForRequests(provider.requests.length + 1);
      expect(await redis.zcard(limitKeys('infery:', key).leases)).toBe(1);
      const second = await postStream(url, request, { headers: auth });
      expect(second.status).toBe(429);
      expect(JSON.parse(second.raw)).toMatchObject({ error: { code: 'rate_limit_exceeded', message: expect.stringMatching(/concurrent/) } });
      release();
      expect((await first).events.at(-1)).toBe('[DONE]');
      expect(await redis.zcard(limitKeys('infery:', key).leases)).toBe(0);
      // 3 a minute: the first two generations and one GET /v1/models used them up
      const models = await fetch(`${url}/v1/models`, { headers: auth });
      expect(models.status).toBe(200);
      provider.reply = () => ({ steps: textSteps(['late']) });
      const third = await postStream(url, request, { headers: auth });
      expect(third.status).toBe(429);
      expect(JSON.parse(third.raw)).toMatchObject({ error: { message: expect.stringMatching(/3 requests per minute/) } });
      expect(Number(third.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      // nothing held by the refused ones
      expect((await state.store.balanceOf(key))?.held).toBe(0);
    });

    test('a key deleted from Redis after it was remembered gets 401 at the hold, not a generation', async () => {
      const gone = `gone-${process.pid}-${Date.now()}`;
      await state.store.open(gone, 100);
      const headers = { authorization: `Bearer ${gone}` };
      provider.reply = () => ({ steps: textSteps(['ok']) });
      expect((await postStream(url, request, { headers })).events.at(-1)).toBe('[DONE]');
      // deleted by hand (an operator revoking the key) while this instance still remembers it exists
      await (await connect()).del(accountKeys('infery:', gone).account);
      const requestsBefore = provider.requests.length;
      const refused = await postStream(url, request, { headers });
      expect(refused.status).toBe(401);
      expect(provider.requests.length).toBe(requestsBefore);
    });
  });

  describe('RedisCreditStore.reserve with limits', () => {
    const store = async (credits: Record<string, number>): Promise<RedisCreditStore> => {
      const s = new RedisCreditStore(await connect(), { prefix: `adm${process.pid}-${++prefixes}:`, holdTtlMs: 5_000 });
      for (const [account, amount] of Object.entries(credits)) await s.open(account, amount);
      return s;
    };

    test('one account: not enough credits takes no slot and counts the request once, however often reserve is retried', async () => {
      const s = await store({ poor: 0.001, rich: 100 });
      try {
        const limits = limitsOf('poor', { requestsPerMinute: 1, maxConcurrent: 1, slot: 'gen-1' });
        expect(await s.reserve('poor', 'gen-1', 5, limits)).toBe(false);
        expect(limits).toMatchObject({ rateCounted: true, taken: false });
        // the app's retry with a lowered cap: the rate is not counted again (1 a minute would refuse it)
        expect(await s.reserve('poor', 'gen-1', 0.001, limits)).toBe(true);
        expect(limits.taken).toBe(true);
        // its slot is taken: another generation of the key is refused until it is settled
        await expect(s.reserve('poor', 'gen-2', 0, limitsOf('poor', { maxConcurrent: 1, slot: 'gen-2' }))).rejects.toMatchObject({ limit: 'concurrency' });
        // a balance that cannot pay is a refusal of credits (402) whatever the slots: the credits are checked first
        expect(await s.reserve('poor', 'gen-2', 5, limitsOf('poor', { maxConcurrent: 1, slot: 'gen-2' }))).toBe(false);
        await s.settle('poor', 'gen-1', 'm', 0.001, undefined, limits);
        expect(await s.reserve('poor', 'gen-3', 0, limitsOf('poor', { maxConcurrent: 1, slot: 'gen-3' }))).toBe(true);
        // and the rate: the key's one request of the minute is used
        await expect(s.reserve('rich', 'gen-4', 1, limitsOf('rich', { requestsPerMinute: 1, slot: 'gen-4' }))).resolves.toBe(true);
        const refused = s.reserve('rich', 'gen-5', 1, limitsOf('rich', { requestsPerMinute: 1, slot: 'gen-5' }));
        await expect(refused).rejects.toBeInstanceOf(LimitRefusedError);
        await expect(refused).rejects.toMatchObject({ limit: 'rate', retryAfterMs: expect.any(Number) });
        expect((await s.balanceOf('rich'))?.held).toBe(1);
      } finally {
        s.close();
      }
    });

    test('a limit key that groups accounts (another hash slot): the slot is shared, taken before the hold, given back on a refusal and with the settlement', async () => {
      const s = await store({ a: 10, b: 0 });
      try {
        const org = `org-${process.pid}`;
        const a = limitsOf(org, { maxConcurrent: 1, slot: 'gen-a' });
        expect(await s.reserve('a', 'gen-a', 1, a)).toBe(true);
        await expect(s.reserve('b', 'gen-b', 0, limitsOf(org, { maxConcurrent: 1, slot: 'gen-b' }))).rejects.toMatchObject({ limit: 'concurrency' });
        await s.settle('a', 'gen-a', 'm', 1, undefined, a);
        // b cannot pay: its slot, taken first, is given back
        expect(await s.reserve('b', 'gen-c', 5, limitsOf(org, { maxConcurrent: 1, slot: 'gen-c' }))).toBe(false);
        const next = limitsOf(org, { maxConcurrent: 1, slot: 'gen-d' });
        expect(await s.reserve('a', 'gen-d', 1, next)).toBe(true);
        await s.settle('a', 'gen-d', 'm', 1, undefined, next);
        // a retried settlement (a lost reply) charges once and leaves the slot given back
        await s.settle('a', 'gen-d', 'm', 1, undefined, next);
        expect((await s.balanceOf('a'))?.used).toBe(2);
      } finally {
        s.close();
      }
    });
  });
});
