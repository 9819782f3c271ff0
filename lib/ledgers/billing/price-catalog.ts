import type { UsageClasses } from '../../contract/hooks';

/**
 * A host's own price for a model, in credits per 1,000 tokens: the shape of the example app's `INFERY_CONFIG`
 * `prices`. Only `prompt` is required.
 */
export interface ModelPrice {
  /** Uncached input tokens. */
  prompt: number;
  /** Output tokens, reasoning included (0 for embeddings). Default 0. */
  completion?: number;
  /**
   * Input tokens read from the prompt cache. Default: `prompt` times the catalog's discount for the model (its
   * cache-read price over its input price), else `prompt`.
   */
  cached_prompt?: number;
  /**
   * Input tokens written to the prompt cache (5-minute TTL, or TTL not said). Default: `prompt` times the
   * catalog's premium for the model, else `prompt`.
   */
  cache_write?: number;
  /** Input tokens written to the cache with a 1-hour TTL. Default: as `cache_write`, scaled by the catalog's 1-hour premium. */
  cache_write_1h?: number;
  /** Credits per web search. Default: the catalog's fee for the model, converted to credits, else 0. */
  web_search?: number;
}

/** How a model was priced. */
export interface PriceSource {
  /** `override`: the host's own price; `catalog`: the catalog's list price (times `markup`). */
  source: 'override' | 'catalog';
  /** The override's key, or the catalog's model id (`gpt-4o` for `gpt-4o-2024-08-06`). */
  id: string;
  /** The catalog's provider id (`openai`, `anthropic`, …); undefined for an override the catalog does not know. */
  provider?: string;
}

/** What {@link catalogPricer} returns. */
export interface Pricer {
  /**
   * The credits `classes` of `model` cost, rounded up to a thousandth; `undefined` when neither an override nor
   * the catalog knows the model (never 0 for an unknown model). Throws a RangeError for counts that are not whole
   * numbers ≥ 0 (a bad number never becomes a charge of 0).
   */
  price(model: string, classes: UsageClasses): number | undefined;
  /** Where the price of `model` comes from, or `undefined` when nothing prices it. */
  sourceOf(model: string): PriceSource | undefined;
  /** The credits per 1,000 output tokens of `model` (its base tier), for lowering a cap to what a balance covers. */
  completionPer1K(model: string): number | undefined;
}

/** Options of {@link catalogPricer}. */
export interface PricerOptions {
  /** What one credit is worth, in US dollars of list price. Default 0.0001 (`gpt-4o` input: 25 credits per 1K tokens). */
  creditValue?: number;
  /** Catalog prices are multiplied by this (1.2: 20% over list). Overrides are the host's own and are not. Default 1. */
  markup?: number;
  /**
   * The host's own prices by model, over the catalog. A model is matched trimmed and lower-cased: an exact key,
   * else the longest key it extends with a `-` (`gpt-4o` prices `gpt-4o-2024-08-06`).
   */
  overrides?: Record<string, ModelPrice>;
  /**
   * The catalog's provider for a model (`openai`, `anthropic`, `google`, `openrouter`, …), when its name alone
   * does not say (a model served by another host). Default: found from the model's name.
   */
  provider?: (model: string) => string | undefined;
}

/** The catalog: `@pydantic/genai-prices`, loaded on first need (an optional peer dependency). */
type Catalog = typeof import('@pydantic/genai-prices');
let catalog: Catalog | undefined;
function loadCatalog(): Catalog {
  if (!catalog) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      catalog = require('@pydantic/genai-prices') as Catalog;
    } catch (err) {
      throw new Error(`infery-stream/prices needs the price catalog: npm install @pydantic/genai-prices (${(err as Error).message})`);
    }
  }
  return catalog;
}

/** A count of a class: whole and ≥ 0 (an optional class may be absent: 0), or a RangeError naming it. */
function count(name: string, value: unknown, optional = true): number {
  if (value === undefined && optional) return 0;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`cannot price ${name} = ${String(value)}: it must be a whole number`);
  }
  return value;
}

/** Thousandths of a credit, rounded up (float noise below a millionth of a thousandth is not a thousandth). */
function credits(exact: number, what: string): number {
  const milli = Math.ceil(exact * 1000 - 1e-6);
  if (!Number.isFinite(milli) || milli < 0) throw new RangeError(`the price of ${what} came out as ${exact} credits`);
  return Math.max(0, milli) / 1000;
}

