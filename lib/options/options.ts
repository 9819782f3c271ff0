import type { IncomingMessage } from 'node:http';
import type { ReserveContext, ReserveResult } from '../ledgers/billing/reservation';
import { MemoryLimitStore, type LimitStore } from '../ledgers/stores/limit-store';
import type { MeterEvent } from '../core/metering';
import { DEFAULT_PASS_THROUGH, parseRoute, type Route } from '../services/routing/routes';
import { SURFACES } from '../surfaces';
import { closest } from '../base/did-you-mean';
import { ResponseOwners, type StoredResponse } from '../ledgers/stores/response-owners';
import { parseFallback, parseUpstreams, singleUpstream, type FallbackOptions, type ResolvedUpstream, type UpstreamConfig } from '../services/upstream/upstreams';
import { containedCounter } from '../core/usage';
import { containedObserver, OBSERVER_MEMBERS, type ContainedObserver, type Observer } from '../ledgers/metrics/observer';

/** The subset of a pino logger infery-stream uses. Pass `pino()` or any child of it. */
export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

/** What a pre-flight check sees: the authenticated account and the parsed request. */
export interface PreflightContext<Account, Req extends IncomingMessage = IncomingMessage> {
  account: Account;
  /** The parsed JSON body of a chat completion; `undefined` on pass-through routes. */
  body: Record<string, unknown> | undefined;
  /** The path below the base path, e.g. `/chat/completions` or `/embeddings`. */
  path: string;
  /** The client's request, as your framework hands it over (an Express `Request` in an Express app). */
  req: Req;
}

/** What `ownsResponse` answers: whether the account created the response, and what the gateway should know of it. */
export type OwnsResponseAnswer = boolean | string | { upstream?: string; contextTokens?: number } | null | undefined;

/** Where requests go. */
export interface UpstreamOptions {
  /** Base URL of an OpenAI-compatible provider, including its version prefix, e.g. `https://api.openai.com/v1`. Required. */
  baseURL: string;
  /** Key sent upstream as `Authorization: Bearer <apiKey>`. Never logged, never sent to clients. Default: none. */
  apiKey?: string;
  /** Extra static headers for every upstream request (e.g. `OpenAI-Organization`). Default: `{}`. */
  headers?: Record<string, string>;
}

/**
 * Options of {@link inferyStream}. `Req` is your framework's request type: annotate `authenticate`'s parameter
 * (`(req: express.Request) => …`) and every hook sees that type, `req.user` included, without casts.
 */
