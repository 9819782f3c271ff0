import type { IncomingMessage, ServerResponse } from 'node:http';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { InferyError, sendError } from '../base/errors';
import { sendUnbufferedHead } from './unbuffered-head';
import { decodedBody } from '../services/upstream/decode';
import { keySecret, passThroughResponseHeaders, redact } from '../services/upstream/upstream-headers';

/** Largest pass-through body the gateway reads whole to redact (non-2xx answers, small 2xx); the rest is cut off. */
export const MAX_INSPECTED_BODY = 64 * 1024;
const REDACTED = '[redacted]';
const noop = (): void => {};

/** How a pass-through response ended, for its log line. */
export interface RelayEnd {
  status: number;
  errorCode?: string;
}

/**
 * Writes a provider's answer to a pass-through request (http-proxy-middleware with `selfHandleResponse`), so
 * that nothing of the provider's side leaks:
 * - only allow-listed headers (see `passThroughResponseHeaders`), never the provider's status text;
 * - a redirect is neither followed nor forwarded: 502 `upstream_invalid_response`, no `Location`;
 * - a non-2xx body is read (at most 64 KiB), redacted and sent with its own `Content-Length`;
 * - a 2xx body has the upstream key replaced as it streams (`KeyScrubber`, bounded memory), a small one is
 *   read whole so it keeps an exact `Content-Length`;
 * - an SSE answer is sent with `Cache-Control: no-cache, no-transform` and `X-Accel-Buffering: no`, so that
 *   `compression()` and proxies pass each event on as it comes.
 * Calls `done` once, when the response is finished or abandoned.
 */
export function relayPassThroughResponse(
  proxyRes: IncomingMessage,
  req: IncomingMessage,
  res: ServerResponse,
  apiKey: string | undefined,
  done: (end: RelayEnd) => void,
): void {
  proxyRes.on('error', noop); // a socket error surfaces where the body is read or piped
  const status = proxyRes.statusCode ?? 502;
  if (res.headersSent || res.destroyed) {
    proxyRes.destroy();
    done({ status: 499 });
    return;
  }
  if (status >= 300 && status <= 399 && status !== 304) {
    proxyRes.destroy();
    const err = new InferyError(502, 'upstream_invalid_response', `The upstream provider answered with a redirect (${status}), which the gateway does not follow.`, {
      type: 'upstream_error',
    });
    sendError(res, err);
    done({ status: err.status, errorCode: err.code });
    return;
  }
  const headers = passThroughResponseHeaders(proxyRes.headers, apiKey, (name) => res.hasHeader(name));
  res.statusCode = status;
  if (req.method === 'HEAD' || status === 204 || status === 304) {
    // no body: the headers as they are (a HEAD's Content-Length describes the GET's body)
    proxyRes.resume();
    setHeaders(res, headers);
    res.end();
    done({ status });
    return;
  }

  const ok = status >= 200 && status <= 299;
  const sse = ok && /^\s*text\/event-stream\b/i.test(proxyRes.headers['content-type'] ?? '');
  if (ok && !apiKey) {
    // nothing to redact (no key): the body passes as the provider sent it, encoding and length included
    setHeaders(res, headers);
    if (sse) sendUnbufferedHead(res);
    stream(proxyRes, proxyRes, [], res, status, done);
    return;
  }
  let body: Readable;
  try {
    body = decodedBody(proxyRes); // the gateway asks for identity; a provider that compresses anyway is decoded
  } catch (caught) {
    // an encoding the gateway cannot read is a body it cannot redact
    proxyRes.destroy();
    const err = ok
      ? (caught as InferyError)
      : new InferyError(status, 'upstream_error', `The upstream provider answered ${status}.`, { type: 'upstream_error' });
    sendError(res, err);
    done({ status: err.status, errorCode: err.code });
    return;
  }
  // the body the client gets is not the provider's bytes: their length and encoding no longer apply
  delete headers['content-encoding'];
  delete headers['content-length'];

  const declared = Number(proxyRes.headers['content-length']);
  const small = body === proxyRes && !sse && Number.isInteger(declared) && declared >= 0 && declared <= MAX_INSPECTED_BODY;
  if (!ok || small) {
    sendInspected(proxyRes, body, res, headers, apiKey)
      .then(done, () => {
        res.destroy();
        done({ status: 499 });
      })
      .catch(noop);
    return;
  }

  setHeaders(res, headers);
  if (sse) sendUnbufferedHead(res);
  // the whole key, then its secret part alone (a provider may echo it without the `sk-` prefix)
  const secret = apiKey ? keySecret(apiKey) : undefined;
  const scrubbers = apiKey ? [new KeyScrubber(apiKey), ...(secret ? [new KeyScrubber(secret)] : [])] : [];
  stream(proxyRes, body, scrubbers, res, status, done);
}

/**
 * Pipes the provider's body to the client with backpressure; either side failing ends both (the client then
 * sees a cut body, never one that looks complete). Plain `pipe` rather than `pipeline`, which would stack
 * half a dozen more listeners on a response that compression() and the host already listen to.
 */
