import type { IncomingMessage } from 'node:http';

/**
 * The key a client sent: `Authorization: Bearer <key>` (what the OpenAI SDKs send), or `api-key` /
 * `x-api-key` headers. `undefined` when there is none. Use it inside `authenticate`.
 */
export function bearerToken(req: IncomingMessage): string | undefined {
  const auth = req.headers.authorization;
  if (typeof auth === 'string') {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    if (match) return match[1];
  }
  for (const name of ['x-api-key', 'api-key']) {
    const value = req.headers[name];
    if (typeof value === 'string' && value.trim() !== '') return value.trim();
  }
  return undefined;
}
