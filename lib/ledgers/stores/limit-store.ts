import { performance } from 'node:perf_hooks';

/**
 * Where per-account limit counters live. The in-memory store below serves one process; a shared store (Redis)
 * implements the same three calls atomically so the limits hold across instances.
 */
export interface LimitStore {
  /** Takes one of `max` concurrency slots of `key`; resolves `false` when all are taken. */
  acquire(key: string, max: number): boolean | Promise<boolean>;
  /** Gives back a slot `acquire` granted. Called exactly once per granted slot. */
  release(key: string): void | Promise<void>;
  /**
   * Counts one request of `key` against a budget of `perMinute` requests per minute (a token bucket that holds
   * `perMinute` and refills continuously). Resolves `0` when the request is allowed, else the milliseconds until
   * it would be.
   */
  hit(key: string, perMinute: number): number | Promise<number>;
  /**
   * True when the credit store's `reserve` takes this store's limits for generations, in the hold's own step
   * (one round trip on a shared store): the gateway then calls neither `hit` nor `acquire` for a generation but
   * hands the limits to `reserve` (`ReserveContext.limits`), and the settlement releases the slot (`MeterEvent.limits`).
   * `hit` still counts the other requests (`/models`, pass-through).
   */
  readonly takenByReserve?: boolean;
}

/**
 * A credit store's refusal of a limit it took with the hold (`ReserveContext.limits`): the gateway answers it as
 * its own 429 `rate_limit_exceeded`, with `Retry-After`.
 */
export class LimitRefusedError extends Error {
  constructor(
    readonly limit: 'rate' | 'concurrency',
    /** When the request could go again (ms). */
    readonly retryAfterMs: number,
  ) {
    super(limit === 'rate' ? `requests per minute used up; again in ${retryAfterMs} ms` : 'every concurrency slot is in use');
    this.name = new.target.name;
  }
}

interface Bucket {
  tokens: number;
  at: number;
}

const MINUTE = 60_000;

/**
 * The default {@link LimitStore}: counters in this process's memory. Buckets that have refilled are dropped as
 * the store is used, so memory follows the accounts active in the last minute.
 */
export class MemoryLimitStore implements LimitStore {
  private readonly open = new Map<string, number>();
  private readonly buckets = new Map<string, Bucket>();
  private hits = 0;

  /** `now` is a clock in milliseconds; the default is monotonic, so a wall-clock step never blocks an account. */
  constructor(private readonly now: () => number = () => performance.now()) {}

  acquire(key: string, max: number): boolean {
    const held = this.open.get(key) ?? 0;
    if (held >= max) return false;
    this.open.set(key, held + 1);
    return true;
  }

  release(key: string): void {
    const held = this.open.get(key) ?? 0;
    if (held <= 1) this.open.delete(key);
    else this.open.set(key, held - 1);
  }

  hit(key: string, perMinute: number): number {
    const now = this.now();
    if (++this.hits % 1024 === 0) this.sweep(now, perMinute);
    const bucket = this.buckets.get(key) ?? { tokens: perMinute, at: now };
    const rate = perMinute / MINUTE;
    bucket.tokens = Math.min(perMinute, bucket.tokens + Math.max(0, now - bucket.at) * rate);
    bucket.at = now;
    this.buckets.set(key, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - bucket.tokens) / rate));
  }

  /** Concurrency slots held by `key` right now (for tests and metrics). */
  inUse(key: string): number {
    return this.open.get(key) ?? 0;
  }

  /** Drops buckets untouched for a minute: they have refilled, and a missing bucket starts full. */
  private sweep(now: number, _perMinute: number): void {
    for (const [key, bucket] of this.buckets) if (now - bucket.at >= MINUTE) this.buckets.delete(key);
  }
}
