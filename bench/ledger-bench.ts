/**
 * Section 7 of `npm run bench`: what a shared ledger costs. The same gateway (admission, limits, reserve and
 * settle through the example app's CreditStore calls) with the in-memory stores, with the Redis stores on a
 * redis-server of this machine, and with the PostgreSQL credit store (Debian's server, else PGlite: said),
 * measured in the same run: time to first content event one stream at a time, and generations per second with
 * many at once. Skipped with a notice when neither REDIS_URL nor redis-server is there.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import express from 'express';
import { Redis } from 'ioredis';
import { bearerToken, generationDraft, inferyStream, MemoryCreditStore, MemoryLimitStore, type CreditStore, type LimitStore } from '../lib';
import pg from 'pg';
import { PostgresCreditStore } from '../lib/services/postgres';
import { RedisCreditStore, RedisLimitStore } from '../lib/services/redis';
import { streamChat, type Target } from './client';
import { startPostgres, type PostgresHandle } from './postgres-server';
import { percentile } from './stats';

const KEY = 'bench-client';

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A redis-server for the bench: REDIS_URL, or one started from PATH (stopped by `stop`); undefined when neither. */
async function redisForBench(): Promise<{ url: string; stop(): Promise<void> } | undefined> {
  if (process.env.REDIS_URL) return { url: process.env.REDIS_URL, stop: async () => undefined };
  if (spawnSync('sh', ['-c', 'command -v redis-server']).status !== 0) return undefined;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'infery-bench-redis-'));
  const port = await freePort();
  const child: ChildProcess = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
  const probe = new Redis(port, '127.0.0.1', { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
  probe.on('error', () => undefined);
  for (let i = 0; i < 100; i++) {
    try {
      await probe.connect();
      await probe.ping();
      break;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  probe.disconnect();
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: async () => {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

interface Side {
  name: string;
  target: Target;
  close(): Promise<void>;
}

/**
 * A gateway whose billing goes through `store` and `limitStore`, as the example app's does (price: 0.001 per
 * token). `remembered`: a key seen to exist is not looked up again (the example app remembers it for a minute).
 */
async function gatewayWith(name: string, upstreamURL: string, store: CreditStore, limitStore: LimitStore, remembered = false): Promise<Side> {
  const known = new Set<string>();
  const middleware = inferyStream<string>({
    upstream: { baseURL: upstreamURL, apiKey: 'sk-bench' },
    authenticate: async (req) => {
      const key = bearerToken(req);
      if (key !== undefined && remembered && known.has(key)) return key;
      const exists = key !== undefined && (await store.has(key));
      if (exists && remembered) known.add(key);
      return exists ? key : undefined;
    },
    // `limits`: with a limit store that is `takenByReserve`, the store takes the rate and the slot with the hold
    reserve: async ({ account, generationId, worstCase, limits }) => {
      if (!(await store.reserve(account, generationId, (worstCase.prompt_tokens + worstCase.completion_tokens) / 1000, limits))) throw new Error('no credits');
      return generationId;
    },
    meter: async (event) => (await store.settle(event.account, event.generationId, event.model, event.usage.total_tokens / 1000, generationDraft(event), event.limits)).charged,
    limits: { maxConcurrent: 10_000, requestsPerMinute: 10_000_000, store: limitStore },
    heartbeatInterval: 0,
  });
  const app = express();
  app.use(express.json());
  app.use(middleware);
  const server = http.createServer(app);
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/chat/completions`);
  const agent = new http.Agent({ keepAlive: true });
  return {
    name,
    target: { name: 'gateway', url, agent },
    close: async () => {
      middleware.close();
      agent.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const body = (i: number) => ({ model: 'bench', stream: true, max_tokens: 64, messages: [{ role: 'user', content: 'hi' }], bench: { id: `ledger-${i}`, chunks: 20, content: ' word' } });

/** Section 7: the in-memory stores against the Redis stores, measured alternately in one run. */
export async function benchSharedLedger(upstreamURL: string, print: (title: string) => void, table: (head: string[], rows: string[][]) => string): Promise<Record<string, unknown>> {
  const redisServer = await redisForBench();
  if (!redisServer) {
    print('7. Shared ledger: skipped (no REDIS_URL and no redis-server on PATH; install the Debian package redis-server)');
    return { skipped: 'no redis' };
  }
  // one client per Redis side, each counting the commands it sends (a command is a round trip here: nothing is pipelined)
  const sent = new Map<Redis, number>();
  const counted = async (): Promise<Redis> => {
    const client = new Redis(redisServer.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, lazyConnect: true });
    client.on('error', () => undefined);
    await client.connect();
    const send = client.sendCommand.bind(client);
    sent.set(client, 0);
    client.sendCommand = ((...args: Parameters<Redis['sendCommand']>) => {
      sent.set(client, sent.get(client)! + 1);
      return send(...args);
    }) as Redis['sendCommand'];
    return client;
  };
  const redis = await counted();
  const together = await counted();
  const prefix = `bench-${process.pid}:`;
  const redisStore = new RedisCreditStore(redis, { prefix });
  const redisLimits = new RedisLimitStore(redis, { prefix });
  const togetherStore = new RedisCreditStore(together, { prefix: `${prefix}t:` });
  const togetherLimits = new RedisLimitStore(together, { prefix: `${prefix}t:`, takenByReserve: true });
  await redisStore.open(KEY, 1e9);
  await togetherStore.open(KEY, 1e9);
  // the ledger of record on PostgreSQL, the limits in memory (one process)
  let postgres: PostgresHandle | undefined;
  let pgPool: pg.Pool | undefined;
  let pgStore: PostgresCreditStore | undefined;
  let pgStatements = 0;
  try {
    postgres = await startPostgres(true);
    pgPool = new pg.Pool({ connectionString: postgres.url, max: postgres.kind === 'embedded' ? 4 : 20 });
    pgPool.on('error', () => undefined);
    // statements sent, counted as the Redis commands are (one statement is one round trip)
    const pool = pgPool;
    const query = pool.query.bind(pool) as (...args: unknown[]) => Promise<unknown>;
    pgStatements = 0;
    (pool as unknown as { query: (...args: unknown[]) => Promise<unknown> }).query = (...args: unknown[]) => {
      pgStatements++;
      return query(...args);
    };
    pgStore = new PostgresCreditStore(pool, { schema: `bench_${process.pid}` });
    await pgStore.migrate();
    await pgStore.open(KEY, 1e9);
  } catch (err) {
    print(`   (PostgreSQL side skipped: ${(err as Error).message})`);
    pgStore = undefined;
  }
  const pgName = postgres?.kind === 'embedded' ? 'PostgreSQL (PGlite, embedded)' : 'PostgreSQL';
  const sides = [
    await gatewayWith('in memory', upstreamURL, new MemoryCreditStore({ [KEY]: 1e9 }), new MemoryLimitStore()),
    await gatewayWith('Redis, separate steps', upstreamURL, redisStore, redisLimits),
    await gatewayWith('Redis, limits with the hold', upstreamURL, togetherStore, togetherLimits, true),
    ...(pgStore ? [await gatewayWith(pgName, upstreamURL, pgStore, new MemoryLimitStore(), true)] : []),
  ];
  const clientOf: Record<string, Redis> = { 'Redis, separate steps': redis, 'Redis, limits with the hold': together };
  const trips = new Map<string, number>();
  const runs = 200;
  const concurrent = { streams: 50, rounds: 4 };
  const ttfc = new Map<string, number[]>(sides.map((s) => [s.name, []]));
  const rate = new Map<string, number[]>(sides.map((s) => [s.name, []]));
  let n = 0;
  try {
    for (const side of sides) for (let i = 0; i < 20; i++) await streamChat(side.target, body(n++)); // warm-up
    // round trips of one generation, the key already seen and the scripts loaded
    for (const side of sides) {
      const client = clientOf[side.name];
      if (side.name === pgName) {
        const before = pgStatements;
        await streamChat(side.target, body(n++));
        trips.set(side.name, pgStatements - before);
      }
      if (!client) continue;
      const before = sent.get(client)!;
      await streamChat(side.target, body(n++));
      trips.set(side.name, sent.get(client)! - before);
    }
    for (let i = 0; i < runs; i++) {
      for (const side of i % 2 === 0 ? sides : [...sides].reverse()) ttfc.get(side.name)!.push((await streamChat(side.target, body(n++))).ttfcMs);
    }
    for (let r = 0; r < concurrent.rounds; r++) {
      for (const side of r % 2 === 0 ? sides : [...sides].reverse()) {
        const t0 = performance.now();
        await Promise.all(Array.from({ length: concurrent.streams }, () => streamChat(side.target, body(n++))));
        rate.get(side.name)!.push((concurrent.streams * 1000) / (performance.now() - t0));
      }
    }
  } finally {
    for (const side of sides) await side.close();
    for (const closable of [redisStore, redisLimits, togetherStore, togetherLimits]) closable.close();
    for (const client of [redis, together]) await client.quit().catch(() => client.disconnect());
    await redisServer.stop();
    pgStore?.close();
    await pgPool?.end().catch(() => undefined);
    await postgres?.stop();
  }
  print(`7. Shared ledger: the same gateway with in-memory, Redis and PostgreSQL stores (${runs} sequential streams each; ${concurrent.rounds} rounds of ${concurrent.streams} at once)`);
  const out: Record<string, unknown> = { runs, concurrent };
  const rows = sides.map((side) => {
    const t = ttfc.get(side.name)!;
    const rs = rate.get(side.name)!.sort((a, b) => a - b);
    const med = rs[Math.floor(rs.length / 2)]!;
    const roundTrips = trips.get(side.name) ?? 0;
    out[side.name] = { ttfcP50Ms: +percentile(t, 50).toFixed(2), ttfcP95Ms: +percentile(t, 95).toFixed(2), generationsPerSec: Math.round(med), roundTrips };
    return [side.name, `${percentile(t, 50).toFixed(2)} ms`, `${percentile(t, 95).toFixed(2)} ms`, `${Math.round(med)}`, String(roundTrips)];
  });
  const mem = ttfc.get('in memory')!;
  for (const name of [...Object.keys(clientOf), ...(pgStore ? [pgName] : [])]) {
    const red = ttfc.get(name)!;
    rows.push([`added by ${name}`, `${(percentile(red, 50) - percentile(mem, 50)).toFixed(2)} ms`, `${(percentile(red, 95) - percentile(mem, 95)).toFixed(2)} ms`, '', '']);
  }
  console.log(table(['', 'TTFC p50', 'TTFC p95', 'generations/s (50 at once, 20 chunks)', 'round trips / generation'], rows));
  console.log('  (separate steps: has, rate bucket, slot, reserve, settle, slot release; limits with the hold: one admission script, one settlement script, the key remembered; PostgreSQL: one reserve and one settle function call, each a transaction with the account row locked, committed before the answer, limits in memory; loopback; client, gateway and provider share this process)');
  return out;
}
