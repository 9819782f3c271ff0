import fs from 'node:fs';
import type { BudgetSpec, FallbackOptions, UpstreamConfig } from '../lib';
import type { Price } from './ledger';

/** What `INFERY_CONFIG` names: a JSON file with the upstreams (and, optionally, fallback rules and prices). */
export interface FileConfig {
  upstreams: UpstreamConfig[];
  fallback?: FallbackOptions;
  /**
   * Credits per 1K tokens by model — `{"prompt", "completion"}`, optional `"cached_prompt"`, `"cache_write"`,
   * `"cache_write_1h"` and `"web_search"` (per search) — over the catalog; a `default` prices every model nothing
   * else does.
   */
  prices?: Record<string, Price>;
  /** Limits by client key: `{"<key>": {"budget": "5/day", "tpm": 10000}}`, over INFERY_BUDGET and INFERY_TPM. */
  keys?: Record<string, KeyLimits>;
}

/** One client key's limits (`INFERY_CONFIG` `keys`). */
export interface KeyLimits {
  /** Credits per UTC day, week or month (`"5/day"`); `null` or `"0"`-less: none for this key. */
  budget?: BudgetSpec | null;
  /** Tokens per minute (0: none). */
  tpm?: number;
}

/**
 * Parses a budget written `<credits>/<day|week|month>` (`5/day`, `100/week`, `2000/month`: UTC windows) — what
 * `INFERY_BUDGET` and `INFERY_CONFIG`'s `keys.<key>.budget` take. Throws an Error naming `what` and the problem.
 */
export function parseBudget(value: string, what: string): BudgetSpec {
  const match = /^\s*(\d+(?:\.\d+)?)\s*\/\s*(day|week|month)\s*$/i.exec(value);
  if (!match) throw new Error(`${what} must be <credits>/<day|week|month>, e.g. "5/day", got ${JSON.stringify(value)}`);
  return { credits: Number(match[1]), window: match[2]!.toLowerCase() as 'day' | 'week' | 'month' };
}

/** The `baseURL` that stands for the built-in mock provider, so a config can be tried offline. */
export const MOCK_BASE_URL = 'mock';

/**
 * Reads and checks the JSON file at `file`:
 * `{"upstreams":[{"name":"primary","baseURL":"https://…/v1","apiKey":"…","models":["gpt-*"]},{"name":"backup",…}],
 * "fallback":{…},"prices":{"gpt-4o":{"prompt":25,"completion":100}}}`. An `apiKey` written `$NAME` is read from
 * the environment variable NAME (so the file holds no secret); `"baseURL": "mock"` is the built-in mock
 * provider. Each upstream's fields are validated by the library when the gateway is created. Throws an Error
 * whose message names the file and the problem.
 */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): FileConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`INFERY_CONFIG: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`INFERY_CONFIG: ${file} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`INFERY_CONFIG: ${file} must hold a JSON object with "upstreams"`);
  const config = json as Record<string, unknown>;
  for (const key of Object.keys(config)) {
    if (!['upstreams', 'fallback', 'prices', 'keys'].includes(key)) throw new Error(`INFERY_CONFIG: unknown key "${key}" in ${file} (expected upstreams, fallback, prices, keys)`);
  }
  if (!Array.isArray(config.upstreams) || config.upstreams.length === 0) {
    throw new Error(`INFERY_CONFIG: ${file} needs "upstreams": a non-empty list of {"name","baseURL","apiKey","models"}`);
  }
  const upstreams = (config.upstreams as unknown[]).map((entry, i) => {
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw new Error(`INFERY_CONFIG: upstreams[${i}] must be an object`);
    const upstream = { ...(entry as Record<string, unknown>) };
    if (typeof upstream.apiKey === 'string' && upstream.apiKey.startsWith('$')) {
      const name = upstream.apiKey.slice(1);
      const value = env[name];
      if (!value) throw new Error(`INFERY_CONFIG: upstreams[${i}].apiKey names the environment variable ${name}, which is not set`);
      upstream.apiKey = value;
    }
    return upstream as unknown as UpstreamConfig;
  });
  return { upstreams, fallback: config.fallback as FallbackOptions | undefined, prices: parsePrices(config.prices, file), keys: parseKeyLimits(config.keys, file) };
}

