import { InferyError } from '../../base/errors';

/**
 * The error a shared store (Redis, PostgreSQL) throws when it cannot be reached (not connected, or no answer
 * within the command timeout): a 503 `ledger_unavailable` in OpenAI's shape with `Retry-After`, so the gateway fails
 * closed — no request goes upstream while balances and limits cannot be checked.
 */
export class LedgerUnavailableError extends InferyError {
  constructor(reason: string, cause?: unknown) {
    super(503, 'ledger_unavailable', `The credit ledger cannot be reached (${reason}); nothing was charged. Try again shortly.`, { type: 'server_error', cause });
    this.headers = { 'Retry-After': '1' };
  }
}
