import { estimatePrompt } from '../../ledgers/billing/prompt-estimate';
import { completionCap, withCap } from '../../ledgers/billing/reservation';
import type { Generation } from '../../core/generation';
import { validateChatRequest } from '../../base/request-body';
import type { JsonDialect, Surface } from '../../relay/surface';
import { choicesStream } from './chat-stream';

/**
 * `POST /chat/completions`. A request needs `model` and a non-empty `messages`; its worst case is the prompt's
 * bound (every string the provider reads) plus the cap (`max_completion_tokens` or `max_tokens`, else
 * `defaultMaxTokens`, sent upstream as `max_completion_tokens`) times `n`. A stream always asks the provider for
 * usage (`stream_options.include_usage`); the client gets the provider's chunks untouched, then the gateway's
 * usage chunk `{"choices":[],"usage":{…},"credits_used":N}`, then `data: [DONE]`. A JSON answer gets a top-level
 * `credits_used` and the usage that was billed.
 */
export const chatCompletions: Surface = {
  endpoint: 'chat.completions',
  path: '/chat/completions',
  usage: 'chat',
  object: 'chat.completion.chunk',
  validate: (body) => validateChatRequest(body),
  estimate: (body, count) => estimatePrompt(body, count),
  cap: completionCap,
  withCap,
  upstreamBody: (body, stream) => JSON.stringify(stream ? withUsageRequested(body) : body),
  stream: () => choicesStream('delta'),
  json: choicesJson('delta'),
};

/** The body with `stream_options.include_usage: true`, whatever the client sent. */
export function withUsageRequested(body: Record<string, unknown>): Record<string, unknown> {
  const streamOptions = (body.stream_options ?? {}) as Record<string, unknown>;
  return { ...body, stream_options: { ...streamOptions, include_usage: true } };
}

/**
 * The JSON answer of chat (`choices[].message`) or legacy completions (`choices[].text`): what was produced is
 * tallied, the billed usage replaces the provider's, `credits_used` is added at the top level.
 */
export function choicesJson(kind: 'delta' | 'text'): JsonDialect {
  return {
    read(gen: Generation<unknown>, json: Record<string, unknown>): void {
      gen.recordUsage(json.usage);
      if (!Array.isArray(json.choices)) return;
      for (const choice of json.choices as Array<Record<string, unknown> | null>) {
        if (kind === 'delta') gen.tally.addMessage(choice?.message);
        else if (typeof choice?.text === 'string') gen.tally.add(choice.text);
        if (typeof choice?.finish_reason === 'string') gen.markChoiceFinished(choice.index, choice.finish_reason);
      }
    },
    answer(gen: Generation<unknown>, json: Record<string, unknown>, credits: number | undefined): Record<string, unknown> {
      const out = { ...json, usage: gen.usage() };
      return credits === undefined ? out : { ...out, credits_used: credits };
    },
  };
}
