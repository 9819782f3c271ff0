import type { EventSourceMessage } from 'eventsource-parser';
import type { Generation } from '../../core/generation';
import { invalidEventError, parseObject, providerError } from '../../relay/provider-error';
import type { StreamStep } from '../../relay/surface';

/**
 * One Messages API stream event read: the object and its `type` (the `event:` name when the data has none), or
 * the step that ends the stream (data that is not a JSON object, or the provider's `error` event).
 */
export function readAnthropicEvent(gen: Generation<unknown>, event: EventSourceMessage, data: string): { ev: Record<string, unknown>; type: string } | { fail: StreamStep } {
  const ev = parseObject(data);
  if (!ev) return { fail: { kind: 'fail', error: invalidEventError() } };
  const type = typeof ev.type === 'string' ? ev.type : (event.event ?? '');
  if (type === 'error' || event.event === 'error') return { fail: { kind: 'fail', error: providerError(ev.error ?? ev, gen.upstreamKey) } };
  return { ev, type };
}

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

  /** Takes an event's `usage` and records the whole usage so far on the generation; returns it. */
  record(gen: Generation<unknown>, usage: unknown): Record<string, unknown> | undefined {
    const sofar = this.add(usage);
    if (sofar) gen.recordUsage(sofar);
    return sofar;
  }

  /** Reads a `message_start`: the provider's message id and model, and its usage so far. Returns the message. */
  start(gen: Generation<unknown>, ev: Record<string, unknown>, object: string): Record<string, unknown> {
    const message = (typeof ev.message === 'object' && ev.message !== null ? ev.message : {}) as Record<string, unknown>;
    if (gen.providerId === undefined && typeof message.id === 'string' && message.id !== '') gen.providerId = message.id;
    if (typeof message.model === 'string' && message.model !== '') gen.providerModel = message.model;
    gen.object = object;
    this.record(gen, message.usage);
    return message;
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
    if (block?.type === 'text') gen.content?.add(block.text);
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
