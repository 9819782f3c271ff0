import { InferyError } from '../../base/errors';
import { checkStream, isTextOrTokens, requireModel } from '../../base/request-body';
import { estimatePrompt } from '../../ledgers/billing/prompt-estimate';
import { MAX_OUTPUT_TOKENS, wholeParam, type CompletionCap } from '../../ledgers/billing/reservation';
import type { Surface } from '../../relay/surface';
import { choicesJson, withUsageRequested } from '../shared/choices-json';
import { choicesStream } from '../shared/choices-stream';

/** OpenAI's default `max_tokens` for legacy completions: what the provider generates when a client sets none. */
export const COMPLETIONS_DEFAULT_MAX_TOKENS = 16;

/**
 * `POST /completions` (legacy). A request needs `model` and a `prompt` (a string, strings, or token arrays); its
 * worst case is the prompt's bound plus `max_tokens` (16 when absent, as OpenAI, sent upstream so every provider
 * holds to it) times the completions generated: `max(n, best_of)` for each prompt of the list (`best_of`
 * candidates are all billed). The
 * stream is the chat contract: the provider's chunks untouched, the gateway's usage chunk with `credits_used`
 * second-to-last, `data: [DONE]` last.
 */
export const completions: Surface = {
  api: 'openai',
  endpoint: 'completions',
  path: '/completions',
  usage: 'chat',
  object: 'text_completion',
  validate(body) {
    const model = requireModel(body);
    if (!isTextOrTokens(body.prompt)) {
      throw new InferyError(400, 'missing_required_parameter', 'You must provide a `prompt`: a string, an array of strings, or token arrays.', { param: 'prompt' });
    }
    return { model, stream: checkStream(body) };
  },
  // every string counts, and every number of a token array as one token (the estimate's rule for numbers)
  estimate: (body, count) => estimatePrompt(body, count),
  cap(body): CompletionCap {
    const n = wholeParam(body, 'n', 128) ?? 1;
    const bestOf = wholeParam(body, 'best_of', 128) ?? 1;
    const maxTokens = wholeParam(body, 'max_tokens', MAX_OUTPUT_TOKENS);
    // the provider generates max(n, best_of) completions for each prompt of the list
    const choices = promptCount(body.prompt) * Math.max(n, bestOf);
    return maxTokens === undefined ? { perChoice: COMPLETIONS_DEFAULT_MAX_TOKENS, source: 'default', choices } : { perChoice: maxTokens, source: 'max_tokens', choices };
  },
  withCap(body, _cap, perChoice) {
    return { ...body, max_tokens: perChoice };
  },
  upstreamBody: (body, stream) => JSON.stringify(stream ? withUsageRequested(body) : body),
  stream: () => choicesStream('text'),
  json: choicesJson('text'),
};

/** How many prompts a `prompt` holds: a string or one token array is one; a list of strings or token arrays, its length. */
export function promptCount(prompt: unknown): number {
  if (!Array.isArray(prompt) || prompt.length === 0) return 1;
  return typeof prompt[0] === 'number' ? 1 : prompt.length;
}
