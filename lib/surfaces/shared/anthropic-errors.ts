import type { InferyError } from '../../base/errors';

/** The Messages API's error types, by HTTP status (its documented ones; anything else 5xx is `api_error`). */
const TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  402: 'billing_error',
  403: 'permission_error',
  404: 'not_found_error',
  413: 'request_too_large',
  429: 'rate_limit_error',
  499: 'invalid_request_error',
  503: 'overloaded_error',
  504: 'timeout_error',
  529: 'overloaded_error',
};
const KNOWN = new Set([...Object.values(TYPES), 'api_error']);

/**
 * An error's type in the Messages API: the one its status always has (401 `authentication_error`, 402
 * `billing_error`, 429 `rate_limit_error`, …); for a 400 or a 5xx, the provider's own when it is one of the API's
 * (an upstream's `overloaded_error` relayed as a 502), else by status.
 */
export function anthropicErrorType(err: InferyError): string {
  const fixed = err.status === 400 || err.status >= 500 ? undefined : TYPES[err.status];
  if (fixed !== undefined) return fixed;
  if (KNOWN.has(err.type)) return err.type;
  return TYPES[err.status] ?? (err.status >= 500 ? 'api_error' : 'invalid_request_error');
}

/**
 * The Messages API's error body, `{"type":"error","error":{"type","message"}}`, which the Anthropic SDKs raise
 * as their typed errors (`RateLimitError`, `AuthenticationError`, …). The gateway's own code (`insufficient_quota`,
 * `upstream_timeout`, …) goes beside them as `error.code`.
 */
export function anthropicErrorBody(err: InferyError): { type: 'error'; error: { type: string; message: string; code: string } } {
  return { type: 'error', error: { type: anthropicErrorType(err), message: err.message, code: err.code } };
}
