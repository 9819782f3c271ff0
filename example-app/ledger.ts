import type { Usage, UsageClasses, WorstCase } from '../lib';
import { catalogPricer, type ModelPrice, type Pricer, type PriceSource } from '../lib/ledgers/billing/price-catalog';

/**
 * A price of `INFERY_CONFIG`'s `prices`: credits per 1,000 tokens, `{"prompt", "completion"}`, with optional
 * `"cached_prompt"` (cache reads) and `"cache_write"` (cache writes; `"cache_write_1h"` for the 1-hour TTL).
 */
export interface Price extends ModelPrice {
  prompt: number;
  completion: number;
}

/**
 * The built-in mock provider's models, priced by the app itself (no catalog knows them): `mock-1`, `mock-slow`
 * and the other `mock-*` names, `mock-embed`, `claude-mock-1` (named exactly, so pricing them loads no catalog).
 * Every real model is priced from the catalog.
 */
export const MOCK_PRICES: Record<string, Price> = {
  mock: { prompt: 10, completion: 30 },
  ...Object.fromEntries(['mock-1', 'mock-slow', 'mock-error', 'mock-garbage', 'mock-429', 'mock-stall', 'mock-no-usage', 'mock-fail'].map((name) => [name, { prompt: 10, completion: 30 }])),
  'mock-embed': { prompt: 1, completion: 0 },
  'claude-mock-1': { prompt: 30, completion: 150, cached_prompt: 3, cache_write: 37.5, cache_write_1h: 60 },
};

/** A model nothing prices: refused before the call, never billed at 0. */
export class UnpricedModelError extends Error {
  constructor(readonly model: string) {
    super(`The model \`${model}\` has no price: the price catalog does not know it and INFERY_CONFIG "prices" names no price for it.`);
  }
}

/** A usage as the app prices it: the meter event's classes, or plain prompt and completion counts (all uncached). */
export type Priced = Pick<Usage | WorstCase, 'prompt_tokens' | 'completion_tokens'> & { classes?: UsageClasses };

/** The classes of a plain usage: its prompt uncached, its completion output. */
function plainClasses(usage: Priced): UsageClasses {
  return {
    input_tokens: usage.prompt_tokens,
    uncached_input_tokens: usage.prompt_tokens,
    cache_read_tokens: 0,
    cache_write_tokens: 0,
    output_tokens: usage.completion_tokens,
    output_reasoning_tokens: 0,
  };
}

/**
 * The app's prices: the catalog (`@pydantic/genai-prices`, through the library's `catalogPricer`) at a credit
 * worth $0.0001 of list price — `gpt-4o` input 25 credits per 1K tokens, a dated `gpt-4o-mini-2024-07-18` or
 * `claude-sonnet-4-5` priced on every class with no edit — under the mock's own prices and the host's
 * (`INFERY_CONFIG` `prices`, which win; a `default` there prices every model nothing else does). Charges are
 * rounded up to a thousandth of a credit.
 */
export class PriceList {
  private readonly pricer: Pricer;
  private readonly hasDefault: boolean;

  constructor(overrides: Record<string, Price> = {}, options: { creditValue?: number; markup?: number } = {}) {
    const all = { ...MOCK_PRICES, ...overrides };
    this.hasDefault = Object.hasOwn(all, 'default');
    this.pricer = catalogPricer({ ...options, overrides: all });
  }

  /** Where `model`'s price comes from; `undefined` when nothing prices it. */
  sourceOf(model: string): PriceSource | undefined {
    return this.pricer.sourceOf(model) ?? (this.hasDefault ? this.pricer.sourceOf('default') : undefined);
  }

  /** Whether anything prices `model`. */
  knows(model: string): boolean {
    return this.sourceOf(model) !== undefined;
  }

  /**
   * Credits for `usage` of `model`, rounded up to 0.001. Throws {@link UnpricedModelError} for a model nothing
   * prices, a RangeError for counts that are not whole numbers ≥ 0 (a bad number never becomes a charge of 0).
   */
  priceOf(model: string, usage: Priced): number {
    const classes = usage.classes ?? plainClasses(usage);
    const credits = this.pricer.price(model, classes) ?? (this.hasDefault ? this.pricer.price('default', classes) : undefined);
    if (credits === undefined) throw new UnpricedModelError(model);
    return credits;
  }

  /** Credits per 1,000 output tokens of `model` (0 when nothing prices it). */
  completionPer1K(model: string): number {
    return this.pricer.completionPer1K(model) ?? (this.hasDefault ? (this.pricer.completionPer1K('default') ?? 0) : 0);
  }
}

/** The app's prices with no `INFERY_CONFIG`: the catalog and the mock's own. */
export const BUILT_IN_PRICES = new PriceList();

/** Credits for `usage` of `model` at `list`'s prices (the built-in ones by default); see {@link PriceList.priceOf}. */
export function priceOf(model: string, usage: Priced, list: PriceList = BUILT_IN_PRICES): number {
  return list.priceOf(model, usage);
}

/**
 * The example app's credit stores are the library's: {@link MemoryCreditStore} in one process, `RedisCreditStore`
 * (`infery-stream/redis`) when `INFERY_REDIS_URL` is set. `CreditLedger` is the in-memory one's name here.
 */
export { MemoryCreditStore as CreditLedger } from '../lib';
export type { Balance, CreditStore, Settlement } from '../lib';
