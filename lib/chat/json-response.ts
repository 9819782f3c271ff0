import type { IncomingMessage, ServerResponse } from 'node:http';
import { InferyError, sendError } from '../errors';
import type { Generation } from '../core/generation';
import type { ResolvedOptions } from '../options';
import { readText } from '../request-body';
import type { UpstreamCall } from '../upstream/upstream';

/**
 * Answers a `"stream": false` request: reads the provider's JSON (bounded by `maxResponseBytes` and
 * `idleTimeout`), meters it, and returns it with a top-level `credits_used`. The caller's client-close
 * listener stays attached until this returns: a client that leaves first aborts the upstream and is metered
 * as cancelled, and this returns without answering. A provider that answered 2xx and then failed has processed
 * the prompt: the answer becomes a 502 and is settled as `failed` — at the worst case when the answer was larger
 * than `maxResponseBytes` (it was generated in full), else at the prompt estimate.
 */
export async function relayJson<Account>(
  gen: Generation<Account>,
  upstream: IncomingMessage,
  call: UpstreamCall,
  res: ServerResponse,
  opts: ResolvedOptions<Account>,
): Promise<void> {
  const failed = (err: InferyError): void => {
    sendError(res, err);
    void gen.finish('failed', err);
  };
  const timer = setTimeout(() => call.abort(), opts.idleTimeout);
  let text: string;
  try {
    text = await readText(upstream, opts.maxResponseBytes);
  } catch (err) {
    call.abort();
    if (gen.finished) return;
    if (err instanceof RangeError) {
      gen.billWorstCase();
      failed(new InferyError(502, 'upstream_response_too_large', `The upstream answer is larger than ${opts.maxResponseBytes} bytes.`, { type: 'upstream_error' }));
      return;
    }
    failed(new InferyError(502, 'upstream_connection_lost', 'The connection to the upstream provider was lost before its answer was complete.', { type: 'upstream_error' }));
    return;
  } finally {
    clearTimeout(timer);
  }
  if (gen.finished) return;

  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new TypeError('not an object');
  } catch {
    failed(new InferyError(502, 'upstream_invalid_response', 'The upstream provider answered with something that is not a JSON object.', { type: 'upstream_error' }));
    return;
  }
  if (typeof json.id === 'string' && json.id !== '') gen.providerId = json.id;
  if (typeof json.model === 'string' && json.model !== '') gen.providerModel = json.model;
  gen.recordUsage(json.usage);
  if (Array.isArray(json.choices)) {
    for (const choice of json.choices as Array<Record<string, unknown> | null>) {
      gen.tally.addMessage(choice?.message);
      if (typeof choice?.finish_reason === 'string') gen.markChoiceFinished(choice.index, choice.finish_reason);
    }
  }
  const credits = await gen.finish('completed');
  // the answer shows exactly the usage that was billed (the estimate, marked, when the provider's was unusable)
  json.usage = gen.usage();
  if (res.destroyed || res.writableEnded) return;
  const body = JSON.stringify(credits === undefined ? json : { ...json, credits_used: credits });
  res.statusCode = upstream.statusCode ?? 200;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}
