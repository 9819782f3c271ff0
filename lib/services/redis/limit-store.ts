import { randomUUID } from 'node:crypto';
import type { Logger } from '../../contract/hooks';
import { limitKeys } from './keys';
import type { LimitStore, RateState } from '../../ledgers/stores/limit-store';
import { Renewer } from '../../ledgers/stores/renewer';
import { LedgerUnavailableError, ScriptRunner, type RedisClient } from './runner';
import { ACQUIRE, HIT, RENEW_LEASES, RETURN_TOKENS, TAKE_TOKENS } from './scripts';

/** Options of {@link RedisLimitStore}. */
export interface RedisLimitStoreOptions {
  /** Prefix of every key. Default: `infery:`. */
  prefix?: string;
  /**
   * How long a concurrency slot lives without renewal (ms). This process renews its slots every third of it, so
   * a slot outlives a long stream but not a dead instance. Default: 60,000.
   */
  leaseTtlMs?: number;
  /** The longest a Redis call may take before it counts as unreachable (ms). Default: 2,000. */
  commandTimeoutMs?: number;
  /**
   * Leave the limits of generations to `RedisCreditStore.reserve`, which takes the rate and the slot with the hold
   * in one script (one round trip for the whole admission, one for the settlement: pass `ReserveContext.limits`
   * to `reserve` and `MeterEvent.limits` to `settle`). Both stores need the same `prefix`, and the credit store's
   * `holdTtlMs` is then the slots' lifetime. Default: false (this store takes them: two more round trips).
   */
  takenByReserve?: boolean;
  logger?: Logger;
}

/**
 * A {@link LimitStore} in Redis: per-key concurrency slots and the per-minute token bucket are shared by every
 * instance on the same Redis and prefix, so `limits.maxConcurrent` and `limits.requestsPerMinute` hold across
 * all of them. Each call is one atomic script on the Redis clock. A slot is a lease that expires unless the
 * instance holding it renews it, so the slots of a killed instance come back. Redis unreachable: `acquire` and
 * `hit` throw `LedgerUnavailableError` (503, fail closed).
 */
export class RedisLimitStore implements LimitStore {
  private readonly runner: ScriptRunner;
  private readonly prefix: string;
  private readonly leaseTtlMs: number;
  private readonly instance = randomUUID();
  private counter = 0;
  /** Leases this process holds: limit key → lease ids. */
  private readonly leases = new Map<string, string[]>();
  private readonly renewer: Renewer;
  readonly takenByReserve: boolean;

  constructor(redis: RedisClient, options: RedisLimitStoreOptions = {}) {
    if (!redis || typeof (redis as { evalsha?: unknown }).evalsha !== 'function') throw new TypeError('RedisLimitStore needs an ioredis client (new Redis(url))');
    const leaseTtlMs = options.leaseTtlMs ?? 60_000;
    if (!Number.isSafeInteger(leaseTtlMs) || leaseTtlMs < 1_000) throw new RangeError(`RedisLimitStore: leaseTtlMs must be a whole number ≥ 1000, got ${String(leaseTtlMs)}`);
    const timeout = options.commandTimeoutMs ?? 2_000;
    if (!Number.isSafeInteger(timeout) || timeout < 10) throw new RangeError(`RedisLimitStore: commandTimeoutMs must be a whole number ≥ 10, got ${String(timeout)}`);
    this.prefix = options.prefix ?? 'infery:';
    if (typeof this.prefix !== 'string') throw new TypeError('RedisLimitStore: prefix must be a string');
    this.leaseTtlMs = leaseTtlMs;
    this.takenByReserve = options.takenByReserve === true;
    this.runner = new ScriptRunner(redis, timeout);
    this.renewer = new Renewer(Math.floor(leaseTtlMs / 3), () => this.renew(), options.logger, 'Redis concurrency slots');
  }

  async acquire(key: string, max: number): Promise<boolean> {
    const id = `${this.instance}:${++this.counter}`;
    const { leases } = limitKeys(this.prefix, key);
    const granted = (await this.runner.run(ACQUIRE, [leases], [String(max), id, String(this.leaseTtlMs)])) === 1;
    if (!granted) return false;
    const list = this.leases.get(key);
    if (list) list.push(id);
    else this.leases.set(key, [id]);
    this.renewer.start();
    return true;
  }

  async release(key: string): Promise<void> {
    const list = this.leases.get(key);
    const id = list?.pop();
    if (list && list.length === 0) this.leases.delete(key);
    if (id === undefined) return;
    const { leases } = limitKeys(this.prefix, key);
    try {
      await this.runner.call(() => this.runner.redis.zrem(leases, id));
    } catch (err) {
      // Redis cannot be reached: the lease is no longer renewed, so it expires by itself within leaseTtlMs
      if (!(err instanceof LedgerUnavailableError)) throw err;
    }
  }

  async hit(key: string, perMinute: number): Promise<RateState> {
    const { bucket } = limitKeys(this.prefix, key);
    return rateState(await this.runner.run(HIT, [bucket], [String(perMinute)]));
  }

  /** Takes tokens of `key`'s tokens-per-minute bucket, in one script (see {@link LimitStore.takeTokens}). */
  async takeTokens(key: string, tokens: number, perMinute: number): Promise<RateState> {
    const { tokenBucket } = limitKeys(this.prefix, key);
    return rateState(await this.runner.run(TAKE_TOKENS, [tokenBucket], [String(perMinute), String(tokens)]));
  }

  /** Gives tokens back (negative: takes more) once the real count is known. */
  async returnTokens(key: string, tokens: number, perMinute: number): Promise<void> {
    const { tokenBucket } = limitKeys(this.prefix, key);
    await this.runner.run(RETURN_TOKENS, [tokenBucket], [String(perMinute), String(tokens)]);
  }

  /** Slots this process holds for `key`. */
  inUse(key: string): number {
    return this.leases.get(key)?.length ?? 0;
  }

  /** Stops renewing (the slots still held then expire). Does not close the Redis client. */
  close(): void {
    this.renewer.stop();
  }

  private async renew(): Promise<void> {
    if (this.leases.size === 0 || !this.runner.ready) return;
    for (const [key, ids] of this.leases) {
      const { leases } = limitKeys(this.prefix, key);
      for (let i = 0; i < ids.length; i += 500) await this.runner.run(RENEW_LEASES, [leases], [String(this.leaseTtlMs), ...ids.slice(i, i + 500)]);
    }
  }
}

/** A script's `{wait, remaining, reset}` answer. */
function rateState(answer: unknown): RateState {
  const [waitMs, remaining, resetMs] = (Array.isArray(answer) ? answer : [answer, 0, 0]).map(Number) as [number, number, number];
  return { waitMs, remaining, resetMs };
}
