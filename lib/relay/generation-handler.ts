import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { InferyError, sendError, toInferyError } from '../base/errors';
import { checkBodyShape, readJsonBody } from '../base/request-body';
import { locateContinuation, NO_CONTINUATION } from './continuation';
import { admitGeneration, authenticateOrThrow, checkRequestRate, countDeferredRate, limitRefusalOf, runPreflight } from '../core/admission';
import { Generation } from '../core/generation';
import { logRequestEnd, requestIdOf } from '../core/request-log';
import { responseDone, shuttingDown, type InFlight } from '../core/shutdown';
import { relayJson, relayJsonAsStream } from './json-relay';
import type { ResolvedOptions } from '../options/resolved';
import { decodedBody } from '../services/upstream/decode';
import { UpstreamAttemptsError, type UpstreamPool } from '../services/upstream/upstream-pool';
import { StreamRelay } from './stream-relay';
import type { Surface } from './surface';

/** The request ended before anything went upstream because its client left. */
const clientLeft = (): InferyError => new InferyError(499, 'client_closed_request', 'The client closed the connection before the request was sent upstream.');

/**
 * Handles `POST {basePath}{surface.path}` for any metered API: admission (authenticate, rate limit, body, preflight, concurrency
 * slot, reservation), then the upstream call, whose answer goes to the SSE relay or the JSON relay. Never
 * rejects. From the reservation on, every path settles the generation exactly once: a failure before the first
 * byte becomes an OpenAI-shaped HTTP error and is settled as `unserved` (the hold released, nothing charged).
 */
export async function handleGeneration<Account>(
  route: Surface,
  opts: ResolvedOptions<Account>,
  pool: UpstreamPool,
  inflight: InFlight,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const reqId = requestIdOf(req);
  const startedAt = performance.now();
  // the route's API, or its translation for a model only upstreams of another dialect serve
  let surface = route;
  res.setHeader('X-Request-Id', reqId);
  let gen: Generation<Account> | undefined;
  // the caller, while its rate is left to `reserve` and not counted yet
  let uncounted: { account: Account } | undefined;
  try {
    if (inflight.draining) throw shuttingDown();
    const account = await authenticateOrThrow(opts, req);
    if ((await checkRequestRate(opts, account, true, res)) === 'deferred') uncounted = { account };
    const body = await readJsonBody(req, opts.bodyLimit);
    const { model, stream } = surface.validate(body, opts);
    // a model no upstream serves is refused before anything is held; one only upstreams of another dialect serve
    // is translated when the API can be, and checked translatable now
    if (pool.candidates(model, undefined, surface.api).length === 0) {
      const translated = route.translations?.find((t) => pool.candidates(model, undefined, t.api).length > 0);
      if (!translated) throw pool.refusal(model, surface.api);
      surface = translated;
      surface.validate(body, opts);
    }
    // continuing a stored response: only its creator may, on the upstream that holds it, and what the provider
    // reads again of it joins the prompt's worst case and estimate
    const continued = surface.continues?.(body);
    const { only, contextTokens } = continued === undefined ? NO_CONTINUATION : await locateContinuation(opts, pool, account, continued, model);
    await checkBodyShape(body);
    await runPreflight(opts, account, req, surface.path, body);
    const ticket = await admitGeneration(opts, account, req, res, surface, body, model, contextTokens);
    uncounted = undefined;
    gen = new Generation(opts, req, ticket, model, stream, reqId, surface);
    // a limit refused it after its hold was taken: settled unserved, answered 429
    if (ticket.refused) throw ticket.refused;
    const generation = gen;
    // Until the upstream call starts, shutting down ends the request with a 503, settled as unserved.
    let stop = (err: InferyError): void => {
      void generation.finish('unserved', err);
      sendError(res, err, false, surface.json.errorBody);
    };
    inflight.add(generation, (err) => stop(err), Promise.all([generation.settled, responseDone(res)]));
    if (res.destroyed) throw clientLeft();
    if (inflight.draining) throw shuttingDown();

    // the first upstream that serves the model, the next ones on a failure before the first byte (`fallback`);
    // each gets the body with its own name for the model (an alias)
    const traceAttempt = opts.observer?.upstreamAttempt;
    const call = pool.open(
      surface.upstreamPath ?? surface.path,
      model,
      (providerModel) => surface.upstreamBody(providerModel === model ? ticket.upstreamBody : { ...ticket.upstreamBody, model: providerModel }, stream),
      req,
      stream,
      only,
      surface.api,
      traceAttempt && ((attempt) => traceAttempt({ ...attempt, generationId: generation.generationId })),
    );
    // While waiting for the provider's headers, shutting down answers 503 and releases the hold.
    stop = (err) => {
      call.abort();
      void generation.finish('unserved', err);
      sendError(res, err, false, surface.json.errorBody);
    };
    const onEarlyClose = (): void => {
      if (res.writableFinished) return;
      call.abort();
      void generation.finish('cancelled');
    };
    // Watches the client until the SSE relay takes over, or through the whole non-streaming answer.
    res.once('close', onEarlyClose);
    try {
      let served;
      try {
        served = await call.response;
      } catch (err) {
        if (err instanceof UpstreamAttemptsError) {
          gen.failedUpstreams = err.failures;
          if (err.mayHaveRun && !gen.finished) {
            // sent in full, no answer: the provider may have run it and bills us; the prompt is charged
            sendError(res, err, false, surface.json.errorBody);
            void gen.finish('failed', err);
            return;
          }
        }
        throw err;
      }
      const upstream = served.res;
      gen.upstream = served.upstream.name;
      gen.upstreamKey = served.upstream.apiKey;
      gen.failedUpstreams = served.failures;
      if (gen.finished) {
        call.abort();
        return;
      }
      let body: Readable;
      try {
        body = decodedBody(upstream);
      } catch (err) {
        call.abort();
        throw err;
      }
      // a provider that ignores `stream: true` and answers one JSON completion is relayed as a stream
      const answeredJson = /\bjson\b/i.test(String(upstream.headers['content-type'] ?? ''));
      const dialect = stream ? surface.stream?.() : undefined;
      if (dialect && !answeredJson) {
        res.off('close', onEarlyClose);
        const relay = new StreamRelay(gen, body, call, res, opts, dialect);
        stop = (err) => relay.fail(err);
        relay.start();
      } else if (dialect) await relayJsonAsStream(gen, body, call, res, opts, surface.json, dialect);
      else await relayJson(gen, body, call, res, opts, surface.json);
    } finally {
      res.off('close', onEarlyClose);
    }
  } catch (caught) {
    if (gen?.finished) return; // cancelled or settled already; its line is logged
    const err = toInferyError(caught);
    if (err.status >= 500 && err.code === 'internal_error') {
      const cause = caught instanceof Error ? { name: caught.name, message: caught.message } : { value: String(caught) };
      opts.logger?.error({ reqId, err: cause }, 'infery-stream hook or handler threw');
    }
    sendError(res, err, err.status === 413, surface.json.errorBody);
    if (uncounted) void countDeferredRate(opts, uncounted.account, caught);
    if (gen) {
      // failed before the first byte: the hold is released, nothing is charged; settlement logs the line
      void gen.finish('unserved', err);
      return;
    }
    logRequestEnd(opts, {
      reqId,
      path: surface.path,
      route: surface.path,
      method: req.method ?? 'POST',
      status: err.status,
      durationMs: Math.round(performance.now() - startedAt),
      errorCode: err.code,
      errorSource: 'gateway',
      limit: limitRefusalOf(err),
    });
  }
}
