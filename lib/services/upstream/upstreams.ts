import { validateHeaderName, validateHeaderValue } from 'node:http';
import { closest } from '../../base/did-you-mean';

/**
 * The dialect an upstream speaks: `openai` (Chat Completions, Responses, legacy Completions, Embeddings; its key
 * sent as `Authorization: Bearer`) or `anthropic` (the Messages API; its key sent as `x-api-key`, with
 * `anthropic-version`).
 */
export type UpstreamApi = 'openai' | 'anthropic';
const UPSTREAM_APIS: readonly UpstreamApi[] = ['openai', 'anthropic'];

/** One provider the gateway can send generations to. */
export interface UpstreamConfig {
  /** Names the upstream in logs, meter events and errors; unique, no whitespace. Required. */
  name: string;
  /** Base URL of the provider, including its version prefix, e.g. `https://api.openai.com/v1`. Required. */
  baseURL: string;
  /** The dialect it speaks (see {@link UpstreamApi}). Default: `"openai"`. */
  api?: UpstreamApi;
  /**
   * Key sent to this upstream only: `Authorization: Bearer <apiKey>`, or `x-api-key` for an `anthropic` upstream.
   * Never logged, never sent to clients. Default: none.
   */
  apiKey?: string;
  /** Extra static headers for every request to this upstream (e.g. `OpenAI-Organization`). Default: `{}`. */
  headers?: Record<string, string>;
  /**
   * The models this upstream serves: exact names, or patterns where `*` stands for any run of characters
   * (`gpt-*`, `*-mini`, `*`). A pattern matches the whole model name, case-sensitively; no other character is
   * special. Default: `["*"]` (every model).
   */
  models?: string[];
  /**
   * Model names clients use → this provider's name for it (`{ "fast": "gpt-4o-mini" }`). An alias is served by
   * this upstream whether or not `models` matches it, and is listed by `GET /models`. Default: `{}`.
   */
  aliases?: Record<string, string>;
}

/** What counts as an upstream failure worth trying the next upstream for. */
export type FallbackTrigger = 'connection' | 'timeout' | '429' | '5xx';

/** When and how long the gateway tries further upstreams before the first byte. */
export interface FallbackOptions {
  /**
   * The failures that make the gateway try the next upstream serving the model: `connection` (refused, reset,
   * DNS: 502 `upstream_unreachable`), `timeout` (no response headers in time: 504 `upstream_timeout`), `429`, and
   * `5xx` (an HTTP 500–599 answer). Any other answer (400, 401, 404…) goes to the client as it is. Default: all four.
   */
  on?: FallbackTrigger[];
  /** Upstreams tried for one request, the first included; each upstream is tried at most once. Default: `3`. */
  maxAttempts?: number;
  /**
   * Milliseconds all attempts of one request may take until an upstream's response is accepted; the time left
   * shortens each attempt's `upstreamTimeout`, and once it has passed no further upstream is tried. Default:
   * `120_000` (two whole attempts at the default `upstreamTimeout` of 60 s).
   */
  deadline?: number;
}

/** An upstream after validation. */
export interface ResolvedUpstream {
  readonly name: string;
  readonly api: UpstreamApi;
  readonly baseURL: URL;
  readonly apiKey: string | undefined;
  /** Header names lower-cased. */
  readonly headers: Record<string, string>;
  /** Whether a request for `model` may go to this upstream (an alias, or a name `models` matches). */
  serves(model: string): boolean;
  /** The provider's name for `model`: its alias target, else `model` itself. */
  providerModel(model: string): string;
  /** The exact names in `models` and the alias names, in order and without duplicates, for `GET /models`. */
  readonly listed: readonly string[];
  /** Whether `models` holds a pattern with `*`, i.e. serves names `listed` cannot show. */
  readonly hasWildcards: boolean;
}

export const FALLBACK_TRIGGERS: readonly FallbackTrigger[] = ['connection', 'timeout', '429', '5xx'];
const DEFAULT_MAX_ATTEMPTS = 3;
const DEFAULT_DEADLINE = 120_000;
/** More attempts than this is a configuration mistake, not resilience. */
const MAX_ATTEMPTS_CAP = 100;

/** Headers that carry an upstream key: set with `apiKey`, never in `headers`. */
const KEY_HEADERS = new Set(['authorization', 'x-api-key', 'api-key']);
const UPSTREAM_KEYS = ['name', 'baseURL', 'api', 'apiKey', 'headers', 'models', 'aliases'];
const FALLBACK_KEYS = ['on', 'maxAttempts', 'deadline'];

/**
 * Matches a model name against a pattern of literal text and `*` wildcards, compiled once. No RegExp: the
 * pattern's literal parts are found left to right with `indexOf` (the leftmost match of each part is always the
 * best one), so a pattern of many `*` costs at most (name length × pattern length), never a backtracking blow-up.
 */
