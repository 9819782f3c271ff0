import type { IncomingMessage } from 'node:http';
import type { BudgetSpec, Logger, MeterEvent, OwnsResponseAnswer, PreflightContext, ReserveContext, ReserveResult } from '../contract/hooks';
import type { Observer } from '../ledgers/metrics/observer';
import type { LimitStore } from '../ledgers/stores/limit-store';
import type { FallbackOptions, UpstreamConfig } from '../services/upstream/upstreams';

/**
 * The options a host passes to `inferyStream()`: types only, every field documented with its default. The parser
 * (`lib/parse-options.ts`, in the entry) validates them into the {@link ResolvedOptions} of `./resolved.ts`.
 */

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
   * Told when requests end, generations start and settle and upstream attempts are made, for metrics and
   * traces (`prometheusObserver()` from `infery-stream/prometheus`, `otelObserver()` from `infery-stream/otel`);
   * several in an array are told in order. Never called per chunk; a member that throws is logged and ignored.
   * Default: none.
   */
  observer?: Observer | Observer[];
  /**
   * A label for the account, for observers (`infery.account_tag` on traces) and the request's log line: a
   * customer id, a plan — never its key. Cut to 128 characters; a hook that throws or returns no string gives
   * none. Default: none.
   */
  accountTag?: (account: Account) => string | undefined;
  /**
   * Counts tokens when the provider sends no usage (and for cancelled streams, and a long prompt's bound); runs
   * on the event loop, in slices. Default: gpt-tokenizer's `o200k_base` encoding in a worker thread, started on
   * the first count and stopped after 5 minutes without one.
   */
  countTokens?: (text: string, model: string) => number;
}

/** Per-account limits; `0` disables one. */
export interface LimitOptions<Account> {
  /** Generations one account may have open at once; more get 429. Default: `0` (no limit). */
  maxConcurrent?: number;
  /** Requests (every route) one account may start per minute, as a token bucket; more get 429. Default: `0` (no limit). */
  requestsPerMinute?: number;
  /**
   * Tokens one account may use per minute (`0`: no limit) — one number for every account, or a function of the
   * account. Checked at admission against the worst case (the prompt's bound and the completion cap: check
   * before) and settled with the real count (charge after), as a bucket refilled continuously; past it, 429
   * `rate_limit_exceeded` (type `tokens`) with `Retry-After`. The store must implement `takeTokens` and
   * `returnTokens` (the in-memory and Redis ones do). Default: `0`.
   */
  tokensPerMinute?: number | ((account: Account) => number);
  /** Which tokens count against `tokensPerMinute`: `input`, `output` or `total` (default). */
  tokensCounted?: 'input' | 'output' | 'total';
  /**
   * The account's spend cap over time — credits per UTC day, week or month, or per fixed windows of some hours —
   * or `undefined` for none. The gateway hands the current window to `reserve` (`ReserveContext.budget`) and
   * `meter` (`MeterEvent.budget`); pass it to the credit store's `reserve` and `settle`, which count every hold in
   * flight against it. A refused hold (`BudgetExhaustedError`) is 402 `budget_exceeded` with `Retry-After`
   * (seconds to the reset) and the reset in ISO 8601 UTC in the message; nothing reaches the provider.
   */
  budget?: (account: Account) => BudgetSpec | undefined;
  /** Where the counters live. Default: an in-memory store (one process). */
  store?: LimitStore;
  /**
   * The account's key in the store. Default: the account itself when it is a string, else its `id` property
   * (string or number); any other account needs this option.
   */
  key?: (account: Account) => string;
}
