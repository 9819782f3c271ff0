import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { priceOf } from '../example-app/ledger';
import { tagOf } from '../lib/services/redis/keys';
import { startExampleApp, stopAllApps, type AppProcess } from './helpers/app-process';
import { withOutputOnFailure } from './helpers/local-process';
import { describeRedis, itRestartingRedis, startRedis, stopAllRedis, type RedisHandle } from './helpers/redis-server';

/**
 * Scale-out on a real redis-server: two example-app processes (example-app/server.ts, INFERY_REDIS_URL) share one
 * ledger, one set of generation records and one per-key concurrency limit, both streaming from an
 * OpenAI-compatible provider that runs in this process. Every figure compared here is read back from the ledger
 * (GET /v1/credits) and from the generation records in Redis; no price is written down in this file.
 */

const MODEL = 'mock-1'; // priced by the example app's own mock prices (10 / 30 credits per 1K)
/** The prompt_tokens the provider reports; completion_tokens is the number of content chunks it sent. */
const PROVIDER_PROMPT_TOKENS = 12;
/** A fresh suffix per run, so an external Redis (REDIS_URL) never holds an account from an earlier run. */
const RUN = `${process.pid}-${Date.now().toString(36)}`;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const milli = (credits: number): number => Math.round(credits * 1000);

