import type { Transform } from 'node:stream';
import zlib from 'node:zlib';

/**
 * The largest zstd window the gateway decodes with: 8 MiB (`2^23`), the limit RFC 9659 sets for zstd as an HTTP
 * content coding. A frame may ask for a window of up to 2 GiB, allocated before a byte is decoded; unbounded,
 * a few tiny requests would take the process's memory. A frame that asks for more fails to decode (a 400).
 */
export const ZSTD_WINDOW_LOG_MAX = 23;

/** Node's zlib decodes zstd from 22.15 / 24 on (`zlib.createZstdDecompress`); older versions have no zstd. */
type ZstdZlib = typeof zlib & {
  createZstdDecompress?: (options?: { params?: Record<number, number> }) => Transform;
  constants: typeof zlib.constants & { ZSTD_d_windowLogMax?: number };
};
const zstdZlib = zlib as ZstdZlib;

/** True when this Node decodes `Content-Encoding: zstd`. */
export const zstdSupported: boolean =
  typeof zstdZlib.createZstdDecompress === 'function' && typeof zstdZlib.constants.ZSTD_d_windowLogMax === 'number';

/** The content codings the gateway decodes, for error messages: `gzip, deflate, br` and, where Node has it, `zstd`. */
export const SUPPORTED_ENCODINGS: readonly string[] = ['gzip', 'deflate', 'br', ...(zstdSupported ? ['zstd'] : [])];

/**
 * A decoder for an HTTP `Content-Encoding` (gzip, x-gzip, deflate, br, and zstd where Node's zlib has it),
 * `null` for identity (none), or `undefined` for an encoding the gateway does not decode. Callers bound the
 * decoded size themselves (the body limit); zstd's window is bounded here ({@link ZSTD_WINDOW_LOG_MAX}).
 */
export function decoderFor(header: string | string[] | undefined): Transform | null | undefined {
  const encoding = String(header ?? 'identity').trim().toLowerCase();
  if (encoding === 'identity' || encoding === '') return null;
  let decoder: Transform;
  if (encoding === 'gzip' || encoding === 'x-gzip') decoder = zlib.createGunzip();
  else if (encoding === 'deflate') decoder = zlib.createInflate();
  else if (encoding === 'br') decoder = zlib.createBrotliDecompress();
  else if (encoding === 'zstd' && zstdSupported) {
    decoder = zstdZlib.createZstdDecompress!({ params: { [zstdZlib.constants.ZSTD_d_windowLogMax!]: ZSTD_WINDOW_LOG_MAX } });
  } else return undefined;
  // Consumers attach their own error listeners and remove them when they are done; an error after that (the
  // source closing early, corrupt data) must not become an uncaught 'error' event that ends the process.
  decoder.on('error', ignore);
  return decoder;
}

const ignore = (): void => {};
