import type { IncomingMessage } from 'node:http';
import type { InferyError } from './errors';
import type { Usage } from './usage';

/** What `meter` receives, once per generation. */
export interface MeterEvent<Account = unknown> {
  /** What `authenticate` returned for the caller. */
  account: Account;
  /** The provider's completion id, the `id` the client saw in its chunks (a gateway id when none came). */
  generationId: string;
  /** The model the client asked for. */
  model: string;
  /** The provider's usage when it sent one, otherwise the gateway's tokenizer count (`usage.estimated`). */
  usage: Usage;
  /** True when the client went away before the generation finished. */
  cancelled: boolean;
  /** Set when the upstream failed after streaming began (the tokens already produced are in `usage`). */
  error: InferyError | undefined;
  /** Whether the client asked for a stream. */
  stream: boolean;
  /** The last `finish_reason` the provider sent, `null` if none. */
  finishReason: string | null;
  /** Milliseconds from the request to the first content token (null if none), and to the end. */
  timings: { ttftMs: number | null; durationMs: number };
  /** The client's request (read headers from it; its body has been consumed). */
  req: IncomingMessage;
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
