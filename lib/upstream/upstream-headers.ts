import type { IncomingMessage } from 'node:http';
import type { UpstreamSettings } from '../options';

const USER_AGENT = 'infery-stream/0.1';

/**
 * The headers the gateway itself sends upstream: the key, static `upstream.headers`, and only the client
 * headers in `forwardHeaders`. The client's Authorization and cookies never get past this function.
 */
export function gatewayHeaders(opts: UpstreamSettings, req: IncomingMessage): Record<string, string> {
  const headers: Record<string, string> = { 'user-agent': USER_AGENT, ...opts.upstream.headers };
  for (const name of opts.forwardHeaders) {
    const value = req.headers[name];
    if (typeof value === 'string') headers[name] = value;
    else if (Array.isArray(value)) headers[name] = value.join(', ');
  }
  if (opts.upstream.apiKey) headers.authorization = `Bearer ${opts.upstream.apiKey}`;
  return headers;
}

/** Client headers a pass-through request keeps besides `forwardHeaders`: those that describe its body. */
export const BODY_HEADERS = new Set(['content-type', 'content-length', 'transfer-encoding', 'accept', 'accept-encoding']);

const KEY_LIKE = /\b(sk|rk|pk)-[A-Za-z0-9_*-]{8,}/g;

/** Removes the upstream key, and anything shaped like a provider key, from text a client will read. */
export function redact(text: string, apiKey: string | undefined): string {
  let out = apiKey ? text.split(apiKey).join('[redacted]') : text;
  out = out.replace(KEY_LIKE, '[redacted]');
  return out;
}
