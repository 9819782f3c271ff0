import type { Generation } from '../../core/generation';
import type { JsonDialect } from '../../relay/surface';

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
        gen.content?.add(kind === 'delta' ? (choice?.message as { content?: unknown } | null)?.content : choice?.text, choice?.index);
        if (typeof choice?.finish_reason === 'string') gen.markChoiceFinished(choice.index, choice.finish_reason);
      }
    },
    answer(gen: Generation<unknown>, json: Record<string, unknown>, credits: number | undefined): Record<string, unknown> {
      const out = { ...json, usage: gen.usage() };
      return credits === undefined ? out : { ...out, credits_used: credits };
    },
  };
}
