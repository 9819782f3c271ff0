import type { Outcome, Usage, Logger, LimitRefusal } from '../../contract/hooks';

/**
 * The observer hook: what the gateway tells a metrics system, at the start and the end of requests and never
 * per chunk. `infery-stream/prometheus` implements it with prom-client, `infery-stream/otel` with OpenTelemetry;
 * any other system can too. Events carry route templates, never raw paths, and never a key, an account (only the
 * host's `accountTag` for it), or prompt and answer text unless an observer asks for it (`content`).
 */

/** One request the middleware answered, whatever its end: served, refused, cancelled or failed. */
export interface RequestEnd {
  /**
   * The route template below the base path (`/chat/completions`, `/models/{id}`), or `unmatched` for a path
   * outside the route table (400 `invalid_path`, 404 `unknown_route`). Never the raw path.
   */
  route: string;
  /** The request's HTTP method. */
  method: string;
  /** The status the request ended with: the HTTP status, or 499 when the client left first. */
  status: number;
  /** Milliseconds from the start of handling to the end. */
  durationMs: number;
  /** For generations (requests that passed `reserve`): how they ended. */
  outcome?: Outcome;
  /** The error code the client received, when the request failed. */
  errorCode?: string;
  /** Whose failure `errorCode` is: the upstream provider's, or the gateway's (refusals, shutdown…). */
  errorSource?: 'upstream' | 'gateway';
  /** Set when a per-account limit refused the request (429 or 402). */
  limit?: LimitRefusal;
  /** True when the client went away before the answer was complete. */
  cancelled: boolean;
}

/**
 * The trace-context headers of an incoming request an observer may read (to continue the client's trace):
 * W3C Trace Context and Baggage, B3, Jaeger, AWS X-Ray and Google Cloud's. Nothing else, so no key or cookie
 * ever reaches an observer.
 */
export const TRACE_HEADERS: ReadonlySet<string> = new Set([
  'traceparent',
  'tracestate',
  'baggage',
  'b3',
  'x-b3-traceid',
  'x-b3-spanid',
  'x-b3-parentspanid',
  'x-b3-sampled',
  'x-b3-flags',
  'uber-trace-id',
  'x-amzn-trace-id',
  'x-cloud-trace-context',
]);

/** A generation admitted (it passed `reserve`): it will be settled exactly once. */
export interface GenerationStart {
  route: string;
  generationId: string;
  /** The model the client asked for (a client-chosen string: bound it before using it as a label). */
  model: string;
  stream: boolean;
  /** The completion cap per choice sent upstream (the client's, else `defaultMaxTokens`); absent for embeddings. */
  maxTokens?: number;
  /** Choices asked for (`n`), 1 when the API has none. */
  choices: number;
  /** The host's `accountTag` for the account (a customer id, a plan): never the key. Absent without the option. */
  accountTag?: string;
  /**
   * A trace-context header of the incoming request (lower-case name, one of {@link TRACE_HEADERS}), repeated
   * values joined; `undefined` for any other header. For continuing the client's trace.
   */
  traceHeader(name: string): string | undefined;
}

/** A generation settled: what `meter` was told, and what it returned. */
export interface GenerationSettled extends GenerationStart {
  /** The model the provider said it used (its `model` field), `model` when it said none. */
  providerModel: string;
  outcome: Outcome;
  /** The usage that was billed (all zero for `unserved`). */
  usage: Usage;
  /** What `meter` returned, `null` when it failed. */
  credits: number | null;
  /** Milliseconds to the first content token (null if none), and to the end. */
  timings: { ttftMs: number | null; durationMs: number };
  /** The error code the generation ended with, if any. */
  errorCode?: string;
  /** Whose failure `errorCode` is. */
  errorSource?: 'upstream' | 'gateway';
  /** The upstream that served it (its name), if one did. */
  upstream?: string;
  /** The upstreams tried first that failed before the first byte (fallback), and why. */
  failedUpstreams?: ReadonlyArray<{ upstream: string; code: string; status: number }>;
  /** The provider's id for the answer (`chatcmpl-…`, `resp_…`, `msg_…`), first 256 characters, if it sent one. */
  providerId?: string;
  /** The last `finish_reason` (or `stop_reason`, `status`) the provider sent, if any. */
  finishReason: string | null;
  /**
   * The prompt and the answer's text, only when an observer asked for them ({@link Observer.content}): the body
   * sent upstream (the client's messages, the gateway's cap applied) and the visible text of each choice, at most
   * `maxChars` characters of it in all.
   */
  content?: { request: Readonly<Record<string, unknown>>; output: string[]; truncated: boolean };
}

/** An observer's request for prompt and answer text ({@link Observer.content}). */
export interface ContentRequest {
  /** Most characters of answer text kept per generation (1 to 1,000,000). */
  maxChars: number;
}

