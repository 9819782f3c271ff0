import type { Generation } from '../../core/generation';

/** The usage fields the Messages API reports, in the order it writes them. */
const COUNTS = ['input_tokens', 'cache_creation_input_tokens', 'cache_read_input_tokens', 'output_tokens'] as const;

/**
 * The Messages API's usage so far: `message_start` carries the input (and cache) counts, each `message_delta`
 * the cumulative output and, sometimes, the input counts again. The latest value of each count wins (never
 * summed); other fields (`server_tool_use`, `cache_creation`, `service_tier`) are kept as the latest sent.
 */
export class MessagesUsage {
  private latest: Record<string, unknown> = {};

  /** Takes a `usage` object from an event; returns the whole usage so far, for `Generation.recordUsage`. */
  add(usage: unknown): Record<string, unknown> | undefined {
    if (typeof usage !== 'object' || usage === null || Array.isArray(usage)) return undefined;
    const next: Record<string, unknown> = { ...this.latest };
    for (const key in usage) {
      const value = (usage as Record<string, unknown>)[key];
      if (Object.hasOwn(usage, key) && value !== undefined && value !== null) next[key] = value;
    }
    this.latest = next;
    return next;
  }

  /** The usage in the Messages API's shape, from the billed usage (for an answer whose usage was estimated). */
  static of(gen: Generation<unknown>): Record<string, number> {
    const billed = gen.usage();
    const out: Record<string, number> = { input_tokens: billed.prompt_tokens, output_tokens: billed.completion_tokens };
    for (const key of COUNTS) {
      const value = billed[key];
      if (key !== 'input_tokens' && key !== 'output_tokens' && typeof value === 'number') out[key] = value;
    }
    return out;
  }
}

/** Tallies the text of a message's content blocks (text, thinking, tool input) for when no usage comes. */
export function tallyContent(gen: Generation<unknown>, content: unknown): void {
  if (!Array.isArray(content)) return;
  for (const block of content as Array<Record<string, unknown> | null>) {
    if (typeof block?.text === 'string') gen.tally.add(block.text);
    if (typeof block?.thinking === 'string') gen.tally.add(block.thinking);
    if (block?.type === 'tool_use' || block?.type === 'server_tool_use') {
      if (typeof block.name === 'string') gen.tally.add(block.name);
      if (block.input !== undefined) gen.tally.add(JSON.stringify(block.input) ?? '');
    }
  }
}

/**
 * Adds top-level fields to an event's JSON without re-serialising what the provider sent: before its closing
 * brace, so they win over any of the same name it carried (the last of duplicate keys is the one readers keep).
 */
export function addTopLevel(data: string, fields: Record<string, unknown>): string {
  const extra = Object.entries(fields)
    .map(([name, value]) => `${JSON.stringify(name)}:${JSON.stringify(value)}`)
    .join(',');
  const close = data.lastIndexOf('}');
  if (extra === '' || close === -1) return data;
  const empty = data.slice(data.indexOf('{') + 1, close).trim() === '';
  return `${data.slice(0, close)}${empty ? '' : ','}${extra}${data.slice(close)}`;
}
