import type { MeterEvent } from '../contract/hooks';

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
