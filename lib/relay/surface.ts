import type { EventSourceMessage } from 'eventsource-parser';
import type { InferyError } from '../base/errors';
import type { Generation } from '../core/generation';
import type { MeteredApi } from '../core/metered-api';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { InFlight } from '../core/shutdown';
import type { ResolvedOptions } from '../options/resolved';
import type { UpstreamPool } from '../services/upstream/upstream-pool';
import type { UpstreamApi } from '../services/upstream/upstreams';

/** What one upstream stream event means for the relay. */
export type StreamStep =
  /**
   * Write `text` (already framed) to the client. `keepAlive`: an event that says only that the provider is there
   * (the Messages API's `ping`): relayed, but not activity, so a provider that only pings still meets `idleTimeout`.
   */
  | { kind: 'relay'; text: string; keepAlive?: boolean }
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
  /** The API's HTTP error body, for errors before the first byte. Default: OpenAI's `{"error":{…}}`. */
  errorBody?: (err: InferyError) => unknown;
}

/**
 * One API surface the gateway meters (`/chat/completions`, `/completions`, `/responses`, `/embeddings`): its
 * contract in one place — what a request must hold, what it can cost at most, what is sent upstream, and how
 * its answers are read and completed. It extends the core's narrow {@link MeteredApi} (endpoint, path, usage
 * dialect, estimate, cap) with what the relays need; everything else (admission, the relays, settlement) is shared.
 */
export interface Surface extends MeteredApi {
  /** The dialect of the upstreams that serve it. */
  api: UpstreamApi;
  /** The path below an upstream's base URL the request goes to. Default: `path`. */
  upstreamPath?: string;
  /**
   * The same API served through upstreams of another dialect, translated both ways (the client still sees its
   * own dialect): used for a model no upstream of `api` serves.
   */
  translations?: readonly Surface[];
  /** Checks the fields the gateway relies on (400 otherwise); the rest is the provider's to judge. */
  validate(body: Record<string, unknown>, opts: SurfaceOptions): { model: string; stream: boolean };
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

/**
 * A route of an API that is not a generation (the Messages API's `count_tokens`): free, never reserved or
 * metered; its handler does its own admission (authenticate, the per-minute limit) and answers in its API's shape.
 */
export interface Tool {
  /** `POST {basePath}{path}`. */
  path: string;
  handle<Account>(opts: ResolvedOptions<Account>, pool: UpstreamPool, inflight: InFlight, req: IncomingMessage, res: ServerResponse): Promise<void>;
}

/** The options a surface's validation reads. */
export interface SurfaceOptions {
  /** Whether `background: true` Responses requests are allowed (they cannot be metered at the request). */
  allowBackground: boolean;
}