/** One request the gateway is about to send to an upstream for a generation (an attempt: fallback makes several). */
export interface UpstreamAttempt {
  generationId: string;
  /** 1 for the first upstream tried, 2 for the first fallback, … */
  attempt: number;
  /** The upstream's name (the host's, from `upstreams`; `default` for the single `upstream`). */
  upstream: string;
  /** The dialect it speaks. */
  api: 'openai' | 'anthropic';
  /** The model name sent to it. */
  providerModel: string;
  method: 'POST';
  /** Where the request goes: no query string, no credentials. */
  url: { scheme: 'http' | 'https'; host: string; port: number; path: string };
}

/** How an {@link UpstreamAttempt} ended: accepted (a 2xx answer, whose body is then relayed) or failed. */
export interface UpstreamAttemptEnd {
  accepted: boolean;
  /** The HTTP status the upstream answered; absent when none came (unreachable, timed out, aborted). */
  status?: number;
  /** Why it failed: the provider's error code, or the gateway's (`upstream_unreachable`, `upstream_timeout`, `client_closed_request`). */
  code?: string;
}

/** What an observer may do with one upstream attempt (see {@link Observer.upstreamAttempt}). */
export interface UpstreamAttemptHooks {
  /**
   * Headers added to the upstream request (trace context: `traceparent`, `tracestate`, …). Names the gateway
   * sets itself (the key's, `content-*`, `accept*`, `host`, `user-agent`, hop-by-hop) and invalid values are dropped.
   */
  headers?: Record<string, string>;
  /** Runs the request: `send` must be called once, synchronously (e.g. inside `context.with(…)`). */
  run?<T>(send: () => T): T;
  /** Called once, when the attempt is accepted or fails. */
  ended?(end: UpstreamAttemptEnd): void;
}

/**
 * The `observer` option: any subset of these members. Each is called synchronously, off the per-chunk path; a
 * member that throws (or returns a promise that rejects) is logged and never affects the request.
 */
export interface Observer {
  /** Called once for every request the middleware answers: generations, pass-through, and every refusal. */
  requestEnded?(end: RequestEnd): void;
  /**
   * Called when a generation is admitted, before the upstream call, in the request's async context (a host's
   * active span, from its HTTP instrumentation, is current).
   */
  generationStarted?(start: GenerationStart): void;
  /** Called once per admitted generation, after `meter`, before its `requestEnded`. */
  generationSettled?(settled: GenerationSettled): void;
  /**
   * Called before each upstream request of a generation (after its `generationStarted`), for tracing: what it
   * returns adds headers to that request, runs it in a context, and hears how it ended.
   */
  upstreamAttempt?(attempt: UpstreamAttempt): UpstreamAttemptHooks | void;
  /**
   * Set to receive the prompt and the answer's text in `GenerationSettled.content` (opt-in: it is the
   * customer's data). Every observer then sees it; none do otherwise, and the gateway keeps no text.
   */
  content?: ContentRequest;
}

/** The members an observer may have. */
export const OBSERVER_MEMBERS = ['requestEnded', 'generationStarted', 'generationSettled', 'upstreamAttempt'] as const;
/** Most answer characters an observer may ask to keep per generation. */
export const MAX_CONTENT_CHARS = 1_000_000;

/** One upstream attempt's hooks from every observer that wants it, each contained. */
export interface ContainedAttempt {
  /** The observers' headers, checked: never one the gateway sets itself. */
  headers: Record<string, string>;
  /** Runs `send` inside every observer's `run` (nested, the first observer outermost); `send` runs exactly once. */
  run<T>(send: () => T): T;
  /** Tells every observer how the attempt ended; only the first call counts. */
  ended(end: UpstreamAttemptEnd): void;
}

/** An observer with every member present, each contained. */
export interface ContainedObserver {
  requestEnded(end: RequestEnd): void;
  generationStarted(start: GenerationStart): void;
  generationSettled(settled: GenerationSettled): void;
  /** The attempt's hooks, or `undefined` when no observer has `upstreamAttempt` (nothing to do per attempt). */
  upstreamAttempt: ((attempt: UpstreamAttempt) => ContainedAttempt | undefined) | undefined;
  /** The largest `content` request of the observers, or `undefined` when none asked for text. */
  content: ContentRequest | undefined;
}

/** Headers an observer may not set on an upstream request: the gateway's own, the keys', and hop-by-hop ones. */
const RESERVED_HEADERS = new Set([
  'authorization', 'proxy-authorization', 'x-api-key', 'api-key', 'cookie', 'host', 'content-type', 'content-length',
  'content-encoding', 'transfer-encoding', 'accept', 'accept-encoding', 'connection', 'keep-alive', 'upgrade', 'te',
  'trailer', 'expect', 'user-agent', 'anthropic-version', 'anthropic-beta',
]);
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9a-z-]{1,64}$/;
const HEADER_VALUE = /^[\t\x20-\x7e]{0,4096}$/;
/** Most headers one attempt takes from observers. */
const MAX_OBSERVER_HEADERS = 16;