/** mulberry32: a small seeded PRNG, so a failing run can be replayed. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Polls `check` every `everyMs` until it returns a value, at most `timeoutMs`. */
async function until<T>(what: string, check: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The provider

interface ProviderCall {
  /** Which gateway instance sent it (from its upstream key). */
  instance: string;
  prompt: string;
  /** The connection closed before the provider finished its answer. */
  closedEarly: boolean;
}

interface Provider {
  url: string;
  calls: ProviderCall[];
  /** Requests open right now, and the most ever open at once since the last `resetMax()`. */
  readonly open: number;
  readonly maxOpen: number;
  resetMax(): void;
  close(): Promise<void>;
}

/**
 * An OpenAI-compatible streaming provider. The prompt says how to answer: `chunks=N pace=M` sends a role chunk,
 * N content chunks M ms apart, the finish chunk, a usage chunk when `stream_options.include_usage` is set (the
 * gateway always sets it; `usage=K` reports K completion tokens instead of N), then `[DONE]`. Every chunk carries
 * the same `id`.
 */
async function startProvider(): Promise<Provider> {
  const calls: ProviderCall[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let open = 0;
  let maxOpen = 0;
  let seq = 0;
  const later = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      const t = setTimeout(() => {
        timers.delete(t);
        resolve();
      }, ms);
      timers.add(t);
    });
  const server = http.createServer(async (req, res) => {
    if (req.method !== 'POST' || !req.url?.endsWith('/chat/completions')) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"message":"not found"}}');
      return;
    }
    let parsed: { model?: string; messages?: Array<{ content?: string }>; stream_options?: { include_usage?: boolean } };
    try {
      let body = '';
      for await (const chunk of req) body += String(chunk);
      parsed = JSON.parse(body) as typeof parsed;
    } catch {
      res.destroy(); // the gateway hung up while sending the body
      return;
    }
    const prompt = parsed.messages?.at(-1)?.content ?? '';
    const chunks = Number(/chunks=(\d+)/.exec(prompt)?.[1] ?? 3);
    const pace = Number(/pace=(\d+)/.exec(prompt)?.[1] ?? 0);
    const completionTokens = Number(/usage=(\d+)/.exec(prompt)?.[1] ?? chunks);
    const call: ProviderCall = { instance: String(req.headers.authorization).replace(/^Bearer upstream-/, ''), prompt, closedEarly: false };
    calls.push(call);
    open++;
    // sampled 10 ms later: a gateway that aborted one request and then sent another (its slot given back in
    // between) can have both reach this process in one batch of events, the new request read first, and on a
    // loaded machine the aborted one's FIN can wait a few loop turns more (CI once saw 41 of 40 when sampling
    // after one turn). A stream not cancelled runs 180 ms or more: a limit letting one too many through shows on
    // them 10 ms on all the same.
    void later(10).then(() => {
      maxOpen = Math.max(maxOpen, open);
    });
    // A request stops counting as open as soon as the provider can know it ended: its answer was handed to the
    // kernel ('finish'), or the gateway's side of the socket ended or reset ('end'/'error', read in the same
    // poll phase). res 'close' alone comes an iteration or more later (half-close, then the close callback), and
    // a request that the gateway sent right after it aborted this one could be counted in between.
    const socket = req.socket;
    let counted = true;
    const done = (): void => {
      if (!counted) return;
      counted = false;
      open--;
      socket.off('end', done);
      socket.off('error', done);
    };
    socket.once('end', done);
    socket.once('error', done);
    res.on('finish', done);
    res.on('close', () => {
      if (!res.writableFinished) call.closedEarly = true;
      done();
    });
    const base = { id: `chatcmpl-scale-${++seq}`, object: 'chat.completion.chunk', created: 1_700_000_000, model: parsed.model ?? MODEL };
    const event = (chunk: Record<string, unknown>): string => `data: ${JSON.stringify({ ...base, ...chunk })}\n\n`;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.write(event({ choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] }));
    for (let i = 0; i < chunks; i++) {
      if (pace > 0) await later(pace);
      if (res.destroyed) return;
      res.write(event({ choices: [{ index: 0, delta: { content: ` word${i}` }, finish_reason: null }] }));
    }
    if (res.destroyed) return;
    let tail = event({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] });
    if (parsed.stream_options?.include_usage) {
      tail += event({ choices: [], usage: { prompt_tokens: PROVIDER_PROMPT_TOKENS, completion_tokens: completionTokens, total_tokens: PROVIDER_PROMPT_TOKENS + completionTokens } });
    }
    res.end(`${tail}data: [DONE]\n\n`);
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    calls,
    get open() {
      return open;
    },
    get maxOpen() {
      return maxOpen;
    },
    resetMax: () => {
      maxOpen = open;
    },
    close: async () => {
      for (const t of timers) clearTimeout(t);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The client

interface ChatResult {
  instance: string;
  /** 0 when no response arrived (cancelled before the headers, or a connection error). */
  status: number;
  generationId: string | undefined;
  /** data: payloads in order, `[DONE]` included (200 only). */
  events: string[];
  /** The error `code` of a JSON error answer. */
  errorCode: string | undefined;
  /** The answer arrived whole: a stream that ended after `[DONE]`, or a complete error body. */
  complete: boolean;
  /** Where the client destroyed its socket, if it did before the answer was whole. */
  cancelled: 'before-headers' | 'mid-stream' | undefined;
  /** A connection error, a premature close or a timeout that the client did not cause. */
  failure: string | undefined;
}

/**
 * POSTs a streaming chat request on a fresh connection. `cancelAfterMs`: destroy the socket at that moment unless
 * the answer is whole by then; `cancelAfterEvents`: destroy it once that many events arrived (unless the last was
 * `[DONE]`). Always resolves (at the latest after `timeoutMs`).
 */
function chat(
  app: { url: string },
  instance: string,
  key: string,
  prompt: string,
  opts: { cancelAfterMs?: number; cancelAfterEvents?: number; timeoutMs?: number } = {},
): Promise<ChatResult> {
  const payload = JSON.stringify({ model: MODEL, stream: true, max_tokens: 16, messages: [{ role: 'user', content: prompt }] });
  return new Promise((resolve) => {
    const result: ChatResult = { instance, status: 0, generationId: undefined, events: [], errorCode: undefined, complete: false, cancelled: undefined, failure: undefined };
    let settled = false;
    const timers: NodeJS.Timeout[] = [];
    const finish = (): void => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      resolve(result);
    };
    const req = http.request(`${app.url}/v1/chat/completions`, {
      method: 'POST',
      agent: false,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
    });
    req.on('error', (err) => {
      if (!settled) result.failure = `request error: ${err.message}`;
      finish();
    });
    if (opts.cancelAfterMs !== undefined) {
      timers.push(
        setTimeout(() => {
          if (settled) return;
          result.cancelled = result.status === 0 ? 'before-headers' : 'mid-stream';
          req.destroy();
          finish();
        }, opts.cancelAfterMs),
      );
    }
    timers.push(
      setTimeout(() => {
        if (settled) return;
        result.failure = `no whole answer within ${opts.timeoutMs ?? 30_000} ms`;
        req.destroy();
        finish();
      }, opts.timeoutMs ?? 30_000),
    );
    req.on('response', (res) => {
      result.status = res.statusCode ?? 0;
      const id = res.headers['x-generation-id'];
      result.generationId = typeof id === 'string' ? id : undefined;
      res.setEncoding('utf8');
      let buffered = '';
      res.on('data', (text: string) => {
        buffered += text;
        if (result.status !== 200) return;
        let cut: number;
        while ((cut = buffered.indexOf('\n\n')) !== -1) {
          const block = buffered.slice(0, cut);
          buffered = buffered.slice(cut + 2);
          const data = block
            .split('\n')
            .filter((line) => line.startsWith('data: '))
            .map((line) => line.slice(6))
            .join('\n');
          if (data) result.events.push(data);
        }
        if (opts.cancelAfterEvents !== undefined && result.events.length >= opts.cancelAfterEvents && result.events.at(-1) !== '[DONE]' && !settled) {
          result.cancelled = 'mid-stream';
          req.destroy();
          finish();
        }
      });
      res.on('end', () => {
        if (result.status === 200) {
          result.complete = result.events.at(-1) === '[DONE]';
          if (!result.complete && !settled) result.failure = 'the stream ended without [DONE]';
        } else {
          try {
            result.errorCode = (JSON.parse(buffered) as { error?: { code?: string } }).error?.code;
            result.complete = true;
          } catch {
            result.failure = `not a JSON error body: ${buffered.slice(0, 200)}`;
          }
        }
        finish();
      });
      res.on('error', () => {
        if (!settled) result.failure = 'the response was cut off';
        finish();
      });
      res.on('close', () => {
        if (!settled && !res.complete) result.failure = 'the response was cut off';
        finish();
      });
    });
    req.end(payload);
  });
}

