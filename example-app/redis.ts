import { Redis } from 'ioredis';
import type { Logger } from '../lib';
import { RedisCreditStore, RedisLimitStore } from '../lib/services/redis';
import { withoutPassword } from './safe-url';

/** The example app's shared state on Redis: the credit store (ledger + generation records) and the limit store. */
export interface RedisState {
  redis: Redis;
  store: RedisCreditStore;
  limitStore: RedisLimitStore;
  /** Writes what is still queued (within `deadlineMs`), stops the stores and closes the connection; resolves to what stayed pending. */
  close(deadlineMs: number): Promise<number>;
}

/** `url` without its password, for messages. */
export const safeRedisURL = withoutPassword;

/**
 * Connects to `url` and opens every key of `apiKeys` that does not exist yet with its starting credits (an
 * existing account is never reset). Throws with a one-line reason when Redis cannot be reached.
 *
 * The client fails fast while disconnected (no offline queue): the gateway answers 503 `ledger_unavailable`
 * instead of letting requests wait, and the credit store queues settlements of streams that were running.
 */
export async function connectRedisState(url: string, apiKeys: Record<string, number>, options: { holdTtlMs?: number; logger?: Logger; limitsOnly?: boolean }): Promise<RedisState> {
  const { logger } = options;
  const redis = new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 5_000,
    // reconnect forever, at most every 2 s
    retryStrategy: (times) => Math.min(times * 100, 2_000),
  });
  // while connecting, the last error says why (ECONNREFUSED, ENOTFOUND, NOAUTH) better than "Connection is closed"
  let why: string | undefined;
  const whileConnecting = (err: Error): void => {
    why = err.message;
  };
  redis.on('error', whileConnecting);
  try {
    await redis.connect();
    await redis.ping();
  } catch (err) {
    redis.disconnect();
    throw new Error(`cannot reach Redis at ${safeRedisURL(url)} (INFERY_REDIS_URL): ${why ?? (err instanceof Error ? err.message : String(err))}`);
  }
  redis.off('error', whileConnecting);
  let down = false;
  redis.on('error', (err: Error) => {
    if (down) return;
    down = true;
    logger?.error({ redis: safeRedisURL(url), err: err.message }, 'Redis unreachable: new requests get 503 ledger_unavailable, settlements are queued');
  });
  redis.on('ready', () => {
    if (down) logger?.info({ redis: safeRedisURL(url) }, 'Redis reachable again');
    down = false;
  });
  const store = new RedisCreditStore(redis, { holdTtlMs: options.holdTtlMs, logger });
  // a generation's rate and concurrency slot are taken by the credit store with its hold: one script for the
  // admission, one for the settlement
  // (with another ledger of record — PostgreSQL — Redis keeps only the limits, taken by themselves)
  const limitStore = new RedisLimitStore(redis, { leaseTtlMs: options.holdTtlMs, logger, takenByReserve: options.limitsOnly !== true });
  let created = 0;
  for (const [key, credits] of Object.entries(apiKeys)) if (await store.open(key, credits)) created++;
  logger?.info({ redis: safeRedisURL(url), keys: Object.keys(apiKeys).length, created }, options.limitsOnly ? 'limits on Redis' : 'credit ledger on Redis');
  return {
    redis,
    store,
    limitStore,
    async close(deadlineMs) {
      const pending = await store.drain(deadlineMs);
      store.close();
      limitStore.close();
      await redis.quit().catch(() => redis.disconnect());
      return pending;
    },
  };
}
