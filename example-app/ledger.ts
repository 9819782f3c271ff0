import type { Usage, WorstCase } from '../lib';

/** Credits per 1,000 prompt and completion tokens. */
export interface Price {
  prompt: number;
  completion: number;
}

/**
 * The price table: credits per 1K tokens by model, with a `default` for any other model. Charges are exact to
 * a thousandth of a credit.
 */
export const PRICES: Record<string, Price> = {
  default: { prompt: 10, completion: 30 },
  'gpt-4o': { prompt: 25, completion: 100 },
  'gpt-4o-mini': { prompt: 1.5, completion: 6 },
};

/**
 * The price of `model`: trimmed and lower-cased, an exact entry, else the longest entry it extends with a `-`
 * (`gpt-4o-2024-08-06` is `gpt-4o`, `gpt-4o-mini-2024-07-18` is `gpt-4o-mini`), else `default`. Own properties
 * only, so a model named "constructor" or "__proto__" gets the default.
 */
export function priceFor(model: string, prices = PRICES): Price {
  const name = model.trim().toLowerCase();
  let key: string | undefined = Object.hasOwn(prices, name) ? name : undefined;
  if (key === undefined) {
    for (const entry of Object.keys(prices)) {
      if (entry !== 'default' && name.startsWith(`${entry}-`) && (key === undefined || entry.length > key.length)) key = entry;
    }
  }
  return (key !== undefined ? prices[key] : prices.default) ?? { prompt: 0, completion: 0 };
}

function tokenCount(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`cannot price ${name} = ${String(value)}: it must be a whole number of tokens`);
  }
  return value;
}

/**
 * Credits for one generation at the table's price, rounded up to 0.001. Throws a RangeError for counts that are
 * not whole non-negative numbers, or a price that is not finite: a bad number never becomes a charge of 0.
 */
export function priceOf(model: string, usage: Pick<Usage | WorstCase, 'prompt_tokens' | 'completion_tokens'>, prices = PRICES): number {
  const price = priceFor(model, prices);
  const exact = tokenCount('prompt_tokens', usage.prompt_tokens) * price.prompt + tokenCount('completion_tokens', usage.completion_tokens) * price.completion;
  // the epsilon keeps float noise (100 * 0.07 = 7.000000000000001) from rounding up a whole thousandth
  const milli = Math.ceil(exact - 1e-9);
  if (!Number.isFinite(milli) || milli < 0) throw new RangeError(`the price of ${model} came out as ${exact} thousandths`);
  return Math.max(0, milli) / 1000;
}

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
  /** Credits taken from the key. */
  charged: number;
  /** What the generation cost beyond the hold and the key's whole balance (normally 0; never taken). */
  unpaid: number;
}

/**
 * What the example app needs from a credit store. In memory here ({@link CreditLedger}); a shared store
 * (Redis, SQL) implements the same methods atomically, async if it likes: the app awaits them.
 */
export interface CreditStore {
  has(key: string): boolean | Promise<boolean>;
  /** Holds `credits` of the key's available balance under `holdId`; `false` (and nothing held) when they are not there. */
  reserve(key: string, holdId: string, credits: number): boolean | Promise<boolean>;
  /** Releases the hold and charges `credits` for `model`, at most the hold plus what is available. Idempotent by `holdId`. */
  settle(key: string, holdId: string, model: string, credits: number): Settlement | Promise<Settlement>;
  balanceOf(key: string): Balance | undefined | Promise<Balance | undefined>;
}

interface Account {
  start: number;
  used: number;
  held: number;
  byModel: Map<string, number>;
}

/**
 * An in-memory credit ledger with reserve-then-settle. Amounts are integers in thousandths of a credit, so
 * `balance + held + used` equals the starting credits exactly at every moment, `used` equals the sum of
 * `by_model`, and `balance` never goes below zero: a hold is only granted from what is available, and a
 * settlement never takes more than the hold plus what is available.
 */
export class CreditLedger implements CreditStore {
  private readonly accounts = new Map<string, Account>();
  private readonly holds = new Map<string, { key: string; milli: number }>();
  /** Recent settlements by hold id, so a retried settle returns the first result instead of charging again. */
  private readonly settled = new Map<string, Settlement>();

  constructor(
    startingCredits: Record<string, number>,
    private readonly rememberSettlements = 100_000,
  ) {
    for (const [key, credits] of Object.entries(startingCredits)) {
      this.accounts.set(key, { start: toMilli(credits), used: 0, held: 0, byModel: new Map() });
    }
  }

  has(key: string): boolean {
    return this.accounts.has(key);
  }

  reserve(key: string, holdId: string, credits: number): boolean {
    const account = this.accounts.get(key);
    if (!account) throw new Error('unknown key');
    if (!Number.isFinite(credits) || credits < 0) throw new RangeError(`cannot hold ${credits} credits`);
    if (this.holds.has(holdId) || this.settled.has(holdId)) throw new Error(`hold ${holdId} exists already`);
    const milli = toMilliUp(credits);
    if (milli > account.start - account.used - account.held) return false;
    account.held += milli;
    this.holds.set(holdId, { key, milli });
    return true;
  }

  settle(key: string, holdId: string, model: string, credits: number): Settlement {
    const done = this.settled.get(holdId);
    if (done) return done;
    const account = this.accounts.get(key);
    if (!account) throw new Error('unknown key');
    if (!Number.isFinite(credits) || credits < 0) throw new RangeError(`cannot charge ${credits} credits`);
    const hold = this.holds.get(holdId);
    if (hold && hold.key !== key) throw new Error(`hold ${holdId} belongs to another key`);
    const held = hold?.milli ?? 0;
    this.holds.delete(holdId);
    account.held -= held;
    const cost = toMilliUp(credits);
    const charge = Math.min(cost, account.start - account.used - account.held);
    account.used += charge;
    if (charge > 0) account.byModel.set(model, (account.byModel.get(model) ?? 0) + charge);
    const result = { charged: charge / 1000, unpaid: (cost - charge) / 1000 };
    this.settled.set(holdId, result);
    if (this.settled.size > this.rememberSettlements) {
      const oldest = this.settled.keys().next().value;
      if (oldest !== undefined) this.settled.delete(oldest);
    }
    return result;
  }

  balanceOf(key: string): Balance | undefined {
    const account = this.accounts.get(key);
    if (!account) return undefined;
    const byModel: Record<string, number> = Object.create(null) as Record<string, number>;
    for (const [model, milli] of account.byModel) byModel[model] = milli / 1000;
    return {
      balance: (account.start - account.used - account.held) / 1000,
      held: account.held / 1000,
      used: account.used / 1000,
      by_model: byModel,
    };
  }
}

function toMilli(credits: number): number {
  return Math.round(credits * 1000);
}

/** Thousandths, rounded up past float noise (charges are already exact to 0.001). */
function toMilliUp(credits: number): number {
  return Math.max(0, Math.ceil(credits * 1000 - 1e-6));
}
