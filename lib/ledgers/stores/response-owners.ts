/** How many response ids the in-memory record keeps (the oldest are forgotten first). */
const CAPACITY = 100_000;

/**
 * Which account created which stored response, so `GET /responses/{id}` (and `…/input_items`) — passed through
 * with the gateway's one upstream key, which can read every response it ever created — only shows an account its
 * own. The default record is this process's memory, bounded; a gateway with several instances passes
 * `ownsResponse` (e.g. a lookup in its shared generation records) instead.
 */
export class ResponseOwners {
  private readonly owners = new Map<string, { account: string; upstream: string | undefined; contextTokens: number }>();

  /**
   * Notes that `accountKey` created `responseId` on `upstream` (the upstream's name); `contextTokens` (its input
   * plus output) is what a continuation of it makes the provider read again.
   */
  record(accountKey: string, responseId: string, upstream: string | undefined, contextTokens: number): void {
    this.owners.delete(responseId);
    this.owners.set(responseId, { account: accountKey, upstream, contextTokens });
    if (this.owners.size > CAPACITY) {
      const oldest = this.owners.keys().next().value;
      if (oldest !== undefined) this.owners.delete(oldest);
    }
  }

  /** Where `accountKey`'s response `responseId` is stored, and its context; undefined when it is not theirs. */
  find(accountKey: string | undefined, responseId: string): StoredResponse | undefined {
    const entry = this.owners.get(responseId);
    return accountKey !== undefined && entry?.account === accountKey ? { upstream: entry.upstream, contextTokens: entry.contextTokens } : undefined;
  }
}

/** What the gateway knows of a stored response of the caller's. */
export interface StoredResponse {
  /** The upstream that holds it (its name); undefined: the first. */
  upstream: string | undefined;
  /** Its input plus output tokens, when known: what continuing it makes the provider read. */
  contextTokens?: number;
}