export function compileGlob(pattern: string): (name: string) => boolean {
  if (!pattern.includes('*')) return (name) => name === pattern;
  const parts = pattern.split('*');
  const prefix = parts[0]!;
  const suffix = parts[parts.length - 1]!;
  const middle = parts.slice(1, -1).filter((part) => part !== '');
  const fixed = prefix.length + suffix.length;
  return (name) => {
    if (name.length < fixed || !name.startsWith(prefix) || !name.endsWith(suffix)) return false;
    const end = name.length - suffix.length;
    let at = prefix.length;
    for (const part of middle) {
      const found = name.indexOf(part, at);
      if (found < 0 || found + part.length > end) return false;
      at = found + part.length;
    }
    return true;
  };
}

/** Validates the `upstreams` option: an ordered, non-empty list of {@link UpstreamConfig}. */
export function parseUpstreams(value: unknown, fail: (message: string) => never): ResolvedUpstream[] {
  const example = '[{ name: "primary", baseURL: "https://api.openai.com/v1", apiKey: process.env.OPENAI_API_KEY, models: ["gpt-*"] }]';
  if (!Array.isArray(value)) fail(`\`upstreams\` must be a list of upstreams such as ${example}, got ${describe(value)}.`);
  if (value.length === 0) fail(`\`upstreams\` needs at least one upstream, e.g. ${example}.`);
  const names = new Set<string>();
  return value.map((entry: unknown, index) => {
    const upstream = parseUpstream(entry, `upstreams[${index}]`, fail);
    if (names.has(upstream.name)) fail(`\`upstreams[${index}].name\` "${upstream.name}" is used twice: each upstream needs its own name.`);
    names.add(upstream.name);
    return upstream;
  });
}

function parseUpstream(value: unknown, at: string, fail: (message: string) => never): ResolvedUpstream {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail(`\`${at}\` must be an object such as { name: "primary", baseURL: "https://api.openai.com/v1" }, got ${describe(value)}.`);
  }
  const config = value as Record<string, unknown>;
  unknownKeys(config, UPSTREAM_KEYS, at, fail);

  const { name } = config;
  if (typeof name !== 'string' || name === '') fail(`\`${at}.name\` is required: a non-empty string such as "primary".`);
  if (!/^[^\s\p{Cc}]+$/u.test(name)) fail(`\`${at}.name\` must have no whitespace or control characters, got ${JSON.stringify(name)}.`);
  const where = `${at}.`; // e.g. `upstreams[1].baseURL`

  if (typeof config.baseURL !== 'string' || config.baseURL === '') fail(`\`${where}baseURL\` is required, e.g. "https://api.openai.com/v1".`);
  let baseURL: URL;
  try {
    baseURL = new URL(config.baseURL);
  } catch {
    fail(`\`${where}baseURL\` is not a valid URL: ${JSON.stringify(config.baseURL)}.`);
  }
  if (baseURL.protocol !== 'http:' && baseURL.protocol !== 'https:') fail(`\`${where}baseURL\` must be http: or https:, got ${baseURL.protocol}`);

  const api = config.api === undefined ? 'openai' : config.api;
  if (!(UPSTREAM_APIS as readonly unknown[]).includes(api)) {
    const hint = typeof api === 'string' ? closest(api, UPSTREAM_APIS) : undefined;
    fail(`\`${where}api\` must be ${quoted(UPSTREAM_APIS)} (the dialect the upstream speaks), got ${JSON.stringify(api) ?? String(api)}${hint ? `; did you mean "${hint}"?` : ''}.`);
  }

  const { apiKey } = config;
  if (apiKey !== undefined && (typeof apiKey !== 'string' || apiKey === '')) {
    fail(`\`${where}apiKey\` must be a non-empty string when given (is the environment variable set?).`);
  }

  const headers: Record<string, string> = {};
  if (config.headers !== undefined) {
    if (typeof config.headers !== 'object' || config.headers === null || Array.isArray(config.headers)) fail(`\`${where}headers\` must be an object of header names to strings.`);
    for (const [header, headerValue] of Object.entries(config.headers)) {
      if (typeof headerValue !== 'string') fail(`\`${where}headers.${header}\` must be a string, got ${describe(headerValue)}.`);
      if (KEY_HEADERS.has(header.toLowerCase())) fail(`set the key of upstream "${name}" with \`${where}apiKey\`, not \`${where}headers\`.`);
      try {
        validateHeaderName(header);
        validateHeaderValue(header, headerValue);
      } catch {
        fail(`\`${where}headers\`: ${JSON.stringify(header)} is not a valid HTTP header name, or its value has invalid characters.`);
      }
      headers[header.toLowerCase()] = headerValue;
    }
  }

  const models = config.models === undefined ? ['*'] : config.models;
  if (!Array.isArray(models) || models.length === 0 || models.some((m) => typeof m !== 'string' || m === '')) {
    fail(`\`${where}models\` must be a non-empty list of model names or patterns such as ["gpt-*"] (leave it out to serve every model).`);
  }
  const patterns = (models as string[]).map(compileGlob);

  const aliases = new Map<string, string>();
  if (config.aliases !== undefined) {
    if (typeof config.aliases !== 'object' || config.aliases === null || Array.isArray(config.aliases)) {
      fail(`\`${where}aliases\` must be an object of client model names to the provider's names, e.g. { "fast": "gpt-4o-mini" }.`);
    }
    for (const [alias, target] of Object.entries(config.aliases)) {
      if (alias === '') fail(`\`${where}aliases\` has an empty model name.`);
      if (typeof target !== 'string' || target === '') fail(`\`${where}aliases.${alias}\` must be the provider's model name, a non-empty string.`);
      aliases.set(alias, target);
    }
  }

  const listed = [...new Set([...(models as string[]).filter((m) => !m.includes('*')), ...aliases.keys()])];
  return Object.freeze({
    name,
    api: api as UpstreamApi,
    baseURL,
    apiKey: apiKey as string | undefined,
    headers,
    serves: (model: string) => aliases.has(model) || patterns.some((matches) => matches(model)),
    providerModel: (model: string) => aliases.get(model) ?? model,
    listed: Object.freeze(listed),
    hasWildcards: (models as string[]).some((m) => m.includes('*')),
  });
}

