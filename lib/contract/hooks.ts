import type { IncomingMessage } from 'node:http';
import type { InferyError } from '../base/errors';

/**
 * The hook contract: the types every layer shares — what the host's hooks (`authenticate`, `preflight`,
 * `reserve`, `meter`, `ownsResponse`, `logger`) see and return, and the words for how a generation ends and what
 * it used. Types only, at the bottom of `lib/`: it imports nothing but the error class's type, so any layer may
 * import it and none of it pulls code in.
 */

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

/** Which API a generation went through: what `MeterEvent.endpoint` says. */
export type Endpoint = 'chat.completions' | 'completions' | 'responses' | 'embeddings' | 'messages';

/**
 * How a request that passed `reserve` ended: `completed` (the provider finished; usage is the provider's when it
 * sent a valid one), `cancelled` (the client left mid-generation), `failed` (the upstream failed after streaming
 * began, or the gateway shut down mid-stream), `unserved` (nothing was generated: the upstream refused or
 * failed before the first byte, or the gateway shut down first; usage is zero: release the hold, charge nothing).
 */
export type Outcome = 'completed' | 'cancelled' | 'failed' | 'unserved';

/** What `meter` receives, exactly once for every request that passed `reserve`. */
export interface MeterEvent<Account = unknown, Req extends IncomingMessage = IncomingMessage> {
  /** What `authenticate` returned for the caller. */
  account: Account;
  /** The gateway-unique id of this generation, also sent as the `X-Generation-Id` response header. */
  generationId: string;
  /** The provider's id: the `id` the client saw in its chunks or body (`undefined` if the provider sent none). */
  providerId: string | undefined;
  /** The route below the base path, e.g. `/chat/completions`. */
  path: string;
  /** Which API it went through: `chat.completions`, `completions`, `responses` or `embeddings`. */
  endpoint: Endpoint;
  /** The upstream that served it: its name in `upstreams` (`default` with the single `upstream` option). */
  upstream: string | undefined;
  /** The upstreams tried first that failed before the first byte (fallback), and why. Empty when none. */
  failedUpstreams: Array<{ upstream: string; code: string; status: number }>;
  /** The model the client asked for. */
  model: string;
  /** The model the provider said it used (its `model` field, e.g. a dated version); `model` when it said none. */
  providerModel: string;
  /** How the request ended; see {@link Outcome}. */
  outcome: Outcome;
  /**
   * The provider's usage when it sent a valid one, otherwise the gateway's tokenizer count (`usage.estimated`),
   * never above the reserved worst case. All zero for `unserved`. One shape for every endpoint:
   * `prompt_tokens` (the Responses API's `input_tokens`), `completion_tokens` (`output_tokens`; 0 for embeddings),
   * `total_tokens`, and the provider's `prompt_tokens_details` / `completion_tokens_details` (cached and reasoning
   * tokens) when it sent them.
   */
  usage: Usage;
  /** The provider's usage as it sent it (counts only, in its own shape), or `undefined` if it sent none. */
  providerUsage: Record<string, unknown> | undefined;
  /** What `reserve` returned as the hold (`undefined` without a `reserve` hook). */
  reservation: unknown;
  /** The worst case that was reserved for, in tokens. */
  worstCase: WorstCase;
  /** True when the client went away before the generation finished. */
  cancelled: boolean;
  /** Why it failed: the upstream's error mid-stream or before the first byte, or `shutting_down`. */
  error: InferyError | undefined;
  /** Whether the client asked for a stream. */
  stream: boolean;
  /** The last `finish_reason` the provider sent, `null` if none. */
  finishReason: string | null;
  /** Milliseconds from the request to the first content token (null if none), and to the end. */
  timings: { ttftMs: number | null; durationMs: number };
  /**
   * The per-account limits `reserve` took with the hold (`ReserveContext.limits`, `taken` set): hand them to
   * the store's `settle`, which gives the concurrency slot back in the same step. `undefined` otherwise (the
   * gateway gives the slot back itself).
   */
  limits?: ReserveLimits;
  /** The budget window the generation was admitted in (`ReserveContext.budget`): pass it to the store's `settle`. */
  budget?: BudgetWindow;
  /** The client's request (read headers from it; its body has been consumed). */
  req: Req;
}

/**
 * The per-account limits of one generation, for a credit store that takes them in the same step as the hold
 * (`RedisCreditStore` with a `RedisLimitStore` created with `takenByReserve: true`: one Redis round trip for the
 * key, the rate, the slot and the hold, one for the settlement and the slot's release). Pass the same object to
 * every `reserve` call of the request; the store records on it what it took.
 */
