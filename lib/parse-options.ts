import { closest } from './base/did-you-mean';
import { InferyOptionsError } from './base/errors';
import type { BudgetSpec, Logger, OwnsResponseAnswer } from './contract/hooks';
import { textsCounter } from './core/usage';
import { containedObserver, MAX_CONTENT_CHARS, OBSERVER_MEMBERS, type Observer } from './ledgers/metrics/observer';
import { MemoryLimitStore, type LimitStore } from './ledgers/stores/limit-store';
import { ResponseOwners } from './ledgers/stores/response-owners';
import type { Options } from './options/options';
import type { ResolvedLimits, ResolvedOptions } from './options/resolved';
import { DEFAULT_PASS_THROUGH, parseRoute, type Route } from './services/routing/routes';
import { parseFallback, parseUpstreams, singleUpstream, type ResolvedUpstream } from './services/upstream/upstreams';

const KNOWN_KEYS = new Set([
  'upstream', 'upstreams', 'fallback', 'authenticate', 'preflight', 'reserve', 'meter', 'defaultMaxTokens', 'limits', 'basePath', 'passThrough', 'allowBackground', 'ownsResponse',
  'usageGraceTimeout', 'bodyLimit', 'upstreamTimeout', 'idleTimeout', 'heartbeatInterval', 'maxDuration', 'writeTimeout',
  'maxEventBytes', 'meterTimeout',
  'maxResponseBytes', 'forwardHeaders', 'logger', 'observer', 'accountTag', 'countTokens',
]);
const LIMIT_KEYS = new Set(['maxConcurrent', 'requestsPerMinute', 'tokensPerMinute', 'tokensCounted', 'budget', 'store', 'key']);
// `x-api-key` and `api-key` carry the client's own key (bearerToken reads them): never sent to a provider
const FORBIDDEN_FORWARD = new Set(['authorization', 'x-api-key', 'api-key', 'cookie', 'proxy-authorization', 'host', 'content-length']);

function fail(message: string): never {
  throw new InferyOptionsError(message);
}

function amount(name: string, value: unknown, fallback: number, unit: 'milliseconds' | 'bytes', allowZero = false): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (value === 0 && !allowZero)) {
    fail(`\`${name}\` must be a ${allowZero ? 'non-negative' : 'positive'} number of ${unit}, got ${String(value)}.`);
  }
  return value;
}

function fn<T>(name: string, value: unknown, required: boolean): T | undefined {
  if (value === undefined && !required) return undefined;
  if (typeof value !== 'function') {
    fail(`\`${name}\` must be a function${required ? ' and is required' : ''}, got ${typeof value}.`);
  }
  return value as T;
}

/**
 * Validates the caller's options and merges them over the defaults, without mutating them. Throws an
 * {@link InferyOptionsError} that suggests the fix. `meteredPaths` are the routes the gateway's API surfaces
 * serve (the middleware hands them over): `passThrough` may not name one.
 */
