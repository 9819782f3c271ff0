import type { MeterEvent, Usage } from '../lib';

/** What `GET /v1/generation?id=` answers for one generation. */
export interface GenerationRecord {
  id: string;
  model: string;
  stream: boolean;
  usage: Usage;
  credits_used: number;
  cancelled: boolean;
  finish_reason: string | null;
  /** The error code when the upstream failed after streaming began (or the gateway shut down). */
  error: string | null;
  time_to_first_token_ms: number | null;
  duration_ms: number;
  created_at: string;
}

/**
 * The generations the example app metered, by id, remembered per key. Bounded: the oldest are forgotten past
 * `capacity` (a production app writes them to its database instead).
 */
export class GenerationLog {
  private readonly records = new Map<string, { key: string; record: GenerationRecord }>();

  constructor(private readonly capacity = 10_000) {}

  record(key: string, event: MeterEvent<string>, credits: number): void {
    const { timings } = event;
    this.records.delete(event.generationId);
    this.records.set(event.generationId, {
      key,
      record: {
        id: event.generationId,
        model: event.model,
        stream: event.stream,
        usage: event.usage,
        credits_used: credits,
        cancelled: event.cancelled,
        finish_reason: event.finishReason,
        error: event.error?.code ?? null,
        time_to_first_token_ms: timings.ttftMs,
        duration_ms: timings.durationMs,
        created_at: new Date().toISOString(),
      },
    });
    if (this.records.size > this.capacity) {
      const oldest = this.records.keys().next().value;
      if (oldest !== undefined) this.records.delete(oldest);
    }
  }

  /** The record of `id` if it belongs to `key`; another key's generation is as unknown as a missing one. */
  find(key: string, id: string): GenerationRecord | undefined {
    const entry = this.records.get(id);
    return entry && entry.key === key ? entry.record : undefined;
  }
}
