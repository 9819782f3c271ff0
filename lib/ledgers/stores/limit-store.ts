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
  hit(key: string, perMinute: number): number | RateState | Promise<number | RateState>;
  /**
   * Takes `tokens` from `key`'s bucket of `perMinute` tokens a minute (refilled continuously): allowed while the
   * bucket is above zero, which the take may overdraw (check before, charge after: the settlement gives back or
   * takes the difference with {@link LimitStore.returnTokens}). Needed for `limits.tokensPerMinute`.
   */
  takeTokens?(key: string, tokens: number, perMinute: number): RateState | Promise<RateState>;
  /** Gives `tokens` back to the bucket (a negative number takes more), never above `perMinute`. */
  returnTokens?(key: string, tokens: number, perMinute: number): void | Promise<void>;
  /**
   * True when the credit store's `reserve` takes this store's limits for generations, in the hold's own step
   * (one round trip on a shared store): the gateway then calls neither `hit` nor `acquire` for a generation but
   * hands the limits to `reserve` (`ReserveContext.limits`), and the settlement releases the slot (`MeterEvent.limits`).
   * `hit` still counts the other requests (`/models`, pass-through).
   */
  readonly takenByReserve?: boolean;
}

/** A bucket's state after a request or a take: for the `x-ratelimit-*` headers and `Retry-After`. */
export interface RateState {
  /** 0 when allowed, else the milliseconds until it would be. */
  waitMs: number;
  /** What is left in the bucket (whole requests or tokens, never below 0). */
  remaining: number;
  /** Milliseconds until the bucket is full again. */
  resetMs: number;
}

/** A bucket of `cap` a minute, refilled continuously, after `elapsed` ms at `level`. */
function refilled(level: number, elapsed: number, cap: number): number {
  return Math.min(cap, level + Math.max(0, elapsed) * (cap / MINUTE));
}

function stateOf(level: number, cap: number, waitMs: number): RateState {
  return { waitMs, remaining: Math.max(0, Math.floor(level)), resetMs: Math.max(0, Math.ceil((cap - level) / (cap / MINUTE))) };
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
  private readonly tokenBuckets = new Map<string, Bucket>();
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

  hit(key: string, perMinute: number): RateState {
    const now = this.now();
    if (++this.hits % 1024 === 0) this.sweep(now);
    const bucket = this.buckets.get(key) ?? { tokens: perMinute, at: now };
    const rate = perMinute / MINUTE;
    bucket.tokens = refilled(bucket.tokens, now - bucket.at, perMinute);
    bucket.at = now;
    this.buckets.set(key, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return stateOf(bucket.tokens, perMinute, 0);
    }
    return stateOf(bucket.tokens, perMinute, Math.max(1, Math.ceil((1 - bucket.tokens) / rate)));
  }

  takeTokens(key: string, tokens: number, perMinute: number): RateState {
    const now = this.now();
    // swept here too: an app with tokens per minute and no request rate never calls `hit`
    if (++this.hits % 1024 === 0) this.sweep(now);
    const bucket = this.tokenBuckets.get(key) ?? { tokens: perMinute, at: now };
    bucket.tokens = refilled(bucket.tokens, now - bucket.at, perMinute);
    bucket.at = now;
    this.tokenBuckets.set(key, bucket);
    if (bucket.tokens <= 0) return stateOf(bucket.tokens, perMinute, Math.max(1, Math.ceil((1 - bucket.tokens) / (perMinute / MINUTE))));
    bucket.tokens -= tokens;
    return stateOf(bucket.tokens, perMinute, 0);
  }

  returnTokens(key: string, tokens: number, perMinute: number): void {
    const now = this.now();
    const bucket = this.tokenBuckets.get(key) ?? { tokens: perMinute, at: now }; // dropped: it had refilled
    this.tokenBuckets.set(key, bucket);
    bucket.tokens = Math.min(perMinute, refilled(bucket.tokens, now - bucket.at, perMinute) + tokens);
    bucket.at = now;
  }

  /** Concurrency slots held by `key` right now (for tests and metrics). */
  inUse(key: string): number {
    return this.open.get(key) ?? 0;
  }

  /**
   * Drops request buckets untouched for a minute (they have refilled; a missing bucket starts full), and token
   * buckets at or above zero untouched for a minute (a token bucket may be overdrawn by more than a minute's worth).
   */
  private sweep(now: number): void {
    for (const [key, bucket] of this.buckets) if (now - bucket.at >= MINUTE) this.buckets.delete(key);
    for (const [key, bucket] of this.tokenBuckets) if (now - bucket.at >= MINUTE && bucket.tokens >= 0) this.tokenBuckets.delete(key);
  }
}