/** The classes as the catalog names them (it prices the parts of a whole, so the whole comes with them). */
function catalogUsage(classes: UsageClasses): Record<string, number> {
  const usage: Record<string, number> = {
    input_tokens: count('input_tokens', classes.input_tokens, false),
    output_tokens: count('output_tokens', classes.output_tokens, false),
  };
  const parts = ['cache_read_tokens', 'cache_write_tokens', 'cache_write_5m_tokens', 'cache_write_1h_tokens', 'input_audio_tokens', 'input_image_tokens', 'output_reasoning_tokens', 'output_audio_tokens', 'output_image_tokens', 'web_searches'] as const;
  for (const name of parts) {
    const n = count(name, classes[name]);
    if (n > 0) usage[name] = n;
  }
  // a TTL split names the 5-minute part only implicitly: the catalog needs the whole cache write beside it
  if (usage.cache_write_5m_tokens !== undefined || usage.cache_write_1h_tokens !== undefined) usage.cache_write_tokens = count('cache_write_tokens', classes.cache_write_tokens);
  return usage;
}

/** A catalog price of one class, per million tokens (the base tier of a tiered price). */
function perMillion(price: unknown): number | undefined {
  if (typeof price === 'number') return price;
  if (typeof price === 'object' && price !== null && typeof (price as { base?: unknown }).base === 'number') return (price as { base: number }).base;
  return undefined;
}

/**
 * A pricer over a maintained model-price catalog — `@pydantic/genai-prices` (Pydantic's, updated as providers
 * change prices, with date-bound prices, tiers above 200K input tokens, cache reads and writes of both TTLs,
 * audio and image tokens and per-search fees; install it beside infery-stream) — with the host's own overrides
 * and a markup on top. A model neither knows prices `undefined`: refuse it before the call.
 *
 * ```ts
 * const pricer = catalogPricer({ overrides: { 'my-finetune': { prompt: 30, completion: 120 } } });
 * meter: (event) => pricer.price(event.model, event.usage.classes!) ?? pricer.price(event.model, event.worstCase.classes)
 * ```
 */
