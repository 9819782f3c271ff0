import type { GenerationDraft, GenerationRecord, Settlement } from './credit-store';

/**
 * Settled generations by gateway id, in memory, with each account's provider ids indexed apart so a provider
 * that reuses ids never makes one account's record shadow another's. Bounded: the oldest are forgotten past
 * `capacity`.
 */
export class MemoryGenerationLog {
  private readonly records = new Map<string, { account: string; record: GenerationRecord }>();
  /** account → provider id → gateway ids, oldest first. */
  private readonly byProviderId = new Map<string, Map<string, string[]>>();

  constructor(private readonly capacity = 10_000) {}

  /** Keeps `draft` with what `settlement` charged; the first record of a generation stands. */
  record(account: string, draft: GenerationDraft, settlement: Pick<Settlement, 'charged' | 'unpaid'>): void {
    if (this.records.has(draft.id)) return;
    this.records.set(draft.id, { account, record: { ...draft, credits_used: settlement.charged, unpaid: settlement.unpaid } });
    if (draft.provider_id !== null) {
      let ids = this.byProviderId.get(account);
      if (!ids) this.byProviderId.set(account, (ids = new Map()));
      const list = ids.get(draft.provider_id);
      if (list) list.push(draft.id);
      else ids.set(draft.provider_id, [draft.id]);
    }
    if (this.records.size > this.capacity) this.forgetOldest();
  }

  /** See {@link CreditStore.findGeneration}. */
  find(account: string, id: string): GenerationRecord | undefined {
    const direct = this.records.get(id);
    if (direct) return direct.account === account ? direct.record : undefined;
    const list = this.byProviderId.get(account)?.get(id);
    const latest = list?.[list.length - 1];
    return latest === undefined ? undefined : this.records.get(latest)?.record;
  }

  private forgetOldest(): void {
    const oldest = this.records.entries().next().value;
    if (!oldest) return;
    const [generationId, { account, record }] = oldest;
    this.records.delete(generationId);
    if (record.provider_id === null) return;
    const ids = this.byProviderId.get(account);
    const list = ids?.get(record.provider_id);
    if (!ids || !list) return;
    const at = list.indexOf(generationId);
    if (at !== -1) list.splice(at, 1);
    if (list.length === 0) ids.delete(record.provider_id);
    if (ids.size === 0) this.byProviderId.delete(account);
  }
}
