import type { Usage, WorstCase } from '../lib';

/** Credits per 1,000 prompt and completion tokens. */
export interface Price {
  prompt: number;
  completion: number;
}

/**
 * The price table: credits per 1K tokens by model, with a `default` for any other model — one table for every
 * endpoint (chat, Responses, legacy completions price prompt/input and completion/output tokens; embeddings only
 * their input). Charges are exact to a thousandth of a credit. `INFERY_CONFIG`'s `prices` go over it.
 */
export const PRICES: Record<string, Price> = {
  default: { prompt: 10, completion: 30 },
  'gpt-4o': { prompt: 25, completion: 100 },
  'gpt-4o-mini': { prompt: 1.5, completion: 6 },
  'gpt-3.5-turbo-instruct': { prompt: 15, completion: 20 },
  // embeddings generate nothing: only the input is priced
  'text-embedding-3-small': { prompt: 0.2, completion: 0 },
  'text-embedding-3-large': { prompt: 1.3, completion: 0 },
  'mock-embed': { prompt: 1, completion: 0 },
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

/**
 * The example app's credit stores are the library's: {@link MemoryCreditStore} in one process, `RedisCreditStore`
 * (`infery-stream/redis`) when `INFERY_REDIS_URL` is set. `CreditLedger` is the in-memory one's name here.
 */
export { MemoryCreditStore as CreditLedger } from '../lib';
export type { Balance, CreditStore, Settlement } from '../lib';