export function catalogPricer(options: PricerOptions = {}): Pricer {
  const creditValue = options.creditValue ?? 0.0001;
  const markup = options.markup ?? 1;
  if (!(typeof creditValue === 'number' && Number.isFinite(creditValue) && creditValue > 0)) throw new TypeError('catalogPricer: creditValue must be a number of dollars > 0');
  if (!(typeof markup === 'number' && Number.isFinite(markup) && markup > 0)) throw new TypeError('catalogPricer: markup must be a number > 0');
  const overrides = Object.create(null) as Record<string, Required<Pick<ModelPrice, 'prompt' | 'completion'>> & ModelPrice>;
  for (const [name, price] of Object.entries(options.overrides ?? {})) {
    const ok = (n: unknown): boolean => n === undefined || (typeof n === 'number' && Number.isFinite(n) && n >= 0);
    if (typeof price !== 'object' || price === null || typeof price.prompt !== 'number' || !Object.values(price).every(ok)) {
      throw new TypeError(`catalogPricer: overrides["${name}"] must be {"prompt", "completion", "cached_prompt", "cache_write", "cache_write_1h", "web_search"}: credits ≥ 0`);
    }
    overrides[name.trim().toLowerCase()] = { ...price, completion: price.completion ?? 0 };
  }
  const extended = new Map<string, string | null>();
  /**
   * The override for `name`: an exact key, else the longest key it extends with a `-` — unless the catalog knows
   * `name` as another model than that key (an override of `gpt-4o` prices `gpt-4o-2024-08-06`, not `gpt-4o-mini`).
   */
  const overrideKey = (name: string): string | undefined => {
    if (Object.hasOwn(overrides, name)) return name;
    const memo = extended.get(name);
    if (memo !== undefined) return memo ?? undefined;
    let key: string | undefined;
    for (const entry of Object.keys(overrides)) {
      if (name.startsWith(`${entry}-`) && (key === undefined || entry.length > key.length)) key = entry;
    }
    if (key !== undefined) {
      const own = catalogId(name);
      if (own !== undefined && own !== catalogId(key)) key = undefined;
    }
    if (extended.size >= 10_000) extended.clear(); // model names come from clients: the memo stays bounded
    extended.set(name, key ?? null);
    return key;
  };
  /** The catalog's id for a model, `undefined` when it does not know it (or no catalog is installed). */
  const catalogId = (name: string): string | undefined => {
    try {
      return lookUp(name, { input_tokens: 0, output_tokens: 0 })?.model.id;
    } catch {
      return undefined;
    }
  };
  const providerOf = (model: string): { providerId: string } | undefined => {
    const id = options.provider?.(model);
    return typeof id === 'string' && id !== '' ? { providerId: id } : undefined;
  };
  /** The catalog's answer for `usage` of `model` (null: it does not know the model). */
  const lookUp = (model: string, usage: Record<string, number>) => loadCatalog().calcPrice(usage, model.trim(), providerOf(model));
  const known = new Map<string, PriceSource | null>();

  const sourceOf = (model: string): PriceSource | undefined => {
    const name = model.trim().toLowerCase();
    const key = overrideKey(name);
    // an override needs no catalog (a host pricing only its own models never loads it)
    if (key !== undefined) return { source: 'override', id: key };
    const cached = known.get(name);
    if (cached !== undefined) return cached ?? undefined;
    const found = lookUp(name, { input_tokens: 0, output_tokens: 0 });
    const source: PriceSource | null = found ? { source: 'catalog', id: found.model.id, provider: found.provider.id } : null;
    if (known.size >= 10_000) known.clear(); // model names come from clients: the memo stays bounded
    known.set(name, source);
    return source ?? undefined;
  };

  /** The host's price, each class it did not price taking the catalog's ratio to input for the model (else 1). */
  const overridePrice = (model: string, key: string, classes: UsageClasses): number => {
    const own = overrides[key]!;
    const read = count('cache_read_tokens', classes.cache_read_tokens);
    const write = count('cache_write_tokens', classes.cache_write_tokens);
    const write1h = Math.min(write, count('cache_write_1h_tokens', classes.cache_write_1h_tokens));
    const searches = count('web_searches', classes.web_searches);
    const needsList = (read > 0 && own.cached_prompt === undefined) || (write > 0 && (own.cache_write === undefined || (write1h > 0 && own.cache_write_1h === undefined))) || (searches > 0 && own.web_search === undefined);
    let list: Record<string, unknown> | undefined;
    try {
      list = needsList ? (lookUp(model, { input_tokens: 0, output_tokens: 0 })?.model_price ?? undefined) : undefined;
    } catch {
      list = undefined; // no catalog installed: the host's prices alone
    }
    const input = perMillion(list?.input_mtok);
    const ratio = (cls: unknown, fallback = 1): number => {
      const p = perMillion(cls);
      return input !== undefined && input > 0 && p !== undefined ? p / input : fallback;
    };
    const cachedPrompt = own.cached_prompt ?? own.prompt * ratio(list?.cache_read_mtok);
    const writeRatio = ratio(list?.cache_write_mtok);
    const cacheWrite = own.cache_write ?? own.prompt * writeRatio;
    // the host's cache_write scaled by the catalog's 1-hour premium over it (a free 5-minute write: its own price)
    const cacheWrite1h = own.cache_write_1h ?? (writeRatio > 0 ? (cacheWrite * ratio(list?.cache_write_1h_mtok, writeRatio)) / writeRatio : own.prompt * ratio(list?.cache_write_1h_mtok));
    const searchFee = perMillion(list?.web_searches_kcount);
    const perSearch = own.web_search ?? (searchFee !== undefined ? searchFee / 1000 / creditValue : 0);
    const exact =
      (count('uncached_input_tokens', classes.uncached_input_tokens, false) * own.prompt +
        read * cachedPrompt +
        (write - write1h) * cacheWrite +
        write1h * cacheWrite1h +
        count('output_tokens', classes.output_tokens, false) * own.completion) /
        1000 +
      searches * perSearch;
    return credits(exact, model);
  };

  return {
    sourceOf,
    price(model, classes) {
      const source = sourceOf(model);
      if (!source) return undefined;
      if (source.source === 'override') return overridePrice(model, source.id, classes);
      const found = lookUp(model, catalogUsage(classes));
      if (!found) return undefined;
      return credits((found.total_price / creditValue) * markup, model);
    },
    completionPer1K(model) {
      const source = sourceOf(model);
      if (!source) return undefined;
      if (source.source === 'override') return overrides[source.id]!.completion;
      const output = perMillion(lookUp(model, { input_tokens: 0, output_tokens: 0 })?.model_price.output_mtok) ?? 0;
      return ((output / 1000) * markup) / creditValue;
    },
  };
}
