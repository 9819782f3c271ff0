import type { IncomingMessage } from 'node:http';
import { settleTokens, type Ticket } from './admission';
import type { InferyError } from '../base/errors';
import type { MeterEvent, Outcome } from '../contract/hooks';
import { callMeter } from './metering';
import type { ResolvedOptions } from '../options/resolved';
import type { GenerationSettled, GenerationStart } from '../ledgers/metrics/observer';
import { logRequestEnd } from './request-log';

/** Everything settlement needs to know about how a request ended: what `meter` is told, and how to log it. */
export interface Ending<Account>
  extends Pick<
    MeterEvent<Account>,
    'path' | 'endpoint' | 'providerId' | 'providerUsage' | 'upstream' | 'failedUpstreams' | 'model' | 'providerModel' | 'outcome' | 'usage' | 'error' | 'stream' | 'finishReason'
  > {
  /** What observers were told when the generation started. */
  started: GenerationStart;
  /** The prompt and answer text, when an observer asked for it. */
  content?: GenerationSettled['content'];
  ticket: Ticket<Account>;
  req: IncomingMessage;
  reqId: string;
  ttftMs: number | null;
  durationMs: number;
}

const HTTP_STATUS: Record<Outcome, (error: InferyError | undefined) => number> = {
  completed: () => 200,
  // The status line already went out as 200 for streams; 499 is the usual mark of a client that left.
  cancelled: () => 499,
  failed: () => 200,
  unserved: (error) => error?.status ?? 502,
};

/**
 * The errors a generation can end with that the gateway raised itself; every other one came from the upstream
 * (its HTTP error, a broken or timed-out stream).
 */
const GATEWAY_ENDINGS = new Set(['shutting_down', 'max_duration_exceeded', 'client_closed_request', 'internal_error']);

/**
 * Settlement: the one place a request that passed admission ends. Calls `meter` once (which settles the real
 * charge and releases the hold; zero usage for `unserved`), gives the concurrency slot back, tells the observer
 * and logs the request's line. Never rejects; resolves to the credits, or `undefined` when `meter` failed (logged).
 */
export async function settle<Account>(opts: ResolvedOptions<Account>, end: Ending<Account>): Promise<number | undefined> {
  const { ticket } = end;
  let result: Awaited<ReturnType<typeof callMeter>>;
  try {
    result = await callMeter(
      opts.meter,
      {
        account: ticket.account,
        generationId: ticket.generationId,
        providerId: end.providerId,
        path: end.path,
        endpoint: end.endpoint,
        upstream: end.upstream,
        failedUpstreams: end.failedUpstreams,
        providerUsage: end.providerUsage,
        model: end.model,
        providerModel: end.providerModel,
        outcome: end.outcome,
        usage: end.usage,
        reservation: ticket.reservation,
        worstCase: ticket.worstCase,
        cancelled: end.outcome === 'cancelled',
        error: end.error,
        stream: end.stream,
        finishReason: end.finishReason,
        timings: { ttftMs: end.ttftMs, durationMs: end.durationMs },
        ...(ticket.limits ? { limits: ticket.limits } : {}),
        ...(ticket.budget ? { budget: ticket.budget } : {}),
        req: end.req,
      },
      opts.meterTimeout,
    );
  } finally {
    await ticket.lease?.release();
    // tokens per minute: the worst case taken at admission, settled with the real count
    if (ticket.tokens) await settleTokens(opts, ticket.tokens, end.usage.prompt_tokens, end.usage.completion_tokens);
  }
  if (result.credits === undefined) {
    const err = result.error instanceof Error ? { name: result.error.name, message: result.error.message } : undefined;
    opts.logger?.error(
      { reqId: end.reqId, generationId: ticket.generationId, failure: result.failure, err },
      `infery-stream meter ${result.failure === 'timeout' ? 'timed out' : result.failure === 'invalid' ? 'returned an invalid value' : 'threw'}`,
    );
  }
  const errorCode = end.error?.code;
  const errorSource = errorCode === undefined ? undefined : GATEWAY_ENDINGS.has(errorCode) ? 'gateway' : 'upstream';
  opts.observer?.generationSettled({
    ...end.started,
    providerModel: end.providerModel,
    outcome: end.outcome,
    usage: end.usage,
    credits: result.credits ?? null,
    timings: { ttftMs: end.ttftMs, durationMs: end.durationMs },
    errorCode,
    errorSource,
    upstream: end.upstream,
    failedUpstreams: end.failedUpstreams,
    providerId: end.providerId,
    finishReason: end.finishReason,
    ...(end.content ? { content: end.content } : {}),
  });
  logRequestEnd(opts, {
    reqId: end.reqId,
    path: end.path,
    route: end.path,
    method: end.req.method ?? 'POST',
    status: HTTP_STATUS[end.outcome](end.error),
    durationMs: end.durationMs,
    generationId: ticket.generationId,
    providerId: end.providerId,
    endpoint: end.endpoint,
    upstream: end.upstream,
    failedUpstreams: end.failedUpstreams.length > 0 ? end.failedUpstreams : undefined,
    model: end.model,
    accountTag: end.started.accountTag,
    stream: end.stream,
    ttftMs: end.ttftMs,
    usage: end.usage,
    credits: result.credits ?? null,
    cancelled: end.outcome === 'cancelled',
    outcome: end.outcome,
    errorCode,
    errorSource,
  });
  return result.credits;
}
