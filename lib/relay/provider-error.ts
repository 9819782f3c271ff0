import { InferyError } from '../base/errors';
import { redact } from '../services/upstream/upstream-headers';

/**
 * The error a provider reported mid-stream (`{"error": {...}}`, an `error` event, a failed response), as an
 * InferyError: its message, code and type kept, each with the upstream key redacted.
 */
export function providerError(raw: unknown, key: string | undefined): InferyError {
  const e = (typeof raw === 'object' && raw !== null ? raw : { message: String(raw) }) as Record<string, unknown>;
  const message = typeof e.message === 'string' && e.message !== '' ? e.message : 'The upstream provider reported an error mid-stream.';
  return new InferyError(502, typeof e.code === 'string' && e.code !== '' ? redact(e.code, key) : 'upstream_error', redact(message, key), {
    type: typeof e.type === 'string' && e.type !== '' && e.type !== 'error' ? redact(e.type, key) : 'upstream_error',
  });
}

/** 502: an upstream event that is not a JSON object. */
export function invalidEventError(): InferyError {
  return new InferyError(502, 'upstream_invalid_response', 'The upstream provider sent a stream chunk that is not valid JSON.', { type: 'upstream_error' });
}

/** Parses an event's data as a JSON object, or undefined. */
export function parseObject(data: string): Record<string, unknown> | undefined {
  try {
    const value = JSON.parse(data) as unknown;
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
