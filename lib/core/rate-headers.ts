import type { ServerResponse } from 'node:http';
import type { RateState } from '../ledgers/stores/limit-store';

/**
 * A duration as OpenAI writes it in `x-ratelimit-reset-*` (Go's style: `250ms`, `1.5s`, `6m0s`, `1h2m3s`), which
 * the SDKs' retry logic and users read.
 */
export function resetDuration(ms: number): string {
  const whole = Math.max(0, Math.ceil(ms));
  if (whole < 1000) return `${whole}ms`;
  const hours = Math.floor(whole / 3_600_000);
  const minutes = Math.floor((whole % 3_600_000) / 60_000);
  const seconds = String(Number(((whole % 60_000) / 1000).toFixed(3)));
  if (hours > 0) return `${hours}h${minutes}m${seconds}s`;
  return minutes > 0 ? `${minutes}m${seconds}s` : `${seconds}s`;
}

/** The `x-ratelimit-*` headers of one limit: its limit, what remains, and when it is whole again. */
export function rateHeaders(kind: 'requests' | 'tokens', limit: number, state: RateState): Record<string, string> {
  return {
    [`x-ratelimit-limit-${kind}`]: String(limit),
    [`x-ratelimit-remaining-${kind}`]: String(Math.min(limit, state.remaining)),
    [`x-ratelimit-reset-${kind}`]: resetDuration(state.resetMs),
  };
}

/** A store's `hit` answer: the number of an older store (0 allowed, else the wait), or its full state. */
export function rateStateOf(answer: number | RateState): RateState | undefined {
  return typeof answer === 'number' ? undefined : answer;
}

export function setHeaders(res: ServerResponse | undefined, headers: Record<string, string>): void {
  if (!res || res.headersSent) return;
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
}
