import type { EventSourceMessage } from 'eventsource-parser';
import type { InferyError } from '../../base/errors';
import type { Generation } from '../../core/generation';
import type { StreamDialect, StreamStep } from '../../relay/surface';
import { anthropicErrorBody } from '../shared/anthropic-errors';
import { addTopLevel, MessagesUsage, readAnthropicEvent, tallyContent } from '../shared/anthropic-usage';

/** One event as the Messages API frames it: `event: <type>` then `data: <json>`. */
function frame(type: string, data: string): string {
  return `event: ${type}\ndata: ${data.indexOf('\n') === -1 ? data : data.replace(/\n/g, ' ')}\n\n`;
}

const STOP = frame('message_stop', '{"type":"message_stop"}');

/** The text a `content_block_delta` adds to the answer (text, thinking, a tool's streamed input), if any. */
function deltaText(delta: unknown): string | undefined {
  if (typeof delta !== 'object' || delta === null) return undefined;
  const d = delta as Record<string, unknown>;
  if (d.type === 'text_delta' && typeof d.text === 'string') return d.text;
  if (d.type === 'thinking_delta' && typeof d.thinking === 'string') return d.thinking;
  if (d.type === 'input_json_delta' && typeof d.partial_json === 'string') return d.partial_json;
  return undefined;
}

/**
 * The Messages API's stream, for one stream: typed events relayed as they come (never re-serialised), the text of
 * every delta tallied, usage taken from `message_start` and each `message_delta` (the latest count wins). The
 * final `message_delta` is held: when `message_stop` comes the generation is settled and the closing writes it
 * with `credits_used` (and, when the usage was estimated, the billed `usage`), then `message_stop`. Events after
 * `message_stop` are never relayed. A failure mid-stream is `event: error` in the API's shape.
 */
export function messagesStream(): StreamDialect {
  const usage = new MessagesUsage();
  let held: string | undefined;
  let stop = STOP;
  return {
    read(gen: Generation<unknown>, event: EventSourceMessage, data: string): StreamStep {
      const read = readAnthropicEvent(gen, event, data);
      if ('fail' in read) return read.fail;
      const { ev: chunk, type } = read;
      const name = event.event ?? type;
      if (type === 'message_start') {
        tallyContent(gen, usage.start(gen, chunk, 'message').content);
      } else if (type === 'content_block_delta') {
        const text = deltaText(chunk.delta);
        if (text !== undefined && gen.tally.add(text)) gen.markFirstToken();
        if (gen.content && (chunk.delta as { type?: unknown } | null)?.type === 'text_delta') gen.content.add(text);
      } else if (type === 'content_block_start') {
        tallyContent(gen, [chunk.content_block]);
      } else if (type === 'message_delta') {
        usage.record(gen, chunk.usage);
        const delta = (typeof chunk.delta === 'object' && chunk.delta !== null ? chunk.delta : {}) as Record<string, unknown>;
        if (typeof delta.stop_reason === 'string') gen.markAllFinished(delta.stop_reason);
        // a second message_delta (the API sends one): the one held before goes out, this one is held
        const before = held === undefined ? '' : frame('message_delta', held);
        held = data;
        return { kind: 'relay', text: before };
      } else if (type === 'ping') {
        return { kind: 'relay', text: frame(name, data), keepAlive: true };
      } else if (type === 'message_stop') {
        stop = frame(name, data);
        gen.markOutputDone();
        return { kind: 'final', outcome: 'completed' };
      }
      return { kind: 'relay', text: frame(name, data) };
    },
    closing(gen: Generation<unknown>, credits: number | undefined): string {
      const estimated = gen.usage().estimated === true;
      const fields: Record<string, unknown> = credits === undefined ? {} : estimated ? { usage: MessagesUsage.of(gen), credits_used: credits } : { credits_used: credits };
      if (held !== undefined) return frame('message_delta', addTopLevel(held, fields)) + stop;
      // no message_delta came: one is made, carrying what was billed
      const made = { type: 'message_delta', delta: { stop_reason: null, stop_sequence: null }, usage: MessagesUsage.of(gen), ...(credits === undefined ? {} : { credits_used: credits }) };
      return frame('message_delta', JSON.stringify(made)) + stop;
    },
    errorEvent(_gen: Generation<unknown>, err: InferyError): string {
      return frame('error', JSON.stringify(anthropicErrorBody(err)));
    },
    fromJson(_gen: Generation<unknown>, json: Record<string, unknown>): string {
      // a provider that ignored `stream`: the whole message as its events; the message_delta is held for the closing
      const { content, usage: jsonUsage, stop_reason: stopReason, stop_sequence: stopSequence, ...rest } = json;
      const out: string[] = [];
      const event = (type: string, payload: Record<string, unknown>): number => out.push(frame(type, JSON.stringify({ type, ...payload })));
      event('message_start', { message: { ...rest, content: [], stop_reason: null, stop_sequence: null, usage: { ...(jsonUsage as object), output_tokens: 0 } } });
      const blocks = Array.isArray(content) ? (content as Array<Record<string, unknown> | null>) : [];
      blocks.forEach((block, index) => {
        const b = block ?? {};
        if (b.type === 'text') {
          event('content_block_start', { index, content_block: { type: 'text', text: '' } });
          event('content_block_delta', { index, delta: { type: 'text_delta', text: typeof b.text === 'string' ? b.text : '' } });
        } else if (b.type === 'thinking') {
          event('content_block_start', { index, content_block: { type: 'thinking', thinking: '', signature: '' } });
          event('content_block_delta', { index, delta: { type: 'thinking_delta', thinking: typeof b.thinking === 'string' ? b.thinking : '' } });
          if (typeof b.signature === 'string') event('content_block_delta', { index, delta: { type: 'signature_delta', signature: b.signature } });
        } else if (b.type === 'tool_use' || b.type === 'server_tool_use') {
          event('content_block_start', { index, content_block: { ...b, input: {} } });
          event('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: JSON.stringify(b.input ?? {}) } });
        } else event('content_block_start', { index, content_block: b });
        event('content_block_stop', { index });
      });
      held = JSON.stringify({ type: 'message_delta', delta: { stop_reason: stopReason ?? null, stop_sequence: stopSequence ?? null }, usage: jsonUsage ?? {} });
      return out.join('');
    },
  };
}