export function parseOptions<Account>(input: unknown, meteredPaths: readonly string[]): ResolvedOptions<Account> {
  if (input === undefined || input === null) {
    fail('inferyStream() needs options: inferyStream({ upstream: { baseURL, apiKey }, authenticate }).');
  }
  if (typeof input === 'object' && input !== null && 'socket' in input && 'method' in input) {
    fail('inferyStream was called with a request: use app.use(inferyStream({ ... })), not app.use(inferyStream).');
  }
  if (typeof input !== 'object' || Array.isArray(input)) fail(`options must be an object, got ${typeof input}.`);
  const opts = input as Record<string, unknown>;
  for (const key of Object.keys(opts)) {
    if (!KNOWN_KEYS.has(key)) {
      const hint = closest(key, KNOWN_KEYS);
      fail(`unknown option \`${key}\`${hint ? `; did you mean \`${hint}\`?` : ''}`);
    }
  }

  if (opts.upstream !== undefined && opts.upstreams !== undefined) fail('give either `upstream` (one provider) or `upstreams` (several), not both.');
  const fallback = parseFallback(opts.fallback, fail);
  let several: ResolvedUpstream[] | undefined;
  if (opts.upstreams !== undefined) several = parseUpstreams(opts.upstreams, fail);
  const upstream = (several ? { baseURL: several[0]!.baseURL.href, apiKey: several[0]!.apiKey, headers: several[0]!.headers } : opts.upstream) as Record<string, unknown> | undefined;
  if (!upstream || typeof upstream !== 'object') {
    fail('`upstream` is required: { upstream: { baseURL: "https://api.openai.com/v1", apiKey: process.env.OPENAI_API_KEY } }.');
  }
  if (typeof upstream.baseURL !== 'string' || upstream.baseURL === '') {
    fail('`upstream.baseURL` is required, e.g. "https://api.openai.com/v1".');
  }
  let baseURL: URL;
  try {
    baseURL = new URL(upstream.baseURL);
  } catch {
    fail(`\`upstream.baseURL\` is not a valid URL: ${JSON.stringify(upstream.baseURL)}.`);
  }
  if (baseURL.protocol !== 'http:' && baseURL.protocol !== 'https:') {
    fail(`\`upstream.baseURL\` must be http: or https:, got ${baseURL.protocol}`);
  }
  if (upstream.apiKey !== undefined && (typeof upstream.apiKey !== 'string' || upstream.apiKey === '')) {
    fail('`upstream.apiKey` must be a non-empty string when given (is the environment variable set?).');
  }
  const headers: Record<string, string> = {};
  if (upstream.headers !== undefined) {
    if (typeof upstream.headers !== 'object' || upstream.headers === null) fail('`upstream.headers` must be an object.');
    for (const [name, value] of Object.entries(upstream.headers)) {
      if (typeof value !== 'string') fail(`\`upstream.headers.${name}\` must be a string.`);
      if (name.toLowerCase() === 'authorization') fail('set the upstream key with `upstream.apiKey`, not `upstream.headers`.');
      headers[name.toLowerCase()] = value;
    }
  }

  const basePath = opts.basePath === undefined ? '/v1' : opts.basePath;
  if (typeof basePath !== 'string' || !/^(\/[A-Za-z0-9._~-]+)*$/.test(basePath.replace(/\/$/, ''))) {
    fail(`\`basePath\` must be a path such as "/v1", got ${JSON.stringify(basePath)}.`);
  }

  const forward = opts.forwardHeaders === undefined ? ['openai-beta'] : opts.forwardHeaders;
  if (!Array.isArray(forward) || forward.some((h) => typeof h !== 'string')) fail('`forwardHeaders` must be an array of header names.');
  const forwardHeaders = new Set((forward as string[]).map((h) => h.toLowerCase()));
  for (const h of forwardHeaders) {
    if (FORBIDDEN_FORWARD.has(h)) fail(`\`forwardHeaders\` cannot include "${h}": the gateway never forwards it.`);
  }

  const passThrough = parsePassThrough(opts.passThrough, basePath.replace(/\/$/, ''), meteredPaths);
  const limits = parseLimits<Account>(opts.limits);
  if (limits?.store.takenByReserve && opts.reserve === undefined) {
    fail('`limits.store` is `takenByReserve`: the limits are taken by `reserve` with the hold, so a `reserve` hook is required (pass `ReserveContext.limits` to your store\'s reserve).');
  }

  const given = opts.logger as Logger | undefined;
  if (given !== undefined && (typeof given !== 'object' || given === null || typeof given.info !== 'function')) {
    fail('`logger` must be a pino logger (an object with info/warn/error/debug).');
  }
  const logger = given === undefined ? undefined : containedLogger(given);
  const observer = parseObserver(opts.observer);

  const single = { baseURL, apiKey: upstream.apiKey as string | undefined, headers };
  const responseOwners = new ResponseOwners();
  const keyOf = limits?.key ?? defaultAccountKey;
  const accountKey = (account: Account): string | undefined => {
    try {
      return keyOf(account as never);
    } catch {
      return undefined;
    }
  };
  const ownsHook = fn<(account: Account, id: string) => OwnsResponseAnswer | Promise<OwnsResponseAnswer>>('ownsResponse', opts.ownsResponse, false);
  return {
    upstream: single,
    upstreams: several ?? [singleUpstream(single, 'default')],
    severalUpstreams: several !== undefined,
    fallback,
    authenticate: fn<Options<Account>['authenticate']>('authenticate', opts.authenticate, true)!,
    preflight: fn('preflight', opts.preflight, false),
    reserve: fn('reserve', opts.reserve, false),
    meter: fn('meter', opts.meter, false),
    defaultMaxTokens: count('defaultMaxTokens', opts.defaultMaxTokens, 4096),
    limits,
    basePath: basePath.replace(/\/$/, ''),
    passThrough,
    allowBackground: flag('allowBackground', opts.allowBackground),
    responseOwners,
    accountKey,
    findResponse: ownsHook
      ? async (account: Account, id: string) => {
          const answer = await ownsHook(account, id);
          if (answer === true) return { upstream: undefined };
          if (typeof answer === 'string' && answer !== '') return { upstream: answer };
          if (typeof answer === 'object' && answer !== null) {
            const { upstream, contextTokens } = answer;
            return {
              upstream: typeof upstream === 'string' && upstream !== '' ? upstream : undefined,
              contextTokens: typeof contextTokens === 'number' && Number.isSafeInteger(contextTokens) && contextTokens > 0 ? contextTokens : undefined,
            };
          }
          return undefined;
        }
      : async (account: Account, id: string) => responseOwners.find(accountKey(account), id),
    usageGraceTimeout: amount('usageGraceTimeout', opts.usageGraceTimeout, 5_000, 'milliseconds', true),
    bodyLimit: amount('bodyLimit', opts.bodyLimit, 10 * 1024 * 1024, 'bytes'),
    upstreamTimeout: amount('upstreamTimeout', opts.upstreamTimeout, 60_000, 'milliseconds'),
    idleTimeout: amount('idleTimeout', opts.idleTimeout, 120_000, 'milliseconds'),
    heartbeatInterval: amount('heartbeatInterval', opts.heartbeatInterval, 10_000, 'milliseconds', true),
    maxDuration: amount('maxDuration', opts.maxDuration, 30 * 60_000, 'milliseconds'),
    writeTimeout: amount('writeTimeout', opts.writeTimeout, 60_000, 'milliseconds'),
    maxEventBytes: amount('maxEventBytes', opts.maxEventBytes, 8 * 1024 * 1024, 'bytes'),
    meterTimeout: amount('meterTimeout', opts.meterTimeout, 10_000, 'milliseconds'),
    maxResponseBytes: amount('maxResponseBytes', opts.maxResponseBytes, 50 * 1024 * 1024, 'bytes'),
    forwardHeaders,
    logger,
    observer: observer === undefined ? undefined : containedObserver(observer, logger),
    accountTag: containedTag(fn<(account: Account) => unknown>('accountTag', opts.accountTag, false)),
    countTexts: textsCounter(fn<(text: string, model: string) => number>('countTokens', opts.countTokens, false), (err) =>
      logger?.warn({ err: err instanceof Error ? err.message : String(err) }, 'infery-stream countTokens failed; counting a token per 3 bytes instead'),
    ),
  };
}

