import pg from 'pg';
import { BudgetExhaustedError, budgetWindow, generationDraft, type MeterEvent } from '../lib';
import { LedgerUnavailableError, MIGRATIONS, PostgresCreditStore } from '../lib/services/postgres';
import { realServerOnly, startPostgres, type PostgresHandle } from './helpers/postgres-server';

/**
 * The PostgreSQL credit store against the same contract as the memory and Redis stores — on Debian's PostgreSQL
 * when it is installed (the tests start it themselves), else on the embedded PGlite (said once): migrations,
 * accounts that are never reset, holds and their expiry, idempotent settlement, records by id and by account,
 * budgets, and no lost update under concurrency from several pools (instances).
 */

let db: PostgresHandle;
const pools: pg.Pool[] = [];
const stores: PostgresCreditStore[] = [];
let schemas = 0;

function pool(): pg.Pool {
  const p = new pg.Pool({ connectionString: db.url, max: db.kind === 'embedded' ? 2 : 10, connectionTimeoutMillis: 5_000 });
  p.on('error', () => undefined);
  pools.push(p);
  return p;
}

/** A store on a fresh schema (its own tables), migrated. */
async function freshStore(options: ConstructorParameters<typeof PostgresCreditStore>[1] = {}, on: pg.Pool = pool(), schema = `t${process.pid}_${++schemas}`): Promise<PostgresCreditStore> {
  const store = new PostgresCreditStore(on, { schema, ...options });
  stores.push(store);
  await store.migrate();
  return store;
}

beforeAll(async () => {
  db = await startPostgres();
}, 60_000);
afterAll(async () => {
  for (const store of stores) store.close();
  await Promise.all(pools.map((p) => p.end().catch(() => undefined)));
  await db.stop();
});

const draft = (id: string, over: Partial<MeterEvent> = {}) =>
  generationDraft({
    generationId: id,
    providerId: `chatcmpl-${id}`,
    endpoint: 'chat.completions',
    upstream: 'primary',
    failedUpstreams: [],
    model: 'gpt-4o',
    stream: true,
    outcome: 'completed',
    usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15, classes: { input_tokens: 10, uncached_input_tokens: 10, cache_read_tokens: 0, cache_write_tokens: 0, output_tokens: 5, output_reasoning_tokens: 0 } },
    cancelled: false,
    finishReason: 'stop',
    error: undefined,
    timings: { ttftMs: 12, durationMs: 340 },
    ...over,
  });

describe('schema', () => {
  test('migrate() creates the schema once; a second call (another instance starting) applies nothing', async () => {
    const p = pool();
    const schema = `m${process.pid}`;
    const a = new PostgresCreditStore(p, { schema });
    const b = new PostgresCreditStore(p, { schema });
    stores.push(a, b);
    const [first, second] = await Promise.all([a.migrate(), b.migrate()]);
    expect([...first, ...second].sort()).toEqual(MIGRATIONS.map((m) => m.version));
    expect(await a.migrate()).toEqual([]);
    const tables = (await p.query(`SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1`, [schema])).rows.map((r) => r.table_name);
    expect(tables).toEqual(['accounts', 'budget_spend', 'generations', 'holds', 'schema_migrations', 'settlements', 'usage_by_model']);
    // exact amounts: no float column in the ledger
    const types = (await p.query(`SELECT DISTINCT data_type FROM information_schema.columns WHERE table_schema = $1 AND column_name ~ '(milli|credits_used|unpaid)$'`, [schema])).rows.map((r) => r.data_type);
    expect(types.sort()).toEqual(['bigint', 'numeric']);
  });

  test('a schema name that is not a plain identifier is refused', () => {
    expect(() => new PostgresCreditStore(pool(), { schema: 'x; DROP TABLE y' })).toThrow(TypeError);
  });
});

