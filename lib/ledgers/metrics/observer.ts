import type { Outcome, Usage, Logger, LimitRefusal } from '../../contract/hooks';

/**
 * The observer hook: what the gateway tells a metrics system, at the start and the end of requests and never
 * per chunk. `infery-stream/prometheus` implements it with prom-client; any other system can too. Events carry
 * route templates, never raw paths, and never a key, an account or prompt text.
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

/** A generation admitted (it passed `reserve`): it will be settled exactly once. */
export interface GenerationStart {
  route: string;
  generationId: string;
  /** The model the client asked for (a client-chosen string: bound it before using it as a label). */
  model: string;
  stream: boolean;
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
}

/**
 * The `observer` option: any subset of these members. Each is called synchronously, off the per-chunk path; a
 * member that throws (or returns a promise that rejects) is logged and never affects the request.
 */
export interface Observer {
  /** Called once for every request the middleware answers: generations, pass-through, and every refusal. */
  requestEnded?(end: RequestEnd): void;
  /** Called when a generation is admitted, before the upstream call. */
  generationStarted?(start: GenerationStart): void;
  /** Called once per admitted generation, after `meter`, before its `requestEnded`. */
  generationSettled?(settled: GenerationSettled): void;
}

/** The members an observer may have. */
export const OBSERVER_MEMBERS = ['requestEnded', 'generationStarted', 'generationSettled'] as const;

/** An observer with every member present, each contained. */
export type ContainedObserver = Required<Observer>;

/**
 * Wraps each member so that a throw or a rejected promise is logged (the first time, then every 1000th) and
 * never reaches the request. Members the host left out become no-ops.
 */
export function containedObserver(observer: Observer, logger: Logger | undefined): ContainedObserver {
  const contain = <E>(name: (typeof OBSERVER_MEMBERS)[number]): ((event: E) => void) => {
    const member = observer[name] as ((event: E) => unknown) | undefined;
    if (!member) return () => {};
    let failures = 0;
    const report = (err: unknown): void => {
      failures++;
      if (failures !== 1 && failures % 1000 !== 0) return;
      const cause = err instanceof Error ? { name: err.name, message: err.message } : { value: String(err) };
      logger?.error({ member: name, failures, err: cause }, 'infery-stream observer failed; the request is unaffected');
    };
    return (event) => {
      try {
        const result = member.call(observer, event);
        if (result !== null && typeof result === 'object' && typeof (result as PromiseLike<unknown>).then === 'function') {
          (result as PromiseLike<unknown>).then(undefined, report);
        }
      } catch (err) {
        report(err);
      }
    };
  };
  return {
    requestEnded: contain<RequestEnd>('requestEnded'),
    generationStarted: contain<GenerationStart>('generationStarted'),
    generationSettled: contain<GenerationSettled>('generationSettled'),
  };
}