export interface ReserveLimits {
  /** The limits' key of the account (`limits.key(account)`). */
  readonly key: string;
  /** Requests per minute (`0`: none). */
  readonly requestsPerMinute: number;
  /** Concurrent generations (`0`: none). */
  readonly maxConcurrent: number;
  /** The id of the concurrency slot: the generation id. */
  readonly slot: string;
  /** Set by the store once it counted this request against `requestsPerMinute`: a retried reserve counts it no more. */
  rateCounted: boolean;
  /** Set by the store when its hold took the rate and the slot: the settlement then releases the slot. */
  taken: boolean;
  /**
   * Set by a store that counted the rate: what the per-minute bucket has left (whole requests) and the ms until it
   * is full, for the `x-ratelimit-*-requests` headers.
   */
  rateState?: { waitMs: number; remaining: number; resetMs: number };
}

/** Token usage as OpenAI reports it; `estimated: true` when the gateway counted the tokens itself. */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** Present (true) only when the provider sent no usage and the gateway counted with a tokenizer. */
  estimated?: true;
  /**
   * Every priced class of this usage, one shape for every API (see {@link UsageClasses}). Always present on
   * `MeterEvent.usage`; never sent to the client (its answer keeps the provider's own usage shape).
   */
  classes?: UsageClasses;
  [key: string]: unknown;
}

/**
 * A generation's usage split into the classes providers bill at different prices — one shape for chat, legacy
 * completions, the Responses API, embeddings and the Messages API. The names are those of the
 * `@pydantic/genai-prices` catalog, so a class prices without renaming. Input classes are parts of
 * `input_tokens`, output classes parts of `output_tokens` (reasoning is output). A class the provider did not
 * report is 0; one it reported as something that cannot be right (not a whole number ≥ 0, or more than its
 * whole) is priced as the dearer class: a cache discount is dropped, a premium class is kept at most its whole.
 */
export interface UsageClasses {
  /**
   * Every input token: uncached, cache reads and cache writes (`prompt_tokens`; the Responses API's
   * `input_tokens`; the Messages API's `input_tokens + cache_creation_input_tokens + cache_read_input_tokens`).
   */
  input_tokens: number;
  /** Input tokens neither read from nor written to the provider's prompt cache: `input_tokens` minus both. */
  uncached_input_tokens: number;
  /**
   * Input tokens read from the prompt cache, billed at a discount: OpenAI's `prompt_tokens_details.cached_tokens`
   * (Responses: `input_tokens_details.cached_tokens`), Anthropic's `cache_read_input_tokens`.
   */
  cache_read_tokens: number;
  /**
   * Input tokens written to the prompt cache, billed at a premium: Anthropic's `cache_creation_input_tokens`
   * (OpenAI-compatible providers: `prompt_tokens_details.cache_write_tokens`).
   */
  cache_write_tokens: number;
  /** Of the cache writes, those with a 5-minute TTL (Anthropic's `cache_creation.ephemeral_5m_input_tokens`), when the provider says. */
  cache_write_5m_tokens?: number;
  /**
   * Of the cache writes, those with a 1-hour TTL (Anthropic's `cache_creation.ephemeral_1h_input_tokens`), when
   * the provider says. Writes the provider's split leaves unaccounted for count here (the dearer TTL).
   */
  cache_write_1h_tokens?: number;
  /** Input audio tokens: `prompt_tokens_details.audio_tokens`. */
  input_audio_tokens?: number;
  /** Input image tokens: `prompt_tokens_details.image_tokens` (Responses: `input_tokens_details.image_tokens`). */
  input_image_tokens?: number;
  /** Every output token, reasoning included: `completion_tokens` (Responses and Messages: `output_tokens`). */
  output_tokens: number;
  /**
   * Of the output, reasoning tokens: `completion_tokens_details.reasoning_tokens` (Responses:
   * `output_tokens_details.reasoning_tokens`). The Messages API counts thinking inside `output_tokens` without a split: 0.
   */
  output_reasoning_tokens: number;
  /** Output audio tokens: `completion_tokens_details.audio_tokens`. */
  output_audio_tokens?: number;
  /** Output image tokens: `output_tokens_details.image_tokens` (image generation in the Responses API). */
  output_image_tokens?: number;
  /**
   * Billable server-side web searches: Anthropic's `server_tool_use.web_search_requests`; the Responses API's
   * `web_search_call` output items.
   */
  web_searches?: number;
  /** Anthropic's `server_tool_use.web_fetch_requests` (billed as the tokens they read, no fee of their own). */
  web_fetches?: number;
  /** Server-side code executions the provider reports (Anthropic's `server_tool_use.code_execution_requests`). */
  code_executions?: number;
}

/** The most a request can cost, in tokens. */
export interface WorstCase {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /**
   * The same worst case by class: every input token uncached — or written to the cache at the longest TTL the
   * request asks for, when it may write the cache (a Messages API request with `cache_control`) — every output
   * token, and the most server-side web searches the request allows (its tools' `max_uses`).
   */
  classes: UsageClasses;
}

