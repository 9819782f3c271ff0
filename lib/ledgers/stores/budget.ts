import type { BudgetSpec, BudgetWindow } from '../../contract/hooks';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** Throws a TypeError naming what is wrong with a budget (`what` names where it came from). */
export function checkBudgetSpec(spec: unknown, what: string): asserts spec is BudgetSpec {
  if (typeof spec !== 'object' || spec === null) throw new TypeError(`${what} must be { credits, window: "day" | "week" | "month" | { hours } }`);
  const b = spec as Record<string, unknown>;
  if (typeof b.credits !== 'number' || !Number.isFinite(b.credits) || b.credits < 0) throw new TypeError(`${what}.credits must be a number of credits ≥ 0, got ${String(b.credits)}`);
  const w = b.window;
  const obj = typeof w === 'object' && w !== null ? (w as { hours?: unknown; rollingHours?: unknown }) : undefined;
  const hours = obj && Object.keys(obj).length === 1 ? (obj.hours ?? obj.rollingHours) : undefined;
  if (w !== 'day' && w !== 'week' && w !== 'month' && !(typeof hours === 'number' && Number.isSafeInteger(hours) && hours >= 1 && hours <= 24 * 366)) {
    throw new TypeError(`${what}.window must be "day", "week", "month", { hours } or { rollingHours } (a whole number of hours from 1 to 8784), got ${JSON.stringify(w)}`);
  }
  if (b.softLimit !== undefined && !(typeof b.softLimit === 'number' && b.softLimit > 0 && b.softLimit <= 1)) throw new TypeError(`${what}.softLimit must be a share of credits in (0, 1], got ${String(b.softLimit)}`);
}

const pad = (n: number): string => String(n).padStart(2, '0');
const isoDay = (ms: number): string => new Date(ms).toISOString().slice(0, 10);

/** The window of `spec` that holds `now` (UTC), with its id, start and reset. */
export function budgetWindow(spec: BudgetSpec, now: number = Date.now()): BudgetWindow {
  let startsAt: number;
  let resetsAt: number;
  let id: string;
  const window = spec.window;
  if (window === 'day') {
    startsAt = Math.floor(now / DAY) * DAY;
    resetsAt = startsAt + DAY;
    id = `day:${isoDay(startsAt)}`;
  } else if (window === 'week') {
    const day = Math.floor(now / DAY) * DAY;
    const weekday = (new Date(day).getUTCDay() + 6) % 7; // Monday 0
    startsAt = day - weekday * DAY;
    resetsAt = startsAt + 7 * DAY;
    id = `week:${isoDay(startsAt)}`;
  } else if (window === 'month') {
    const d = new Date(now);
    startsAt = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
    resetsAt = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
    id = `month:${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}`;
  } else if ('rollingHours' in window) {
    const spanMs = window.rollingHours * HOUR;
    const sliceMs = Math.max(60_000, Math.floor(spanMs / 60));
    return { limit: spec.credits, soft: spec.credits * (spec.softLimit ?? 0.8), id: `rolling:${window.rollingHours}h`, startsAt: now - spanMs, resetsAt: now, rolling: { spanMs, sliceMs } };
  } else {
    const length = window.hours * HOUR;
    const n = Math.floor(now / length);
    startsAt = n * length;
    resetsAt = startsAt + length;
    id = `${window.hours}h:${n}`;
  }
  return { limit: spec.credits, soft: spec.credits * (spec.softLimit ?? 0.8), id, startsAt, resetsAt };
}

/**
 * A credit store's refusal of a hold that would take the account past its budget window (`ReserveContext.budget`):
 * the gateway answers it as 402 `budget_exceeded`, with `Retry-After` (seconds to the reset) and the reset in ISO
 * 8601 UTC in the message. Nothing is held.
 */
export class BudgetExhaustedError extends Error {
  /** When the window resets (ms since the epoch): for a rolling window, when its oldest spend ages out. */
  readonly resetsAt: number;

