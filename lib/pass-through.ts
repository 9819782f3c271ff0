import type { ClientRequest, IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createProxyMiddleware, fixRequestBody } from 'http-proxy-middleware';
import { authenticateOrThrow, runPreflight, shuttingDown } from './chat-completions';
import type { InFlight } from './shutdown';
import { sendError, toInferyError } from './errors';
import type { ResolvedOptions } from './options';
import { logRequestEnd, requestIdOf } from './request-log';
import { upstreamTimeoutError, upstreamUnreachableError } from './upstream';
import { BODY_HEADERS, gatewayHeaders } from './upstream-headers';

/** Response headers of the provider that a client of the gateway has no business receiving. */
const DROPPED_RESPONSE_HEADERS = ['set-cookie', 'openai-organization', 'openai-project'];

/**
 * Every other request under the base path (`GET /v1/models`, `POST /v1/embeddings`, …), authenticated and
 * pre-flighted like chat completions, then proxied by http-proxy-middleware with the same header policy:
 * the gateway's key in, the client's Authorization and cookies out. These routes are not metered.
 */
export function createPassThrough<Account>(opts: ResolvedOptions<Account>, inflight: InFlight) {
  const basePath = opts.basePath;
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
    pathRewrite: (path) => path.slice(basePath.length) || '/',
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

  /** Authenticates, pre-flights, then proxies. Never rejects. */
  return async function passThrough(req: IncomingMessage, res: ServerResponse, subPath: string): Promise<void> {
    startedAt.set(req, performance.now());
    res.setHeader('X-Request-Id', requestIdOf(req));
    try {
      if (inflight.draining) throw shuttingDown();
      const account = await authenticateOrThrow(opts, req);
      await runPreflight(opts, account, req, subPath, undefined);
    } catch (caught) {
      const err = toInferyError(caught);
      sendError(res, err);
      log(req, err.status, err.code);
      return;
    }
    if (res.destroyed) return;
    await proxy(req, res, (err?: unknown) => {
      if (err) sendError(res, toInferyError(err));
    });
  };
}
