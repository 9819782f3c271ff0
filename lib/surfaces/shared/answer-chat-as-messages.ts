import type { EventSourceMessage } from 'eventsource-parser';
import type { Generation } from '../../core/generation';
import { invalidEventError, parseObject, providerError } from '../../relay/provider-error';
import type { JsonDialect, StreamDialect, StreamStep } from '../../relay/surface';
import { anthropicErrorBody } from './anthropic-errors';

type Json = Record<string, unknown>;

/** Chat Completions' finish reasons as the Messages API's stop reasons. */
export function stopReasonOf(finish: unknown): string {
  if (finish === 'length') return 'max_tokens';
  if (finish === 'tool_calls' || finish === 'function_call') return 'tool_use';
  if (finish === 'content_filter') return 'refusal';
  return 'end_turn';
}

/** A billed usage (chat's shape) as the Messages API's: cached prompt tokens as cache reads, the rest as input. */
function messagesUsageOf(gen: Generation<unknown>): Json {
  const usage = gen.usage();
  const details = usage.prompt_tokens_details as Json | undefined;
  const cached = typeof details?.cached_tokens === 'number' ? Math.min(details.cached_tokens, usage.prompt_tokens) : 0;
  return { input_tokens: usage.prompt_tokens - cached, cache_creation_input_tokens: 0, cache_read_input_tokens: cached, output_tokens: usage.completion_tokens };
}

const frame = (type: string, payload: Json): string => `event: ${type}\ndata: ${JSON.stringify({ type, ...payload })}\n\n`;

/** The id a Messages API client sees: the provider's, marked as a message. */
const messageId = (gen: Generation<unknown>): string => `msg_${gen.providerId ?? gen.generationId}`.replace(/[^A-Za-z0-9_-]/g, '_');

/**
 * A Messages request's JSON answer from an OpenAI-dialect upstream: metered from the chat completion (usage, the
 * text and tool calls), answered as a Messages API message — text and `tool_use` blocks, the stop reason, the
 * billed usage in the API's shape — with a top-level `credits_used`. Errors in the Messages API's shape.
 */
export function chatAsMessagesJson(): JsonDialect {
  return {
    read(gen: Generation<unknown>, json: Json): void {
      gen.recordUsage(json.usage);
      const choice = Array.isArray(json.choices) ? (json.choices[0] as Json | undefined) : undefined;
      gen.tally.addMessage(choice?.message);
      gen.content?.add((choice?.message as Json | undefined)?.content);
      gen.markAllFinished(typeof choice?.finish_reason === 'string' ? choice.finish_reason : 'stop');
    },
    answer(gen: Generation<unknown>, json: Json, credits: number | undefined): Json {
      const choice = Array.isArray(json.choices) ? (json.choices[0] as Json | undefined) : undefined;
      const message = (typeof choice?.message === 'object' && choice.message !== null ? choice.message : {}) as Json;
      const content: Json[] = [];
      if (typeof message.content === 'string' && message.content !== '') content.push({ type: 'text', text: message.content });
      for (const call of Array.isArray(message.tool_calls) ? (message.tool_calls as Json[]) : []) {
        const fn = (call?.function ?? {}) as Json;
        let input: unknown = {};
        try {
          input = JSON.parse(typeof fn.arguments === 'string' && fn.arguments !== '' ? fn.arguments : '{}');
        } catch {
          input = { arguments: fn.arguments };
        }
        content.push({ type: 'tool_use', id: call.id, name: fn.name, input });
      }
      const out: Json = {
        id: messageId(gen),
        type: 'message',
        role: 'assistant',
        model: gen.providerModel ?? json.model,
        content,
        stop_reason: stopReasonOf(choice?.finish_reason),
        stop_sequence: null,
        usage: messagesUsageOf(gen),
      };
      return credits === undefined ? out : { ...out, credits_used: credits };
    },
    errorBody: anthropicErrorBody,
  };
}

/**
 * A Messages request's stream from an OpenAI-dialect upstream, translated chunk by chunk into the Messages API's
 * events (one write per provider chunk, flushed as it comes): `message_start` at the first chunk, a text block
 * whose `text_delta`s are the content, a `tool_use` block per tool call whose argument fragments are
 * `input_json_delta`s, `content_block_stop` when a block ends; at `[DONE]` the closing writes the last
 * `content_block_stop`, the `message_delta` with the stop reason, the usage (input counts too: a chat provider
 * reports them only at the end) and `credits_used`, then `message_stop`. A failure is the API's `event: error`.
 */
