import type { ServerResponse } from 'node:http';

/** The body every error reaches a client in: OpenAI's error shape. */
export interface OpenAIErrorBody {
  error: { message: string; type: string; code: string; param: string | null };
}

/**
 * The one error class of infery-stream. `status` is the HTTP status a client receives before streaming began,
 * `code` is stable and listed in the README, `type` follows OpenAI's error types.
 */
export class InferyError extends Error {
  readonly status: number;
  readonly type: string;
  readonly code: string;
  readonly param: string | null;
  /** Extra response headers sent with this error before the first byte (e.g. `Retry-After`). */
  headers: Record<string, string> | undefined;

  constructor(
    status: number,
    code: string,
    message: string,
    options: { type?: string; param?: string | null; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.type = options.type ?? defaultType(status);
    this.param = options.param ?? null;
  }

  /** The OpenAI-shaped body for this error. */
  toJSON(): OpenAIErrorBody {
    return { error: { message: this.message, type: this.type, code: this.code, param: this.param } };
  }
}

function defaultType(status: number): string {
  if (status === 401) return 'invalid_request_error';
  if (status === 402) return 'insufficient_quota';
  if (status === 429) return 'rate_limit_error';
  if (status >= 500) return 'upstream_error';
  return 'invalid_request_error';
}

/** Turns anything thrown into an InferyError; unknown errors become a 500 without their message or stack. */
export function toInferyError(err: unknown): InferyError {
  if (err instanceof InferyError) return err;
  return new InferyError(500, 'internal_error', 'The gateway failed to handle this request.', {
    type: 'server_error',
    cause: err,
  });
}

/**
 * Sends an OpenAI-shaped error as a whole HTTP response. Does nothing when the response already started:
 * mid-stream errors are written as SSE chunks by the relay instead.
 */
export function sendError(res: ServerResponse, err: InferyError, closeConnection = false, shape: (err: InferyError) => unknown = (e) => e.toJSON()): void {
  if (res.headersSent || res.writableEnded || res.destroyed) return;
  // Answered before the body arrived (a refused path, key or limit): close rather than read the rest of it.
  const req = res.req as ServerResponse['req'] | undefined;
  if (req && !req.complete && (Number(req.headers['content-length']) > 0 || req.headers['transfer-encoding'] !== undefined)) closeConnection = true;
  const body = JSON.stringify(shape(err));
  res.statusCode = err.status;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.setHeader('Cache-Control', 'no-store');
  if (closeConnection) res.setHeader('Connection', 'close');
  if (err.headers) for (const [name, value] of Object.entries(err.headers)) res.setHeader(name, value);
  res.end(body);
}

/** Thrown at creation when an option is wrong; the message says how to fix it. */
export class InferyOptionsError extends TypeError {
  constructor(message: string) {
    super(`infery-stream: ${message}`);
    this.name = new.target.name;
  }
}
