import type { IncomingMessage } from 'node:http';
import { InferyError, toInferyError } from '../../base/errors';
import { UpstreamClient, upstreamHttpError, upstreamTimeoutError, upstreamUnreachableError, type UpstreamCall } from './upstream';
import type { UpstreamSettings } from './upstream-settings';
import type { ContainedAttempt, UpstreamAttempt } from '../../ledgers/metrics/observer';
import { parseFallback, type FallbackOptions, type FallbackTrigger, type ResolvedUpstream, type UpstreamApi } from './upstreams';

/** One attempt that did not end in an accepted answer: which upstream, and the status and code it ended with. */
export interface UpstreamFailure {
  upstream: string;
  code: string;
  status: number;
}

/** The accepted answer of a {@link PoolCall}: a 2xx response, body unread. */
export interface PoolResponse {
  res: IncomingMessage;
  /** The upstream that answered; redact its body with `upstream.apiKey`. */
  upstream: ResolvedUpstream;
  /** The model name sent to it (the alias target, or the client's name). */
  providerModel: string;
  /** The attempts that failed before this one, in order. */
  failures: UpstreamFailure[];
}

/**
 * A generation request under way across upstreams. `response` resolves with the first 2xx answer, or rejects
 * with an {@link UpstreamAttemptsError}. `abort()` destroys the current attempt (or, once an answer was accepted,
 * that answer's connection, so the provider sees the disconnect) and stops trying.
 */
export interface PoolCall {
  response: Promise<PoolResponse>;
  abort(): void;
}

/**
 * Why a {@link PoolCall} produced no answer: the error a client should see (status, code, type, message, param
 * of the last attempt, or 404 `model_not_found`, or 499 after `abort()`), with every failed attempt in order.
 */
export class UpstreamAttemptsError extends InferyError {
  readonly failures: UpstreamFailure[];
  /**
   * True when the last upstream may have run the generation although no answer came: a request that does not
   * stream, sent in full, that timed out waiting for its answer (the gateway gave up, not the provider).
   */
  mayHaveRun = false;

  constructor(error: InferyError, failures: UpstreamFailure[]) {
    super(error.status, error.code, error.message, { type: error.type, param: error.param, cause: error.cause });
    this.headers = error.headers;
    this.failures = failures;
  }
}

/** Told of each attempt before it is sent (an observer's tracing): its hooks, or undefined. */
export type AttemptObserver = (attempt: Omit<UpstreamAttempt, 'generationId'>) => ContainedAttempt | undefined;

/** The subset of a pino logger the pool uses. */
export interface PoolLogger {
  warn(obj: object, msg?: string): void;
}

/** What the pool needs besides the upstreams. */
export interface PoolSettings {
  /** Client request headers forwarded to every upstream (lower-case). */
  forwardHeaders: ReadonlySet<string>;
  /** Milliseconds one attempt waits for response headers (shortened by what is left of the deadline). */
  upstreamTimeout: number;
  /** Default: `parseFallback(undefined)`: every trigger, 3 attempts, 120 s. */
  fallback?: Required<FallbackOptions>;
  /** Told of each failed attempt: `{ upstream, code, status, attempt }`, never a key or a body. */
  logger?: PoolLogger;
}

/** 404 for a model no upstream serves. */
export function modelNotFound(model: string): InferyError {
  const shown = model.length > 200 ? `${model.slice(0, 200)}…` : model;
  return new InferyError(404, 'model_not_found', `The model \`${shown}\` is not served by this gateway.`, {
    type: 'invalid_request_error',
    param: 'model',
  });
}

/** 499 for a call aborted (client gone, shutdown) before an answer was accepted; callers ignore it. */
function abortedError(): InferyError {
  return new InferyError(499, 'client_closed_request', 'The request was aborted before an upstream answered.');
}

const noop = (): void => {};
/** Longest `code` kept in a failure (it comes from a provider's body and goes to logs and meter events). */
const MAX_CODE = 100;

/**
 * The upstreams of one gateway, each with its own keep-alive agent, and the fallback between them: a request
 * goes to the first upstream serving its model; on a failure `fallback.on` lists (connection, time-out, 429, 5xx)
 * the next one is tried, within `fallback.maxAttempts` and `fallback.deadline`. Once an answer is accepted
 * nothing is retried: its body is the caller's.
 */
export class UpstreamPool {
  private readonly clients: Map<ResolvedUpstream, UpstreamClient>;
  private readonly fallback: Required<FallbackOptions>;
  private readonly retryOn: ReadonlySet<FallbackTrigger>;

