import type { Transform } from 'node:stream';
import zlib from 'node:zlib';

/**
 * A decoder for an HTTP `Content-Encoding` (gzip, x-gzip, deflate, br), `null` for identity (none), or
 * `undefined` for an encoding the gateway does not decode.
 */
export function decoderFor(header: string | string[] | undefined): Transform | null | undefined {
  const encoding = String(header ?? 'identity').trim().toLowerCase();
  if (encoding === 'identity' || encoding === '') return null;
  let decoder: Transform;
  if (encoding === 'gzip' || encoding === 'x-gzip') decoder = zlib.createGunzip();
  else if (encoding === 'deflate') decoder = zlib.createInflate();
  else if (encoding === 'br') decoder = zlib.createBrotliDecompress();
  else return undefined;
  // Consumers attach their own error listeners and remove them when they are done; an error after that (the
  // source closing early, corrupt data) must not become an uncaught 'error' event that ends the process.
  decoder.on('error', ignore);
  return decoder;
}

const ignore = (): void => {};
