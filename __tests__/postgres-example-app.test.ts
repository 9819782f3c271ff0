import http from 'node:http';
import pg from 'pg';
import { startExampleApp, stopAllApps, type AppProcess } from './helpers/app-process';
import { realServerOnly, startPostgres, type PostgresHandle } from './helpers/postgres-server';

/**
 * The example app with INFERY_DATABASE_URL (issue: "a ledger that survives anything"): two processes on one
 * PostgreSQL (the real server when installed, else PGlite), many concurrent streams on one key with random
 * cancellations — the records add up to `used` exactly, the balance never goes below zero, the holds come back to
 * zero; an instance killed with -9 while it holds reservations: its holds expire; PostgreSQL unreachable at start:
 * one line and exit 1.
 */

let db: PostgresHandle;
let admin: pg.Pool;
beforeAll(async () => {
  db = await startPostgres();
  admin = new pg.Pool({ connectionString: db.url, max: 2 });
  admin.on('error', () => undefined);
}, 60_000);
afterAll(async () => {
  await stopAllApps();
  await admin.end();
  await db.stop();
});

/** One streamed chat; `cancelAfterMs` aborts it (the client leaves) after that long. */
function stream(url: string, key: string, cancelAfterMs?: number): Promise<number> {
  return new Promise((resolve) => {
    const body = JSON.stringify({ model: 'mock-1', stream: true, max_tokens: 12, messages: [{ role: 'user', content: 'chaos with money' }] });
    const req = http.request(`${url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      res.on('data', () => undefined);
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', () => resolve(0));
    if (cancelAfterMs !== undefined) setTimeout(() => req.destroy(), cancelAfterMs);
    req.end(body);
  });
}

/** The key's ledger in one statement (one snapshot: a settlement committing meanwhile is in all of it or none). */
async function ledgerOf(schema: string, key: string): Promise<{ start: number; used: number; held: number; recorded: number; records: number; holds: number }> {
  const row = (
    await admin.query(
      `SELECT a.start_milli::text AS start, a.used_milli::text AS used,
              (SELECT coalesce(sum(milli), 0) FROM ${schema}.holds h WHERE h.account = a.account AND h.expires_at > clock_timestamp())::text AS held,
              (SELECT count(*) FROM ${schema}.holds h WHERE h.account = a.account AND h.expires_at > clock_timestamp())::int AS holds,
              (SELECT coalesce(sum(credits_used), 0) FROM ${schema}.generations g WHERE g.account = a.account)::text AS recorded,
              (SELECT count(*) FROM ${schema}.generations g WHERE g.account = a.account)::int AS records
         FROM ${schema}.accounts a WHERE a.account = $1`,
      [key],
    )
  ).rows[0]!;
  return { start: Number(row.start), used: Number(row.used), held: Number(row.held), holds: row.holds, recorded: Math.round(Number(row.recorded) * 1000), records: row.records };
}

test('two instances on one PostgreSQL, concurrent streams with random cancellations: Σ records = used exactly, never below zero, no hold left', async () => {
  const key = `pg-chaos-${process.pid}`;
  const env = { INFERY_DATABASE_URL: db.url, INFERY_API_KEYS: `${key}:60`, INFERY_MAX_CONCURRENT: '0', INFERY_RPM: '0', LOG_LEVEL: 'warn' };
  const apps: AppProcess[] = [await startExampleApp(env), await startExampleApp(env)];
  const n = db.kind === 'server' ? 1_000 : 150;
  let seed = 7;
  const random = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const statuses = await Promise.all(Array.from({ length: n }, (_, i) => stream(apps[i % 2]!.url, key, random() < 0.3 ? 50 + Math.floor(random() * 400) : undefined)));
  expect(statuses.filter((s) => s === 200).length).toBeGreaterThan(0);
  // every refusal is the ledger's own 402 (the 60 credits ran out), never a 5xx
  expect(statuses.filter((s) => s !== 200 && s !== 402 && s !== 0)).toEqual([]);
  // settlements after cancellations land shortly after the clients left
  const until = Date.now() + 15_000;
  let ledger = await ledgerOf('infery', key);
  while ((ledger.holds > 0 || ledger.recorded !== ledger.used) && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 200));
    ledger = await ledgerOf('infery', key);
  }
  expect(ledger.held).toBe(0);
  expect(ledger.recorded).toBe(ledger.used);
  expect(ledger.used).toBeLessThanOrEqual(ledger.start);
  expect(ledger.records).toBeGreaterThan(0);
  for (const app of apps) await app.stop();
}, 120_000);

(realServerOnly() ? test : test.skip)('kill -9 of an instance holding reservations: its holds expire and the credits come back', async () => {
  const key = `pg-kill-${process.pid}`;
  const env = { INFERY_DATABASE_URL: db.url, INFERY_API_KEYS: `${key}:10`, INFERY_HOLD_TTL_MS: '2000', INFERY_RPM: '0', LOG_LEVEL: 'warn' };
  const app = await startExampleApp(env);
  // slow streams hold their worst case while they run
  const running = Array.from({ length: 5 }, () =>
    stream(app.url, key).catch(() => 0),
  );
  const body = JSON.stringify({ model: 'mock-slow', stream: true, max_tokens: 50, messages: [{ role: 'user', content: 'hold on' }] });
  const slow = Array.from({ length: 5 }, () => fetch(`${app.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body }).catch(() => undefined));
  const until = Date.now() + 5_000;
  while ((await ledgerOf('infery', key)).holds < 5 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  expect((await ledgerOf('infery', key)).holds).toBeGreaterThanOrEqual(5);
  await app.kill();
  await Promise.all([...running, ...slow]);
  // nobody renews them now: within the hold ttl they are released, the next time the account is touched
  await new Promise((r) => setTimeout(r, 2_500));
  const other = await startExampleApp(env);
  const res = await fetch(`${other.url}/v1/credits`, { headers: { authorization: `Bearer ${key}` } });
  const balance = ((await res.json()) as { data: { held: number; balance: number; used: number } }).data;
  expect(balance.held).toBe(0);
  expect(balance.balance + balance.used).toBeCloseTo(10, 6);
  await other.stop();
}, 60_000);

(realServerOnly() ? test : test.skip)('PostgreSQL restarted under 50 open streams: every one is settled exactly once after it is back', async () => {
  const key = `pg-restart-${process.pid}`;
  const env = { INFERY_DATABASE_URL: db.url, INFERY_API_KEYS: `${key}:1000`, INFERY_MAX_CONCURRENT: '0', INFERY_RPM: '0', LOG_LEVEL: 'warn' };
  const app = await startExampleApp(env);
  // mock-slow: a word a second, so the streams are open while the server goes down and comes back
  const body = JSON.stringify({ model: 'mock-slow', stream: true, max_tokens: 3, messages: [{ role: 'user', content: 'outlive the restart' }] });
  const streams = Array.from({ length: 50 }, async () => {
    const res = await fetch(`${app.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body });
    const text = await res.text();
    return { status: res.status, credits: (/"credits_used":([0-9.]+)/.exec(text) ?? [])[1] };
  });
  const until = Date.now() + 10_000;
  while ((await ledgerOf('infery', key)).holds < 50 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  expect((await ledgerOf('infery', key)).holds).toBe(50);
  await admin.end(); // the admin pool's connections end with the server
  await db.halt!();
  const done = await Promise.all(streams);
  await db.start!();
  admin = new pg.Pool({ connectionString: db.url, max: 2 });
  admin.on('error', () => undefined);
  expect(done.every((d) => d.status === 200 && d.credits !== undefined)).toBe(true);
  const settleBy = Date.now() + 20_000;
  let ledger = await ledgerOf('infery', key);
  while ((ledger.records < 50 || ledger.holds > 0) && Date.now() < settleBy) {
    await new Promise((r) => setTimeout(r, 200));
    ledger = await ledgerOf('infery', key);
  }
  // each settled once: 50 records, their sum is `used`, no hold left, and each client was told at most what was charged
  expect(ledger.records).toBe(50);
  expect(ledger.recorded).toBe(ledger.used);
  expect(ledger.held).toBe(0);
  expect(app.stdout).toContain('settlement queued');
  await app.stop();
}, 90_000);

test('PostgreSQL unreachable at start: one line naming INFERY_DATABASE_URL, exit 1', async () => {
  await expect(startExampleApp({ INFERY_DATABASE_URL: 'postgres://postgres@127.0.0.1:1/postgres' }, 15_000)).rejects.toThrow(/cannot use PostgreSQL at postgres:\/\/postgres@127\.0\.0\.1:1\/postgres \(INFERY_DATABASE_URL\)/);
});
