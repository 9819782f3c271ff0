import type { Generation } from '../../core/generation';

/** The usage that was billed, in the Responses API's shape (only when it is the gateway's estimate). */
export function responsesUsage(gen: Generation<unknown>): Record<string, unknown> {
  const u = gen.usage();
  return {
    input_tokens: u.prompt_tokens,
    input_tokens_details: { cached_tokens: 0 },
    output_tokens: u.completion_tokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: u.total_tokens,
    estimated: true,
  };
}

/** Records the id, model and creation time of a Response object the first time one is seen. */
export function readResponseIds(gen: Generation<unknown>, response: Record<string, unknown>): void {
  if (gen.providerId !== undefined) return;
  if (typeof response.id === 'string' && response.id !== '') gen.providerId = response.id;
  if (typeof response.model === 'string' && response.model !== '') gen.providerModel = response.model;
  if (typeof response.created_at === 'number') gen.created = response.created_at;
}

/** Tallies the text of a Response's output items: messages, refusals, function calls, reasoning summaries. */
export function tallyOutput(gen: Generation<unknown>, output: unknown): void {
  if (!Array.isArray(output)) return;
  for (const item of output as Array<Record<string, unknown> | null>) {
    if (!item || typeof item !== 'object') continue;
    if (Array.isArray(item.content)) {
      for (const part of item.content as Array<Record<string, unknown> | null>) {
        if (typeof part?.text === 'string') gen.tally.add(part.text);
        else if (typeof part?.refusal === 'string') gen.tally.add(part.refusal);
      }
    }
    if (typeof item.name === 'string') gen.tally.add(item.name);
    if (typeof item.arguments === 'string') gen.tally.add(item.arguments);
    if (Array.isArray(item.summary)) {
      for (const part of item.summary as Array<Record<string, unknown> | null>) if (typeof part?.text === 'string') gen.tally.add(part.text);
    }
  }
}