function stream(proxyRes: IncomingMessage, body: Readable, transforms: Transform[], res: ServerResponse, status: number, done: (end: RelayEnd) => void): void {
  let settled = false;
  const settle = (end: RelayEnd): void => {
    if (settled) return;
    settled = true;
    done(end);
  };
  const fail = (end: RelayEnd): void => {
    settle(end);
    proxyRes.destroy();
    body.destroy();
    for (const transform of transforms) transform.destroy();
    res.destroy();
  };
  const upstreamFailed = (): void => fail({ status: 502, errorCode: 'upstream_connection_lost' });
  proxyRes.once('error', upstreamFailed);
  proxyRes.once('close', () => {
    if (!proxyRes.complete) upstreamFailed();
  });
  // a body that does not decode (the decoder's error; an upstream that closed early is caught above first)
  if (body !== proxyRes) body.once('error', () => fail({ status: 502, errorCode: 'upstream_invalid_response' }));
  res.once('close', () => (res.writableFinished ? settle({ status }) : fail({ status: 499 })));
  let source = body;
  for (const transform of transforms) source = source.pipe(transform);
  source.pipe(res);
}

function setHeaders(res: ServerResponse, headers: Record<string, string>): void {
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
}

/** Reads the body (bounded), redacts it and sends it whole with its own `Content-Length`. */
async function sendInspected(
  proxyRes: IncomingMessage,
  body: Readable,
  res: ServerResponse,
  headers: Record<string, string>,
  apiKey: string | undefined,
): Promise<RelayEnd> {
  let read: { body: Buffer; truncated: boolean };
  try {
    read = await readInspected(proxyRes, body);
  } catch (caught) {
    // the body did not decode, or the provider's connection died before it ended
    const undecodable = String((caught as NodeJS.ErrnoException).code).startsWith('Z_');
    const err = undecodable
      ? new InferyError(502, 'upstream_invalid_response', 'The upstream provider sent a body that does not match its Content-Encoding.', { type: 'upstream_error' })
      : new InferyError(502, 'upstream_connection_lost', 'The upstream provider closed the connection before its answer ended.', { type: 'upstream_error' });
    sendError(res, err);
    return { status: err.status, errorCode: err.code };
  }
  if (res.destroyed || res.headersSent) return { status: 499 };
  const out = Buffer.from(redact(withoutPartialKey(read.body, read.truncated, apiKey).toString('utf8'), apiKey), 'utf8');
  setHeaders(res, headers);
  res.setHeader('Content-Length', out.length);
  res.end(out);
  return { status: res.statusCode };
}

/** Reads at most `MAX_INSPECTED_BODY` bytes of the (decoded) body; `truncated` when there was more. */
async function readInspected(proxyRes: IncomingMessage, body: Readable): Promise<{ body: Buffer; truncated: boolean }> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      chunks.push(chunk as Buffer);
      size += (chunk as Buffer).length;
      if (size > MAX_INSPECTED_BODY) break; // leaving the loop destroys the (decoded) body
    }
  } finally {
    if (!proxyRes.complete) proxyRes.destroy(); // cut off, or failed: the rest is not read
  }
  const whole = Buffer.concat(chunks, size);
  if (size > MAX_INSPECTED_BODY) return { body: whole.subarray(0, MAX_INSPECTED_BODY), truncated: true };
  return { body: whole, truncated: false };
}

/** A body cut off at the limit may end with the start of the key: that part goes too. */
function withoutPartialKey(body: Buffer, truncated: boolean, apiKey: string | undefined): Buffer {
  if (!truncated || !apiKey) return body;
  return body.subarray(0, body.length - partialKeyAtEnd(body, 0, Buffer.from(apiKey, 'utf8')));
}

/**
 * The length of the longest end of `data[from..]` that is the beginning of `key` (shorter than the key): the
 * bytes that could be the first part of a key split across two chunks.
 */
function partialKeyAtEnd(data: Buffer, from: number, key: Buffer): number {
  const first = key[0];
  for (let k = Math.min(key.length - 1, data.length - from); k > 0; k--) {
    const start = data.length - k;
    if (data[start] === first && data.compare(key, 0, k, start, data.length) === 0) return k;
  }
  return 0;
}

/**
 * Replaces every occurrence of the upstream key in a byte stream with `[redacted]`, also when a chunk boundary
 * splits it. Between chunks it holds back only the end of a chunk that could begin the key (fewer bytes than
 * the key), so memory stays bounded and an SSE event, which ends with a blank line, is never held back.
 */
export class KeyScrubber extends Transform {
  private readonly key: Buffer;
  private readonly replacement = Buffer.from(REDACTED, 'utf8');
  private held: Buffer | undefined;

  constructor(key: string) {
    super();
    this.key = Buffer.from(key, 'utf8');
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const data = this.held ? Buffer.concat([this.held, chunk]) : chunk;
    this.held = undefined;
    let at = data.indexOf(this.key);
    if (at === -1 && data.length > 0 && partialKeyAtEnd(data, 0, this.key) === 0) {
      callback(null, data); // the usual chunk: passed on as it is
      return;
    }
    const parts: Buffer[] = [];
    let from = 0;
    while (at !== -1) {
      parts.push(data.subarray(from, at), this.replacement);
      from = at + this.key.length;
      at = data.indexOf(this.key, from);
    }
    const keep = partialKeyAtEnd(data, from, this.key);
    parts.push(data.subarray(from, data.length - keep));
    if (keep > 0) this.held = Buffer.from(data.subarray(data.length - keep)); // a copy: the chunk is not retained
    const out = Buffer.concat(parts);
    callback(null, out.length > 0 ? out : undefined);
  }

  override _flush(callback: TransformCallback): void {
    callback(null, this.held);
  }
}
