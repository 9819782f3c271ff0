import type { EventSourceMessage } from 'eventsource-parser';
import type { PromptEstimate } from '../ledgers/billing/prompt-estimate';
import type { CompletionCap } from '../ledgers/billing/reservation';
import type { Generation } from '../core/generation';
import type { UsageDialect } from '../core/usage';
import type { InferyError } from '../base/errors';

/** Which API a generation went through: what `MeterEvent.endpoint` says. */
export type Endpoint = 'chat.completions' | 'completions' | 'responses' | 'embeddings';

/** What one upstream stream event means for the relay. */
export type StreamStep =
  /** Write `text` (already framed) to the client. */
  | { kind: 'relay'; text: string }
  /** The provider's end of stream (`[DONE]`): settle, then write the dialect's closing. */
  | { kind: 'done' }
  /**
   * The provider's last event, carrying the usage (the Responses API's `response.completed`): held back, settled
   * as `outcome`, then written by the dialect's closing with `credits_used` added.
   */
  | { kind: 'final'; outcome: 'completed' | 'failed'; error?: InferyError }
  /** The provider failed mid-stream, or sent something unreadable: end with the dialect's error event. */
  | { kind: 'fail'; error: InferyError };

/**
 * How one API's stream reads and ends: made per stream (it may keep state, e.g. the last sequence number).
 * `read` records on the generation what metering needs (ids, usage, produced text, finish) and says what to do.
 */
export interface StreamDialect {
  read(gen: Generation<unknown>, event: EventSourceMessage, data: string): StreamStep;
  /** What ends a settled stream: the gateway's usage event with `credits_used` (when metered) and the terminator. */
  closing(gen: Generation<unknown>, credits: number | undefined): string;
  /** The event that ends a stream that failed after it began (in the API's own error shape). */
  errorEvent(gen: Generation<unknown>, err: InferyError): string;
  /**
   * For a stream request whose provider ignored `stream` and answered JSON (already read by the JSON dialect):
   * the whole answer as this API's stream events, written before the closing.
   */
  fromJson(gen: Generation<unknown>, json: Record<string, unknown>): string;
}

/** How one API's JSON answer is read and answered. */
export interface JsonDialect {
  /** Records on the generation what metering needs from the provider's answer. */
  read(gen: Generation<unknown>, json: Record<string, unknown>): void;
  /** The answer the client gets: the provider's, with the billed usage where it belongs and `credits_used`. */
  answer(gen: Generation<unknown>, json: Record<string, unknown>, credits: number | undefined): Record<string, unknown>;
}

/**
 * One API surface the gateway meters (`/chat/completions`, `/completions`, `/responses`, `/embeddings`): its
 * contract in one place — what a request must hold, what it can cost at most, what is sent upstream, and how
 * its answers are read and completed. Everything else (admission, the relays, settlement) is shared.
 */
export interface Surface {
  endpoint: Endpoint;
  /** The route below the base path. */
  path: string;
  /** How the provider writes usage. */
  usage: UsageDialect;
  /** The `object` of the events the gateway adds when the provider sent none. */
  object: string;
  /** Checks the fields the gateway relies on (400 otherwise); the rest is the provider's to judge. */
  validate(body: Record<string, unknown>, opts: SurfaceOptions): { model: string; stream: boolean };
  /** The prompt's estimate and bound, in tokens. */
  estimate(body: Record<string, unknown>, count: (text: string) => number): Promise<PromptEstimate>;
  /** The completion cap per choice and the number of choices (400 on bad values). */
  cap(body: Record<string, unknown>, defaultMaxTokens: number): CompletionCap;
  /** The body with the cap the provider must enforce. */
  withCap(body: Record<string, unknown>, cap: CompletionCap, perChoice: number): Record<string, unknown>;
  /** The JSON sent upstream (a stream asks for usage where the API needs asking). */
  upstreamBody(body: Record<string, unknown>, stream: boolean): string;
  /**
   * The id of the stored response a request continues (the Responses API's `previous_response_id`), if it does:
   * the gateway then checks it is the caller's and sends it where it is stored. Absent for APIs without one.
   */
  continues?(body: Record<string, unknown>): string | undefined;
  /** Makes the dialect of one stream; absent for an API that never streams. */
  stream?: () => StreamDialect;
  json: JsonDialect;
}

/** The options a surface's validation reads. */
export interface SurfaceOptions {
  /** Whether `background: true` Responses requests are allowed (they cannot be metered at the request). */
  allowBackground: boolean;
}
