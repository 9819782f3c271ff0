import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { decoderFor } from '../../base/content-encoding';
import { InferyError } from '../../base/errors';

/**
 * The provider's answer body, decoded: the gateway asks for `identity`, but a provider that compresses anyway
 * (gzip, deflate, br, zstd where Node has it) is decoded as it streams, with backpressure. Decoded sizes stay bounded by
 * `maxEventBytes` / `maxResponseBytes` downstream, so a compression bomb cannot grow memory. An unknown
 * encoding is a 502.
 */
export function decodedBody(res: IncomingMessage): Readable {
  const decoder = decoderFor(res.headers['content-encoding']);
  if (decoder === null) return res;
  if (decoder === undefined) {
    const encoding = String(res.headers['content-encoding']).slice(0, 40);
    throw new InferyError(502, 'upstream_invalid_response', `The upstream provider answered with an unsupported Content-Encoding (${encoding}).`, {
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