/** Longest account tag kept. */
const MAX_ACCOUNT_TAG = 128;

/** The host's `accountTag`, contained: a non-empty string cut to 128 characters, else undefined. */
function containedTag<Account>(hook: ((account: Account) => unknown) | undefined): (account: Account) => string | undefined {
  if (!hook) return () => undefined;
  return (account) => {
    try {
      const tag = hook(account);
      return typeof tag === 'string' && tag !== '' ? tag.slice(0, MAX_ACCOUNT_TAG) : undefined;
    } catch {
      return undefined;
    }
  };
}

/** The host's logger, each call contained: a logger that throws never breaks a request. */
function containedLogger(logger: Logger): Logger {
  const call =
    (level: keyof Logger) =>
    (obj: object, msg?: string): void => {
      try {
        logger[level](obj, msg);
      } catch {
        // nothing to do: logging must not end a request, and there is nowhere else to report it
      }
    };
  return { info: call('info'), warn: call('warn'), error: call('error'), debug: call('debug') };
}

/** An object with at least one of the observer's members, each present one a function; or an array of such. */
function parseObserver(value: unknown): Observer | Observer[] | undefined {
  if (value === undefined) return undefined;
  if (Array.isArray(value)) {
    if (value.length === 0) fail('`observer` is an empty array: pass one observer, several, or leave it out.');
    return value.map((one, i) => parseOneObserver(one, `observer[${i}]`));
  }
  return parseOneObserver(value, 'observer');
}

function parseOneObserver(value: unknown, where: string): Observer {
  const members = OBSERVER_MEMBERS.join(', ');
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(`\`${where}\` must be an object with ${members}, got ${Array.isArray(value) ? 'an array' : typeof value}.`);
  const observer = value as Record<string, unknown>;
  for (const name of OBSERVER_MEMBERS) {
    if (observer[name] !== undefined && typeof observer[name] !== 'function') fail(`\`${where}.${name}\` must be a function, got ${typeof observer[name]}.`);
  }
  if (observer.content !== undefined) {
    const content = observer.content as { maxChars?: unknown } | null;
    const max = typeof content === 'object' && content !== null ? content.maxChars : undefined;
    if (typeof max !== 'number' || !Number.isSafeInteger(max) || max < 1 || max > MAX_CONTENT_CHARS) {
      fail(`\`${where}.content\` must be { maxChars } with a whole number of characters from 1 to ${MAX_CONTENT_CHARS}, got ${JSON.stringify(observer.content)}.`);
    }
  }
  if (OBSERVER_MEMBERS.every((name) => observer[name] === undefined)) {
    const hint = 'observer' in observer ? ` (pass \`prometheusObserver().observer\`, not what prometheusObserver() returned)` : '';
    fail(`\`${where}\` has none of ${members}${hint}.`);
  }
  return observer as Observer;
}