export interface Options<Account = unknown, Req extends IncomingMessage = IncomingMessage> {
  /** The OpenAI-compatible provider. Required unless `upstreams` is given. */
  upstream?: UpstreamOptions;
  /**
   * Several providers, in order of preference: `{ name, baseURL, apiKey, headers, models, aliases }` each.
   * `models` are names or `*` patterns (default `["*"]`); `aliases` map the name a client uses to the
   * provider's. A generation goes to the first upstream that serves its model and, when that one fails before
   * the first byte (see `fallback`), to the next one that does. Pass-through routes go to the first upstream;
   * `GET /models` and `GET /models/{id}` are answered by the gateway with what it serves. Use either this or
   * `upstream`.
   */
  upstreams?: readonly UpstreamConfig[];
  /**
   * When a generation moves on to the next upstream that serves its model: `on` any of `connection` (refused,
   * reset), `timeout` (no headers within `upstreamTimeout`), `429`, `5xx` (default: all four), within
   * `maxAttempts` upstreams (default 3) and `deadline` ms in all (default 120,000). Never once a byte went to
   * the client. Default: all on.
   */
  fallback?: FallbackOptions;
  /**
   * Resolves the caller to an account, or `null`/`undefined` to answer 401. Required: a gateway that lets
   * anyone spend its upstream key is a leaked key. To allow everyone on purpose, pass `() => ({})`.
   */
  authenticate: (req: Req) => Account | null | undefined | Promise<Account | null | undefined>;
  /**
   * Runs after authentication and body validation, before any upstream call. Return `false` to refuse with
   * 402 `insufficient_quota`, or throw an `InferyError` to refuse with its status and code. Default: allow.
   */
  preflight?: (ctx: PreflightContext<Account, Req>) => boolean | void | Promise<boolean | void>;
  /**
   * Runs after `preflight`, before the upstream call, with the request's worst case (prompt estimate plus
   * completion cap). Hold credits for it and return the hold (any value; it comes back as
   * `MeterEvent.reservation`), or `{ hold, maxCompletionTokens }` to lower the cap sent upstream so the worst
   * case fits. Return `false` to refuse with 402 `insufficient_quota`, or throw an `InferyError`. Every request
   * that passes this hook is settled by exactly one `meter` call. Default: no hold.
   */
  reserve?: (ctx: ReserveContext<Account, Req>) => ReserveResult | Promise<ReserveResult>;
  /**
   * Called exactly once for every request that passed `reserve`: completed, cancelled, failed mid-stream, or
   * `unserved` (the upstream refused or failed before the first byte, or the gateway shut down: usage is zero;
   * release the hold, charge nothing). Returns the credits charged, sent to the client as `credits_used`.
   * `undefined` means 0. Default: returns 0.
   */
  meter?: (event: MeterEvent<Account, Req>) => number | void | Promise<number | void>;
  /**
   * Completion cap per choice when the client sets neither `max_completion_tokens` nor `max_tokens`; sent
   * upstream as `max_completion_tokens`, so the provider enforces the worst case the gateway reserved for.
   * Default: `4096`.
   */
  defaultMaxTokens?: number;
  /** Per-account limits on concurrent generations and requests per minute (429 `rate_limit_exceeded`). Default: none. */
  limits?: LimitOptions<Account>;
  /** Path the gateway serves under. Default: `'/v1'`. */
  basePath?: string;
  /**
   * The routes below the base path forwarded to the upstream as they are, authenticated but **not metered**:
   * `"METHOD /path/{param}"` strings. `true` means the default list, `false` none. Every other route gets 404
   * `unknown_route`. Default: `['GET /models', 'GET /models/{id}']`.
   */
  passThrough?: boolean | readonly string[];
  /**
   * Whether `POST /responses` with `background: true` is allowed. A background response runs on after the
   * request returns, so the gateway cannot meter what it generates: refused with 400 `background_not_supported`
   * unless this is `true` (then `meter` sees only what the first answer says; bill the rest yourself). Default:
   * `false`.
   */
  allowBackground?: boolean;
  /**
   * Whether `account` created the stored response `responseId`: only then may it read it (`GET /responses/{id}`,
   * `…/input_items`, read with the gateway's upstream key, which reads every response) or continue it
   * (`previous_response_id`). Return `true`, or the name of the upstream that holds it (with `upstreams`: the read
   * or the continuation goes there), or `{ upstream?, contextTokens? }` — `contextTokens`, the response's input
   * plus output tokens, is what a continuation makes the provider read again: it is added to the continuation's
   * worst case and estimate. Anything else is 404 `response_not_found`. Default: the gateway's own record,
   * in this process's memory, of the responses each account created (by `limits.key`, else the account itself or
   * its `id`). With several instances, look the id up in your shared records instead.
   */
  ownsResponse?: (account: Account, responseId: string) => OwnsResponseAnswer | Promise<OwnsResponseAnswer>;
  /**
   * Milliseconds the gateway keeps reading a finished stream (every choice sent its `finish_reason`) after the
   * client left, waiting for the provider's usage so the generation is billed at it. Default: `5_000`.
   */
  usageGraceTimeout?: number;
  /** Largest accepted request body in bytes; larger ones get 413. Default: `10 * 1024 * 1024` (10 MiB). */
  bodyLimit?: number;
  /** Milliseconds to wait for the upstream's response headers; then 504. Default: `60_000`. */
  upstreamTimeout?: number;
  /** Milliseconds of upstream silence tolerated once streaming began; then an error chunk. Default: `120_000`. */
  idleTimeout?: number;
  /** Milliseconds between SSE comment lines sent while the upstream is silent; `0` disables. Default: `10_000`. */
  heartbeatInterval?: number;
  /** Milliseconds one generation may stream in all; then it ends with an error chunk. Default: `1_800_000` (30 min). */
  maxDuration?: number;
  /**
   * Milliseconds a streaming client may accept no data while the gateway has some for it; then it is treated
   * as gone (upstream aborted, metered as cancelled). Default: `60_000`.
   */
  writeTimeout?: number;
  /** Largest single upstream SSE event, in bytes; a larger one ends the stream with an error chunk. Default: `8 * 1024 * 1024`. */
  maxEventBytes?: number;
  /** Milliseconds to wait for `meter`; past it the stream ends without the credits chunk. Default: `10_000`. */
  meterTimeout?: number;
  /** Largest non-streaming upstream answer in bytes. Default: `50 * 1024 * 1024` (50 MiB). */
  maxResponseBytes?: number;
  /**
   * Client request headers forwarded upstream (case-insensitive). Nothing else the client sends is forwarded;
   * `authorization`, `cookie` and `proxy-authorization` cannot be listed. Default: `['openai-beta']`.
   */
  forwardHeaders?: string[];
  /** A pino logger; one line per request when it ends. Default: silent. */
  logger?: Logger;
  /**
   * Told when requests end and generations start and settle, for metrics (`prometheusObserver()` from
   * `infery-stream/prometheus` is one). Never called per chunk; a member that throws is logged and ignored.
   * Default: none.
   */
  observer?: Observer;
  /**
   * Counts tokens when the provider sends no usage (and for cancelled streams). Default: gpt-tokenizer's
   * `o200k_base` encoding.
   */
  countTokens?: (text: string, model: string) => number;
}