/** The single `upstream` option as the one entry of a pool: serves every model under its own name. */
export function singleUpstream(upstream: { baseURL: URL; apiKey: string | undefined; headers: Record<string, string> }, name = 'upstream'): ResolvedUpstream {
  return Object.freeze({
    name,
    api: 'openai' as const,
    baseURL: upstream.baseURL,
    apiKey: upstream.apiKey,
    headers: upstream.headers,
    serves: () => true,
    providerModel: (model: string) => model,
    listed: Object.freeze([]),
    hasWildcards: true,
  });
}

/** Validates the `fallback` option and fills in its defaults. */
export function parseFallback(value: unknown, fail: (message: string) => never): Required<FallbackOptions> {
  if (value === undefined) return { on: [...FALLBACK_TRIGGERS], maxAttempts: DEFAULT_MAX_ATTEMPTS, deadline: DEFAULT_DEADLINE };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail(`\`fallback\` must be an object such as { on: ["connection", "timeout", "429", "5xx"], maxAttempts: 3, deadline: 120000 }, got ${describe(value)}.`);
  }
  const options = value as Record<string, unknown>;
  unknownKeys(options, FALLBACK_KEYS, 'fallback', fail);

  let on = [...FALLBACK_TRIGGERS];
  if (options.on !== undefined) {
    const list = options.on;
    if (!Array.isArray(list)) fail(`\`fallback.on\` must be a list of ${quoted(FALLBACK_TRIGGERS)}, got ${describe(list)}.`);
    for (const trigger of list) {
      if (!(FALLBACK_TRIGGERS as readonly unknown[]).includes(trigger)) {
        const hint = typeof trigger === 'number' ? ` (write "${trigger >= 500 ? '5xx' : trigger}" as a string)` : '';
        fail(`\`fallback.on\` may hold only ${quoted(FALLBACK_TRIGGERS)}, got ${JSON.stringify(trigger) ?? String(trigger)}${hint}.`);
      }
    }
    on = FALLBACK_TRIGGERS.filter((trigger) => (list as unknown[]).includes(trigger));
  }

  let maxAttempts = DEFAULT_MAX_ATTEMPTS;
  if (options.maxAttempts !== undefined) {
    const n = options.maxAttempts;
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1 || n > MAX_ATTEMPTS_CAP) {
      fail(`\`fallback.maxAttempts\` must be a whole number from 1 to ${MAX_ATTEMPTS_CAP} (attempts in all, the first included), got ${String(n)}.`);
    }
    maxAttempts = n;
  }

  let deadline = DEFAULT_DEADLINE;
  if (options.deadline !== undefined) {
    const ms = options.deadline;
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms <= 0) fail(`\`fallback.deadline\` must be a positive number of milliseconds, got ${String(ms)}.`);
    deadline = ms;
  }
  return { on, maxAttempts, deadline };
}

function unknownKeys(object: Record<string, unknown>, known: readonly string[], at: string, fail: (message: string) => never): void {
  for (const key of Object.keys(object)) {
    if (known.includes(key)) continue;
    const hint = closest(key, known);
    fail(`unknown key \`${at}.${key}\`${hint ? `; did you mean \`${hint}\`?` : ` (known: ${known.join(', ')})`}`);
  }
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value;
}

function quoted(list: readonly string[]): string {
  return list.map((item) => `"${item}"`).join(', ');
}
