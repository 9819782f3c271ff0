import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { InferyError } from '../errors';

/**
 * The provider's answer body, decoded: the gateway asks for `identity`, but a provider that compresses anyway
 * (gzip, deflate, br) is decoded as it streams, with backpressure. Decoded sizes stay bounded by
 * `maxEventBytes` / `maxResponseBytes` downstream, so a compression bomb cannot grow memory. An unknown
 * encoding is a 502.
 */
export function decodedBody(res: IncomingMessage): Readable {
  const encoding = String(res.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
  let decoder: zlib.Gunzip | zlib.Inflate | zlib.BrotliDecompress;
  if (encoding === 'identity' || encoding === '') return res;
  if (encoding === 'gzip' || encoding === 'x-gzip') decoder = zlib.createGunzip();
  else if (encoding === 'deflate') decoder = zlib.createInflate();
  else if (encoding === 'br') decoder = zlib.createBrotliDecompress();
  else {
    throw new InferyError(502, 'upstream_invalid_response', `The upstream provider answered with an unsupported Content-Encoding (${encoding.slice(0, 40)}).`, {
      type: 'upstream_error',
    });
  }
  // the decoder reports corrupt data as an error event; a closed upstream ends it too
  res.on('error', (err) => decoder.destroy(err));
  res.on('close', () => {
    if (!res.readableEnded) decoder.destroy(new Error('upstream closed'));
  });
  return res.pipe(decoder);
}
