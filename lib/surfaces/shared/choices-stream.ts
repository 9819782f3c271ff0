import type { EventSourceMessage } from 'eventsource-parser';
import type { Generation } from '../../core/generation';
import type { InferyError } from '../../base/errors';
import { invalidEventError, parseObject, providerError } from '../../relay/provider-error';
import type { StreamDialect, StreamStep } from '../../relay/surface';

const DONE = 'data: [DONE]\n\n';

/**
 * The event a chat or completions client receives when the stream fails after it began: the seed's bare
 * `{"error":{"message","type","code"}}`. Nothing else beside `error`: a chunk that also carried `choices` would
 * match the AI SDK's normal chunk schema, which drops the unknown `error` and reads a short, normal answer.
 */
export function errorChunk(err: InferyError): string {
  return `data: ${JSON.stringify({ error: { message: err.message, type: err.type, code: err.code } })}\n\n`;
}

/** Records a chunk's id, model and creation time on the generation the first time a chunk carries them. */
export function readChunkIds(gen: Generation<unknown>, chunk: Record<string, unknown>): void {
  if (gen.providerId === undefined && typeof chunk.id === 'string' && chunk.id !== '') {
    gen.providerId = chunk.id;
    if (typeof chunk.object === 'string') gen.object = chunk.object;
    if (typeof chunk.created === 'number') gen.created = chunk.created;
    if (typeof chunk.model === 'string') gen.providerModel = chunk.model;
  }
}

/**
 * The stream of chat completions (`choices[].delta`) and of legacy completions (`choices[].text`): `data:`
 * chunks, usage in a chunk of its own, `data: [DONE]`. Chunks pass through as they came, never re-serialised;
 * the gateway's usage chunk with `credits_used` goes second-to-last, `[DONE]` last.
 */
export function choicesStream(kind: 'delta' | 'text'): StreamDialect {
  return {
    read(gen: Generation<unknown>, event: EventSourceMessage, data: string): StreamStep {
      if (data === '[DONE]') return { kind: 'done' };
      const chunk = parseObject(data);
      if (!chunk) return { kind: 'fail', error: invalidEventError() };
      if ((chunk.error !== undefined && chunk.error !== null) || event.event === 'error') {
        return { kind: 'fail', error: providerError(chunk.error ?? chunk, gen.upstreamKey) };
      }
      readChunkIds(gen, chunk);
      if (chunk.usage !== undefined && chunk.usage !== null) gen.recordUsage(chunk.usage);
      const choices = chunk.choices;
      if (Array.isArray(choices)) {
        for (const choice of choices as Array<Record<string, unknown> | null>) {
          if (!choice) continue;
          const produced = kind === 'delta' ? gen.tally.addMessage(choice.delta) : typeof choice.text === 'string' && gen.tally.add(choice.text);
          gen.content?.add(kind === 'delta' ? (choice.delta as { content?: unknown } | null)?.content : choice.text, choice.index);
          if (produced) gen.markFirstToken();
          if (typeof choice.finish_reason === 'string') gen.markChoiceFinished(choice.index, choice.finish_reason);
        }
      }
      // one that spanned several data: lines parsed, so its line breaks were JSON whitespace and become spaces
      return { kind: 'relay', text: data.indexOf('\n') === -1 ? `data: ${data}\n\n` : `data: ${data.replace(/\n/g, ' ')}\n\n` };
    },
    closing(gen: Generation<unknown>, credits: number | undefined): string {
      if (credits === undefined) return DONE;
      const chunk = { id: gen.chunkId, object: gen.object, created: gen.created, model: gen.providerModel, choices: [], usage: gen.usage(), credits_used: credits };
      return `data: ${JSON.stringify(chunk)}\n\n${DONE}`;
    },
    errorEvent: (_gen, err) => errorChunk(err),
    // a provider that ignored `stream`: each choice as one chunk, then its finish chunk, then the provider's usage
    fromJson(gen: Generation<unknown>, json: Record<string, unknown>): string {
      const object = kind === 'delta' ? 'chat.completion.chunk' : 'text_completion';
      gen.object = object;
      const base = { id: gen.chunkId, object, created: gen.created, model: gen.providerModel };
      const events: string[] = [];
      const event = (chunk: object): number => events.push(`data: ${JSON.stringify({ ...base, ...chunk })}\n\n`);
      const choices = Array.isArray(json.choices) ? (json.choices as Array<Record<string, unknown> | null>) : [];
      choices.forEach((choice, position) => {
        const index = typeof choice?.index === 'number' ? choice.index : position;
        const finish = typeof choice?.finish_reason === 'string' ? choice.finish_reason : 'stop';
        if (kind === 'text') {
          event({ choices: [{ index, text: typeof choice?.text === 'string' ? choice.text : '', logprobs: choice?.logprobs ?? null, finish_reason: null }] });
          event({ choices: [{ index, text: '', logprobs: null, finish_reason: finish }] });
          return;
        }
        const message = (typeof choice?.message === 'object' && choice.message !== null ? choice.message : {}) as Record<string, unknown>;
        const { tool_calls: toolCalls, ...rest } = message;
        const delta: Record<string, unknown> = { ...rest, role: typeof rest.role === 'string' ? rest.role : 'assistant' };
        if (Array.isArray(toolCalls)) delta.tool_calls = toolCalls.map((call, i) => ({ index: i, ...(call as object) }));
        event({ choices: [{ index, delta, logprobs: choice?.logprobs ?? null, finish_reason: null }] });
        event({ choices: [{ index, delta: {}, finish_reason: finish }] });
      });
      if (gen.providerUsage) event({ choices: [], usage: json.usage });
      return events.join('');
    },
  };
}