  constructor(
    private readonly upstreams: readonly ResolvedUpstream[],
    private readonly settings: PoolSettings,
  ) {
    this.fallback = settings.fallback ?? parseFallback(undefined, (message) => {
      throw new Error(message);
    });
    this.retryOn = new Set(this.fallback.on);
    this.clients = new Map(
      upstreams.map((upstream) => {
        const clientSettings: UpstreamSettings = {
          upstream: { api: upstream.api, baseURL: upstream.baseURL, apiKey: upstream.apiKey, headers: upstream.headers },
          forwardHeaders: settings.forwardHeaders,
          upstreamTimeout: settings.upstreamTimeout,
        };
        return [upstream, new UpstreamClient(clientSettings)];
      }),
    );
  }

  /** The upstreams of dialect `api` serving `model`, in list order, with the name each one knows it by. */
  candidates(model: string, only?: string, api: UpstreamApi = 'openai'): Array<{ upstream: ResolvedUpstream; providerModel: string }> {
    return this.upstreams
      .filter((upstream) => upstream.api === api && upstream.serves(model) && (only === undefined || upstream.name === only))
      .map((upstream) => ({ upstream, providerModel: upstream.providerModel(model) }));
  }

  /**
   * Why no upstream of dialect `api` takes `model`: 400 when only upstreams of the other dialect serve it (no
   * request is translated between the dialects yet), else 404 `model_not_found`.
   */
  refusal(model: string, api: UpstreamApi = 'openai'): InferyError {
    const other = this.upstreams.find((upstream) => upstream.api !== api && upstream.serves(model));
    if (!other) return modelNotFound(model);
    const shown = model.length > 200 ? `${model.slice(0, 200)}…` : model;
    const where = other.api === 'anthropic' ? 'the Messages API (`POST /v1/messages`)' : 'the OpenAI API (`POST /v1/chat/completions` and the other OpenAI routes)';
    return new InferyError(400, 'model_in_other_dialect', `The model \`${shown}\` is served here only by an upstream that speaks ${where}: send the request there (requests are not translated between the dialects).`, {
      type: 'invalid_request_error',
      param: 'model',
    });
  }

  /** The upstream named `name`, if there is one. */
  named(name: string): ResolvedUpstream | undefined {
    return this.upstreams.find((upstream) => upstream.name === name);
  }

  /**
   * POSTs `body(providerModel)` to `path` below each candidate's base URL in turn, until one answers 2xx. Never
   * throws; `response` rejects only with an {@link UpstreamAttemptsError}.
   */
  /**
   * A request that does not stream gets its headers only when the whole generation is done: once it was sent in
   * full and timed out waiting for them, the provider may still be running it, so it is never sent to another
   * upstream (the error is marked `mayHaveRun`). `only` holds the request to one upstream (which must serve the
   * model too). `observe` is told of each attempt before it is sent (tracing) and of how it ended.
   */
  open(
    path: string,
    model: string,
    body: (providerModel: string) => string,
    req: IncomingMessage,
    stream: boolean,
    only?: string,
    api: UpstreamApi = 'openai',
    observe?: AttemptObserver,
  ): PoolCall {
    const startedAt = Date.now();
    let current: UpstreamCall | undefined;
    let failing: IncomingMessage | undefined;
    let aborted = false;
    let wake: () => void = noop;
    const abortSignal = new Promise<'aborted'>((resolve) => {
      wake = () => resolve('aborted');
    });
    const failures: UpstreamFailure[] = [];

    /** Waits for `promise`, or until `abort()`. */
    const unlessAborted = <T>(promise: Promise<T>): Promise<T | 'aborted'> => Promise.race([promise, abortSignal]);

    const run = async (): Promise<PoolResponse> => {
      // `only`: the one upstream that holds what the request continues (a stored response), whatever it serves
      const candidates = this.candidates(model, only, api);
      if (candidates.length === 0) throw this.refusal(model, api);
      const attempts = Math.min(candidates.length, this.fallback.maxAttempts);
      let last: InferyError | undefined;
      for (let attempt = 1; attempt <= attempts; attempt++) {
        const left = this.fallback.deadline - (Date.now() - startedAt);
        if (left <= 0 && last) break;
        const { upstream, providerModel } = candidates[attempt - 1]!;
        const budget = Math.max(1, Math.min(left, this.settings.upstreamTimeout));

        let call: UpstreamCall;
        let traced: ContainedAttempt | undefined;
        try {
          const client = this.clients.get(upstream)!;
          const json = body(providerModel);
          traced = observe?.({ attempt, upstream: upstream.name, api: upstream.api, providerModel, method: 'POST', url: client.where(path) });
          const send = (): UpstreamCall => client.postJson(path, json, req, stream, budget, traced?.headers);
          call = traced ? traced.run(send) : send();
        } catch (err) {
          // `body` threw, or the request could not even be built: the caller's error, not the upstream's
          traced?.ended({ accepted: false, code: 'internal_error' });
          throw toInferyError(err);
        }
        current = call;
        const head = await unlessAborted(headersWithin(call, budget));
        if (head === 'aborted') {
          traced?.ended({ accepted: false, code: 'client_closed_request' });
          throw abortedError();
        }

        let error: InferyError;
        let trigger: FallbackTrigger | undefined;
        let mayHaveRun = false;
        if (head instanceof InferyError) {
          error = head;
          trigger = head.code === 'upstream_timeout' ? 'timeout' : 'connection';
          if (!stream && trigger === 'timeout' && call.sent?.() === true) {
            // a whole generation may be under way there: never run it a second time elsewhere
            mayHaveRun = true;
            trigger = undefined;
          }
        } else {
          const status = head.statusCode ?? 502;
          if (status >= 200 && status <= 299) {
            traced?.ended({ accepted: true, status });
            return { res: head, upstream, providerModel, failures };
          }
          failing = head;
          const read = await unlessAborted(boundedHttpError(head, upstream.apiKey, budgetLeft(startedAt, this.fallback.deadline, this.settings.upstreamTimeout)));
          failing = undefined;
          call.abort();
          if (read === 'aborted') {
            traced?.ended({ accepted: false, status, code: 'client_closed_request' });
            throw abortedError();
          }
          error = read;
          trigger = status === 429 ? '429' : status >= 500 && status <= 599 ? '5xx' : undefined;
        }
        const failure = { upstream: upstream.name, code: error.code.slice(0, MAX_CODE), status: error.status };
        traced?.ended({ accepted: false, status: head instanceof InferyError ? undefined : error.status, code: failure.code });
        failures.push(failure);
        this.settings.logger?.warn({ ...failure, attempt }, 'infery-stream upstream attempt failed');
        last = mayHaveRun ? Object.assign(error, { mayHaveRun }) : error;
        if (trigger === undefined || !this.retryOn.has(trigger)) break;
      }
      throw last!;
    };

    const response = run().then(
      (accepted) => {
        if (aborted) {
          accepted.res.destroy();
          throw new UpstreamAttemptsError(abortedError(), failures);
        }
        return accepted;
      },
      (err: unknown) => {
        current?.abort();
        const error = toInferyError(err);
        const final = new UpstreamAttemptsError(error, failures);
        final.mayHaveRun = (err as { mayHaveRun?: unknown }).mayHaveRun === true;
        throw final;
      },
    );
    return {
      response,
      abort: () => {
        aborted = true;
        failing?.destroy();
        current?.abort();
        wake();
      },
    };
  }