  constructor(
    readonly window: BudgetWindow,
    /** What the window has spent, and what is held for generations in flight, in credits. */
    readonly spent: number,
    readonly held: number,
    /** The hold refused. */
    readonly credits: number,
    resetsAt?: number,
  ) {
    super(`budget ${window.id} of ${window.limit} credits: ${spent} spent, ${held} held, ${credits} more refused`);
    this.name = new.target.name;
    this.resetsAt = resetsAt ?? window.resetsAt;
  }
}

/** What a settlement did to its budget window: its spend after the charge, and whether it crossed the soft limit. */
export interface BudgetSettlement {
  id: string;
  spent: number;
  limit: number;
  /** True for the one settlement whose charge took the window's spend past the soft limit. */
  softLimitCrossed: boolean;
}

/**
 * Budget windows in one process: the spend of each account's current window, in thousandths. A store keeps at
 * most the latest window per account (an older window's settlements count in the latest).
 */
export class MemoryBudgets {
  private readonly spent = new Map<string, { id: string; startsAt: number; milli: number }>();
  /** Rolling windows: account → slice index → thousandths charged in it. */
  private readonly slices = new Map<string, Map<number, number>>();

  constructor(private readonly now: () => number = Date.now) {}

  /** The window's spend in thousandths (0 for a window not yet seen). */
  spentIn(account: string, window: BudgetWindow): number {
    if (window.rolling) return this.rollingSpent(account, window.rolling).milli;
    const entry = this.spent.get(account);
    return entry?.id === window.id ? entry.milli : 0;
  }

  /** Throws {@link BudgetExhaustedError} unless spend + `heldMilli` + `milli` fits the window's limit. */
  check(account: string, window: BudgetWindow, heldMilli: number, milli: number): void {
    const rolling = window.rolling ? this.rollingSpent(account, window.rolling) : undefined;
    const spent = rolling ? rolling.milli : this.spentIn(account, window);
    if (spent + heldMilli + milli > Math.round(window.limit * 1000)) throw new BudgetExhaustedError(window, spent / 1000, heldMilli / 1000, milli / 1000, rolling?.agesOutAt);
  }

  /**
   * A rolling window's spend: the slices from the one the span began in (counted whole: a charge counts at least
   * the span), dropping older ones; and when its oldest spend ages out.
   */
  private rollingSpent(account: string, rolling: NonNullable<BudgetWindow['rolling']>): { milli: number; agesOutAt: number } {
    const now = this.now();
    const from = Math.floor((now - rolling.spanMs) / rolling.sliceMs);
    const slices = this.slices.get(account);
    let milli = 0;
    let oldest = Infinity;
    if (slices) {
      for (const [index, charged] of slices) {
        if (index < from) slices.delete(index);
        else {
          milli += charged;
          oldest = Math.min(oldest, index);
        }
      }
    }
    return { milli, agesOutAt: oldest === Infinity ? now : (oldest + 1) * rolling.sliceMs + rolling.spanMs };
  }

  /** Adds a charge to the window's spend. */
  charge(account: string, window: BudgetWindow, milli: number): BudgetSettlement {
    if (window.rolling) {
      const before = this.rollingSpent(account, window.rolling).milli;
      const index = Math.floor(this.now() / window.rolling.sliceMs);
      const slices = this.slices.get(account) ?? new Map<number, number>();
      slices.set(index, (slices.get(index) ?? 0) + milli);
      this.slices.set(account, slices);
      const soft = Math.round(window.soft * 1000);
      return { id: window.id, spent: (before + milli) / 1000, limit: window.limit, softLimitCrossed: before < soft && before + milli >= soft };
    }
    const before = this.spentIn(account, window);
    const entry = this.spent.get(account);
    // a settlement of a window already past (admitted before the reset) never brings it back
    if (entry && entry.id !== window.id && entry.startsAt > window.startsAt) {
      return { id: window.id, spent: (before + milli) / 1000, limit: window.limit, softLimitCrossed: false };
    }
    this.spent.set(account, { id: window.id, startsAt: window.startsAt, milli: before + milli });
    const soft = Math.round(window.soft * 1000);
    return { id: window.id, spent: (before + milli) / 1000, limit: window.limit, softLimitCrossed: before < soft && before + milli >= soft };
  }
}
