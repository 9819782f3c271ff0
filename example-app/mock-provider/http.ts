import { randomBytes } from 'node:crypto';
import { type IncomingMessage, type ServerResponse } from 'node:http';

/** The mock provider's HTTP helpers: JSON answers and OpenAI-shaped errors, request-body reading and validation, delayed answers. */

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export async function readBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size <= MAX_BODY_BYTES) chunks.push(chunk as Buffer); // beyond it, drained unread
  }
  if (size > MAX_BODY_BYTES) throw new MockHttpError(413, `The request body is larger than ${MAX_BODY_BYTES} bytes.`, null, 'request_too_large');
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
}

/** The largest request body the mock reads; the rest is drained unread and answered 413. */
const MAX_BODY_BYTES = 32 * 1024 * 1024;

/** Stored responses (GET /v1/responses/{id}): the newest this many, holding at most this many bytes of JSON. */
export const STORE_MAX_ENTRIES = 200;

export const STORE_MAX_BYTES = 64 * 1024 * 1024;

/** Inputs per embeddings request and prompts per completions request, as OpenAI allows. */
export const MAX_INPUTS = 2048;

export const MAX_CHOICES = 128;

/** Small vectors unless `dimensions` asks for more (up to text-embedding-3-large's 3072). */
export const EMBEDDING_DEFAULT_DIMENSIONS = 8;

export const EMBEDDING_MAX_DIMENSIONS = 3072;

/** How many deltas a misbehaving model sends before it misbehaves, as on the chat route. */
export const MISBEHAVE_AT = 4;

/** Time to first token, and how long a non-streamed answer takes (mock-slow: 3 s). */
export const FIRST_TOKEN_MS = 150;

export const ANSWER_MS = 300;

const SLOW_ANSWER_MS = 3000;

export type Json = Record<string, unknown>;

/** An error answered in OpenAI's shape: `{"error":{"message","type","param","code"}}`. */
export class MockHttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type: string = 'invalid_request_error',
  ) {
    super(message);
  }
}

export function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function sendError(res: ServerResponse, err: MockHttpError): void {
  sendJson(res, err.status, { error: { message: err.message, type: err.type, param: err.param, code: err.code } });
}

export function sendRateLimited(res: ServerResponse, model: string): void {
  res.setHeader('retry-after', '20');
  sendError(res, new MockHttpError(429, `Rate limit reached for ${model}. Try again in 20s.`, null, 'rate_limit_exceeded', 'requests'));
}

export function newId(prefix: string, bytes = 16): string {
  return `${prefix}${randomBytes(bytes).toString('hex')}`;
}

export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** A request body that must be a JSON object (400 otherwise). */
export async function readObject(req: IncomingMessage): Promise<Json> {
  const body: unknown = await readBody(req);
  if (!isObject(body)) throw new MockHttpError(400, 'The request body must be a JSON object.', null, 'invalid_json');
  return body;
}

export function requireModel(body: Json): string {
  if (body.model === undefined || body.model === null) throw new MockHttpError(400, "Missing required parameter: 'model'.", 'model', 'missing_required_parameter');
  if (typeof body.model !== 'string' || body.model === '') throw new MockHttpError(400, "Invalid type for 'model': expected a non-empty string.", 'model', 'invalid_type');
  return body.model;
}

export function optionalBoolean(body: Json, key: string): boolean | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'boolean') throw new MockHttpError(400, `Invalid type for '${key}': expected a boolean.`, key, 'invalid_type');
  return value;
}

export function optionalInteger(body: Json, key: string, min: number, max: number): number | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value)) throw new MockHttpError(400, `Invalid type for '${key}': expected an integer.`, key, 'invalid_type');
  if (value < min || value > max) throw new MockHttpError(400, `Invalid '${key}': expected an integer from ${min} to ${max}, got ${value}.`, key, 'invalid_value');
  return value;
}

export function optionalNumber(body: Json, key: string): number | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new MockHttpError(400, `Invalid type for '${key}': expected a number.`, key, 'invalid_type');
  return value;
}

export function optionalString(body: Json, key: string): string | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new MockHttpError(400, `Invalid type for '${key}': expected a string.`, key, 'invalid_type');
  return value;
}

/**
 * A non-streamed answer after `delayMs`, misbehaving by model name: mock-429 is answered before this, mock-stall
 * never answers, mock-error drops the connection, mock-garbage sends invalid JSON, mock-slow takes 3 s.
 */
export function answerLater(res: ServerResponse, model: string, delayMs: number, produce: () => { status: number; body: unknown }, onDrop?: () => void): void {
  if (model === 'mock-stall') return; // the client's time-out, or close(), ends it
  const timer = setTimeout(
    () => {
      if (model === 'mock-error') {
        onDrop?.();
        res.destroy();
        return;
      }
      if (model === 'mock-garbage') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"id": "oops", "object": "broken", "data": [{"embedd');
        return;
      }
      const { status, body } = produce();
      sendJson(res, status, body);
    },
    model === 'mock-slow' ? SLOW_ANSWER_MS : delayMs,
  );
  res.on('close', () => clearTimeout(timer));
}


function isTokenArray(value: unknown): value is number[] {
  return Array.isArray(value) && value.length > 0 && value.every((token) => Number.isSafeInteger(token) && (token as number) >= 0);
}

/** `prompt`/`input` as a list of texts (token arrays become their numbers) with a token count each. */
export function textInputs(value: unknown, key: string): Array<{ text: string; tokens: number; key: string }> {
  if (value === undefined || value === null) throw new MockHttpError(400, `Missing required parameter: '${key}'.`, key, 'missing_required_parameter');
  const fromString = (text: string) => ({ text, tokens: Math.max(1, Math.ceil(text.length / 4)), key: `text:${text}` });
  const fromTokens = (tokens: number[]) => ({ text: tokens.join(' '), tokens: tokens.length, key: `tokens:${tokens.join(',')}` });
  if (typeof value === 'string') return [fromString(value)];
  const invalid = new MockHttpError(400, `Invalid type for '${key}': expected a string, an array of strings, an array of integers, or an array of integer arrays.`, key, 'invalid_type');
  if (!Array.isArray(value)) throw invalid;
  if (value.length === 0) throw new MockHttpError(400, `Invalid '${key}': expected at least one input.`, key, 'empty_array');
  if (value.length > MAX_INPUTS) throw new MockHttpError(400, `Invalid '${key}': at most ${MAX_INPUTS} inputs, got ${value.length}.`, key, 'array_above_max_length');
  if (value.every((v) => typeof v === 'string')) return (value as string[]).map(fromString);
  if (isTokenArray(value)) return [fromTokens(value)];
  if (value.every(isTokenArray)) return (value as number[][]).map(fromTokens);
  throw invalid;
}
