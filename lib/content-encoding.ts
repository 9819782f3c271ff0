import type { Transform } from 'node:stream';
import zlib from 'node:zlib';

/**
 * A decoder for an HTTP `Content-Encoding` (gzip, x-gzip, deflate, br), `null` for identity (none), or
 * `undefined` for an encoding the gateway does not decode.
 */
export function decoderFor(header: string | string[] | undefined): Transform | null | undefined {
  const encoding = String(header ?? 'identity').trim().toLowerCase();
  if (encoding === 'identity' || encoding === '') return null;
  if (encoding === 'gzip' || encoding === 'x-gzip') return zlib.createGunzip();
  if (encoding === 'deflate') return zlib.createInflate();
  if (encoding === 'br') return zlib.createBrotliDecompress();
  return undefined;
}
