import type { ClientRequest, IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createProxyMiddleware, fixRequestBody } from 'http-proxy-middleware';
import { authenticateOrThrow, checkRequestRate, runPreflight } from '../core/admission';
import { responseDone, shuttingDown, type InFlight } from '../shutdown';
import { InferyError, sendError, toInferyError } from '../errors';
import type { ResolvedOptions } from '../options';
import { logRequestEnd, requestIdOf } from '../request-log';
import { upstreamTimeoutError, upstreamUnreachableError } from './upstream';
import { BODY_HEADERS, gatewayHeaders } from './upstream-headers';

/** True when the request announces a body (a length above zero, or chunked). */
function hasBody(req: IncomingMessage): boolean {
  return Number(req.headers['content-length']) > 0 || req.headers['transfer-encoding'] !== undefined;
}

/** Response headers of the provider that a client of the gateway has no business receiving. */
const DROPPED_RESPONSE_HEADERS = ['set-cookie', 'openai-organization', 'openai-project'];

/**
 * The allow-listed routes (`passThrough`, by default `GET /v1/models` and `GET /v1/models/{id}`): admitted like
 * chat completions (authenticate, per-minute limit, preflight), then proxied by http-proxy-middleware with the
 * same header policy: the gateway's key in, the client's Authorization and cookies out. The path sent upstream
 * is the canonical sub-path the route table matched, appended to the upstream's base path. Not metered.
 */
export function createPassThrough<Account>(opts: ResolvedOptions<Account>, inflight: InFlight) {
  // The canonical sub-path the route table matched, per request: the only path ever sent upstream.
  const subPaths = new WeakMap<IncomingMessage, string>();
  const startedAt = new WeakMap<IncomingMessage, number>();
  const log = (req: IncomingMessage, status: number, errorCode?: string): void => {
    const start = startedAt.get(req) ?? performance.now();
    logRequestEnd(opts.logger, {
      reqId: requestIdOf(req),
      path: (req.url ?? '').split('?')[0] ?? '',
      status,
      durationMs: Math.round(performance.now() - start),
      errorCode,
    });
  };

  const proxy = createProxyMiddleware<IncomingMessage, ServerResponse>({
    target: opts.upstream.baseURL.href.replace(/\/$/, ''),
    changeOrigin: true,
    xfwd: false,
    pathRewrite: (path, req) => {
      const query = path.indexOf('?');
      return (subPaths.get(req) ?? '/') + (query === -1 ? '' : path.slice(query));
    },
    on: {
      proxyReq: (proxyReq: ClientRequest, req: IncomingMessage) => {
        for (const name of proxyReq.getHeaderNames()) {
          if (!BODY_HEADERS.has(name) && !opts.forwardHeaders.has(name)) proxyReq.removeHeader(name);
        }
        for (const [name, value] of Object.entries(gatewayHeaders(opts, req))) proxyReq.setHeader(name, value);
        proxyReq.setHeader('host', opts.upstream.baseURL.host);
        fixRequestBody(proxyReq, req);
      },
      proxyRes: (proxyRes: IncomingMessage, req: IncomingMessage) => {
        for (const name of DROPPED_RESPONSE_HEADERS) delete proxyRes.headers[name];
        proxyRes.once('end', () => log(req, proxyRes.statusCode ?? 0));
      },
      error: (err: Error, req: IncomingMessage, res: ServerResponse | Socket) => {
        const code = (err as NodeJS.ErrnoException).code;
        const timedOut = code === 'ETIMEDOUT' || code === 'ESOCKETTIMEDOUT';
        const failure = timedOut ? upstreamTimeoutError(opts.upstreamTimeout) : upstreamUnreachableError(err);
        if ('setHeader' in res) {
          if (res.headersSent) res.destroy();
          else sendError(res, failure);
        }
        log(req, failure.status, failure.code);
      },
    },
    proxyTimeout: opts.upstreamTimeout,
  });

  /** Admits, then proxies; tracked for graceful shutdown until the response is done. Never rejects. */
  return async function passThrough(req: IncomingMessage, res: ServerResponse, subPath: string): Promise<void> {
    startedAt.set(req, performance.now());
    res.setHeader('X-Request-Id', requestIdOf(req));
    try {
      if (inflight.draining) throw shuttingDown();
      if ((req.method === 'GET' || req.method === 'HEAD') && hasBody(req)) {
        // never forwarded: a body on a read is at best ignored upstream, at worst read as a second request
        throw new InferyError(400, 'invalid_body', `A ${req.method} request must not have a body.`);
      }
      const account = await authenticateOrThrow(opts, req);
      await checkRequestRate(opts, account);
      await runPreflight(opts, account, req, subPath, undefined);
      if (inflight.draining) throw shuttingDown();
    } catch (caught) {
      const err = toInferyError(caught);
      sendError(res, err);
      log(req, err.status, err.code);
      return;
    }
    if (res.destroyed) return;
    // At the shutdown deadline: a 503 if nothing was sent yet, else the connection is closed.
    inflight.add(res, (err) => (res.headersSent ? res.destroy() : sendError(res, err, true)), responseDone(res));
    subPaths.set(req, subPath);
    await proxy(req, res, (err?: unknown) => {
      if (err) sendError(res, toInferyError(err));
    });
  };
}
