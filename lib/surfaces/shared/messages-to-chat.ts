import type { EventSourceMessage } from 'eventsource-parser';
import type { Generation } from '../../core/generation';
import type { JsonDialect, StreamDialect, StreamStep } from '../../relay/surface';
import { MessagesUsage, readAnthropicEvent, tallyContent } from './anthropic-usage';
import { choicesJson } from './choices-json';
import { choicesStream } from './choices-stream';

type Json = Record<string, unknown>;

/** The Messages API's stop reasons as Chat Completions' finish reasons. */
export function finishReasonOf(stopReason: unknown): string {
  if (stopReason === 'max_tokens') return 'length';
  if (stopReason === 'tool_use') return 'tool_calls';
  if (stopReason === 'refusal') return 'content_filter';
  return 'stop';
}

/** A Messages API usage in Chat Completions' shape: every input token in `prompt_tokens`, cache reads as cached. */
export function chatUsageOf(usage: unknown): Json | undefined {
  if (typeof usage !== 'object' || usage === null) return undefined;
  const u = usage as Json;
  const n = (value: unknown): number => (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : 0);
  if (typeof u.input_tokens !== 'number' || typeof u.output_tokens !== 'number') return undefined;
  const read = n(u.cache_read_input_tokens);
  const written = n(u.cache_creation_input_tokens);
  const prompt = n(u.input_tokens) + read + written;
  const completion = n(u.output_tokens);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, prompt_tokens_details: { cached_tokens: read }, cache_creation_input_tokens: written, cache_read_input_tokens: read };
}

/** A Messages API message (the JSON answer) as a chat completion. */
export function chatCompletionOf(message: Json, created: number): Json {
  const blocks = Array.isArray(message.content) ? (message.content as Array<Json | null>) : [];
  const text = blocks.flatMap((b) => (b?.type === 'text' && typeof b.text === 'string' ? [b.text] : [])).join('');
  const toolCalls = blocks.flatMap((b) => (b?.type === 'tool_use' ? [{ id: b.id, type: 'function', function: { name: b.name, arguments: JSON.stringify(b.input ?? {}) } }] : []));
  const reply: Json = { role: 'assistant', content: text === '' && toolCalls.length > 0 ? null : text, refusal: null };
  if (toolCalls.length > 0) reply.tool_calls = toolCalls;
  const usage = chatUsageOf(message.usage);
  return {
    id: message.id,
    object: 'chat.completion',
    created,
    model: message.model,
    choices: [{ index: 0, message: reply, logprobs: null, finish_reason: finishReasonOf(message.stop_reason) }],
    ...(usage ? { usage } : {}),
  };
}

/**
 * A chat request's JSON answer from a Messages API upstream: metered from the message (its usage, its text), then
 * answered as a chat completion with the billed usage and `credits_used`, as a chat provider's would be.
 */
export function messagesAsChatJson(): JsonDialect {
  const chat = choicesJson('delta');
  return {
    read(gen: Generation<unknown>, json: Json): void {
      gen.object = 'chat.completion';
      gen.recordUsage(json.usage);
      tallyContent(gen, json.content);
      gen.markAllFinished(finishReasonOf(json.stop_reason));
    },
    answer(gen: Generation<unknown>, json: Json, credits: number | undefined): Json {
      return chat.answer(gen, chatCompletionOf(json, gen.created), credits);
    },
  };
}

/**
 * A chat request's stream from a Messages API upstream, translated event by event into Chat Completions chunks
 * (one chunk per provider event, flushed as it comes): the role chunk at `message_start`, a content chunk per
 * `text_delta`, a tool call per `tool_use` block with its `input_json_delta`s as argument fragments (indexes
 * counted over the tool calls, so the client assembles exactly what the provider streamed), the finish chunk and
 * the provider's usage chunk at `message_delta`; `message_stop` ends it (the gateway's usage chunk with
 * `credits_used`, then `[DONE]`). A failure is the chat stream's bare `{"error":…}` event. Usage is metered as the
 * Messages API reports it.
 */
export function messagesAsChatStream(): StreamDialect {
  const chat = choicesStream('delta');
  const usage = new MessagesUsage();
  /** content block index → tool call index, for the tool_use blocks */
  const tools = new Map<number, number>();
  let base: Json = {};
  const chunk = (delta: Json, finish: string | null = null): string => `data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] })}\n\n`;
  return {
    read(gen: Generation<unknown>, event: EventSourceMessage, data: string): StreamStep {
      const read = readAnthropicEvent(gen, event, data);
      if ('fail' in read) return read.fail;
      const { ev, type } = read;
      if (type === 'message_start') {
        usage.start(gen, ev, 'chat.completion.chunk');
        base = { id: gen.providerId ?? gen.chunkId, object: 'chat.completion.chunk', created: gen.created, model: gen.providerModel };
        return { kind: 'relay', text: chunk({ role: 'assistant', content: '' }) };
      }
      if (type === 'content_block_start') {
        const block = (typeof ev.content_block === 'object' && ev.content_block !== null ? ev.content_block : {}) as Json;
        if (block.type !== 'tool_use' || typeof ev.index !== 'number') return { kind: 'relay', text: '' };
        const index = tools.size;
        tools.set(ev.index, index);
        if (typeof block.name === 'string') gen.tally.add(block.name);
        gen.markFirstToken();
        return { kind: 'relay', text: chunk({ tool_calls: [{ index, id: block.id, type: 'function', function: { name: block.name, arguments: '' } }] }) };
      }
      if (type === 'content_block_delta') {
        const delta = (typeof ev.delta === 'object' && ev.delta !== null ? ev.delta : {}) as Json;
        if (delta.type === 'text_delta' && typeof delta.text === 'string' && delta.text !== '') {
          if (gen.tally.add(delta.text)) gen.markFirstToken();
          gen.content?.add(delta.text);
          return { kind: 'relay', text: chunk({ content: delta.text }) };
        }
        const index = typeof ev.index === 'number' ? tools.get(ev.index) : undefined;
        if (delta.type === 'input_json_delta' && typeof delta.partial_json === 'string' && index !== undefined) {
          gen.tally.add(delta.partial_json);
          return { kind: 'relay', text: chunk({ tool_calls: [{ index, function: { arguments: delta.partial_json } }] }) };
        }
        // thinking and its signature have no place in a chat completion: metered, not relayed
        if (delta.type === 'thinking_delta' && typeof delta.thinking === 'string') gen.tally.add(delta.thinking);
        return { kind: 'relay', text: '' };
      }
      if (type === 'message_delta') {
        const sofar = usage.record(gen, ev.usage);
        const delta = (typeof ev.delta === 'object' && ev.delta !== null ? ev.delta : {}) as Json;
        const finish = finishReasonOf(delta.stop_reason);
        gen.markAllFinished(finish);
        const provided = sofar ? chatUsageOf(sofar) : undefined;
        return { kind: 'relay', text: chunk({}, finish) + (provided ? `data: ${JSON.stringify({ ...base, choices: [], usage: provided })}\n\n` : '') };
      }
      if (type === 'message_stop') return { kind: 'done' };
      // ping and content_block_stop: nothing for a chat client
      return { kind: 'relay', text: '', keepAlive: type === 'ping' };
    },
    closing: (gen, credits) => chat.closing(gen, credits),
    errorEvent: (gen, err) => chat.errorEvent(gen, err),
    fromJson(gen: Generation<unknown>, json: Json): string {
      // a Messages upstream that ignored `stream`: its message as a chat completion, then as chunks
      return chat.fromJson(gen, chatCompletionOf(json, gen.created));
    },
  };
}