/** The gateway's usage chunk: the second-to-last event of a whole stream. */
function creditsUsedOf(result: ChatResult): number | undefined {
  const chunk = result.events.at(-2);
  if (chunk === undefined || chunk === '[DONE]') return undefined;
  const value = (JSON.parse(chunk) as { credits_used?: unknown }).credits_used;
  return typeof value === 'number' ? value : undefined;
}

interface Credits {
  balance: number;
  held: number;
  used: number;
}

/** GET /v1/credits: the ledger's figures, or the status and error code when it did not answer 200. */
async function creditsOf(app: { url: string }, key: string): Promise<{ status: number; data?: Credits; code?: string }> {
  const res = await fetch(`${app.url}/v1/credits`, { headers: { authorization: `Bearer ${key}` } });
  const body = (await res.json()) as { data?: Credits; error?: { code?: string } };
  return { status: res.status, data: body.data, code: body.error?.code };
}

// ---------------------------------------------------------------------------------------------------------------
// What Redis holds

interface StoredRecord {
  id: string;
  outcome: string;
  model: string;
  usage: { prompt_tokens: number; completion_tokens: number };
  /** Thousandths, as the settle script wrote them. */
  charged: number;
  unpaid: number;
}

/** Every generation record of `key`'s account (`infery:{a:<tag>}:generation:*`), read with a bounded SCAN. */
async function recordsOf(redis: Redis, key: string): Promise<Map<string, StoredRecord>> {
  const prefix = `infery:{a:${tagOf(key)}}:generation:`;
  const names = new Set<string>();
  let cursor = '0';
  for (let round = 0; round < 10_000; round++) {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    for (const name of batch) names.add(name);
    cursor = next;
    if (cursor === '0') break;
  }
  if (cursor !== '0') throw new Error('SCAN did not finish within 10,000 rounds');
  const records = new Map<string, StoredRecord>();
  const list = [...names];
  for (let i = 0; i < list.length; i += 500) {
    const pipeline = redis.pipeline();
    for (const name of list.slice(i, i + 500)) pipeline.hmget(name, 'record', 'charged', 'unpaid');
    const answers = (await pipeline.exec()) ?? [];
    answers.forEach(([err, fields], j) => {
      if (err) throw err;
      const [json, charged, unpaid] = fields as [string | null, string | null, string | null];
      const name = list[i + j]!;
      if (json === null || charged === null || unpaid === null) throw new Error(`${name} is not a whole generation record`);
      const draft = JSON.parse(json) as { id: string; outcome: string; model: string; usage: StoredRecord['usage'] };
      expect(name).toBe(`${prefix}${draft.id}`);
      records.set(draft.id, { id: draft.id, outcome: draft.outcome, model: draft.model, usage: draft.usage, charged: Number(charged), unpaid: Number(unpaid) });
    });
  }
  return records;
}

/** The account hash's `expired` field: how many holds were released by expiry rather than by a settle. */
async function expiredHolds(redis: Redis, key: string): Promise<number> {
  return Number((await redis.hget(`infery:{a:${tagOf(key)}}`, 'expired')) ?? 0);
}

