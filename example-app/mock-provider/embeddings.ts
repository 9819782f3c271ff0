import { createHash } from 'node:crypto';
import { type IncomingMessage, type ServerResponse } from 'node:http';
import { EMBEDDING_DEFAULT_DIMENSIONS, EMBEDDING_MAX_DIMENSIONS, MockHttpError, answerLater, optionalInteger, readObject, requireModel, sendRateLimited, textInputs } from './http';

/** `POST /v1/embeddings`: deterministic unit vectors, `float` or `base64` (float32 little-endian). */

/** A deterministic unit vector for `key`: SHA-256 blocks in counter mode, so a shorter vector is a prefix, rescaled. */
function embeddingFor(key: string, dimensions: number): Float32Array {
  const raw = new Float64Array(dimensions);
  let norm = 0;
  for (let block = 0; block * 8 < dimensions; block++) {
    const hash = createHash('sha256').update(`${block}:${key}`).digest();
    for (let j = 0; j < 8 && block * 8 + j < dimensions; j++) {
      const value = (hash.readUInt32LE(j * 4) / 0xffffffff) * 2 - 1;
      raw[block * 8 + j] = value;
      norm += value * value;
    }
  }
  const scale = norm > 0 ? 1 / Math.sqrt(norm) : 0;
  return Float32Array.from(raw, (value) => value * scale);
}

/** base64 of the little-endian float32 bytes, as OpenAI sends them and the openai SDK decodes them. */
function float32Base64(vector: Float32Array): string {
  const bytes = Buffer.alloc(vector.length * 4);
  vector.forEach((value, i) => bytes.writeFloatLE(value, i * 4));
  return bytes.toString('base64');
}

export async function handleEmbeddings(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const body = await readObject(req);
  const model = requireModel(body);
  const inputs = textInputs(body.input, 'input');
  if (inputs.some((input) => input.text === '')) throw new MockHttpError(400, "Invalid 'input': an input must not be an empty string.", 'input', 'invalid_value');
  const format = body.encoding_format ?? 'float';
  if (format !== 'float' && format !== 'base64') throw new MockHttpError(400, "Invalid value for 'encoding_format': expected 'float' or 'base64'.", 'encoding_format', 'invalid_value');
  const dimensions = optionalInteger(body, 'dimensions', 1, EMBEDDING_MAX_DIMENSIONS) ?? EMBEDDING_DEFAULT_DIMENSIONS;
  if (model === 'mock-429') return sendRateLimited(res, model);
  const tokens = inputs.reduce((sum, input) => sum + input.tokens, 0);
  answerLater(res, model, 50, () => ({
    status: 200,
    body: {
      object: 'list',
      data: inputs.map((input, index) => {
        const vector = embeddingFor(input.key, dimensions);
        const embedding = format === 'base64' ? float32Base64(vector) : Array.from(vector);
        return { object: 'embedding', index, embedding };
      }),
      model,
      ...(model === 'mock-no-usage' ? {} : { usage: { prompt_tokens: tokens, total_tokens: tokens } }),
    },
  }));
}