/** Reports a contained member's failure: logged the first time, then every 1000th. */
function failureReporter(name: string, logger: Logger | undefined): (err: unknown) => void {
  let failures = 0;
  return (err) => {
    failures++;
    if (failures !== 1 && failures % 1000 !== 0) return;
    const cause = err instanceof Error ? { name: err.name, message: err.message } : { value: String(err) };
    logger?.error({ member: name, failures, err: cause }, 'infery-stream observer failed; the request is unaffected');
  };
}

/**
 * Wraps each member of each observer so that a throw or a rejected promise is logged (the first time, then every
 * 1000th) and never reaches the request. Members the hosts left out become no-ops; several observers are told in
 * order.
 */
export function containedObserver(observers: Observer | readonly Observer[], logger: Logger | undefined): ContainedObserver {
  const list: readonly Observer[] = Array.isArray(observers) ? observers : [observers as Observer];
  const contain = <E>(name: 'requestEnded' | 'generationStarted' | 'generationSettled'): ((event: E) => void) => {
    const members = list.flatMap((observer) => {
      const member = observer[name] as ((event: E) => unknown) | undefined;
      return member ? [{ observer, member, report: failureReporter(name, logger) }] : [];
    });
    if (members.length === 0) return () => {};
    return (event) => {
      for (const { observer, member, report } of members) {
        try {
          const result = member.call(observer, event);
          if (result !== null && typeof result === 'object' && typeof (result as PromiseLike<unknown>).then === 'function') {
            (result as PromiseLike<unknown>).then(undefined, report);
          }
        } catch (err) {
          report(err);
        }
      }
    };
  };
  const attempts = list.flatMap((observer) => (observer.upstreamAttempt ? [{ observer, report: failureReporter('upstreamAttempt', logger) }] : []));
  return {
    requestEnded: contain<RequestEnd>('requestEnded'),
    generationStarted: contain<GenerationStart>('generationStarted'),
    generationSettled: contain<GenerationSettled>('generationSettled'),
    upstreamAttempt: attempts.length === 0 ? undefined : (attempt) => containedAttempt(attempts, attempt),
    content: list.reduce<ContentRequest | undefined>((max, o) => (o.content && (!max || o.content.maxChars > max.maxChars) ? { maxChars: o.content.maxChars } : max), undefined),
  };
}

/** Every observer's hooks for one attempt, each contained (see {@link ContainedAttempt}). */
function containedAttempt(observers: ReadonlyArray<{ observer: Observer; report: (err: unknown) => void }>, attempt: UpstreamAttempt): ContainedAttempt | undefined {
  const taken: Array<{ hooks: UpstreamAttemptHooks; report: (err: unknown) => void }> = [];
  const headers: Record<string, string> = {};
  let count = 0;
  for (const { observer, report } of observers) {
    let hooks: UpstreamAttemptHooks | void;
    try {
      hooks = observer.upstreamAttempt!(attempt);
    } catch (err) {
      report(err);
      continue;
    }
    if (typeof hooks !== 'object' || hooks === null) continue;
    taken.push({ hooks, report });
    try {
      const given = hooks.headers;
      if (typeof given !== 'object' || given === null) continue;
      for (const [raw, value] of Object.entries(given)) {
        const name = raw.toLowerCase();
        if (count >= MAX_OBSERVER_HEADERS || typeof value !== 'string' || !HEADER_NAME.test(name) || RESERVED_HEADERS.has(name) || !HEADER_VALUE.test(value)) continue;
        headers[name] = value;
        count++;
      }
    } catch (err) {
      report(err); // a getter that throws
    }
  }
  if (taken.length === 0) return undefined;
  let ended = false;
  return {
    headers,
    run: <T>(send: () => T): T => taken.reduceRight<() => T>((inner, { hooks, report }) => () => runContained(hooks, inner, report), send)(),
    ended: (end) => {
      if (ended) return;
      ended = true;
      for (const { hooks, report } of taken) {
        try {
          hooks.ended?.(end);
        } catch (err) {
          report(err);
        }
      }
    },
  };
}

/**
 * `hooks.run(send)`, where `send` runs exactly once whatever `run` does: a `run` that throws before calling it,
 * or never calls it, is reported and `send` is called directly; an error `send` throws reaches the caller even if
 * `run` swallowed it; a second call is ignored.
 */
function runContained<T>(hooks: UpstreamAttemptHooks, send: () => T, report: (err: unknown) => void): T {
  if (typeof hooks.run !== 'function') return send();
  let called = false;
  let outcome: { value: T } | { error: unknown } | undefined;
  const once = (): T => {
    if (called) throw new Error('infery-stream: an observer called send twice');
    called = true;
    try {
      outcome = { value: send() };
      return outcome.value;
    } catch (error) {
      outcome = { error };
      throw error;
    }
  };
  try {
    hooks.run(once);
  } catch (err) {
    if (!called) report(err);
  }
  if (!called) {
    report(new Error('upstreamAttempt run() did not call send'));
    return send();
  }
  if (outcome && 'error' in outcome) throw outcome.error;
  return (outcome as { value: T }).value;
}
