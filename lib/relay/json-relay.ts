import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { InferyError, sendError } from '../base/errors';
import { MAX_JSON_DEPTH, walkJson } from '../base/json-walk';
import { readText } from '../base/request-body';
import type { Generation } from '../core/generation';
import type { ResolvedOptions } from '../options/resolved';
import type { UpstreamCall } from '../services/upstream/upstream';
import { carriesKey, redact } from '../services/upstream/upstream-headers';
import { writeStreamHead } from './stream-relay';
import type { JsonDialect, StreamDialect } from './surface';

/**
 * Reads the provider's JSON completion (bounded by `maxResponseBytes`, and by `idleTimeout` in all) and takes
 * what metering needs from it. The caller's client-close listener stays attached meanwhile: a client that
 * leaves first aborts the upstream and is metered as cancelled, and this resolves `undefined`. A provider that
 * answered 2xx and then failed has processed the prompt: the answer becomes a 502 and is settled as `failed` —
 * at the worst case when the answer was larger than `maxResponseBytes` (it was generated in full), else at the
 * prompt estimate — and this resolves `undefined`.
 */
async function readCompletion<Account>(
  gen: Generation<Account>,
  body: Readable,
  call: Pick<UpstreamCall, 'abort'>,
  res: ServerResponse,
  opts: ResolvedOptions<Account>,
  dialect: JsonDialect,
): Promise<Record<string, unknown> | undefined> {
  const failed = (err: InferyError): undefined => {
    sendError(res, err, false, dialect.errorBody);
    void gen.finish('failed', err);
    return undefined;
  };
  const timer = setTimeout(() => call.abort(), Math.min(opts.idleTimeout, opts.maxDuration));
  let text: string;
  try {
    text = await readText(body, opts.maxResponseBytes);
  } catch (err) {
    call.abort();
    if (gen.finished) return undefined;
    if (err instanceof RangeError) {
      gen.billWorstCase();
      return failed(new InferyError(502, 'upstream_response_too_large', `The upstream answer is larger than ${opts.maxResponseBytes} bytes.`, { type: 'upstream_error' }));
    }
    return failed(new InferyError(502, 'upstream_connection_lost', 'The connection to the upstream provider was lost before its answer was complete.', { type: 'upstream_error' }));
  } finally {
    clearTimeout(timer);
  }
  if (gen.finished) return undefined;

  // a provider that echoes the gateway's key in its answer never gets it to the client
  if (carriesKey(text, gen.upstreamKey)) text = redact(text, gen.upstreamKey);
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new TypeError('not an object');
  } catch {
    return failed(new InferyError(502, 'upstream_invalid_response', 'The upstream provider answered with something that is not a JSON object.', { type: 'upstream_error' }));
  }
  if ((await walkJson(json, () => undefined)) !== 'ok') {
    // it could not be serialised again for the client
    return failed(new InferyError(502, 'upstream_invalid_response', `The upstream answer is nested more than ${MAX_JSON_DEPTH} levels deep.`, { type: 'upstream_error' }));
  }
  if (gen.finished) return undefined;
  if (typeof json.id === 'string' && json.id !== '') gen.providerId = json.id;
  if (typeof json.model === 'string' && json.model !== '') gen.providerModel = json.model;
  if (typeof json.created === 'number') gen.created = json.created;
  dialect.read(gen as Generation<unknown>, json);
  return json;
}

/**
 * Answers a `"stream": false` request: the provider's JSON with the usage that was billed where the API keeps it
 * (the estimate, marked, when the provider's was unusable) and a top-level `credits_used`.
 */
export async function relayJson<Account>(
  gen: Generation<Account>,
  body: Readable,
  call: Pick<UpstreamCall, 'abort'>,
  res: ServerResponse,
  opts: ResolvedOptions<Account>,
  dialect: JsonDialect,
): Promise<void> {
  const json = await readCompletion(gen, body, call, res, opts, dialect);
  if (!json) return;
  const credits = await gen.finish('completed');
  if (res.destroyed || res.writableEnded) return;
  const text = JSON.stringify(dialect.answer(gen as Generation<unknown>, json, credits));
  res.statusCode = 200;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(text));
  res.end(text);
}

/**
 * Answers a `"stream": true` request whose provider ignored `stream` and sent one JSON answer: the answer as the
 * API's stream events (`stream.fromJson`), then, once settled, the stream's closing (credits, terminator).
 */
export async function relayJsonAsStream<Account>(
  gen: Generation<Account>,
  body: Readable,
  call: Pick<UpstreamCall, 'abort'>,
  res: ServerResponse,
  opts: ResolvedOptions<Account>,
  dialect: JsonDialect,
  stream: StreamDialect,
): Promise<void> {
  const json = await readCompletion(gen, body, call, res, opts, dialect);
  if (!json) return;
  const events = stream.fromJson(gen as Generation<unknown>, json);
  writeStreamHead(res);
  if (!res.destroyed && events !== '') res.write(events);
  const credits = await gen.finish('completed');
  if (res.destroyed || res.writableEnded) return;
  res.end(stream.closing(gen as Generation<unknown>, credits));
}
