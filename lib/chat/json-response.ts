import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { InferyError, sendError } from '../errors';
import type { Generation } from '../core/generation';
import type { ResolvedOptions } from '../options';
import { MAX_JSON_DEPTH, walkJson } from '../json-walk';
import { readText } from '../request-body';
import type { UpstreamCall } from '../upstream/upstream';
import { carriesKey, redact } from '../upstream/upstream-headers';
import { writeStreamHead } from './sse-relay';

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
  call: UpstreamCall,
  res: ServerResponse,
  opts: ResolvedOptions<Account>,
): Promise<Record<string, unknown> | undefined> {
  const failed = (err: InferyError): undefined => {
    sendError(res, err);
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
  if (carriesKey(text, opts.upstream.apiKey)) text = redact(text, opts.upstream.apiKey);
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
  gen.recordUsage(json.usage);
  if (Array.isArray(json.choices)) {
    for (const choice of json.choices as Array<Record<string, unknown> | null>) {
      gen.tally.addMessage(choice?.message);
      if (typeof choice?.finish_reason === 'string') gen.markChoiceFinished(choice.index, choice.finish_reason);
    }
  }
  return json;
}

/**
 * Answers a `"stream": false` request: the provider's JSON with a top-level `credits_used`, and the usage that
 * was billed (the estimate, marked, when the provider's was unusable).
 */
export async function relayJson<Account>(
  gen: Generation<Account>,
  body: Readable,
  call: UpstreamCall,
  res: ServerResponse,
  opts: ResolvedOptions<Account>,
): Promise<void> {
  const json = await readCompletion(gen, body, call, res, opts);
  if (!json) return;
  const credits = await gen.finish('completed');
  json.usage = gen.usage();
  if (res.destroyed || res.writableEnded) return;
  const text = JSON.stringify(credits === undefined ? json : { ...json, credits_used: credits });
  res.statusCode = 200;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(text));
  res.end(text);
}

/**
 * Answers a `"stream": true` request whose provider ignored `stream` and sent one JSON completion: the
 * completion as a proper stream — each choice's content, refusal and tool calls as one delta, then its finish
 * chunk, the provider's usage, the gateway's usage with `credits_used`, and `[DONE]`.
 */
export async function relayJsonAsStream<Account>(
  gen: Generation<Account>,
  body: Readable,
  call: UpstreamCall,
  res: ServerResponse,
  opts: ResolvedOptions<Account>,
): Promise<void> {
  const json = await readCompletion(gen, body, call, res, opts);
  if (!json) return;
  const base = { id: gen.chunkId, object: 'chat.completion.chunk', created: gen.created, model: gen.providerModel };
  const events: string[] = [];
  const event = (chunk: object): number => events.push(`data: ${JSON.stringify({ ...base, ...chunk })}\n\n`);
  const choices = Array.isArray(json.choices) ? (json.choices as Array<Record<string, unknown> | null>) : [];
  choices.forEach((choice, position) => {
    const index = typeof choice?.index === 'number' ? choice.index : position;
    const message = (typeof choice?.message === 'object' && choice.message !== null ? choice.message : {}) as Record<string, unknown>;
    const { tool_calls: toolCalls, ...rest } = message;
    const delta: Record<string, unknown> = { ...rest, role: typeof rest.role === 'string' ? rest.role : 'assistant' };
    if (Array.isArray(toolCalls)) delta.tool_calls = toolCalls.map((call, i) => ({ index: i, ...(call as object) }));
    event({ choices: [{ index, delta, logprobs: choice?.logprobs ?? null, finish_reason: null }] });
    event({ choices: [{ index, delta: {}, finish_reason: typeof choice?.finish_reason === 'string' ? choice.finish_reason : 'stop' }] });
  });
  if (gen.providerUsage) event({ choices: [], usage: json.usage });
  writeStreamHead(res);
  if (!res.destroyed) res.write(events.join(''));
  const credits = await gen.finish('completed');
  if (res.destroyed || res.writableEnded) return;
  const tail = credits === undefined ? '' : `data: ${JSON.stringify({ ...base, choices: [], usage: gen.usage(), credits_used: credits })}\n\n`;
  res.end(`${tail}data: [DONE]\n\n`);
}