/** Per-account limits; `0` disables one. */
export interface LimitOptions<Account> {
  /** Generations one account may have open at once; more get 429. Default: `0` (no limit). */
  maxConcurrent?: number;
  /** Requests (every route) one account may start per minute, as a token bucket; more get 429. Default: `0` (no limit). */
  requestsPerMinute?: number;
  /** Where the counters live. Default: an in-memory store (one process). */
  store?: LimitStore;
  /**
   * The account's key in the store. Default: the account itself when it is a string, else its `id` property
   * (string or number); any other account needs this option.
   */
  key?: (account: Account) => string;
}

/** Limits after validation. */
export interface ResolvedLimits<Account> {
  maxConcurrent: number;
  requestsPerMinute: number;
  store: LimitStore;
  key: (account: Account) => string;
}

/** Options after validation and defaults: nothing optional. */
export interface ResolvedOptions<Account> {
  /** The first upstream: where pass-through routes go. */
  upstream: { baseURL: URL; apiKey: string | undefined; headers: Record<string, string> };
  /** Every upstream, in order (one named `default` for the single `upstream` option). */
  upstreams: ResolvedUpstream[];
  /** True when the host gave `upstreams`: the gateway answers `GET /models` itself. */
  severalUpstreams: boolean;
  fallback: Required<FallbackOptions>;
  authenticate: Options<Account>['authenticate'];
  preflight: NonNullable<Options<Account>['preflight']> | undefined;
  reserve: NonNullable<Options<Account>['reserve']> | undefined;
  meter: NonNullable<Options<Account>['meter']> | undefined;
  defaultMaxTokens: number;
  limits: ResolvedLimits<Account> | undefined;
  basePath: string;
  passThrough: Route[];
  allowBackground: boolean;
  /**
   * Where the account's stored response is (`{ upstream }`: its upstream's name, undefined for the first), or
   * undefined when it is not the account's: the host's `ownsResponse`, or the in-memory record.
   */
  findResponse: (account: Account, responseId: string) => Promise<StoredResponse | undefined>;
  /** The in-memory record of response owners (recorded when a Responses generation settles). */
  responseOwners: ResponseOwners;
  /** The account's key for the in-memory records (`limits.key`, else the account or its `id`); undefined if none. */
  accountKey: (account: Account) => string | undefined;
  usageGraceTimeout: number;
  bodyLimit: number;
  upstreamTimeout: number;
  idleTimeout: number;
  heartbeatInterval: number;
  maxDuration: number;
  writeTimeout: number;
  maxEventBytes: number;
  meterTimeout: number;
  maxResponseBytes: number;
  forwardHeaders: ReadonlySet<string>;
  logger: Logger | undefined;
  /** The host's observer, each member contained (see `containedObserver`). */
  observer: ContainedObserver | undefined;
  /** The host's `countTokens` or the default, contained (see `containedCounter`). */
  countTokens: (text: string, model: string) => number;
}

