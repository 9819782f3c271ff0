import type { ClientRequest, IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createProxyMiddleware, fixRequestBody } from 'http-proxy-middleware';
import { InferyError, sendError, toInferyError } from '../base/errors';
import { authenticateOrThrow, checkRequestRate, limitRefusalOf, runPreflight } from '../core/admission';
import { logRequestEnd, requestIdOf, type RequestLogLine } from '../core/request-log';
import { responseDone, shuttingDown, type InFlight } from '../core/shutdown';
import type { ResolvedOptions } from '../options/resolved';
import { relayPassThroughResponse } from './pass-through-response';
import { ModelCatalog } from '../services/upstream/model-catalog';
import { upstreamTimeoutError, upstreamUnreachableError } from '../services/upstream/upstream';
import { BODY_HEADERS, gatewayHeaders } from '../services/upstream/upstream-headers';
import type { ResolvedUpstream } from '../services/upstream/upstreams';

/** True when the request announces a body (a length above zero, or chunked). */
function hasBody(req: IncomingMessage): boolean {
  return Number(req.headers['content-length']) > 0 || req.headers['transfer-encoding'] !== undefined;
}

/** A consumed request body that fixRequestBody could not write again: nothing would frame what is sent. */
class UnforwardableBody extends Error {}

/**
 * Frames the forwarded body exactly once, never with both `Transfer-Encoding` and `Content-Length`. A body still
 * unread streams through with the client's own framing. A body a parser already read (the host's
 * `express.json()`…) is written again with a `Content-Length` of its own, so the client's `Transfer-Encoding`
 * goes; one that cannot be written again fails the request rather than announce bytes that never come.
 */
function frameBody(proxyReq: ClientRequest, req: IncomingMessage): void {
  if (!req.readableEnded) {
    if (proxyReq.hasHeader('transfer-encoding')) proxyReq.removeHeader('content-length');
    return;
  }
  proxyReq.removeHeader('transfer-encoding');
  const parsed = (req as { body?: unknown }).body;
  if (Buffer.isBuffer(parsed)) {
    // express.raw(): fixRequestBody leaves Buffers alone
    proxyReq.setHeader('content-length', parsed.length);
    proxyReq.write(parsed);
    return;
  }
  fixRequestBody(proxyReq, req);
  // fixRequestBody wrote nothing although there was a body: it was read and is lost
  if (!proxyReq.headersSent && !proxyReq.destroyed && hasBody(req)) {
    proxyReq.destroy(new UnforwardableBody('the request body was read by a body parser and cannot be forwarded'));
  }
}

/**
 * The allow-listed routes (`passThrough`, by default `GET /v1/models` and `GET /v1/models/{id}`): admitted like
 * chat completions (authenticate, per-minute limit, preflight), then proxied by http-proxy-middleware with the
 * same header policy: the gateway's key in, the client's Authorization and cookies out. The path sent upstream
 * is the canonical sub-path the route table matched, appended to the upstream's base path. Not metered.
 */