/** The keys a price may have: credits per 1K tokens (`web_search`: per search). */
const PRICE_KEYS = ['prompt', 'completion', 'cached_prompt', 'cache_write', 'cache_write_1h', 'web_search'] as const;

function parsePrices(value: unknown, file: string): Record<string, Price> | undefined {
  if (value === undefined) return undefined;
  const shape = '{"prompt", "completion"} in credits per 1K tokens, with optional "cached_prompt", "cache_write", "cache_write_1h" (and "web_search", credits per search)';
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`INFERY_CONFIG: "prices" in ${file} must be an object of model → ${shape}`);
  const prices = Object.create(null) as Record<string, Price>;
  for (const [model, price] of Object.entries(value)) {
    const p = price as Record<string, unknown> | null;
    const ok = (n: unknown): n is number => typeof n === 'number' && Number.isFinite(n) && n >= 0;
    if (typeof p !== 'object' || p === null || Array.isArray(p) || !ok(p.prompt) || !ok(p.completion ?? 0)) {
      throw new Error(`INFERY_CONFIG: prices["${model}"] must be ${shape}, numbers ≥ 0`);
    }
    const parsed: Price = { prompt: p.prompt, completion: (p.completion as number | undefined) ?? 0 };
    for (const key of Object.keys(p)) {
      if (!(PRICE_KEYS as readonly string[]).includes(key)) throw new Error(`INFERY_CONFIG: prices["${model}"] has an unknown key "${key}" (expected ${PRICE_KEYS.join(', ')})`);
      const n = p[key];
      if (!ok(n)) throw new Error(`INFERY_CONFIG: prices["${model}"].${key} must be a number ≥ 0, got ${JSON.stringify(n)}`);
      if (key !== 'prompt' && key !== 'completion') parsed[key as Exclude<(typeof PRICE_KEYS)[number], 'prompt' | 'completion'>] = n;
    }
    prices[model.trim().toLowerCase()] = parsed;
  }
  return prices;
}

function parseKeyLimits(value: unknown, file: string): Record<string, KeyLimits> | undefined {
  if (value === undefined) return undefined;
  const shape = '{"<key>": {"budget": "5/day", "tpm": 10000}}';
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`INFERY_CONFIG: "keys" in ${file} must be an object: ${shape}`);
  const keys = Object.create(null) as Record<string, KeyLimits>;
  for (const [key, limits] of Object.entries(value)) {
    if (typeof limits !== 'object' || limits === null || Array.isArray(limits)) throw new Error(`INFERY_CONFIG: keys["${key}"] must be an object: ${shape}`);
    const out: KeyLimits = {};
    for (const [name, v] of Object.entries(limits as Record<string, unknown>)) {
      if (name === 'budget') {
        if (v === null) out.budget = null;
        else if (typeof v === 'string') out.budget = parseBudget(v, `INFERY_CONFIG: keys["${key}"].budget`);
        else throw new Error(`INFERY_CONFIG: keys["${key}"].budget must be "<credits>/<day|week|month>" (or null for none), got ${JSON.stringify(v)}`);
      } else if (name === 'tpm') {
        if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new Error(`INFERY_CONFIG: keys["${key}"].tpm must be a whole number of tokens per minute ≥ 0 (0: none), got ${JSON.stringify(v)}`);
        out.tpm = v;
      } else throw new Error(`INFERY_CONFIG: keys["${key}"] has an unknown key "${name}" (expected budget, tpm)`);
    }
    keys[key] = out;
  }
  return keys;
}
