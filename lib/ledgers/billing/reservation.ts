import { InferyError } from '../../base/errors';
import type { ReserveContext } from '../../contract/hooks';

/**
 * The largest completion cap accepted (no model comes near it): past it, 400. Keeps every worst case (cap × `n` ×
 * prompts) an exact number a host can price.
 */
export const MAX_OUTPUT_TOKENS = 100_000_000;

/** OpenAI's largest `n`. */
const MAX_CHOICES = 128;

/** The completion cap of a chat request, as validated. */
export interface CompletionCap {
  perChoice: number;
  source: ReserveContext<unknown>['capSource'];
  choices: number;
}

export function wholeParam(body: Record<string, unknown>, name: string, max: number): number | undefined {
  const value = body[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > max) {
    throw new InferyError(400, 'invalid_value', `\`${name}\` must be a whole number from 1 to ${max}, got ${JSON.stringify(value)}.`, { param: name });
  }
  return value;
}

/** The cap per choice the provider will be held to, and the number of choices. Throws 400 on bad values. */
export function completionCap(body: Record<string, unknown>, defaultMaxTokens: number): CompletionCap {
  const choices = wholeParam(body, 'n', MAX_CHOICES) ?? 1;
  const mct = wholeParam(body, 'max_completion_tokens', MAX_OUTPUT_TOKENS);
  const mt = wholeParam(body, 'max_tokens', MAX_OUTPUT_TOKENS);
  if (mct !== undefined && (mt === undefined || mct >= mt)) return { perChoice: mct, source: 'max_completion_tokens', choices };
  if (mt !== undefined) return { perChoice: mt, source: 'max_tokens', choices };
  return { perChoice: defaultMaxTokens, source: 'default', choices };
}

/**
 * The body sent upstream with the cap the provider must enforce: the client's own field when it set one (both
 * when it set both), else `max_completion_tokens` (what OpenAI's reasoning models require).
 */
export function withCap(body: Record<string, unknown>, cap: CompletionCap, perChoice: number): Record<string, unknown> {
  if (cap.source === 'default') return { ...body, max_completion_tokens: perChoice };
  if (perChoice === cap.perChoice) return body;
  // a lowered cap lowers each field the client set, and never raises one it set lower
  const out: Record<string, unknown> = { ...body };
  for (const field of ['max_completion_tokens', 'max_tokens'] as const) {
    const value = out[field];
    if (typeof value === 'number') out[field] = Math.min(value, perChoice);
  }
  return out;
}

/** Whether `value` is the `{ hold, maxCompletionTokens }` form of a reserve result. */
export function isHoldWithCap(value: unknown): value is { hold: unknown; maxCompletionTokens?: number } {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && 'hold' in value;
}