export function createPassThrough<Account>(opts: ResolvedOptions<Account>, inflight: InFlight) {
  const catalog = opts.severalUpstreams ? new ModelCatalog(opts.upstreams, opts.logger) : undefined;
  // the upstream a request goes to: the first that speaks OpenAI's dialect (these are OpenAI routes), or the one
  // that holds the stored response it reads
  const first = opts.upstreams.find((upstream) => upstream.api === 'openai') ?? opts.upstreams[0]!;
  const targets = new WeakMap<IncomingMessage, ResolvedUpstream>();
  const targetOf = (req: IncomingMessage): ResolvedUpstream => targets.get(req) ?? first;
  const settingsOf = (upstream: ResolvedUpstream) => ({ ...opts, upstream: { api: upstream.api, baseURL: upstream.baseURL, apiKey: upstream.apiKey, headers: upstream.headers } });
  // The canonical sub-path the route table matched, per request: the only path ever sent upstream.
  const subPaths = new WeakMap<IncomingMessage, string>();
  // The route template the request matched (`/models/{id}`), for the log line and metrics.
  const routes = new WeakMap<IncomingMessage, string>();
  const startedAt = new WeakMap<IncomingMessage, number>();
  const logged = new WeakSet<IncomingMessage>();
  type End = Pick<RequestLogLine, 'status' | 'errorCode' | 'errorSource' | 'limit'>;
  const log = (req: IncomingMessage, end: End): void => {
    if (logged.has(req)) return; // a late socket error after the answer was relayed is not a second line
    logged.add(req);
    const start = startedAt.get(req) ?? performance.now();
    logRequestEnd(opts, {
      reqId: requestIdOf(req),
      path: (req.url ?? '').split('?')[0] ?? '',
      route: routes.get(req) ?? 'unmatched',
      method: req.method ?? 'GET',
      durationMs: Math.round(performance.now() - start),
      ...end,
    });
  };

  const proxy = createProxyMiddleware<IncomingMessage, ServerResponse>({
    target: first.baseURL.href.replace(/\/$/, ''),
    router: (req: IncomingMessage) => targetOf(req).baseURL.href.replace(/\/$/, ''),
    changeOrigin: true,
    xfwd: false,
    // the gateway writes the answer itself: allow-listed headers, the key redacted, no redirect (see
    // pass-through-response.ts)
    selfHandleResponse: true,
    pathRewrite: (path, req) => {
      const query = path.indexOf('?');
      return (subPaths.get(req) ?? '/') + (query === -1 ? '' : path.slice(query));
    },
    on: {
      proxyReq: (proxyReq: ClientRequest, req: IncomingMessage) => {
        for (const name of proxyReq.getHeaderNames()) {
          if (!BODY_HEADERS.has(name) && !opts.forwardHeaders.has(name)) proxyReq.removeHeader(name);
        }
        const upstream = targetOf(req);
        for (const [name, value] of Object.entries(gatewayHeaders(settingsOf(upstream), req))) proxyReq.setHeader(name, value);
        proxyReq.setHeader('host', upstream.baseURL.host);
        // a body the gateway can read, to redact the key from it (a compressed answer is decoded anyway)
        proxyReq.setHeader('accept-encoding', 'identity');
        frameBody(proxyReq, req);
      },
      proxyRes: (proxyRes: IncomingMessage, req: IncomingMessage, res: ServerResponse) => {
        // every error code the relay reports is the provider's failure (a redirect, a cut or undecodable body)
        relayPassThroughResponse(proxyRes, req, res, targetOf(req).apiKey, (end) =>
          log(req, { ...end, errorSource: end.errorCode === undefined ? undefined : 'upstream' }),
        );
      },
      error: (err: Error, req: IncomingMessage, res: ServerResponse | Socket) => {
        const code = (err as NodeJS.ErrnoException).code;
        // http-proxy ends a request that outlived proxyTimeout with a plain reset: tell it apart by the time taken
        const waited = performance.now() - (startedAt.get(req) ?? performance.now());
        const timedOut = code === 'ETIMEDOUT' || code === 'ESOCKETTIMEDOUT' || waited >= opts.upstreamTimeout;
        const failure =
          err instanceof UnforwardableBody
            ? new InferyError(500, 'internal_error', 'The gateway could not forward this request body.', { type: 'server_error', cause: err })
            : timedOut
              ? upstreamTimeoutError(opts.upstreamTimeout)
              : upstreamUnreachableError(err);
        if ('setHeader' in res) {
          if (res.headersSent) res.destroy();
          else sendError(res, failure);
        }
        log(req, { status: failure.status, errorCode: failure.code, errorSource: err instanceof UnforwardableBody ? 'gateway' : 'upstream' });
      },
    },
    proxyTimeout: opts.upstreamTimeout,
  });

  /** Admits, then proxies; tracked for graceful shutdown until the response is done. Never rejects. */
  return async function passThrough(req: IncomingMessage, res: ServerResponse, subPath: string, route: string): Promise<void> {
    startedAt.set(req, performance.now());
    routes.set(req, route);
    res.setHeader('X-Request-Id', requestIdOf(req));
    try {
      if (inflight.draining) throw shuttingDown();
      if ((req.method === 'GET' || req.method === 'HEAD') && hasBody(req)) {
        // never forwarded: a body on a read is at best ignored upstream, at worst read as a second request
        throw new InferyError(400, 'invalid_body', `A ${req.method} request must not have a body.`);
      }
      const account = await authenticateOrThrow(opts, req);
      await checkRequestRate(opts, account, false, res);
      if (route.startsWith('/responses/{')) {
        // a stored response is read with the gateway's key, which reads every account's: only its creator may,
        // from the upstream that holds it
        const id = decodeURIComponent(subPath.split('/')[2] ?? '');
        const found = await opts.findResponse(account, id);
        if (!found) {
          throw new InferyError(404, 'response_not_found', `No response with id ${JSON.stringify(id.slice(0, 100))} was created with this key.`, { param: 'response_id' });
        }
        const home = found.upstream === undefined ? undefined : opts.upstreams.find((u) => u.name === found.upstream);
        if (home) targets.set(req, home);
      }
      await runPreflight(opts, account, req, subPath, undefined);
      if (inflight.draining) throw shuttingDown();
    } catch (caught) {
      const err = toInferyError(caught);
      sendError(res, err);
      log(req, { status: err.status, errorCode: err.code, errorSource: 'gateway', limit: limitRefusalOf(err) });
      return;
    }
    if (res.destroyed) return;
    if (catalog && (route === '/models' || route === '/models/{id}')) {
      // several upstreams: the gateway lists what it serves itself
      await catalog.answer(res, route === '/models' ? undefined : decodeURIComponent(subPath.slice('/models/'.length)));
      log(req, { status: res.statusCode });
      return;
    }
    // At the shutdown deadline: a 503 if nothing was sent yet, else the connection is closed.
    inflight.add(res, (err) => (res.headersSent ? res.destroy() : sendError(res, err, true)), responseDone(res));
    subPaths.set(req, subPath);
    // Node already answered `100 Continue`; left in place, http-proxy would skip the `proxyReq` event, and with it
    // the whole header policy above (the client's Authorization and cookies would go upstream, unframed).
    delete req.headers.expect;
    await proxy(req, res, (err?: unknown) => {
      if (!err) return;
      const failure = toInferyError(err);
      sendError(res, failure);
      log(req, { status: failure.status, errorCode: failure.code, errorSource: 'gateway' });
    });
  };
}
