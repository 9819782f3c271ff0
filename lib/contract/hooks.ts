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
}

/** Token usage as OpenAI reports it; `estimated: true` when the gateway counted the tokens itself. */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** Present (true) only when the provider sent no usage and the gateway counted with a tokenizer. */
  estimated?: true;
  [key: string]: unknown;
}

/** The most a request can cost, in tokens. */
export interface WorstCase {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
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
  /** The client's request, as your framework hands it over. */
  req: Req;
}

/**
 * What `reserve` returns: `false` refuses (402); `true`/`undefined` admits without a hold; any other value is
 * the hold, handed back in `MeterEvent.reservation`; `{ hold, maxCompletionTokens }` also lowers the cap sent
 * upstream (to a whole number between 1 and the cap in the context).
 */
export type ReserveResult = boolean | void | { hold: unknown; maxCompletionTokens?: number } | string | number | object;

/** Which per-account limit refused a request: the per-minute budget, the concurrency slots, or the credits (402). */
export type LimitRefusal = 'rate' | 'concurrency' | 'quota';
