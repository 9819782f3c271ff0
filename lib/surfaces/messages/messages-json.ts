import type { Generation } from '../../core/generation';
import type { JsonDialect } from '../../relay/surface';
import { anthropicErrorBody } from '../shared/anthropic-errors';
import { MessagesUsage, tallyContent } from '../shared/anthropic-usage';

/**
 * The Messages API's JSON answer: usage (`input_tokens`, the cache counts, `output_tokens`) and the content's
 * text for when none comes; the client gets the provider's message with a top-level `credits_used` (and the
 * billed `usage` in the API's shape when it was estimated). Errors in the API's shape.
 */
export const messagesJson: JsonDialect = {
  read(gen: Generation<unknown>, json: Record<string, unknown>): void {
    gen.object = 'message';
    gen.recordUsage(json.usage);
    tallyContent(gen, json.content);
    if (typeof json.stop_reason === 'string') gen.markAllFinished(json.stop_reason);
  },
  answer(gen: Generation<unknown>, json: Record<string, unknown>, credits: number | undefined): Record<string, unknown> {
    const usage = gen.usage().estimated ? { usage: MessagesUsage.of(gen) } : {};
    return credits === undefined ? { ...json, ...usage } : { ...json, ...usage, credits_used: credits };
  },
  errorBody: anthropicErrorBody,
};
