import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { UpstreamSettings, UpstreamTarget } from './upstream-settings';

const USER_AGENT = 'infery-stream/0.1';
/** The Messages API version sent to an Anthropic upstream when neither the client nor the upstream's headers name one. */
export const ANTHROPIC_VERSION = '2023-06-01';

/** A request header's value, repeated values joined. */
function headerValue(req: IncomingMessage | undefined, name: string): string | undefined {
  const value = req?.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

/**
 * The headers that carry the gateway's key in the upstream's dialect: `Authorization: Bearer` for `openai`;
 * `x-api-key` and `anthropic-version` (the client's, else the upstream's static one, else 2023-06-01) for
 * `anthropic`, with the client's `anthropic-beta` features passed on unchanged (Claude Code needs them).
 */
export function keyHeaders(target: Pick<UpstreamTarget, 'api' | 'apiKey' | 'headers'>, req?: IncomingMessage): Record<string, string> {
  if (target.api !== 'anthropic') return target.apiKey ? { authorization: `Bearer ${target.apiKey}` } : {};
  const out: Record<string, string> = { 'anthropic-version': headerValue(req, 'anthropic-version') ?? target.headers['anthropic-version'] ?? ANTHROPIC_VERSION };
  const beta = headerValue(req, 'anthropic-beta');
  if (beta !== undefined && beta !== '') out['anthropic-beta'] = beta;
  if (target.apiKey) out['x-api-key'] = target.apiKey;
  return out;
}

/**
 * The headers the gateway itself sends upstream: the key (see {@link keyHeaders}), static `upstream.headers`,
 * only the client headers in `forwardHeaders`, and `extra` (trace context). The client's key (`Authorization`, `x-api-key`, `api-key`)
 * and cookies never get past this function.
 */
export function gatewayHeaders(opts: UpstreamSettings, req: IncomingMessage, extra?: Record<string, string>): Record<string, string> {
  const headers: Record<string, string> = { 'user-agent': USER_AGENT, ...opts.upstream.headers };
  for (const name of opts.forwardHeaders) {
    const value = req.headers[name];
    if (typeof value === 'string') headers[name] = value;
    else if (Array.isArray(value)) headers[name] = value.join(', ');
  }
  if (extra) Object.assign(headers, extra);
  return Object.assign(headers, keyHeaders(opts.upstream, req));
}

/**
 * Client headers a pass-through request keeps besides `forwardHeaders`: those that describe its body, and
 * `accept`. Not `accept-encoding`: the gateway asks for `identity`, so that it can read what it redacts.
 */
export const BODY_HEADERS = new Set(['content-type', 'content-length', 'transfer-encoding', 'accept']);

/**
 * Provider response headers a pass-through answer may carry to the client: what describes the body, the
 * provider's request id and processing time, rate-limit and retry hints. Everything else (`server`, `via`,
 * `set-cookie`, `www-authenticate`, `location`, `openai-organization`, internal headers, hop-by-hop headers) is
 * dropped.
 */
const RESPONSE_HEADERS = new Set([
  'content-type',
  'content-length',
  'content-encoding',
  'cache-control',
  'x-request-id',
  'openai-processing-ms',
  'openai-version',
  'retry-after',
  'retry-after-ms',
]);
const RESPONSE_HEADER_PREFIXES = ['x-ratelimit-'];

/**
 * The allow-listed headers of a provider's response, values redacted. A header the gateway already set on
 * `res` (its own `X-Request-Id`) is kept, not overwritten.
 */
export function passThroughResponseHeaders(
  headers: IncomingHttpHeaders,
  apiKey: string | undefined,
  alreadySet: (name: string) => boolean = () => false,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || alreadySet(name)) continue;
    if (!RESPONSE_HEADERS.has(name) && !RESPONSE_HEADER_PREFIXES.some((prefix) => name.startsWith(prefix))) continue;
    out[name] = redact(Array.isArray(value) ? value.join(', ') : value, apiKey);
  }
  return out;
}

const KEY_LIKE = /\b(sk|rk|pk)-[A-Za-z0-9_*-]{8,}/g;

/** Removes the upstream key, and anything shaped like a provider key, from text a client or a log will read. */
export function redact(text: string, apiKey: string | undefined): string {
  let out = text;
  if (apiKey) {
    out = out.split(apiKey).join('[redacted]');
    // the secret part alone too, as a provider may echo it without its `sk-` / `sk-proj-` prefix
    const secret = keySecret(apiKey);
    if (secret) out = out.split(secret).join('[redacted]');
  }
  return out.replace(KEY_LIKE, '[redacted]');
}

/** True when `text` carries the upstream key (or its secret part): the cheap check before {@link redact}. */
export function carriesKey(text: string, apiKey: string | undefined): boolean {
  if (!apiKey) return false;
  if (text.includes(apiKey)) return true;
  const secret = keySecret(apiKey);
  return secret !== undefined && text.includes(secret);
}

/** The key without its `sk-` / `sk-proj-` style prefix, when that leaves a secret of 16 or more characters. */
export function keySecret(apiKey: string): string | undefined {
  const secret = apiKey.replace(/^[A-Za-z]{2,8}-(?:[A-Za-z]{2,8}-)?/, '');
  return secret !== apiKey && secret.length >= 16 ? secret : undefined;
}