async function connect(url: string): Promise<Redis> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 2, retryStrategy: () => 100 });
  redis.on('error', () => undefined);
  await redis.connect();
  return redis;
}

function countLines(text: string, msg: string): number {
  return text.split('\n').filter((line) => line.includes(`"msg":"${msg}"`)).length;
}

// ---------------------------------------------------------------------------------------------------------------

describeRedis('scale-out: two example-app processes on one Redis', () => {
  let provider: Provider;
  const redisClients: Redis[] = [];

  /** Two instances on `redis`, each with its own upstream key (the provider tells them apart by it). */
  async function twoInstances(redis: RedisHandle, env: Record<string, string>): Promise<[AppProcess, AppProcess]> {
    const envFor = (instance: string): Record<string, string> => ({
      INFERY_REDIS_URL: redis.url,
      INFERY_UPSTREAM_URL: provider.url,
      INFERY_UPSTREAM_KEY: `upstream-${instance}`,
      INFERY_RPM: '0',
      LOG_LEVEL: 'warn',
      ...env,
    });
    const [a, b] = await Promise.all([startExampleApp(envFor('a'), 30_000), startExampleApp(envFor('b'), 30_000)]);
    return [a, b];
  }

  async function client(url: string): Promise<Redis> {
    const redis = await connect(url);
    redisClients.push(redis);
    return redis;
  }

  beforeAll(async () => {
    provider = await startProvider();
  });

  afterAll(async () => {
    await stopAllApps();
    await Promise.all(redisClients.map((r) => r.quit().catch(() => r.disconnect())));
    await stopAllRedis();
    await provider?.close();
  }, 30_000);

  it('1,000 concurrent streams on one key over both instances, 20% cancelled at random: the ledger adds up to the thousandth', async () => {
    const redis = await startRedis();
    const key = `key-scale-${RUN}`;
    const MAX_CONCURRENT = 40;
    const CHUNKS = 6;
    // sized from the example app's own price table: the balance runs out after ~300 whole generations, partway
    // through (~360 streams are served on an idle machine; a loaded one refuses more at the concurrency limit and
    // serves fewer — CI once served under 400, so a balance for 400 never ran out)
    const perGeneration = priceOf(MODEL, { prompt_tokens: PROVIDER_PROMPT_TOKENS, completion_tokens: CHUNKS });
    const START = Math.round(300 * perGeneration);
    const [a, b] = await twoInstances(redis, { INFERY_API_KEYS: `${key}:${START}`, INFERY_MAX_CONCURRENT: String(MAX_CONCURRENT) });
    const apps = { a, b };
    await withOutputOnFailure([a, b], async () => {
      const store = await client(redis.url);
      // An instance counts a cancelled stream's tokens in its tokenizer thread, started by the first one (~0.3 s,
      // longer on a loaded machine) and holding that settlement's concurrency slot meanwhile: one cancelled stream
      // per instance first, so the run below sees the steady state (they are in the ledger sums like any other).
      await Promise.all((['a', 'b'] as const).map((i) => chat(apps[i], i, key, `chunks=${CHUNKS} pace=30 warm-up`, { cancelAfterEvents: 2, timeoutMs: 10_000 })));
      for (const app of [a, b]) await until(`the warm-up to settle on ${app.url}`, async () => ((await creditsOf(app, key)).data?.held === 0 ? true : undefined), 15_000, 50);
      const callsBefore = provider.calls.length;
      provider.resetMax();

      // sample both instances' view of the ledger while the requests run (bounded)
      const samples: Array<{ instance: string } & Credits> = [];
      const sampleErrors: string[] = [];
      let sampling = true;
      const sampler = (async () => {
        for (let i = 0; sampling && i < 4_000; i++) {
          for (const [instance, app] of Object.entries(apps)) {
            try {
              const { status, data } = await creditsOf(app, key);
              if (status === 200 && data) samples.push({ instance, ...data });
              else sampleErrors.push(`${instance}: GET /v1/credits answered ${status}`);
            } catch (err) {
              sampleErrors.push(`${instance}: ${(err as Error).message}`);
            }
          }
          await sleep(20);
        }
      })();

      const random = prng(20261126);
      const N = 1_000;
      // a fifth of the clients hang up: a quarter of those at a random moment of the first 60 ms (often before the
      // headers), the others after a random number of events (anywhere from the role chunk to the usage chunks)
      const plan = Array.from({ length: N }, (_, i) => {
        const cancels = random() < 0.2;
        const early = random() < 0.25;
        const at = random();
        return {
          instance: i % 2 === 0 ? 'a' : 'b',
          startAt: Math.floor(random() * 3_000),
          cancelAfterMs: cancels && early ? Math.floor(at * 60) : undefined,
          cancelAfterEvents: cancels && !early ? 1 + Math.floor(at * (CHUNKS + 4)) : undefined,
        };
      });
      const results = await Promise.all(
        plan.map(async (p, i) => {
          await sleep(p.startAt);
          return chat(apps[p.instance as 'a' | 'b'], p.instance, key, `chunks=${CHUNKS} pace=30 request #${i}`, { cancelAfterMs: p.cancelAfterMs, cancelAfterEvents: p.cancelAfterEvents, timeoutMs: 30_000 });
        }),
      );
      sampling = false;
      await sampler;
      expect(sampleErrors).toEqual([]);

      // every answer is a stream, 402 insufficient_quota or 429 rate_limit_exceeded; nothing else, no 5xx
      const failures = results.filter((r) => r.failure !== undefined);
      expect(failures.map((r) => r.failure)).toEqual([]);
      const byStatus = (status: number) => results.filter((r) => r.status === status);
      const answered = results.filter((r) => r.status !== 0);
      for (const r of answered) expect([200, 402, 429]).toContain(r.status);
      for (const r of byStatus(402)) expect(r.errorCode).toBe('insufficient_quota');
      for (const r of byStatus(429)) expect(r.errorCode).toBe('rate_limit_exceeded');
      expect(results.filter((r) => r.status === 0).every((r) => r.cancelled === 'before-headers')).toBe(true);
      // a stream that was not cancelled ended normally: the gateway's usage chunk, then [DONE]
      const whole = byStatus(200).filter((r) => r.cancelled === undefined);
      for (const r of whole) {
        expect(r.complete).toBe(true);
        expect(typeof creditsUsedOf(r)).toBe('number');
      }
      expect(byStatus(200).length).toBeGreaterThan(50);
      expect(byStatus(402).length).toBeGreaterThan(0); // the balance ran out partway
      expect(byStatus(429).length).toBeGreaterThan(0); // the shared concurrency limit refused some

      // held returns to 0 on both instances
      for (const app of [a, b]) {
        await until(`held to return to 0 on ${app.url}`, async () => ((await creditsOf(app, key)).data?.held === 0 ? true : undefined), 15_000, 100);
      }
      const final = (await creditsOf(a, key)).data!;
      expect((await creditsOf(b, key)).data).toMatchObject({ balance: final.balance, held: 0, used: final.used });
      samples.push({ instance: 'final', ...final });

      // the balance never went below zero, and balance + held + used == start in every sample
      const negative = samples.filter((s) => s.balance < 0);
      const unbalanced = samples.filter((s) => milli(s.balance) + milli(s.held) + milli(s.used) !== milli(START));
      expect(negative).toEqual([]);
      expect(unbalanced).toEqual([]);
      expect(samples.filter((s) => s.instance === 'a').length).toBeGreaterThan(5);
      expect(samples.filter((s) => s.instance === 'b').length).toBeGreaterThan(5);
      expect(Math.max(...samples.map((s) => s.held))).toBeGreaterThan(0);

      // the per-key concurrency limit held across both instances, at the provider
      const maxUpstream = provider.maxOpen;
      expect(maxUpstream).toBeLessThanOrEqual(MAX_CONCURRENT);
      expect(maxUpstream).toBeGreaterThan(1);

      // used == Σ charges of the generation records, exactly
      const records = await recordsOf(store, key);
      const charged = [...records.values()].reduce((sum, r) => sum + r.charged, 0);
      const unpaid = [...records.values()].reduce((sum, r) => sum + r.unpaid, 0);
      const drift = milli(final.used) - charged;
      expect(drift).toBe(0);
      expect(unpaid).toBe(0);
      expect(await expiredHolds(store, key)).toBe(0); // every hold was settled, none left to expire
      // each charge is the example app's price of the usage recorded (nothing for an unserved generation)
      for (const r of records.values()) {
        expect(r.charged + r.unpaid).toBe(r.outcome === 'unserved' ? 0 : milli(priceOf(r.model, r.usage)));
      }

      // one record per request that passed admission: every X-Generation-Id has its record; the only others
      // belong to clients that hung up before the headers reached them (cancelled or unserved)
      const admitted = results.filter((r) => r.generationId !== undefined);
      expect(admitted.length).toBe(byStatus(200).length);
      const headerIds = new Set(admitted.map((r) => r.generationId!));
      expect(headerIds.size).toBe(admitted.length);
      const missing = [...headerIds].filter((id) => !records.has(id));
      expect(missing).toEqual([]);
      const cancelledBeforeHeaders = results.filter((r) => r.cancelled === 'before-headers').length;
      const extra = [...records.values()].filter((r) => !headerIds.has(r.id));
      expect(extra.length).toBeLessThanOrEqual(cancelledBeforeHeaders);
      for (const r of extra) expect(['cancelled', 'unserved']).toContain(r.outcome);
      const calls = provider.calls.slice(callsBefore);
      expect(calls.length).toBeLessThanOrEqual(records.size); // every upstream call belongs to a recorded generation

      // what a client that read to the end was told it used is what its record charged
      for (const r of whole) expect(milli(creditsUsedOf(r)!)).toBe(records.get(r.generationId!)!.charged);

      // both instances served streams
      const servedBy = (instance: string) => byStatus(200).filter((r) => r.instance === instance).length;
      const upstreamBy = (instance: string) => calls.filter((c) => c.instance === instance).length;
      expect(servedBy('a')).toBeGreaterThan(0);
      expect(servedBy('b')).toBeGreaterThan(0);
      expect(upstreamBy('a')).toBeGreaterThan(0);
      expect(upstreamBy('b')).toBeGreaterThan(0);

      const cancelled = results.filter((r) => r.cancelled !== undefined).length;
      const planned = plan.filter((p) => p.cancelAfterMs !== undefined || p.cancelAfterEvents !== undefined).length;
      process.stderr.write(
        `\nscale-out: ${N} requests on one key over 2 instances — 200: ${byStatus(200).length} (a ${servedBy('a')}, b ${servedBy('b')}), ` +
          `402: ${byStatus(402).length}, 429: ${byStatus(429).length}; ${planned} set to hang up, ${cancelled} did before their answer was whole (${cancelledBeforeHeaders} before the headers, ` +
          `${calls.filter((c) => c.closedEarly).length} upstream closed early); ${records.size} records, Σ charges ${charged / 1000} credits, ` +
          `used ${final.used}, drift ${drift / 1000}, unpaid ${unpaid / 1000}; start ${START}, balance ${final.balance}; ` +
          `max upstream concurrency ${maxUpstream}/${MAX_CONCURRENT}; ${samples.length} ledger samples\n`,
      );
    });
    await Promise.all([a.kill(), b.kill()]);
  }, 90_000);

  itRestartingRedis(
    'Redis stopped and restarted while 50 streams are open: they finish, new requests get 503, then each is settled exactly once',
    async () => {
      const redis = await startRedis({ persistent: true });
      const key = `key-restart-${RUN}`;
      const START = 1_000;
      const [a, b] = await twoInstances(redis, { INFERY_API_KEYS: `${key}:${START}`, INFERY_MAX_CONCURRENT: '100', LOG_LEVEL: 'info' });
      await withOutputOnFailure([a, b, redis], async () => {
        const apps = [a, b];
        const N = 50;
        const CHUNKS = 8;
        const finished: boolean[] = Array.from({ length: N }, () => false);
        const pending = Array.from({ length: N }, (_, i) => {
          const app = apps[i % 2]!;
          return chat(app, i % 2 === 0 ? 'a' : 'b', key, `chunks=${CHUNKS} pace=450 slow #${i}`, { timeoutMs: 30_000 }).then((r) => {
            finished[i] = true;
            return r;
          });
        });
        // every stream passed admission (holds taken) before Redis goes away
        await until('the 50 streams to be admitted', async () => {
          const { data } = await creditsOf(a, key);
          return data && provider.open >= N ? data : undefined;
        });
        const { data: before } = await creditsOf(b, key);
        expect(before!.held).toBeGreaterThan(0);
        expect(finished.some(Boolean)).toBe(false); // all still streaming

        await redis.stop();
        // fail closed on both instances: the ledger answers 503, and so does a new generation
        for (const app of apps) {
          await until(`${app.url} to see Redis gone`, async () => ((await creditsOf(app, key)).status === 503 ? true : undefined), 10_000);
          const res = await fetch(`${app.url}/v1/chat/completions`, {
            method: 'POST',
            headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
            body: JSON.stringify({ model: MODEL, stream: true, messages: [{ role: 'user', content: 'chunks=1' }] }),
          });
          expect(res.status).toBe(503);
          expect(res.headers.get('retry-after')).toBe('1');
          expect(((await res.json()) as { error: { code: string } }).error.code).toBe('ledger_unavailable');
        }

        // the open streams finish normally: credits_used, then [DONE]
        const results = await Promise.all(pending);
        for (const r of results) {
          expect(r.failure).toBeUndefined();
          expect(r.status).toBe(200);
          expect(r.complete).toBe(true);
          expect(r.generationId).toMatch(/^gen-/);
          expect(creditsUsedOf(r)).toBeGreaterThan(0);
        }
        // their settlements wait in the two processes
        const logs = () => a.stdout + b.stdout;
        await until('50 settlements to be queued', () => (countLines(logs(), 'infery-stream ledger unreachable: settlement queued, retried until written') === N ? true : undefined), 5_000);

        await redis.restart();
        const store = await client(redis.url);
        // each queued settlement is written once Redis is back
        await until(
          'every settlement to be written',
          async () => {
            const credits = await Promise.all(apps.map((app) => creditsOf(app, key)));
            if (credits.some((c) => c.status !== 200 || c.data!.held !== 0)) return undefined;
            return (await recordsOf(store, key)).size === N ? true : undefined;
          },
          20_000,
          200,
        );
        const records = await recordsOf(store, key);
        const final = (await creditsOf(a, key)).data!;
        expect((await creditsOf(b, key)).data).toMatchObject({ balance: final.balance, held: 0, used: final.used });
        expect(new Set(records.keys())).toEqual(new Set(results.map((r) => r.generationId!)));
        const charged = [...records.values()].reduce((sum, r) => sum + r.charged, 0);
        const told = results.reduce((sum, r) => sum + milli(creditsUsedOf(r)!), 0);
        expect(milli(final.used)).toBe(charged);
        expect(charged).toBe(told);
        for (const r of results) expect(records.get(r.generationId!)!.charged).toBe(milli(creditsUsedOf(r)!));
        for (const r of records.values()) expect(r.outcome).toBe('completed');
        expect(milli(final.balance) + milli(final.used)).toBe(milli(START));
        expect(await expiredHolds(store, key)).toBe(0); // released by their settle, not by expiry
        expect(countLines(logs(), 'infery-stream queued settlement written')).toBe(N);

        // a new request works again, on both instances
        for (const app of apps) {
          const r = await chat(app, app === a ? 'a' : 'b', key, 'chunks=2 after the restart');
          expect(r.failure).toBeUndefined();
          expect(r.status).toBe(200);
          expect(r.complete).toBe(true);
        }
        process.stderr.write(`\nscale-out: Redis restarted under ${N} open streams — ${records.size} records, Σ charges ${charged / 1000} = used ${final.used} = Σ credits_used ${told / 1000}\n`);
      });
      await Promise.all([a.kill(), b.kill()]);
    },
    60_000,
  );

  // Regression: a settlement queued while Redis was unreachable used to answer { charged: <the full cost> }, told to
  // the client as credits_used, even when the provider's usage cost more than the hold and all the account had;
  // the ledger then charged only what the account had. A pending settlement now reports at most its hold.
  itRestartingRedis(
    'a settlement queued while Redis is away never tells the client more than its hold, nor more than the account ever had',
    async () => {
      const redis = await startRedis({ persistent: true });
      const key = `key-pending-${RUN}`;
      const START = 5;
      const app = await startExampleApp(
        { INFERY_REDIS_URL: redis.url, INFERY_UPSTREAM_URL: provider.url, INFERY_UPSTREAM_KEY: 'upstream-a', INFERY_API_KEYS: `${key}:${START}`, INFERY_RPM: '0', LOG_LEVEL: 'warn' },
        30_000,
      );
      await withOutputOnFailure([app, redis], async () => {
        // the provider reports 100,000 completion tokens for a request capped at 16: far above the hold and the balance
        const REPORTED = 100_000;
        const cost = priceOf(MODEL, { prompt_tokens: PROVIDER_PROMPT_TOKENS, completion_tokens: REPORTED });
        expect(cost).toBeGreaterThan(START);
        const opened = provider.open;
        const pending = chat(app, 'a', key, `chunks=4 pace=300 usage=${REPORTED}`, { timeoutMs: 20_000 });
        await until('the stream to be admitted', () => (provider.open > opened ? true : undefined));
        const hold = (await creditsOf(app, key)).data!.held;
        expect(hold).toBeGreaterThan(0);
        expect(hold).toBeLessThan(START);

        await redis.stop();
        await until('the app to see Redis gone', async () => ((await creditsOf(app, key)).status === 503 ? true : undefined), 10_000);
        const result = await pending;
        expect(result.complete).toBe(true);
        const told = creditsUsedOf(result)!;

        await redis.restart();
        const store = await client(redis.url);
        const record = await until('the queued settlement to be written', async () => (await recordsOf(store, key)).get(result.generationId!), 20_000, 200);
        // the ledger: everything the account had is charged, the rest of the cost is recorded as unpaid
        expect(record.charged).toBe(milli(START));
        expect(record.unpaid).toBe(milli(cost) - milli(START));
        expect((await creditsOf(app, key)).data).toMatchObject({ balance: 0, held: 0, used: START });
        process.stderr.write(`\nscale-out: queued settlement told the client credits_used ${told}; hold ${hold}, account start ${START}, charged ${record.charged / 1000}\n`);
        // the client: at most the hold (the documented promise of a pending settlement), never more than the account had
        expect(told).toBeLessThanOrEqual(hold);
        expect(told).toBeLessThanOrEqual(START);
      });
      await app.kill();
    },
    60_000,
  );

  it("an instance killed with SIGKILL while holding reservations: its holds and concurrency slots expire, the balance is whole again", async () => {
    const redis = await startRedis();
    const key = `key-kill-${RUN}`;
    const START = 100;
    const HOLD_TTL_MS = 2_000;
    const [a, b] = await twoInstances(redis, { INFERY_API_KEYS: `${key}:${START}`, INFERY_MAX_CONCURRENT: '3', INFERY_HOLD_TTL_MS: String(HOLD_TTL_MS) });
    await withOutputOnFailure([a, b], async () => {
      const store = await client(redis.url);
      const callsBefore = provider.calls.length;
      // three long streams through A take every slot of the key
      const streams = [0, 1, 2].map((i) => chat(a, 'a', key, `chunks=300 pace=100 long #${i}`, { timeoutMs: 30_000 }));
      await until('A to stream three generations', () => (provider.calls.slice(callsBefore).filter((c) => c.instance === 'a').length === 3 ? true : undefined));
      const held = (await creditsOf(b, key)).data!;
      expect(held.held).toBeGreaterThan(0);
      expect(held.used).toBe(0);
      const refused = await chat(b, 'b', key, 'chunks=1 refused');
      expect([refused.status, refused.errorCode]).toEqual([429, 'rate_limit_exceeded']);

      // A renews them: past the TTL they are still held
      await sleep(HOLD_TTL_MS + 500);
      expect((await creditsOf(b, key)).data).toMatchObject({ held: held.held, used: 0 });

      await a.kill();
      const killedAt = Date.now();
      // the killed instance's slots outlive it for at most the TTL: right after the kill, B still refuses
      const rightAfter = await chat(b, 'b', key, 'chunks=1 right after the kill');
      expect(Date.now() - killedAt).toBeLessThan(1_000); // else this check says nothing
      expect([rightAfter.status, rightAfter.errorCode]).toEqual([429, 'rate_limit_exceeded']);
      for (const r of await Promise.all(streams)) expect(r.complete).toBe(false); // cut off by the kill

      // its holds expire: nothing held, nothing charged, the balance whole again
      const whole = await until('the killed instance\'s holds to expire', async () => {
        const { data } = await creditsOf(b, key);
        return data && data.held === 0 ? data : undefined;
      }, 10_000, 100);
      expect(whole).toMatchObject({ balance: START, held: 0, used: 0 });
      expect(await expiredHolds(store, key)).toBe(3);
      expect((await recordsOf(store, key)).size).toBe(0);

      // and its slots: B serves the key again
      const served = await until('B to serve the key again', async () => {
        const r = await chat(b, 'b', key, 'chunks=2 after the kill');
        return r.status === 429 ? undefined : r;
      }, 10_000, 200);
      expect(served.status).toBe(200);
      expect(served.complete).toBe(true);
      const after = (await creditsOf(b, key)).data!;
      expect(milli(after.used)).toBe(milli(creditsUsedOf(served)!));
      expect(milli(after.balance) + milli(after.used)).toBe(milli(START));
      expect(after.held).toBe(0);
      process.stderr.write(`\nscale-out: SIGKILL with 3 holds (${held.held} credits) — released by expiry after ~${HOLD_TTL_MS} ms, balance back to ${whole.balance}/${START}\n`);
    });
    await b.kill();
  }, 60_000);
});