describe('the CreditStore contract', () => {
  test('accounts: opened once, never reset; unknown ones are unknown', async () => {
    const store = await freshStore();
    expect(await store.open('acct-1', 10)).toBe(true);
    expect(await store.open('acct-1', 999)).toBe(false);
    expect(await store.has('acct-1')).toBe(true);
    expect(await store.has('nobody')).toBe(false);
    expect(await store.balanceOf('acct-1')).toEqual({ balance: 10, held: 0, used: 0, by_model: {} });
    expect(await store.balanceOf('nobody')).toBeUndefined();
    await expect(store.reserve('nobody', 'h', 1)).rejects.toThrow('unknown key');
  });

  test('reserve then settle: exact to the thousandth, at most the hold plus what is available, once per hold id', async () => {
    const store = await freshStore();
    await store.open('a', 1);
    expect(await store.reserve('a', 'h1', 0.6)).toBe(true);
    expect(await store.reserve('a', 'h2', 0.5)).toBe(false); // 0.4 available
    await expect(store.reserve('a', 'h1', 0.1)).rejects.toThrow(/exists already/);
    expect(await store.balanceOf('a')).toMatchObject({ balance: 0.4, held: 0.6, used: 0 });
    // the provider reported more than the hold: charged the hold plus what is available, the rest unpaid
    const first = await store.settle('a', 'h1', 'gpt-4o', 1.2345, draft('h1'));
    expect(first).toEqual({ charged: 1, unpaid: 0.235 });
    // a retried settle (a reply lost, say) answers the first one and charges nothing more
    expect(await store.settle('a', 'h1', 'gpt-4o', 1.2345, draft('h1'))).toEqual({ charged: 1, unpaid: 0.235 });
    expect(await store.balanceOf('a')).toEqual({ balance: 0, held: 0, used: 1, by_model: { 'gpt-4o': 1 } });
    await expect(store.reserve('a', 'h1', 0)).rejects.toThrow(/exists already/); // a settled id is never held again
  });

  test('concurrent settles of one hold (two instances, a retry racing the first) charge once', async () => {
    const store = await freshStore();
    const other = new PostgresCreditStore(pool(), { schema: (store as unknown as { s: string }).s.slice(1, -1) });
    stores.push(other);
    await store.open('a', 10);
    expect(await store.reserve('a', 'h', 3)).toBe(true);
    const results = await Promise.all([store.settle('a', 'h', 'm', 2), other.settle('a', 'h', 'm', 2), store.settle('a', 'h', 'm', 2)]);
    expect(results).toEqual([{ charged: 2, unpaid: 0 }, { charged: 2, unpaid: 0 }, { charged: 2, unpaid: 0 }]);
    expect(await store.balanceOf('a')).toMatchObject({ used: 2, held: 0, balance: 8 });
  });

  test('records: by gateway id, by provider id (the latest), paged by account newest first; another account sees none', async () => {
    const store = await freshStore();
    await store.open('a', 100);
    await store.open('b', 100);
    for (let i = 0; i < 5; i++) {
      await store.reserve('a', `g${i}`, 1);
      await store.settle('a', `g${i}`, 'gpt-4o', 0.5, draft(`g${i}`, { providerId: 'chatcmpl-same' }));
    }
    const record = await store.findGeneration('a', 'g2');
    expect(record).toMatchObject({ id: 'g2', provider_id: 'chatcmpl-same', endpoint: 'chat.completions', model: 'gpt-4o', credits_used: 0.5, unpaid: 0, outcome: 'completed', stream: true, finish_reason: 'stop', time_to_first_token_ms: 12, duration_ms: 340 });
    expect(record!.usage.classes).toMatchObject({ input_tokens: 10, output_tokens: 5 });
    expect((await store.findGeneration('a', 'chatcmpl-same'))!.id).toBe('g4');
    expect(await store.findGeneration('b', 'g2')).toBeUndefined();
    // a hostile provider's id is kept to the 256 characters a lookup by it reads
    await store.reserve('a', 'long-id', 1);
    await store.settle('a', 'long-id', 'gpt-4o', 0.1, draft('long-id', { providerId: 'x'.repeat(100_000) }));
    expect((await store.findGeneration('a', 'x'.repeat(256)))!.id).toBe('long-id');
    await store.reserve('a', 'g-late', 1);
    await store.settle('a', 'g-late', 'gpt-4o', 0.1, draft('g-late', { providerId: 'chatcmpl-other' }));
    const page1 = await store.listGenerations('a', 4);
    expect(page1.map((r) => r.id)).toEqual(['g-late', 'long-id', 'g4', 'g3']);
    const settledAt = (await (pools.at(-1) ?? pool()).query(`SELECT settled_at FROM ${(store as unknown as { s: string }).s}.generations WHERE id = 'g3'`)).rows[0]!.settled_at as Date;
    const page2 = await store.listGenerations('a', 2, settledAt.toISOString());
    expect(page2.map((r) => r.id)).toEqual(['g2', 'g1']);
  });

  test('an instance that dies holding reservations: its holds expire and the credits come back', async () => {
    const schema = `t${process.pid}_${++schemas}`;
    const dying = await freshStore({ holdTtlMs: 1_000 }, pool(), schema);
    await dying.open('a', 5);
    expect(await dying.reserve('a', 'h1', 2)).toBe(true);
    expect(await dying.reserve('a', 'h2', 2)).toBe(true);
    dying.close(); // no more renewals: as if killed
    const survivor = new PostgresCreditStore(pool(), { schema });
    stores.push(survivor);
    expect(await survivor.reserve('a', 'h3', 2)).toBe(false);
    await new Promise((r) => setTimeout(r, 1_300));
    expect((await survivor.balanceOf('a'))!.held).toBe(0);
    expect(await survivor.reserve('a', 'h3', 5)).toBe(true);
  });

  test('a live hold is renewed while its generation runs, so it outlives its ttl', async () => {
    const store = await freshStore({ holdTtlMs: 1_000 });
    await store.open('a', 5);
    expect(await store.reserve('a', 'long', 5)).toBe(true);
    await new Promise((r) => setTimeout(r, 1_800));
    expect((await store.balanceOf('a'))!.held).toBe(5);
    expect(await store.settle('a', 'long', 'm', 1)).toEqual({ charged: 1, unpaid: 0 });
  });

  test('no lost update: 300 concurrent reserve-then-settle from three instances never overdraw, and the records add up', async () => {
    const schema = `t${process.pid}_${++schemas}`;
    const first = await freshStore({}, pool(), schema);
    const instances = [first, new PostgresCreditStore(pool(), { schema }), new PostgresCreditStore(pool(), { schema })];
    stores.push(...instances.slice(1));
    await first.open('a', 50);
    const outcomes = await Promise.all(
      Array.from({ length: 300 }, async (_, i) => {
        const store = instances[i % 3]!;
        if (!(await store.reserve('a', `c${i}`, 0.5))) return 0;
        const settlement = await store.settle('a', `c${i}`, 'm', 0.3 + (i % 3) * 0.001, draft(`c${i}`));
        return settlement.charged;
      }),
    );
    const balance = (await first.balanceOf('a'))!;
    expect(balance.balance).toBeGreaterThanOrEqual(0);
    expect(balance.held).toBe(0);
    const charged = outcomes.reduce((sum, c) => sum + Math.round(c * 1000), 0);
    expect(Math.round(balance.used * 1000)).toBe(charged);
    const { rows } = await pools[pools.length - 1]!.query(`SELECT coalesce(sum(credits_used), 0)::text AS total, count(*)::int AS n FROM "${schema}".generations`);
    expect(Math.round(Number(rows[0]!.total) * 1000)).toBe(charged);
    expect(rows[0]!.n).toBe(outcomes.filter((c) => c > 0).length);
  }, 60_000);

  test('budgets: the window\'s spend plus every hold in flight; calendar and rolling windows', async () => {
    const store = await freshStore();
    await store.open('a', 100);
    const day = budgetWindow({ credits: 5, window: 'day' });
    expect(await store.reserve('a', 'b1', 3, undefined, day)).toBe(true);
    await expect(store.reserve('a', 'b2', 3, undefined, day)).rejects.toThrow(BudgetExhaustedError);
    expect((await store.settle('a', 'b1', 'm', 3, undefined, undefined, day)).budget).toEqual({ id: day.id, spent: 3, limit: 5, softLimitCrossed: false });
    const refusal = await store.reserve('a', 'b2', 2.5, undefined, day).catch((err: unknown) => err as BudgetExhaustedError);
    expect(refusal).toBeInstanceOf(BudgetExhaustedError);
    expect((refusal as BudgetExhaustedError).spent).toBe(3);
    const rolling = budgetWindow({ credits: 2, window: { rollingHours: 1 } });
    expect(await store.reserve('a', 'r1', 1.5, undefined, rolling)).toBe(true);
    expect((await store.settle('a', 'r1', 'm', 1.7, undefined, undefined, rolling)).budget).toMatchObject({ spent: 1.7, softLimitCrossed: true });
    const late = await store.reserve('a', 'r2', 1, undefined, rolling).catch((err: unknown) => err as BudgetExhaustedError);
    expect(late).toBeInstanceOf(BudgetExhaustedError);
    expect((late as BudgetExhaustedError).resetsAt - Date.now()).toBeGreaterThan(3_600_000 - 60_000);
  });
});