/** What `reserve` sees: the account, the request and its worst case. */
export interface ReserveContext<Account, Req extends IncomingMessage = IncomingMessage> {
  account: Account;
  /** The gateway-unique id of the generation this reservation is for (also `MeterEvent.generationId`). */
  generationId: string;
  /** The route below the base path, e.g. `/chat/completions`. */
  path: string;
  /** Which API: `chat.completions`, `completions`, `responses` or `embeddings`. */
  endpoint: Endpoint;
  /** The model the client asked for. */
  model: string;
  /** The parsed request body (read only). */
  body: Readonly<Record<string, unknown>>;
  /**
   * The worst case: `prompt_tokens` is the prompt's token count plus 10% and 16, never above a strict bound of a
   * token per UTF-8 byte (media parts at a fixed figure); `completion_tokens` is the cap times `n`.
   */
  worstCase: WorstCase;
  /** The completion cap per choice that will be sent upstream. */
  maxCompletionTokens: number;
  /**
   * Where the cap came from: the client's `max_completion_tokens` / `max_tokens` / `max_output_tokens`, or the
   * default (`defaultMaxTokens`; 16 for legacy completions, as OpenAI; 0 for embeddings, which generate nothing).
   */
  capSource: 'max_completion_tokens' | 'max_tokens' | 'max_output_tokens' | 'default';
  /** Number of choices asked for (`n`). */
  choices: number;
  /**
   * Present when `limits.store` is `takenByReserve`: the rate and concurrency limits, for the credit store to take
   * with the hold (`store.reserve(account, id, credits, limits)`); a store refusing one of them throws a
   * `LimitRefusedError`, which becomes the gateway's 429. When the store did not take them (`taken` still false
   * after a hold), the gateway takes them itself, after the hold, and logs that once.
   */
  limits?: ReserveLimits;
  /**
   * The account's budget window when `limits.budget` gives it one: pass it to the store's `reserve` (a
   * `MemoryCreditStore` or `RedisCreditStore` checks the hold against it and throws `BudgetExhaustedError`, the
   * gateway's 402 `budget_exceeded` with `Retry-After` to the reset).
   */
  budget?: BudgetWindow;
  /** The client's request, as your framework hands it over. */
  req: Req;
}

/**
 * What `reserve` returns: `false` refuses (402); `true`/`undefined` admits without a hold; any other value is
 * the hold, handed back in `MeterEvent.reservation`; `{ hold, maxCompletionTokens }` also lowers the cap sent
 * upstream (to a whole number between 1 and the cap in the context).
 */
export type ReserveResult = boolean | void | { hold: unknown; maxCompletionTokens?: number } | string | number | object;

/** Which per-account limit refused a request: the per-minute budget, the concurrency slots, the token rate, the credits (402), or the spend budget over time (402). */
export type LimitRefusal = 'rate' | 'concurrency' | 'tokens' | 'quota' | 'budget';

/**
 * An account's spend cap over time (`limits.budget`): at most `credits` per window — a UTC calendar `day`,
 * `week` (from Monday 00:00) or `month`, fixed windows of `hours` hours counted from the Unix epoch, or a rolling
 * window of the last `rollingHours` hours — with a soft limit that notifies first.
 */
export interface BudgetSpec {
  /** The most the account may spend in one window, in credits (the unit `reserve` holds and `meter` charges). */
  credits: number;
  window: 'day' | 'week' | 'month' | { hours: number } | { rollingHours: number };
  /** The share of `credits` past which a settlement says the soft limit is crossed (once per window). Default 0.8. */
  softLimit?: number;
}

/**
 * The window of a budget a generation was admitted in, as the gateway hands it to `reserve`
 * (`ReserveContext.budget`) and `meter` (`MeterEvent.budget`): pass it to the credit store's `reserve` and
 * `settle`, which check the hold against it (the window's spend plus every hold in flight plus this one, at most
 * `limit`) and add the charge to its spend, in the same step.
 */
export interface BudgetWindow {
  /** The cap in credits. */
  limit: number;
  /** The soft limit in credits (`limit × softLimit`). */
  soft: number;
  /** The window's id, e.g. `day:2026-12-04`, `week:2026-11-30`, `month:2026-12`, `6h:82006`. */
  id: string;
  /**
   * When the window began and when it resets (ms since the epoch, UTC). A rolling window has no reset of its own:
   * `startsAt` is `rollingHours` ago, `resetsAt` now; the store says when spend ages out.
   */
  startsAt: number;
  resetsAt: number;
  /**
   * A rolling window: its span and the slice its spend is kept in (a sixtieth of it, at least a minute). A charge
   * counts from its slice until the span has passed over the whole slice — never less than the span.
   */
  rolling?: { spanMs: number; sliceMs: number };
}
