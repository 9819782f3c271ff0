import http, { type ClientRequest, type IncomingMessage } from 'node:http';
import https from 'node:https';
import { InferyError } from '../../base/errors';
import { readText } from '../../base/request-body';
import { gatewayHeaders, redact } from './upstream-headers';
import type { UpstreamSettings } from './upstream-settings';

const noop = (): void => {};
const MAX_ERROR_BODY = 64 * 1024;
/**
 * Idle keep-alive sockets kept per upstream (Node's default is 256). A burst of concurrent streams opens a
 * socket each; keeping them lets the next burst skip the TCP handshake instead of reconnecting all but 256.
 */
const MAX_FREE_SOCKETS = 2048;

/** An upstream request under way. `abort()` destroys its socket, so the provider sees the disconnect. */
export interface UpstreamCall {
  /** Resolves with the response headers, or rejects with an InferyError (502 unreachable, 504 timed out). */
  response: Promise<IncomingMessage>;
  abort(): void;
  /** Whether the whole request went out on a connection (the provider may then be working on it). */
  sent?(): boolean;
}

/** 504: the upstream sent no response headers within `ms`. */
export function upstreamTimeoutError(ms: number): InferyError {
  return new InferyError(504, 'upstream_timeout', `The upstream provider did not answer within ${ms} ms.`, { type: 'upstream_error' });
}

/** 502: the upstream could not be reached (refused, DNS, reset before answering). */
export function upstreamUnreachableError(err: NodeJS.ErrnoException): InferyError {
  return new InferyError(502, 'upstream_unreachable', `Could not reach the upstream provider (${err.code ?? err.message}).`, {
    type: 'upstream_error',
    cause: err,
  });
}

/**
 * Talks to the OpenAI-compatible provider over keep-alive sockets. One per middleware instance.
 */
export class UpstreamClient {
  private readonly agent: http.Agent;
  private readonly transport: typeof http | typeof https;
  /** The base URL's parts, read once: a request needs no URL parsing. */
  private readonly target: { protocol: string; hostname: string; port: string; basePath: string; search: string };

  constructor(private readonly opts: UpstreamSettings) {
    const base = opts.upstream.baseURL;
    const secure = base.protocol === 'https:';
    this.transport = secure ? https : http;
    const agentOptions = { keepAlive: true, maxFreeSockets: MAX_FREE_SOCKETS };
    this.agent = secure ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
    // an IPv6 literal is bracketed in a URL and bare in request options
    const hostname = base.hostname.startsWith('[') ? base.hostname.slice(1, -1) : base.hostname;
    this.target = { protocol: base.protocol, hostname, port: base.port, basePath: base.pathname.replace(/\/$/, ''), search: base.search };
  }

  /** Where {@link postJson} sends a request to `path`: no query string, no credentials (for traces). */
  where(path: string): { scheme: 'http' | 'https'; host: string; port: number; path: string } {
    const { protocol, hostname, port, basePath } = this.target;
    const secure = protocol === 'https:';
    return { scheme: secure ? 'https' : 'http', host: hostname, port: port === '' ? (secure ? 443 : 80) : Number(port), path: basePath + path };
  }

  /**
   * POSTs a JSON body to `path` below the upstream base URL; its headers are due within `timeoutMs`. `extra`
   * headers (an observer's trace context, checked already) go with it; a forwarded client header of the same name
   * gives way to them, the key's headers never do.
   */
  postJson(path: string, body: string, req: IncomingMessage, stream: boolean, timeoutMs = this.opts.upstreamTimeout, extra?: Record<string, string>): UpstreamCall {
    const headers = {
      ...gatewayHeaders(this.opts, req, extra),
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(body)),
      accept: stream ? 'text/event-stream' : 'application/json',
      'accept-encoding': 'identity',
    };
    // `path` is an API's own (`/chat/completions`); a query string on the base URL (`?api-version=…`) stays last
    const { protocol, hostname, port, basePath, search } = this.target;
    const request: ClientRequest = this.transport.request({ protocol, hostname, port, path: basePath + path + search, method: 'POST', headers, agent: this.agent });
    // Errors after the response arrived surface on the response; this keeps a late one from crashing the process.
    request.on('error', noop);
    let timer: NodeJS.Timeout | undefined;
    const response = new Promise<IncomingMessage>((resolve, reject) => {
      timer = setTimeout(() => {
        reject(upstreamTimeoutError(timeoutMs));
        request.destroy();
      }, timeoutMs);
      request.once('response', (res) => {
        clearTimeout(timer);
        res.on('error', noop);
        resolve(res);
      });
      request.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(upstreamUnreachableError(err));
      });
    });
    let sent = false;
    request.once('finish', () => {
      sent = true;
    });
    request.end(body);
    return {
      response,
      abort: () => {
        clearTimeout(timer);
        request.destroy();
      },
      sent: () => sent,
    };
  }

  /** Closes idle keep-alive sockets. */
  close(): void {
    this.agent.destroy();
  }
}

/**
 * Reads a non-2xx upstream answer (at most 64 KiB) and turns it into an InferyError with the same status,
 * keeping the provider's message, type, code and param when it sent OpenAI's shape, with any key redacted from
 * each of them.
 */
export async function upstreamHttpError(res: IncomingMessage, apiKey: string | undefined): Promise<InferyError> {
  const status = res.statusCode ?? 502;
  let text = '';
  try {
    text = await readText(res, MAX_ERROR_BODY);
  } catch {
    // the body is only for the message; the status is what matters
  }
  let message = `The upstream provider answered ${status}${res.statusMessage ? ` ${res.statusMessage}` : ''}.`;
  let type: string | undefined;
  let code = status === 429 ? 'rate_limit_exceeded' : 'upstream_error';
  let param: string | null = null;
  try {
    const parsed = JSON.parse(text) as { error?: unknown; message?: unknown };
    const e = (typeof parsed.error === 'object' && parsed.error !== null ? parsed.error : parsed) as Record<string, unknown>;
    if (typeof e.message === 'string' && e.message !== '') message = `Upstream provider error (${status}): ${e.message}`;
    else if (typeof parsed.error === 'string') message = `Upstream provider error (${status}): ${parsed.error}`;
    if (typeof e.type === 'string') type = e.type;
    if (typeof e.code === 'string') code = e.code;
    if (typeof e.param === 'string') param = e.param;
  } catch {
    // not JSON (an HTML error page, say): keep the status line only
  }
  const httpStatus = status >= 400 && status <= 599 ? status : 502;
  // Every field a client reads (and `code`, which is logged) may echo the key back: all of them are redacted.
  return new InferyError(httpStatus, redact(code, apiKey), redact(message, apiKey), {
    type: type === undefined ? undefined : redact(type, apiKey),
    param: param === null ? null : redact(param, apiKey),
  });
}
