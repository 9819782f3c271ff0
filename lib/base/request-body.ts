import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { decoderFor, SUPPORTED_ENCODINGS } from './content-encoding';
import { InferyError } from './errors';
import { MAX_JSON_DEPTH, walkJson } from './json-walk';

/** A request as Express hands it over: `body` is set when a body parser already ran. */
type MaybeParsed = IncomingMessage & { body?: unknown };

/**
 * The request's JSON body, whether or not the host app ran `express.json()` first. Reads the stream itself
 * when nothing parsed it (whatever the Content-Type, as curl users often omit it). Throws 413 past `limit`
 * bytes and 400 for anything that is not a JSON object.
 */
export async function readJsonBody(req: MaybeParsed, limit: number): Promise<Record<string, unknown>> {
  let parsed: unknown = req.body;
  if (parsed === undefined || (typeof parsed === 'object' && parsed !== null && !Buffer.isBuffer(parsed) && !req.readableEnded && Object.keys(parsed).length === 0)) {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) throw tooLarge(limit);
    const body = decodedRequest(req);
    let text: string;
    try {
      text = await readText(body, limit);
    } catch (err) {
      if (err instanceof RangeError) throw tooLarge(limit);
      const encoding = req.headers['content-encoding'];
      throw new InferyError(400, 'invalid_body', encoding ? `The request body could not be decoded as ${String(encoding).slice(0, 40)}.` : 'The request body could not be read.', { cause: err });
    }
    parsed = parseJson(text);
  } else if (typeof parsed === 'object' && parsed !== null && !Buffer.isBuffer(parsed)) {
    // express.json() ran before us, with its own limit: ours still applies
    const declared = Number(req.headers['content-length']);
    let size = declared;
    if (!Number.isFinite(declared)) {
      try {
        size = Buffer.byteLength(JSON.stringify(parsed));
      } catch {
        size = 0; // too deep to serialise: validation refuses it with a clear 400
      }
    }
    if (size > limit) throw tooLarge(limit);
  } else if (Buffer.isBuffer(parsed) || typeof parsed === 'string') {
    // express.raw() or express.text() ran before us
    if (Buffer.byteLength(parsed) > limit) throw tooLarge(limit);
    parsed = parseJson(parsed.toString());
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new InferyError(400, 'invalid_body', 'The request body must be a JSON object.');
  }
  return parsed as Record<string, unknown>;
}

/**
 * The request body, decoded when the client compressed it (`Content-Encoding: gzip`, `deflate`, `br`, or `zstd`
 * where Node's zlib has it, as `express.json()` does); the size limit applies to the decoded bytes, so a
 * compression bomb is a 413. Other encodings are a 415.
 */
function decodedRequest(req: IncomingMessage): Readable {
  const decoder = decoderFor(req.headers['content-encoding']);
  if (decoder === null) return req;
  if (decoder === undefined) {
    throw new InferyError(415, 'unsupported_encoding', `The request body's Content-Encoding ${String(req.headers['content-encoding']).slice(0, 40)} is not supported; send ${SUPPORTED_ENCODINGS.join(', ')} or none.`);
  }
  req.on('error', (err) => decoder.destroy(err));
  return req.pipe(decoder);
}

function parseJson(text: string): unknown {
  if (text.trim() === '') {
    throw new InferyError(400, 'invalid_body', 'The request body is empty; send a JSON object with `model` and `messages`.');
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new InferyError(400, 'invalid_json', `The request body is not valid JSON: ${(err as Error).message}`);
  }
}

function tooLarge(limit: number): InferyError {
  return new InferyError(413, 'request_too_large', `The request body is larger than the limit of ${limit} bytes.`);
}

/** Most values (objects, arrays, strings, numbers…) a request body may hold: a long chat holds a few thousand. */
export const MAX_BODY_VALUES = 100_000;

/**
 * 400 `invalid_json` when the body nests deeper than {@link MAX_JSON_DEPTH} (it could not be serialised again)
 * or holds more than {@link MAX_BODY_VALUES} values (serialising it again would hold the event loop for long).
 * Walked iteratively, yielding.
 */
export async function checkBodyShape(body: Record<string, unknown>): Promise<void> {
  const shape = await walkJson(body, () => undefined, MAX_JSON_DEPTH, undefined, MAX_BODY_VALUES);
  if (shape === 'too-deep') throw new InferyError(400, 'invalid_json', `The request body is nested more than ${MAX_JSON_DEPTH} levels deep.`);
  if (shape === 'too-many') {
    throw new InferyError(400, 'invalid_json', `The request body holds more than ${MAX_BODY_VALUES} JSON values; send fewer messages or parts.`);
  }
}

/**
 * Checks the fields the gateway relies on. The rest is the provider's to judge.
 */
export function validateChatRequest(body: Record<string, unknown>): { model: string; stream: boolean } {
  const model = requireModel(body);
  if (!Array.isArray(body.messages) || body.messages.length === 0) {
    throw new InferyError(400, 'missing_required_parameter', 'You must provide `messages`: a non-empty array of chat messages.', { param: 'messages' });
  }
  return { model, stream: checkStream(body) };
}

/** The request's `model`: a non-empty string, else 400. */
export function requireModel(body: Record<string, unknown>): string {
  if (typeof body.model !== 'string' || body.model.trim() === '') {
    throw new InferyError(400, 'missing_required_parameter', 'You must provide a `model` parameter (a non-empty string).', { param: 'model' });
  }
  return body.model;
}

/**
 * Whether `value` is text as the completions and embeddings APIs take it: a string, or a non-empty list of
 * strings, of token ids, or of token-id arrays (one kind throughout).
 */
export function isTextOrTokens(value: unknown): boolean {
  if (typeof value === 'string') return true;
  if (!Array.isArray(value) || value.length === 0) return false;
  return value.every((p) => typeof p === 'string') || value.every((p) => typeof p === 'number') || value.every((p) => Array.isArray(p));
}

/** Whether the request asks for a stream; 400 when `stream` is not a boolean or `stream_options` not an object. */
export function checkStream(body: Record<string, unknown>): boolean {
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean') {
    throw new InferyError(400, 'invalid_type', '`stream` must be a boolean.', { param: 'stream' });
  }
  const options = body.stream_options;
  if (options !== undefined && options !== null && (typeof options !== 'object' || Array.isArray(options))) {
    throw new InferyError(400, 'invalid_type', '`stream_options` must be an object.', { param: 'stream_options' });
  }
  return body.stream === true;
}

/** Reads a whole body as text, rejecting (and pausing the stream) past `limit` bytes. */
export function readText(stream: Readable, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        cleanup();
        stream.pause();
        reject(new RangeError(`body larger than ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(Buffer.concat(chunks).toString('utf8'));
    };
    const onClose = (): void => {
      cleanup();
      reject(new Error('stream closed before its end'));
    };
    const cleanup = (): void => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('close', onClose);
      stream.off('error', onClose);
    };
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('close', onClose);
    stream.once('error', onClose);
  });
}
