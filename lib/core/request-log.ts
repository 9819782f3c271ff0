import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Outcome, LimitRefusal } from '../contract/hooks';
import type { ResolvedOptions } from '../options/resolved';

const SAFE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * The request id used in logs and sent back as `X-Request-Id`: pino-http's `req.id` when the host app set it,
 * else a well-formed incoming `X-Request-Id`, else a fresh UUID.
 */
export function requestIdOf(req: IncomingMessage): string {
  const existing = (req as { id?: unknown }).id;
  if ((typeof existing === 'string' || typeof existing === 'number') && SAFE_ID.test(String(existing))) return String(existing);
  const header = req.headers['x-request-id'];
  if (typeof header === 'string' && SAFE_ID.test(header)) return header;
  return randomUUID();
}

/** Fields of the one line logged when a request ends. Never a key, never prompt or completion text. */
export interface RequestLogLine {
  reqId: string;
  path: string;
  /** The route template (`/models/{id}`), or `unmatched`: what metrics label the request with. */
  route: string;
  method: string;
  status: number;
  durationMs: number;
  generationId?: string;
  providerId?: string;
  model?: string;
  /** The host's `accountTag` for the account. */
  accountTag?: string;
  /** Which API (`chat.completions`, `responses`, …). */
  endpoint?: string;
  /** The upstream that served the generation, and those tried before it that failed. */
  upstream?: string;
  failedUpstreams?: Array<{ upstream: string; code: string; status: number }>;
  stream?: boolean;
  ttftMs?: number | null;
  usage?: unknown;
  credits?: number | null;
  cancelled?: boolean;
  outcome?: Outcome;
  errorCode?: string;
  /** Whose failure `errorCode` is. */
  errorSource?: 'upstream' | 'gateway';
  /** The per-account limit that refused the request, if one did. */
  limit?: LimitRefusal;
}

/**
 * Reports the end of a request, once per request: its line in the log (info when it went well, warn for client
 * errors, error for upstream failures) and `observer.requestEnded`.
 */
export function logRequestEnd(opts: Pick<ResolvedOptions<unknown>, 'logger' | 'observer'>, line: RequestLogLine): void {
  const { logger, observer } = opts;
  if (observer) {
    const { route, method, status, durationMs, outcome, errorCode, errorSource, limit } = line;
    observer.requestEnded({ route, method, status, durationMs, outcome, errorCode, errorSource, limit, cancelled: line.cancelled ?? status === 499 });
  }
  if (!logger) return;
  const level = line.status >= 500 || line.outcome === 'failed' ? 'error' : line.status >= 400 ? 'warn' : 'info';
  logger[level](line, 'infery-stream request');
}