/** A boolean option, `false` when absent. */
function flag(name: string, value: unknown): boolean {
  if (value === undefined) return false;
  if (typeof value !== 'boolean') fail(`\`${name}\` must be true or false, got ${JSON.stringify(value)}.`);
  return value;
}

/** A positive whole number (token counts). */
function count(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) fail(`\`${name}\` must be a positive whole number, got ${String(value)}.`);
  return value;
}

function parsePassThrough(value: unknown, basePath: string, meteredPaths: readonly string[]): Route[] {
  if (value === undefined || value === true) return DEFAULT_PASS_THROUGH.map((spec) => parseRoute(spec, 'pass-through'));
  if (value === false) return [];
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) {
    fail('`passThrough` must be a list of routes such as ["GET /models", "GET /models/{id}"], or true/false.');
  }
  return (value as string[]).map((spec) => {
    let route: Route;
    try {
      route = parseRoute(spec, 'pass-through');
    } catch (err) {
      fail(`\`passThrough\`: ${(err as Error).message}.`);
    }
    if (basePath !== '' && (route.pattern === basePath || route.pattern.startsWith(`${basePath}/`))) {
      fail(`\`passThrough\`: "${spec}" starts with the base path; routes are relative to it ("${route.method} ${route.pattern.slice(basePath.length) || '/'}").`);
    }
    if (meteredPaths.includes(route.pattern)) fail(`\`passThrough\`: "${spec}" is served (and metered) by the gateway itself.`);
    return route;
  });
}

/** The default account key: a string account, or its `id`. */
function defaultAccountKey(account: unknown): string {
  if (typeof account === 'string') return account;
  const id = typeof account === 'object' && account !== null ? (account as { id?: unknown }).id : undefined;
  if (typeof id === 'string' || typeof id === 'number') return String(id);
  throw new InferyOptionsError('`limits` need an account key: `authenticate` returned an account that is not a string and has no `id`; pass `limits.key(account)`.');
}

function parseLimits<Account>(value: unknown): ResolvedLimits<Account> | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('`limits` must be an object: { maxConcurrent, requestsPerMinute }.');
  const limits = value as Record<string, unknown>;
  for (const key of Object.keys(limits)) {
    if (!LIMIT_KEYS.has(key)) fail(`unknown option \`limits.${key}\`; it takes ${[...LIMIT_KEYS].join(', ')}.`);
  }
  const whole = (name: string, v: unknown): number => {
    if (v === undefined) return 0;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(`\`limits.${name}\` must be a whole number ≥ 0 (0 disables it), got ${String(v)}.`);
    return v;
  };
  const store = limits.store as LimitStore | undefined;
  if (store !== undefined && (typeof store !== 'object' || store === null || ['acquire', 'release', 'hit'].some((m) => typeof (store as unknown as Record<string, unknown>)[m] !== 'function'))) {
    fail('`limits.store` must implement acquire(key, max), release(key) and hit(key, perMinute).');
  }
  const tpm = limits.tokensPerMinute;
  if (tpm !== undefined && typeof tpm !== 'function') whole('tokensPerMinute', tpm);
  const tokensPerMinute = typeof tpm === 'function' ? (tpm as (account: Account) => number) : () => (tpm as number | undefined) ?? 0;
  if (tpm !== undefined && tpm !== 0 && store !== undefined && (typeof store.takeTokens !== 'function' || typeof store.returnTokens !== 'function')) {
    fail('`limits.tokensPerMinute` needs a `limits.store` with takeTokens(key, tokens, perMinute) and returnTokens(key, tokens, perMinute), as MemoryLimitStore and RedisLimitStore have.');
  }
  const counted = limits.tokensCounted ?? 'total';
  if (counted !== 'input' && counted !== 'output' && counted !== 'total') fail(`\`limits.tokensCounted\` must be "input", "output" or "total", got ${JSON.stringify(counted)}.`);
  return {
    maxConcurrent: whole('maxConcurrent', limits.maxConcurrent),
    requestsPerMinute: whole('requestsPerMinute', limits.requestsPerMinute),
    tokensPerMinute,
    tokensCounted: counted,
    budget: fn<(account: Account) => BudgetSpec | undefined>('limits.budget', limits.budget, false),
    store: store ?? new MemoryLimitStore(),
    key: fn<(account: Account) => string>('limits.key', limits.key, false) ?? defaultAccountKey,
  };
}
