import type { IncomingMessage } from 'node:http';
import type { InferyError } from '../base/errors';
import type { WorstCase } from '../ledgers/billing/reservation';
import type { Usage } from './usage';
import type { Endpoint } from '../relay/surface';

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
  /** The client's request (read headers from it; its body has been consumed). */
  req: Req;
}

/** Outcome of one meter call: the credits, or why there are none. */
export type MeterResult = { credits: number } | { credits: undefined; failure: 'threw' | 'timeout' | 'invalid'; error?: unknown };

/**
 * Calls `meter` once, waiting at most `timeoutMs`. Never throws: a throw, a time-out or a return value that is
 * not a non-negative finite number (undefined counts as 0) becomes a failure the caller logs.
 */
export async function callMeter<Account>(
  meter: ((event: MeterEvent<Account>) => number | void | Promise<number | void>) | undefined,
  event: MeterEvent<Account>,
  timeoutMs: number,
): Promise<MeterResult> {
  if (!meter) return { credits: 0 };
  let timer: NodeJS.Timeout | undefined;
  try {
    const deadline = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(resolve, timeoutMs, 'timeout');
    });
    const value = await Promise.race([Promise.resolve().then(() => meter(event)), deadline]);
    if (value === 'timeout') return { credits: undefined, failure: 'timeout' };
    if (value === undefined || value === null) return { credits: 0 };
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
      return { credits: undefined, failure: 'invalid', error: new TypeError(`meter returned ${String(value)}`) };
    }
    return { credits: value };
  } catch (error) {
    return { credits: undefined, failure: 'threw', error };
  } finally {
    clearTimeout(timer);
  }
}