describe('PostgreSQL unreachable', () => {
  test('reads and holds fail closed (503 ledger_unavailable); a settlement waits in the bounded queue and reports at most its hold', async () => {
    const dead = new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:1/postgres', connectionTimeoutMillis: 300 });
    dead.on('error', () => undefined);
    pools.push(dead);
    const store = new PostgresCreditStore(dead, { maxPendingSettles: 2 });
    stores.push(store);
    await expect(store.has('a')).rejects.toThrow(LedgerUnavailableError);
    await expect(store.reserve('a', 'h', 1)).rejects.toMatchObject({ status: 503, code: 'ledger_unavailable' });
    await expect(store.balanceOf('a')).rejects.toThrow(LedgerUnavailableError);
    expect(await store.settle('a', 'h', 'm', 1)).toEqual({ charged: 1, unpaid: 0, pending: true });
    expect(store.pendingSettles).toBe(1);
  });

  test('a settlement whose reply was lost (committed, then the connection broke) is retried and charges once', async () => {
    const store0 = await freshStore();
    const schema = (store0 as unknown as { s: string }).s.slice(1, -1);
    const real = pool();
    let dropNextSettleReply = true;
    // a client that runs the statement, then loses the answer: what a connection cut after COMMIT looks like
    const lossy = {
      query: async (text: string, values?: unknown[]) => {
        const result = await real.query(text, values);
        if (dropNextSettleReply && text.includes('.settle(')) {
          dropNextSettleReply = false;
          throw Object.assign(new Error('Connection terminated unexpectedly'), {});
        }
        return result;
      },
    };
    const store = new PostgresCreditStore(lossy, { schema });
    stores.push(store);
    await store0.open('a', 10);
    expect(await store.reserve('a', 'lost', 5)).toBe(true);
    // the gateway is told it is pending (at most the hold), and the queue retries it
    expect(await store.settle('a', 'lost', 'm', 3, draft('lost'))).toEqual({ charged: 3, unpaid: 0, pending: true });
    store.retryPending();
    const until = Date.now() + 10_000;
    while (store.pendingSettles > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    expect(store.pendingSettles).toBe(0);
    expect(await store0.balanceOf('a')).toMatchObject({ used: 3, held: 0, balance: 7 });
    expect((await store0.listGenerations('a')).length).toBe(1);
  });

  (realServerOnly() ? test : test.skip)('PostgreSQL restarted while settlements wait: each is written exactly once when it is back', async () => {
    const store = await freshStore();
    await store.open('a', 100);
    for (let i = 0; i < 20; i++) expect(await store.reserve('a', `p${i}`, 2)).toBe(true);
    await db.halt!();
    const settlements = await Promise.all(Array.from({ length: 20 }, (_, i) => store.settle('a', `p${i}`, 'm', 1, draft(`p${i}`))));
    expect(settlements.every((s) => s.pending === true && s.charged <= 2)).toBe(true);
    expect(store.pendingSettles).toBe(20);
    await db.start!();
    store.retryPending();
    const until = Date.now() + 20_000;
    while (store.pendingSettles > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    expect(store.pendingSettles).toBe(0);
    expect(await store.balanceOf('a')).toMatchObject({ used: 20, held: 0, balance: 80 });
    expect((await store.listGenerations('a', 100)).length).toBe(20);
  }, 60_000);
});
