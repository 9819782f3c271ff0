import { estimatePrompt } from '../../ledgers/billing/prompt-estimate';
import type { Generation } from '../../core/generation';
import { InferyError } from '../../base/errors';
import type { Surface } from '../../relay/surface';
import { isTextOrTokens, requireModel } from '../../base/request-body';

/** OpenAI's most inputs in one embeddings request. */
const MAX_INPUTS = 2048;

/**
 * `POST /embeddings`. A request needs `model` and an `input` (a string, strings, or token arrays, at most 2,048);
 * nothing is generated, so its worst case is the input's bound alone. Metered from the provider's
 * `usage.prompt_tokens` (the input's estimate when absent). Never streamed: the answer is the provider's JSON —
 * `encoding_format` `float` or `base64` as asked — with the billed usage and a top-level `credits_used`.
 */
export const embeddings: Surface = {
  api: 'openai',
  endpoint: 'embeddings',
  path: '/embeddings',
  usage: 'embeddings',
  object: 'list',
  validate(body) {
    const model = requireModel(body);
    const input = body.input;
    if (input === '' || !isTextOrTokens(input) || (Array.isArray(input) && input.length > MAX_INPUTS)) {
      throw new InferyError(400, 'invalid_value', `\`input\` must be a non-empty string, or an array of at most ${MAX_INPUTS} strings or token arrays.`, { param: 'input' });
    }
    if (body.stream === true) throw new InferyError(400, 'invalid_value', 'Embeddings are not streamed: leave `stream` out.', { param: 'stream' });
    const format = body.encoding_format;
    if (format !== undefined && format !== null && format !== 'float' && format !== 'base64') {
      throw new InferyError(400, 'invalid_value', '`encoding_format` must be "float" or "base64".', { param: 'encoding_format' });
    }
    return { model, stream: false };
  },
  // every string counts, and every number of a token array as one token (the estimate's rule for numbers)
  estimate: (body, count) => estimatePrompt(body, count),
  cap: () => ({ perChoice: 0, source: 'default', choices: 1 }),
  withCap: (body) => body,
  upstreamBody: (body) => JSON.stringify(body),
  json: {
    read(gen: Generation<unknown>, json: Record<string, unknown>): void {
      gen.recordUsage(json.usage);
      gen.markAllFinished('stop');
    },
    answer(gen: Generation<unknown>, json: Record<string, unknown>, credits: number | undefined): Record<string, unknown> {
      const { prompt_tokens: prompt, total_tokens: total, estimated } = gen.usage();
      const out = { ...json, usage: { prompt_tokens: prompt, total_tokens: total, ...(estimated ? { estimated } : {}) } };
      return credits === undefined ? out : { ...out, credits_used: credits };
    },
  },
};
