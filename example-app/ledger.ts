import type { Usage } from '../lib';

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

/** Credits for one generation at the table's price (never negative, rounded up to 0.001). */
export function priceOf(model: string, usage: Pick<Usage, 'prompt_tokens' | 'completion_tokens'>, prices = PRICES): number {
  // own properties only: a model named "constructor" or "__proto__" gets the default price
  const price = (Object.hasOwn(prices, model) ? prices[model] : prices.default) ?? { prompt: 0, completion: 0 };
  const exact = usage.prompt_tokens * price.prompt + usage.completion_tokens * price.completion;
  // the epsilon keeps float noise (100 * 0.07 = 7.000000000000001) from rounding up a whole thousandth
  const milli = Math.ceil(exact - 1e-9);
  return Number.isFinite(milli) ? Math.max(0, milli) / 1000 : 0;
}

/** A key's account: what is left, what it used, and `used` by model. */
export interface Balance {
  balance: number;
  used: number;
  by_model: Record<string, number>;
}

/**
 * What the example app needs from a credit store. In memory here ({@link CreditLedger}); a shared store
 * (Redis, SQL) implements the same methods, async if it likes: the app awaits them. `charge` must be atomic
 * per key (an INCRBY, an UPDATE … SET used = used + ?), so concurrent requests never drift.
 */
export interface CreditStore {
  has(key: string): boolean | Promise<boolean>;
  /** True while the key has a positive balance. */
  canSpend(key: string): boolean | Promise<boolean>;
  /** Charges `credits` for `model` to the key, whole, and returns them. */
  charge(key: string, model: string, credits: number): number | Promise<number>;
  balanceOf(key: string): Balance | undefined | Promise<Balance | undefined>;
}

/**
 * An in-memory credit ledger. Amounts are kept in thousandths of a credit as integers, so `balance + used`
 * equals the starting credits exactly and `used` equals the sum of `by_model`. A charge is applied whole, on
 * both sides: a generation that costs more than is left takes the balance below zero rather than being
 * clamped, and the pre-flight check refuses the next request.
 */
export class CreditLedger implements CreditStore {
  private readonly accounts = new Map<string, { start: number; used: number; byModel: Map<string, number> }>();

  constructor(startingCredits: Record<string, number>) {
    for (const [key, credits] of Object.entries(startingCredits)) {
      this.accounts.set(key, { start: toMilli(credits), used: 0, byModel: new Map() });
    }
  }

  has(key: string): boolean {
    return this.accounts.has(key);
  }

  canSpend(key: string): boolean {
    const account = this.accounts.get(key);
    return account !== undefined && account.start - account.used > 0;
  }

  charge(key: string, model: string, credits: number): number {
    const account = this.accounts.get(key);
    if (!account) throw new Error('unknown key');
    if (!Number.isFinite(credits) || credits < 0) throw new RangeError(`cannot charge ${credits} credits`);
    const milli = toMilli(credits);
    account.used += milli;
    account.byModel.set(model, (account.byModel.get(model) ?? 0) + milli);
    return milli / 1000;
  }

  balanceOf(key: string): Balance | undefined {
    const account = this.accounts.get(key);
    if (!account) return undefined;
    const byModel: Record<string, number> = Object.create(null) as Record<string, number>;
    for (const [model, milli] of account.byModel) byModel[model] = milli / 1000;
    return { balance: (account.start - account.used) / 1000, used: account.used / 1000, by_model: byModel };
  }
}

function toMilli(credits: number): number {
  return Math.round(credits * 1000);
}