export function chatAsMessagesStream(): StreamDialect {
  let started = false;
  /** the open content block: its index, and which tool call (by chat index) it is, if one */
  let open: { index: number; tool?: number } | undefined;
  let blocks = 0;
  let stopReason = 'end_turn';
  const start = (gen: Generation<unknown>): string => {
    if (started) return '';
    started = true;
    return frame('message_start', {
      message: { id: messageId(gen), type: 'message', role: 'assistant', model: gen.providerModel ?? null, content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 0, output_tokens: 0 } },
    });
  };
  const close = (): string => {
    if (!open) return '';
    const text = frame('content_block_stop', { index: open.index });
    open = undefined;
    return text;
  };
  return {
    read(gen: Generation<unknown>, _event: EventSourceMessage, data: string): StreamStep {
      if (data === '[DONE]') return { kind: 'done' };
      const chunk = parseObject(data);
      if (!chunk) return { kind: 'fail', error: invalidEventError() };
      if (chunk.error !== undefined && chunk.error !== null) return { kind: 'fail', error: providerError(chunk.error, gen.upstreamKey) };
      if (gen.providerId === undefined && typeof chunk.id === 'string' && chunk.id !== '') gen.providerId = chunk.id;
      if (typeof chunk.model === 'string' && chunk.model !== '') gen.providerModel = chunk.model;
      if (chunk.usage !== undefined && chunk.usage !== null) gen.recordUsage(chunk.usage);
      let out = start(gen);
      const choice = Array.isArray(chunk.choices) ? (chunk.choices[0] as Json | undefined) : undefined;
      const delta = (typeof choice?.delta === 'object' && choice.delta !== null ? choice.delta : {}) as Json;
      if (typeof delta.content === 'string' && delta.content !== '') {
        if (open?.tool !== undefined || !open) {
          out += close();
          open = { index: blocks++ };
          out += frame('content_block_start', { index: open.index, content_block: { type: 'text', text: '' } });
        }
        if (gen.tally.add(delta.content)) gen.markFirstToken();
        gen.content?.add(delta.content);
        out += frame('content_block_delta', { index: open.index, delta: { type: 'text_delta', text: delta.content } });
      }
      for (const call of Array.isArray(delta.tool_calls) ? (delta.tool_calls as Json[]) : []) {
        const fn = (call?.function ?? {}) as Json;
        const tool = typeof call?.index === 'number' ? call.index : 0;
        if (open?.tool !== tool) {
          out += close();
          open = { index: blocks++, tool };
          if (typeof fn.name === 'string') gen.tally.add(fn.name);
          gen.markFirstToken();
          out += frame('content_block_start', { index: open.index, content_block: { type: 'tool_use', id: call.id ?? `toolu_${open.index}`, name: fn.name ?? '', input: {} } });
        }
        if (typeof fn.arguments === 'string' && fn.arguments !== '') {
          gen.tally.add(fn.arguments);
          out += frame('content_block_delta', { index: open.index, delta: { type: 'input_json_delta', partial_json: fn.arguments } });
        }
      }
      if (typeof choice?.finish_reason === 'string') {
        stopReason = stopReasonOf(choice.finish_reason);
        gen.markAllFinished(choice.finish_reason);
      }
      return { kind: 'relay', text: out };
    },
    closing(gen: Generation<unknown>, credits: number | undefined): string {
      const delta = { delta: { stop_reason: stopReason, stop_sequence: null }, usage: messagesUsageOf(gen), ...(credits === undefined ? {} : { credits_used: credits }) };
      return start(gen) + close() + frame('message_delta', delta) + frame('message_stop', {});
    },
    errorEvent: (_gen, err) => `event: error\ndata: ${JSON.stringify(anthropicErrorBody(err))}\n\n`,
    fromJson(gen: Generation<unknown>, json: Json): string {
      // an OpenAI upstream that ignored `stream`: its completion as the Messages API's events (the closing ends them)
      const message = chatAsMessagesJson().answer(gen, json, undefined);
      let out = start(gen);
      (message.content as Json[]).forEach((block, index) => {
        blocks = index + 1;
        if (block.type === 'text') {
          out += frame('content_block_start', { index, content_block: { type: 'text', text: '' } });
          out += frame('content_block_delta', { index, delta: { type: 'text_delta', text: block.text } });
        } else {
          out += frame('content_block_start', { index, content_block: { ...block, input: {} } });
          out += frame('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: JSON.stringify(block.input) } });
        }
        out += frame('content_block_stop', { index });
      });
      stopReason = message.stop_reason as string;
      return out;
    },
  };
}
