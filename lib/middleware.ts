import type { IncomingMessage, ServerResponse } from 'node:http';
import { InferyError, sendError } from './base/errors';
import { logRequestEnd, requestIdOf } from './core/request-log';
import { InFlight, type ShutdownOptions } from './core/shutdown';
import type { Options } from './options/options';
import { parseOptions } from './parse-options';
import { handleGeneration } from './relay/generation-handler';
import { createPassThrough } from './relay/pass-through';
import type { Surface, Tool } from './relay/surface';
import { classifyPath, rawPathOf } from './services/routing/canonical-path';
import { RouteTable, type Route } from './services/routing/routes';
import { UpstreamPool } from './services/upstream/upstream-pool';
import { SURFACES, TOOLS } from './surfaces';

/** The request as the middleware reads it: a Node request, with what Express adds when it is there. */
export type GatewayRequest = IncomingMessage & { body?: unknown; path?: string; originalUrl?: string };
/** Express-compatible `next`. */
export type NextFunction = (err?: unknown) => void;
/** The normal middleware that serves the gateway routes. */
export type GatewayHandler = (req: GatewayRequest, res: ServerResponse, next: NextFunction) => void;
/** The error middleware that answers body-parser failures on gateway routes in OpenAI's shape. */
export type GatewayErrorHandler = (err: unknown, req: GatewayRequest, res: ServerResponse, next: NextFunction) => void;

/**
 * What `inferyStream()` returns: a pair that `app.use()` accepts as is. The first serves the routes; the
 * second turns errors of a body parser the host mounted earlier (`express.json()` on malformed JSON, or a
 * body over its limit) into OpenAI-shaped 400/413 answers on the gateway's paths.
 */
export type InferyStreamMiddleware = [GatewayHandler, GatewayErrorHandler] & {
  /**
   * Graceful shutdown: refuses new requests with 503 `shutting_down`, lets open generations finish up to
   * `deadlineMs`, then ends the rest (streams get an error chunk) and resolves once every one is metered.
   * Call it after `server.close()`.
   */
  shutdown(options?: ShutdownOptions): Promise<void>;
  /** Closes the upstream keep-alive sockets (after `shutdown()`, or in tests). */
  close(): void;
  /** Generations under way right now. */
  readonly inFlight: number;
};

/**
 * Where a request stands: outside the base path, refused (400/404/405; `route` is the template of a 405's path,
 * else `unmatched`), or matched to a route.
 */
type Located = { kind: 'outside' } | { kind: 'refused'; error: InferyError; route: string } | { kind: 'route'; route: Route<Surface | Tool>; subPath: string };

/**
 * Creates the gateway middleware. Mount it with `app.use(inferyStream(options))`: it serves
 * `POST {basePath}/chat/completions` (streaming or not, metered), forwards the `passThrough` allow-list (by
 * default `GET {basePath}/models` and `GET {basePath}/models/{id}`) to the upstream, and answers every other
 * path under the base path itself: 400 `invalid_path` for a path that is not canonical, 404 `unknown_route`,
 * 405 `method_not_allowed`. Options are validated here: a bad one throws at start-up.
 *
 * @example
 * app.use(inferyStream({
 *   upstream: { baseURL: 'https://api.openai.com/v1', apiKey: process.env.OPENAI_API_KEY },
 *   authenticate: async (req) => accounts.byKey(bearerToken(req)),
 *   meter: async ({ account, usage }) => ledger.charge(account, usage),
 * }));
 */
