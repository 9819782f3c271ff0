import { InferyError } from '../base/errors';
import type { ResolvedOptions } from '../options/resolved';
import type { UpstreamPool } from '../services/upstream/upstream-pool';

/** Where a request that continues a stored response goes, and what the provider reads again of it. */
export interface Continuation {
  /** The one upstream that holds it (several upstreams), or undefined: any upstream serving the model. */
  only: string | undefined;
  /** Its input plus output tokens, when known: added to the prompt's worst case and estimate. */
  contextTokens: number;
}

export const NO_CONTINUATION: Continuation = { only: undefined, contextTokens: 0 };

/**
 * For a request that continues the stored response `id` (a Responses `previous_response_id`): 404
 * `response_not_found` unless the account created it (`ownsResponse`), 400 `model_not_available` when the upstream
 * holding it does not serve `model`; else where to send it and what it adds to the prompt. Before anything is held.
 */
export async function locateContinuation<Account>(opts: ResolvedOptions<Account>, pool: UpstreamPool, account: Account, id: string, model: string): Promise<Continuation> {
  const found = await opts.findResponse(account, id);
  if (!found) {
    throw new InferyError(404, 'response_not_found', `No response with id ${JSON.stringify(id.slice(0, 100))} was created with this key.`, { param: 'previous_response_id' });
  }
  const only = opts.severalUpstreams && found.upstream !== undefined && pool.named(found.upstream) ? found.upstream : undefined;
  if (only !== undefined && pool.candidates(model, only).length === 0) {
    throw new InferyError(
      400,
      'model_not_available',
      `The response ${JSON.stringify(id.slice(0, 100))} is held by an upstream that does not serve \`${model.slice(0, 100)}\`: continue it with a model that upstream serves, or start anew.`,
      { param: 'model' },
    );
  }
  return { only, contextTokens: found.contextTokens ?? 0 };
}
