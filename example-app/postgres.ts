import pg from 'pg';
import type { Logger } from '../lib';
import { PostgresCreditStore } from '../lib/services/postgres';
import { withoutPassword } from './safe-url';

/** The example app's ledger of record on PostgreSQL: the pool and the credit store (balances, holds, records). */
export interface PostgresState {
  pool: pg.Pool;
  store: PostgresCreditStore;
  /** Writes what is still queued (within `deadlineMs`), stops the store and ends the pool; resolves to what stayed pending. */
  close(deadlineMs: number): Promise<number>;
}

/** `url` without its password, for messages. */
export const safeDatabaseURL = withoutPassword;

/**
 * Connects to `url` (INFERY_DATABASE_URL), applies the schema's migrations, and opens every key of `apiKeys`
 * that does not exist yet with its starting credits (an existing account is never reset). Throws with a one-line
 * reason when PostgreSQL cannot be reached or the migrations fail.
 *
 * Every call is bounded: a connection that cannot be had within 2 s, or a statement that takes more than 5 s,
 * counts as PostgreSQL unreachable — the gateway answers 503 `ledger_unavailable` instead of letting requests
 * wait, and queues the settlements of streams that were running until it is back.
 */
export async function connectPostgresState(url: string, apiKeys: Record<string, number>, options: { holdTtlMs?: number; logger?: Logger }): Promise<PostgresState> {
  const { logger } = options;
  const pool = new pg.Pool({ connectionString: url, max: 20, connectionTimeoutMillis: 2_000, query_timeout: 5_000, statement_timeout: 5_000, idleTimeoutMillis: 30_000 });
  let down = false;
  // an idle connection that breaks (the server restarted) is an event on the pool, never an uncaught error
  pool.on('error', (err: Error) => {
    if (down) return;
    down = true;
    logger?.error({ database: safeDatabaseURL(url), err: err.message }, 'PostgreSQL connection lost: new requests get 503 ledger_unavailable while it is unreachable, settlements are queued');
  });
  const store = new PostgresCreditStore(pool, { holdTtlMs: options.holdTtlMs, logger });
  try {
    const applied = await store.migrate();
    let created = 0;
    for (const [key, credits] of Object.entries(apiKeys)) if (await store.open(key, credits)) created++;
    logger?.info({ database: safeDatabaseURL(url), migrations: applied, keys: Object.keys(apiKeys).length, created }, 'credit ledger on PostgreSQL');
  } catch (err) {
    store.close();
    await pool.end().catch(() => undefined);
    const why = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new Error(`cannot use PostgreSQL at ${safeDatabaseURL(url)} (INFERY_DATABASE_URL): ${why}`);
  }
  // when a new connection works again, the queued settlements are tried at once
  pool.on('connect', () => {
    if (!down) return;
    down = false;
    logger?.info({ database: safeDatabaseURL(url) }, 'PostgreSQL reachable again');
    store.retryPending();
  });
  return {
    pool,
    store,
    async close(deadlineMs) {
      const pending = await store.drain(deadlineMs);
      store.close();
      await pool.end().catch(() => undefined);
      return pending;
    },
  };
}