/** The part of the options the upstream client and header policy read. */
export type UpstreamSettings = Pick<ResolvedOptions<unknown>, 'upstream' | 'forwardHeaders' | 'upstreamTimeout'>;

const KNOWN_KEYS = new Set([
  'upstream', 'upstreams', 'fallback', 'authenticate', 'preflight', 'reserve', 'meter', 'defaultMaxTokens', 'limits', 'basePath', 'passThrough', 'allowBackground', 'ownsResponse',
  'usageGraceTimeout', 'bodyLimit', 'upstreamTimeout', 'idleTimeout', 'heartbeatInterval', 'maxDuration', 'writeTimeout',
  'maxEventBytes', 'meterTimeout',
  'maxResponseBytes', 'forwardHeaders', 'logger', 'observer', 'countTokens',
]);
const LIMIT_KEYS = new Set(['maxConcurrent', 'requestsPerMinute', 'store', 'key']);
const FORBIDDEN_FORWARD = new Set(['authorization', 'cookie', 'proxy-authorization', 'host', 'content-length']);

/** Thrown at creation when an option is wrong; the message says how to fix it. */
export class InferyOptionsError extends TypeError {
  constructor(message: string) {
    super(`infery-stream: ${message}`);
    this.name = new.target.name;
  }
}

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
 * {@link InferyOptionsError} that suggests the fix.
 */
export function parseOptions<Account>(input: unknown): ResolvedOptions<Account> {
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

  const passThrough = parsePassThrough(opts.passThrough, basePath.replace(/\/$/, ''));
  const limits = parseLimits<Account>(opts.limits);

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
    countTokens: containedCounter(fn<(text: string, model: string) => number>('countTokens', opts.countTokens, false), (err) =>
      logger?.warn({ err: err instanceof Error ? err.message : String(err) }, 'infery-stream countTokens failed; counting a token per 3 bytes instead'),
    ),
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

/** An object with at least one of the observer's members, each present one a function. */
function parseObserver(value: unknown): Observer | undefined {
  if (value === undefined) return undefined;
  const members = OBSERVER_MEMBERS.join(', ');
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(`\`observer\` must be an object with ${members}, got ${Array.isArray(value) ? 'an array' : typeof value}.`);
  const observer = value as Record<string, unknown>;
  for (const name of OBSERVER_MEMBERS) {
    if (observer[name] !== undefined && typeof observer[name] !== 'function') fail(`\`observer.${name}\` must be a function, got ${typeof observer[name]}.`);
  }
  if (OBSERVER_MEMBERS.every((name) => observer[name] === undefined)) {
    const hint = 'observer' in observer ? ' (pass `prometheusObserver().observer`, not what prometheusObserver() returned)' : '';
    fail(`\`observer\` has none of ${members}${hint}.`);
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

function parsePassThrough(value: unknown, basePath: string): Route[] {
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
    if (SURFACES.some((surface) => surface.path === route.pattern)) fail(`\`passThrough\`: "${spec}" is served (and metered) by the gateway itself.`);
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
  return {
    maxConcurrent: whole('maxConcurrent', limits.maxConcurrent),
    requestsPerMinute: whole('requestsPerMinute', limits.requestsPerMinute),
    store: store ?? new MemoryLimitStore(),
    key: fn<(account: Account) => string>('limits.key', limits.key, false) ?? defaultAccountKey,
  };
}
