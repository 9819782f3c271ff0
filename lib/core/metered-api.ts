import type { Endpoint, Usage } from '../contract/hooks';
import type { PromptEstimate, TextsCount } from '../ledgers/billing/prompt-estimate';
import type { CompletionCap } from '../ledgers/billing/reservation';
import type { UsageDialect } from './usage';
import type { WorstExtras } from './usage-classes';

/**
 * How the core sees an API: the narrow contract admission, the generation and settlement need — which endpoint
 * and route it is, how its provider writes usage, what a request can cost at most and how that cap is sent
 * upstream. The core never imports an API folder or the relay; each API surface (`relay/surface.ts`) extends
 * this contract with what the relays need, and the core only ever holds it as a `MeteredApi`.
 */
export interface MeteredApi {
  /** What `MeterEvent.endpoint` says. */
  endpoint: Endpoint;
  /** The route below the base path. */
  path: string;
  /** How the provider writes usage. */
  usage: UsageDialect;
  /** The `object` of the events the gateway adds when the provider sent none. */
  object: string;
  /** The prompt's estimate and bound, in tokens. */
  estimate(body: Record<string, unknown>, count: TextsCount): Promise<PromptEstimate>;
  /** The completion cap per choice and the number of choices (400 on bad values). */
  cap(body: Record<string, unknown>, defaultMaxTokens: number): CompletionCap;
  /**
   * What the request may use beyond plain input and output tokens, for its worst case by class: cache writes (a
   * Messages API request with `cache_control`) and server-side web searches (bounded by `withCap`). Absent: none.
   */
  worstExtras?(body: Record<string, unknown>): WorstExtras;
  /** The body with the cap the provider must enforce. */
  withCap(body: Record<string, unknown>, cap: CompletionCap, perChoice: number): Record<string, unknown>;
  /**
   * For an API whose provider stores what it generates under the provider's id, so that clients read it back and
   * continue it (the Responses API): the tokens a continuation of a settled generation makes the provider read
   * again (its input plus output). The core then records the account as the stored response's owner. Absent:
   * the provider stores nothing.
   */
  storedContextTokens?(usage: Usage): number;
}