export function inferyStream<Account = unknown, Req extends IncomingMessage = IncomingMessage>(options: Options<Account, Req>): InferyStreamMiddleware {
  if (arguments.length > 1) {
    throw new TypeError('infery-stream: inferyStream was called as a middleware; use app.use(inferyStream({ ... })).');
  }
  const opts = parseOptions<Account>(options, [...SURFACES, ...TOOLS].map((api) => api.path));
  const pool = new UpstreamPool(opts.upstreams, { forwardHeaders: opts.forwardHeaders, upstreamTimeout: opts.upstreamTimeout, fallback: opts.fallback, logger: opts.logger });
  const inflight = new InFlight();
  const passThrough = createPassThrough(opts, inflight);
  const base = opts.basePath;
  const routes = new RouteTable<Surface | Tool>([...SURFACES, ...TOOLS], opts.passThrough);
  for (const route of opts.passThrough) {
    if (route.method !== 'GET' && route.method !== 'HEAD' && route.method !== 'OPTIONS') {
      opts.logger?.warn({ route: `${route.method} ${base}${route.pattern}` }, 'infery-stream passThrough forwards a route that is not metered');
    }
  }

  const locate = (req: GatewayRequest): Located => {
    const verdict = classifyPath(rawPathOf(req.url ?? '/'), base);
    if (verdict.kind === 'outside') return verdict;
    const method = req.method ?? 'GET';
    if (verdict.kind === 'invalid') {
      return {
        kind: 'refused',
        error: new InferyError(400, 'invalid_path', `The request path is not canonical (${verdict.reason}). Send the exact path, e.g. POST ${base}/chat/completions.`),
        route: 'unmatched',
      };
    }
    const match = routes.match(method, verdict.subPath);
    if (match === undefined) {
      const shown = `${base}${verdict.subPath}`;
      return {
        kind: 'refused',
        error: new InferyError(404, 'unknown_route', `Unknown route: ${method} ${shown.length > 200 ? `${shown.slice(0, 200)}…` : shown}. This gateway serves ${routes.describe(base)}.`),
        route: 'unmatched',
      };
    }
    if ('allow' in match) {
      const error = new InferyError(405, 'method_not_allowed', `${method} is not allowed on ${base}${verdict.subPath}; use ${match.allow.join(' or ')}.`);
      error.headers = { Allow: match.allow.join(', ') };
      // the path is in the table under another method: that route's template
      const allowed = routes.match(match.allow[0] ?? 'GET', verdict.subPath);
      return { kind: 'refused', error, route: allowed && 'route' in allowed ? allowed.route.pattern : 'unmatched' };
    }
    return { kind: 'route', route: match.route, subPath: verdict.subPath };
  };

  const refuse = (req: GatewayRequest, res: ServerResponse, error: InferyError, route: string, closeConnection = false): void => {
    const reqId = requestIdOf(req);
    res.setHeader('X-Request-Id', reqId);
    sendError(res, error, closeConnection);
    const path = rawPathOf(req.url ?? '/').slice(0, 200);
    logRequestEnd(opts, { reqId, path, route, method: req.method ?? 'GET', status: error.status, durationMs: 0, errorCode: error.code, errorSource: 'gateway' });
  };

  const handler: GatewayHandler = (req, res, next) => {
    const where = locate(req);
    if (where.kind === 'outside') return next();
    if (where.kind === 'refused') return refuse(req, res, where.error, where.route);
    const api = where.route.api;
    if (api && 'handle' in api) void api.handle(opts, pool, inflight, req, res);
    else if (api) void handleGeneration(api, opts, pool, inflight, req, res);
    else void passThrough(req, res, where.subPath, where.route.pattern);
  };

  const errorHandler: GatewayErrorHandler = (err, req, res, next) => {
    const e = err as { type?: unknown; status?: unknown; statusCode?: unknown; message?: unknown };
    if (res.headersSent || typeof e !== 'object' || e === null || err instanceof InferyError) return next(err);
    const status = typeof e.status === 'number' ? e.status : typeof e.statusCode === 'number' ? e.statusCode : 0;
    // only a body parser's failure is ours to answer; anything else (a host route under the base path that
    // failed, say) goes on to the host's error handlers
    const bodyError = (typeof e.type === 'string' && /^(entity|encoding|charset|request|stream)\./.test(e.type)) || (status >= 400 && status < 500);
    if (!bodyError) return next(err);
    const where = locate(req);
    if (where.kind === 'outside') return next(err);
    if (where.kind === 'refused') return refuse(req, res, where.error, where.route);
    const route = where.route.pattern;
    if (e.type === 'entity.parse.failed') {
      refuse(req, res, new InferyError(400, 'invalid_json', `The request body is not valid JSON: ${String(e.message)}`), route);
    } else if (e.type === 'entity.too.large') {
      refuse(req, res, new InferyError(413, 'request_too_large', 'The request body is larger than the limit of the host app\'s body parser.'), route, true);
    } else if (e.type === 'encoding.unsupported') {
      refuse(req, res, new InferyError(415, 'unsupported_encoding', `The request body's Content-Encoding is not supported: ${String(e.message)}`), route, true);
    } else if (status >= 400 && status < 500) {
      // any other body-parser failure (a body that is not valid gzip, a charset it cannot decode, a cut-off body)
      refuse(req, res, new InferyError(status, 'invalid_body', `The request body could not be read: ${String(e.message).slice(0, 200)}`), route, true);
    } else next(err);
  };

  const middleware = [handler, errorHandler] as InferyStreamMiddleware;
  middleware.close = () => pool.close();
  middleware.shutdown = (options) => inflight.drain(options);
  Object.defineProperty(middleware, 'inFlight', { get: () => inflight.size });
  return middleware;
}
