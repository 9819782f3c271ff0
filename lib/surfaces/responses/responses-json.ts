import type { Generation } from '../../core/generation';
import type { JsonDialect } from '../../relay/surface';
import { countWebSearches, readResponseIds, responsesUsage, tallyOutput } from './responses-usage';

/**
 * The JSON answer of the Responses API: a Response object, whose `usage` (`input_tokens`, `output_tokens`, their
 * details) is metered. The client gets it as the provider sent it, with a top-level `credits_used` (and the
 * gateway's estimate as `usage`, marked `estimated`, when the provider's was missing or unusable).
 */
export const responsesJson: JsonDialect = {
  read(gen: Generation<unknown>, json: Record<string, unknown>): void {
    readResponseIds(gen, json);
    gen.recordUsage(json.usage);
    tallyOutput(gen, json.output);
    countWebSearches(gen, json.output);
    gen.markAllFinished(typeof json.status === 'string' ? json.status : 'completed');
  },
  answer(gen: Generation<unknown>, json: Record<string, unknown>, credits: number | undefined): Record<string, unknown> {
    const out = gen.usage().estimated ? { ...json, usage: responsesUsage(gen) } : json;
    return credits === undefined ? out : { ...out, credits_used: credits };
  },
};
