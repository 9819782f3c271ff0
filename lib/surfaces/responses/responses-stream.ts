import type { EventSourceMessage } from 'eventsource-parser';
import type { Generation } from '../../core/generation';
import type { InferyError } from '../../base/errors';
import { invalidEventError, parseObject, providerError } from '../../relay/provider-error';
import type { StreamDialect, StreamStep } from '../../relay/surface';
import { addToResponse } from './final-event';
import { countWebSearches, countWebSearchItem, readResponseIds, responsesUsage, tallyOutput } from './responses-usage';

/** Events after which the client holds a whole piece of the answer: a client leaving then has been served. */
const OUTPUT_DONE = new Set(['response.output_text.done', 'response.function_call_arguments.done', 'response.refusal.done']);

/** Output items that are the answer itself (a reasoning item is done before the answer starts). */
function isAnswerItem(item: unknown): boolean {
  const type = typeof item === 'object' && item !== null ? (item as { type?: unknown }).type : undefined;
  return type === 'message' || type === 'function_call' || type === 'custom_tool_call';
}

/** The events that end a Response and carry its usage. */
const FINAL = new Set(['response.completed', 'response.incomplete', 'response.failed']);

/** One SSE event as the Responses API frames it: `event: <type>` then `data: <json>`. */
function frame(type: string | undefined, data: string): string {
  const line = data.indexOf('\n') === -1 ? data : data.replace(/\n/g, ' ');
  return type ? `event: ${type}\ndata: ${line}\n\n` : `data: ${line}\n\n`;
}

/**
 * The Responses API's stream, for one stream: typed events relayed as they come (never re-serialised), the
 * text of every `*.delta` tallied, the final event held back until metered and written then with `credits_used`
 * in its `response`. No `[DONE]`. A failure mid-stream is an `error` event in the API's shape, with an `error`
 * object too, so the openai SDK raises it as an APIError.
 */
export function responsesStream(): StreamDialect {
  let sequence = -1;
  let held: { type: string; data: string } | undefined;
  const note = (chunk: Record<string, unknown>): void => {
    if (typeof chunk.sequence_number === 'number' && Number.isSafeInteger(chunk.sequence_number)) sequence = Math.max(sequence, chunk.sequence_number);
  };
  return {
    read(gen: Generation<unknown>, event: EventSourceMessage, data: string): StreamStep {
      const chunk = parseObject(data);
      if (!chunk) return { kind: 'fail', error: invalidEventError() };
      note(chunk);
      const type = typeof chunk.type === 'string' ? chunk.type : (event.event ?? '');
      if (type === 'error' || event.event === 'error') return { kind: 'fail', error: providerError(chunk.error ?? chunk, gen.upstreamKey) };
      const response = typeof chunk.response === 'object' && chunk.response !== null ? (chunk.response as Record<string, unknown>) : undefined;
      if (response) readResponseIds(gen, response);
      if (type.endsWith('.delta') && typeof chunk.delta === 'string' && gen.tally.add(chunk.delta)) gen.markFirstToken();
      if (gen.content && type === 'response.output_text.delta') gen.content.add(chunk.delta);
      // the answer the client sees is complete (a message or a tool call, not a reasoning item that comes before
      // the text): leaving now, it still pays the final usage, reasoning included
      if (type === 'response.output_item.done') countWebSearchItem(gen, chunk.item);
      if (OUTPUT_DONE.has(type) || (type === 'response.output_item.done' && isAnswerItem(chunk.item))) gen.markOutputDone();
      if (FINAL.has(type)) {
        gen.recordUsage(response?.usage);
        countWebSearches(gen, response?.output);
        // the text came as deltas; the final response repeats it, so it is only tallied when no delta came
        if (gen.tally.produced === 0) tallyOutput(gen, response?.output);
        gen.markAllFinished(typeof response?.status === 'string' ? response.status : type.slice('response.'.length));
        held = { type: event.event ?? type, data };
        if (type === 'response.failed') return { kind: 'final', outcome: 'failed', error: providerError(response?.error ?? { message: 'The response failed.' }, gen.upstreamKey) };
        return { kind: 'final', outcome: 'completed' };
      }
      return { kind: 'relay', text: frame(event.event, data) };
    },
    closing(gen: Generation<unknown>, credits: number | undefined): string {
      if (!held) return '';
      if (credits === undefined) return frame(held.type, held.data);
      const fields: Record<string, unknown> = gen.usage().estimated ? { usage: responsesUsage(gen), credits_used: credits } : { credits_used: credits };
      return frame(held.type, addToResponse(held.data, fields));
    },
    errorEvent(_gen: Generation<unknown>, err: InferyError): string {
      sequence += 1;
      const payload = { type: 'error', code: err.code, message: err.message, param: err.param, sequence_number: sequence, error: { type: err.type, code: err.code, message: err.message } };
      return `event: error\ndata: ${JSON.stringify(payload)}\n\n`;
    },
    fromJson(_gen: Generation<unknown>, json: Record<string, unknown>): string {
      // a provider that ignored `stream`: the whole Response as its final event, written by the closing
      const status = typeof json.status === 'string' ? json.status : 'completed';
      const type = status === 'failed' ? 'response.failed' : status === 'incomplete' ? 'response.incomplete' : 'response.completed';
      // response.created first, as the openai SDK's stream helper requires; the JSON was checked serialisable
      const created = { type: 'response.created', sequence_number: ++sequence, response: { ...json, status: 'in_progress', output: [], usage: null } };
      held = { type, data: JSON.stringify({ type, sequence_number: ++sequence, response: json }) };
      return frame('response.created', JSON.stringify(created));
    },
  };
}
