import type { IncomingMessage, ServerResponse } from 'node:http';
import { handleChatCompletion } from './chat-completions';
import { InferyError, sendError } from './errors';
import { parseOptions, type Options } from './options';
import { createPassThrough } from './pass-through';
import { InFlight, type ShutdownOptions } from './shutdown';
import { UpstreamClient } from './upstream';

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

function pathOf(req: GatewayRequest): string {
  const path = req.path ?? (req.url ?? '/').split('?')[0] ?? '/';
  return path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
}

/**
 * Creates the gateway middleware. Mount it with `app.use(inferyStream(options))`: it serves
 * `POST {basePath}/chat/completions` (streaming or not) and proxies every other `{basePath}/*` request to the
 * upstream. Options are validated here: a bad one throws at start-up.
 *
 * @example
 * app.use(inferyStream({
 *   upstream: { baseURL: 'https://api.openai.com/v1', apiKey: process.env.OPENAI_API_KEY },
 *   authenticate: async (req) => accounts.byKey(bearerToken(req)),
 *   meter: async ({ account, usage }) => ledger.charge(account, usage),
 * }));
 */
export function inferyStream<Account = unknown>(options: Options<Account>): InferyStreamMiddleware {
  if (arguments.length > 1) {
    throw new TypeError('infery-stream: inferyStream was called as a middleware; use app.use(inferyStream({ ... })).');
  }
  const opts = parseOptions<Account>(options);
  const client = new UpstreamClient(opts);
  const inflight = new InFlight();
  const passThrough = opts.passThrough ? createPassThrough(opts, inflight) : undefined;
  const base = opts.basePath;

  const subPathOf = (req: GatewayRequest): string | undefined => {
    const path = pathOf(req);
    if (path === base) return '/';
    if (!path.startsWith(`${base}/`)) return undefined;
    return path.slice(base.length);
  };

  const handler: GatewayHandler = (req, res, next) => {
    const sub = subPathOf(req);
    if (sub === undefined) return next();
    if (sub === '/chat/completions') {
      if (req.method !== 'POST') {
        res.setHeader('Allow', 'POST');
        sendError(res, new InferyError(405, 'method_not_allowed', `${req.method} is not allowed here; use POST ${base}/chat/completions.`));
        return;
      }
      void handleChatCompletion(opts, client, inflight, req, res);
      return;
    }
    if (passThrough) {
      void passThrough(req, res, sub);
      return;
    }
    next();
  };

  const errorHandler: GatewayErrorHandler = (err, req, res, next) => {
    const e = err as { type?: unknown; status?: unknown; statusCode?: unknown; message?: unknown };
    if (subPathOf(req) === undefined || res.headersSent || typeof e !== 'object' || e === null) return next(err);
    const status = typeof e.status === 'number' ? e.status : typeof e.statusCode === 'number' ? e.statusCode : 0;
    if (e.type === 'entity.parse.failed') {
      sendError(res, new InferyError(400, 'invalid_json', `The request body is not valid JSON: ${String(e.message)}`));
    } else if (e.type === 'entity.too.large') {
      sendError(res, new InferyError(413, 'request_too_large', 'The request body is larger than the limit of the host app\'s body parser.'), true);
    } else if (typeof e.type === 'string' && e.type.startsWith('entity.') || (status >= 400 && status < 500 && typeof e.type === 'string')) {
      sendError(res, new InferyError(status >= 400 && status < 500 ? status : 400, 'invalid_body', `The request body could not be read: ${String(e.message)}`));
    } else next(err);
  };

  const middleware = [handler, errorHandler] as InferyStreamMiddleware;
  middleware.close = () => client.close();
  middleware.shutdown = (options) => inflight.drain(options);
  Object.defineProperty(middleware, 'inFlight', { get: () => inflight.size });
  return middleware;
}
