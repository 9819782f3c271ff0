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

/** Tallies the text of a Response's output items: messages, refusals, function calls, reasoning summaries (and keeps the messages' text when an observer asked for content). */
export function tallyOutput(gen: Generation<unknown>, output: unknown): void {
  if (!Array.isArray(output)) return;
  for (const item of output as Array<Record<string, unknown> | null>) {
    if (!item || typeof item !== 'object') continue;
    if (Array.isArray(item.content)) {
      for (const part of item.content as Array<Record<string, unknown> | null>) {
        if (item.type === 'message' && part?.type === 'output_text') gen.content?.add(part.text);
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

/** The Responses API's built-in calls with a fee of their own: web searches. */
function isWebSearchCall(item: unknown): boolean {
  return typeof item === 'object' && item !== null && (item as Record<string, unknown>).type === 'web_search_call';
}

/** Counts the web searches a Response's output shows (`web_search_call` items); keeps the most seen. */
export function countWebSearches(gen: Generation<unknown>, output: unknown): void {
  if (!Array.isArray(output)) return;
  let calls = 0;
  for (const item of output) if (isWebSearchCall(item)) calls++;
  gen.webSearchCalls = Math.max(gen.webSearchCalls, calls);
}

/** One more web search seen as it finished (a streamed `response.output_item.done`). */
export function countWebSearchItem(gen: Generation<unknown>, item: unknown): void {
  if (isWebSearchCall(item)) gen.webSearchCalls++;
}

/**
 * The built-in tool calls a Responses request may make when it sets no `max_tool_calls` and carries a web search
 * tool: the gateway sends this bound upstream, so the searches it holds credits for are the most the provider runs.
 */
export const DEFAULT_MAX_TOOL_CALLS = 10;

/** Whether a Responses request carries a web search tool (`web_search`, `web_search_preview`, dated variants). */
export function hasWebSearchTool(body: Record<string, unknown>): boolean {
  return Array.isArray(body.tools) && body.tools.some((tool: unknown) => typeof tool === 'object' && tool !== null && typeof (tool as Record<string, unknown>).type === 'string' && ((tool as Record<string, unknown>).type as string).startsWith('web_search'));
}

/** The `max_tool_calls` a request set, when it is a whole number ≥ 1. */
export function maxToolCalls(body: Record<string, unknown>): number | undefined {
  const n = body.max_tool_calls;
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 1 ? n : undefined;
}
