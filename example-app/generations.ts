import type { MeterEvent, Outcome, Usage } from '../lib';
import type { Settlement } from './ledger';

/** What `GET /v1/generation?id=` answers for one generation. */
export interface GenerationRecord {
  /** The gateway's id: the `X-Generation-Id` header. */
  id: string;
  /** The provider's id: the `id` of the chunks (or body) the client saw; `null` if the provider sent none. */
  provider_id: string | null;
  model: string;
  stream: boolean;
  outcome: Outcome;
  usage: Usage;
  credits_used: number;
  /** What the generation cost beyond the hold and the whole balance, not taken (normally 0). */
  unpaid: number;
  cancelled: boolean;
  finish_reason: string | null;
  /** The error code when the request failed (upstream error, or the gateway shut down). */
  error: string | null;
  time_to_first_token_ms: number | null;
  duration_ms: number;
  created_at: string;
}

/**
 * The generations the example app settled, by gateway id, with each key's provider ids indexed apart so a
 * provider that reuses ids never makes one key's record shadow another's. Bounded: the oldest are forgotten
 * past `capacity` (a production app writes them to its database instead).
 */
export class GenerationLog {
  private readonly records = new Map<string, { key: string; record: GenerationRecord }>();
  /** key → provider id → gateway ids, oldest first. */
  private readonly byProviderId = new Map<string, Map<string, string[]>>();

  constructor(private readonly capacity = 10_000) {}

  record(key: string, event: MeterEvent<string>, settlement: Settlement): void {
    const { timings } = event;
    if (this.records.has(event.generationId)) return; // settled once: the first record stands
    this.records.set(event.generationId, {
      key,
      record: {
        id: event.generationId,
        provider_id: event.providerId ?? null,
        model: event.model,
        stream: event.stream,
        outcome: event.outcome,
        usage: event.usage,
        credits_used: settlement.charged,
        unpaid: settlement.unpaid,
        cancelled: event.cancelled,
        finish_reason: event.finishReason,
        error: event.error?.code ?? null,
        time_to_first_token_ms: timings.ttftMs,
        duration_ms: timings.durationMs,
        created_at: new Date().toISOString(),
      },
    });
    if (event.providerId !== undefined) {
      let ids = this.byProviderId.get(key);
      if (!ids) this.byProviderId.set(key, (ids = new Map()));
      const list = ids.get(event.providerId);
      if (list) list.push(event.generationId);
      else ids.set(event.providerId, [event.generationId]);
    }
    if (this.records.size > this.capacity) this.forgetOldest();
  }

  /**
   * The record of `id` — a gateway id, or the provider id the client saw (the latest generation of this key with
   * it) — if it belongs to `key`; another key's generation is as unknown as a missing one.
   */
  find(key: string, id: string): GenerationRecord | undefined {
    const direct = this.records.get(id);
    if (direct) return direct.key === key ? direct.record : undefined;
    const list = this.byProviderId.get(key)?.get(id);
    const latest = list?.[list.length - 1];
    return latest === undefined ? undefined : this.records.get(latest)?.record;
  }

  private forgetOldest(): void {
    const oldest = this.records.entries().next().value;
    if (!oldest) return;
    const [generationId, { key, record }] = oldest;
    this.records.delete(generationId);
    if (record.provider_id === null) return;
    const ids = this.byProviderId.get(key);
    const list = ids?.get(record.provider_id);
    if (!ids || !list) return;
    const at = list.indexOf(generationId);
    if (at !== -1) list.splice(at, 1);
    if (list.length === 0) ids.delete(record.provider_id);
    if (ids.size === 0) this.byProviderId.delete(key);
  }
}
