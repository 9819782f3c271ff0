import type { BudgetWindow, MeterEvent, Outcome, ReserveLimits, Usage } from '../../contract/hooks';
import type { BudgetSettlement } from './budget';

/** A key's account: what is available, what is held for generations under way, what it used, `used` by model. */
export interface Balance {
  /** What can still be spent: starting credits − used − held. Never below zero. */
  balance: number;
  /** Held for generations under way (their worst case), until they are settled. */
  held: number;
  used: number;
  by_model: Record<string, number>;
}

/** What one settlement did. */
export interface Settlement {
  /** Credits taken from the account (for a `pending` settlement: the cost up to the hold; the record, written once the store is back, has the final charge). */
  charged: number;
  /** What the generation cost beyond the hold and the account's whole balance (normally 0; never taken). */
  unpaid: number;
  /**
   * True when the store could not be reached and the settlement waits in the store's local queue, retried until
   * it is written (a shared store only; the in-memory one always settles at once).
   */
  pending?: boolean;
  /** With a budget window (`MeterEvent.budget`): the window's spend after this charge, and whether it crossed the soft limit. */
  budget?: BudgetSettlement;
}

/** What a store keeps of one settled generation: what `GET /v1/generation?id=` answers in the example app. */
export interface GenerationRecord {
  /** The gateway's id: the `X-Generation-Id` header. */
  id: string;
  /** The provider's id: the `id` of the chunks (or body) the client saw, its first 256 characters; `null` if the provider sent none. */
  provider_id: string | null;
  /** Which API: `chat.completions`, `completions`, `responses` or `embeddings`. */
  endpoint: string;
  model: string;
  /** The upstream that served it, and those tried first that failed (several upstreams with fallback). */
  upstream: string | null;
  failed_upstreams: Array<{ upstream: string; code: string; status: number }>;
  stream: boolean;
  outcome: Outcome;
  usage: Usage;
  credits_used: number;
  /** What the generation cost beyond the hold and the whole balance, not taken (normally 0). */
  unpaid: number;
  cancelled: boolean;
  finish_reason: string | null;
  /** The error code when the request failed (upstream error, or the gateway shut down). */
  error: string | null;
  time_to_first_token_ms: number | null;
  duration_ms: number;
  created_at: string;
}

/** A record before it is settled: the store fills in `credits_used` and `unpaid` from the settlement. */
export type GenerationDraft = Omit<GenerationRecord, 'credits_used' | 'unpaid'>;

/** The record of a metered generation, as a store keeps it once `settle` says what it charged. */
export function generationDraft(
  event: Pick<MeterEvent, 'generationId' | 'providerId' | 'endpoint' | 'upstream' | 'failedUpstreams' | 'model' | 'stream' | 'outcome' | 'usage' | 'cancelled' | 'finishReason' | 'error' | 'timings'>,
): GenerationDraft {
  return {
    id: event.generationId,
    // a provider's id is the provider's to choose: kept to the 256 characters a lookup by it reads
    provider_id: event.providerId?.slice(0, 256) ?? null,
    endpoint: event.endpoint,
    model: event.model,
    upstream: event.upstream ?? null,
    failed_upstreams: event.failedUpstreams,
    stream: event.stream,
    outcome: event.outcome,
    usage: event.usage,
    cancelled: event.cancelled,
    finish_reason: event.finishReason,
    error: event.error?.code ?? null,
    time_to_first_token_ms: event.timings.ttftMs,
    duration_ms: event.timings.durationMs,
    created_at: new Date().toISOString(),
  };
}

/**
 * A credit ledger with reserve-then-settle and the records of settled generations. Amounts are credits, kept
 * exact to a thousandth. Implementations keep, at every moment, `balance + held + used` = the starting credits,
 * `balance ≥ 0`, and settle each hold at most once: {@link MemoryCreditStore} in one process,
 * `RedisCreditStore` (`infery-stream/redis`) across many. Methods may be sync or async; callers await them.
 */
export interface CreditStore {
  /** Whether `account` exists. */
  has(account: string): boolean | Promise<boolean>;
  /**
   * Holds `credits` of the account's available balance under `holdId`; `false` (and nothing held) when they are not
   * there. A store that can also takes `limits` (`ReserveContext.limits`) with the hold, setting `limits.taken`;
   * one that cannot ignores them (the gateway then takes them itself). With a `budget` window
   * (`ReserveContext.budget`), throws `BudgetExhaustedError` when the window's spend, every hold of the account in
   * flight and this one would pass the window's limit (nothing is held then).
   */
  reserve(account: string, holdId: string, credits: number, limits?: ReserveLimits, budget?: BudgetWindow): boolean | Promise<boolean>;
  /**
   * Releases the hold and charges `credits` for `model`, at most the hold plus what is available, and keeps
   * `record` (when given) with the charge, in the same step; with the `limits` its reserve took (`MeterEvent.limits`),
   * gives their concurrency slot back too; with the `budget` window of its reserve (`MeterEvent.budget`), adds the
   * charge to the window's spend. Idempotent by `holdId`: a retried settle returns the first result and
   * charges nothing more.
   */
  settle(account: string, holdId: string, model: string, credits: number, record?: GenerationDraft, limits?: ReserveLimits, budget?: BudgetWindow): Settlement | Promise<Settlement>;
  /** The account's balance, or `undefined` for an unknown account. */
  balanceOf(account: string): Balance | undefined | Promise<Balance | undefined>;
  /**
   * The record of `id` — a gateway id, or a provider id the client saw (then the account's latest generation
   * with it) — if it belongs to `account`; another account's generation is as unknown as a missing one.
   */
  findGeneration(account: string, id: string): GenerationRecord | undefined | Promise<GenerationRecord | undefined>;
}

/** Credits to integer thousandths, rounded to the nearest (starting credits). */
export function toMilli(credits: number): number {
  return Math.round(credits * 1000);
}

/** Credits to integer thousandths, rounded up past float noise (charges are already exact to 0.001). */
export function toMilliUp(credits: number): number {
  return Math.max(0, Math.ceil(credits * 1000 - 1e-6));
}

/** Throws a RangeError unless `credits` is a finite number ≥ 0 (`what` names the operation). */
export function checkCredits(what: string, credits: number): void {
  if (typeof credits !== 'number' || !Number.isFinite(credits) || credits < 0) throw new RangeError(`cannot ${what} ${String(credits)} credits`);
}
