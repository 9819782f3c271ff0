import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { InferyError, sendError, toInferyError } from './errors';
import { Generation } from './generation';
import { relayJson } from './json-response';
import type { ResolvedOptions } from './options';
import { readJsonBody, validateChatRequest } from './request-body';
import { logRequestEnd, requestIdOf } from './request-log';
import type { InFlight } from './shutdown';
import { StreamRelay } from './sse-relay';
import { upstreamHttpError, type UpstreamClient } from './upstream';

/** The caller's account after `authenticate`; throws 401 when there is none. */
export async function authenticateOrThrow<Account>(opts: ResolvedOptions<Account>, req: IncomingMessage): Promise<Account> {
  const account = await opts.authenticate(req);
  if (account === null || account === undefined) {
    throw new InferyError(401, 'invalid_api_key', 'Missing or invalid API key. Send it as `Authorization: Bearer <key>`.');
  }
  return account;
}

/** Runs the pre-flight hook; `false` becomes 402 insufficient_quota. */
export async function runPreflight<Account>(
  opts: ResolvedOptions<Account>,
  account: Account,
  req: IncomingMessage,
  path: string,
  body: Record<string, unknown> | undefined,
): Promise<void> {
  if (!opts.preflight) return;
  const allowed = await opts.preflight({ account, req, path, body });
  if (allowed === false) {
    throw new InferyError(402, 'insufficient_quota', 'You have no credits left for this request. Top up your balance and try again.');
  }
}

/** The 503 a request gets while the gateway drains. */
export function shuttingDown(): InferyError {
  return new InferyError(503, 'shutting_down', 'The gateway is shutting down; retry on another instance.', { type: 'server_error' });
}

/** The body sent upstream: a stream always asks for usage, whatever the client sent. */
function upstreamBody(body: Record<string, unknown>, stream: boolean): string {
  if (!stream) return JSON.stringify(body);
  const streamOptions = (body.stream_options ?? {}) as Record<string, unknown>;
  return JSON.stringify({ ...body, stream_options: { ...streamOptions, include_usage: true } });
}

/**
 * Handles `POST {basePath}/chat/completions`: authenticate, read and check the body, pre-flight, then call the
 * upstream and hand its answer to the SSE relay or the JSON relay. Never rejects: every failure before the
 * first byte becomes an OpenAI-shaped HTTP error, and nothing is metered for those.
 */
export async function handleChatCompletion<Account>(
  opts: ResolvedOptions<Account>,
  client: UpstreamClient,
  inflight: InFlight,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const reqId = requestIdOf(req);
  const startedAt = performance.now();
  res.setHeader('X-Request-Id', reqId);
  let gen: Generation<Account> | undefined;
  try {
    const account = await authenticateOrThrow(opts, req);
    const body = await readJsonBody(req, opts.bodyLimit);
    const { model, stream } = validateChatRequest(body);
    await runPreflight(opts, account, req, '/chat/completions', body);
    if (res.destroyed) return; // the client left before anything went upstream: nothing to meter

    if (inflight.draining) throw shuttingDown();

    gen = new Generation(opts, req, account, body, model, stream, reqId);
    const generation = gen;
    const call = client.postJson('/chat/completions', upstreamBody(body, stream), req, stream);
    // Until the SSE relay takes over, shutting down ends the request with a 503 and meters it as failed.
    let stop = (err: InferyError): void => {
      call.abort();
      void generation.finish('failed', err);
      sendError(res, err);
    };
    inflight.add(generation, (err) => stop(err));
    void generation.settled.then(() => inflight.delete(generation));
    const onEarlyClose = (): void => {
      if (res.writableFinished) return;
      call.abort();
      void generation.finish('cancelled');
    };
    // Watches the client until the SSE relay takes over, or through the whole non-streaming answer.
    res.once('close', onEarlyClose);
    try {
      const upstream = await call.response;
      if (gen.finished) {
        call.abort();
        return;
      }
      const status = upstream.statusCode ?? 502;
      if (status < 200 || status > 299) {
        const err = await upstreamHttpError(upstream, opts.upstream.apiKey);
        call.abort();
        throw err;
      }
      if (stream) {
        res.off('close', onEarlyClose);
        const relay = new StreamRelay(gen, upstream, call, res, opts);
        stop = (err) => relay.fail(err);
        relay.start();
      } else await relayJson(gen, upstream, call, res, opts);
    } finally {
      res.off('close', onEarlyClose);
    }
  } catch (caught) {
    if (gen?.finished) return; // cancelled or metered already; its line is logged
    if (gen) inflight.delete(gen); // failed before the first byte: never metered, nothing left to stop
    const err = toInferyError(caught);
    if (err.status >= 500 && err.code === 'internal_error') {
      const cause = caught instanceof Error ? { name: caught.name, message: caught.message } : { value: String(caught) };
      opts.logger?.error({ reqId, err: cause }, 'infery-stream hook or handler threw');
    }
    sendError(res, err, err.status === 413);
    logRequestEnd(opts.logger, {
      reqId,
      path: '/chat/completions',
      status: err.status,
      durationMs: Math.round(performance.now() - startedAt),
      model: gen?.model,
      errorCode: err.code,
    });
  }
}