  /** The exact model names and alias names the upstreams serve, in order, without duplicates (for `GET /models`). */
  listModels(): string[] {
    return [...new Set(this.upstreams.flatMap((upstream) => upstream.listed))];
  }

  /** Whether some upstream serves a pattern of names, which {@link listModels} cannot show. */
  hasWildcards(): boolean {
    return this.upstreams.some((upstream) => upstream.hasWildcards);
  }

  /** Every upstream key, for redacting text a client or a log will read. */
  keys(): string[] {
    return [...new Set(this.upstreams.flatMap((upstream) => (upstream.apiKey === undefined ? [] : [upstream.apiKey])))];
  }

  /** Closes every upstream's keep-alive sockets. */
  close(): void {
    for (const client of this.clients.values()) client.close();
  }
}

/** The milliseconds one step may take: what is left of the deadline, at most `upstreamTimeout`, at least 1. */
function budgetLeft(startedAt: number, deadline: number, upstreamTimeout: number): number {
  return Math.max(1, Math.min(deadline - (Date.now() - startedAt), upstreamTimeout));
}

/**
 * The call's response headers, or its error (502 unreachable, 504 timed out) as a value. `ms` shortens the
 * client's own `upstreamTimeout` when the deadline is nearer; past it the call is aborted.
 */
function headersWithin(call: UpstreamCall, ms: number): Promise<IncomingMessage | InferyError> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      call.abort();
      resolve(upstreamTimeoutError(ms));
    }, ms);
    call.response.then(
      (res) => {
        clearTimeout(timer);
        resolve(res);
      },
      (err: unknown) => {
        clearTimeout(timer);
        resolve(err instanceof InferyError ? err : upstreamUnreachableError(err as NodeJS.ErrnoException));
      },
    );
  });
}

/**
 * {@link upstreamHttpError} (at most 64 KiB read, the upstream's key redacted), with a bound in time: a provider
 * that sends its status and then stalls the body has its answer destroyed after `ms`, and the error keeps the
 * status alone.
 */
function boundedHttpError(res: IncomingMessage, apiKey: string | undefined, ms: number): Promise<InferyError> {
  const timer = setTimeout(() => res.destroy(), ms);
  return upstreamHttpError(res, apiKey).finally(() => clearTimeout(timer));
}
