import type { IncomingMessage } from 'node:http';
import { InferyError } from '../../base/errors';
import type { Endpoint } from '../../relay/surface';

/**
 * The largest completion cap accepted (no model comes near it): past it, 400. Keeps every worst case (cap × `n` ×
 * prompts) an exact number a host can price.
 */
export const MAX_OUTPUT_TOKENS = 100_000_000;

/** OpenAI's largest `n`. */
const MAX_CHOICES = 128;

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
  /** The client's request, as your framework hands it over. */
  req: Req;
}

/**
 * What `reserve` returns: `false` refuses (402); `true`/`undefined` admits without a hold; any other value is
 * the hold, handed back in `MeterEvent.reservation`; `{ hold, maxCompletionTokens }` also lowers the cap sent
 * upstream (to a whole number between 1 and the cap in the context).
 */
export type ReserveResult = boolean | void | { hold: unknown; maxCompletionTokens?: number } | string | number | object;

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
