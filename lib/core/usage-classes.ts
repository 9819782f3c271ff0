import type { Usage, UsageClasses } from '../contract/hooks';

/** A count a provider may report: a whole, non-negative, exactly representable number. */
function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** A counts object of a usage (`prompt_tokens_details`, `cache_creation`, `server_tool_use`), or an empty one. */
function countsIn(usage: Usage, key: string): Record<string, unknown> {
  const value = usage[key];
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

/** A premium class (audio, image): a count, at most its whole (a bad count is the whole: priced as the dearer). */
function part(value: unknown, whole: number): number | undefined {
  if (value === undefined || value === null) return undefined;
  return isCount(value) ? Math.min(value, whole) : whole;
}

/** What a request may use beyond plain tokens, known at admission: cache writes and server-tool calls. */
export interface WorstExtras {
  /** The request may write the prompt cache (it carries `cache_control`), at this longest TTL. */
  cacheWrite?: '5m' | '1h';
  /** The most billable web searches the request allows. */
  webSearches?: number;
}

/**
 * The worst case by class: every input token uncached — or all of them written to the cache at the longest TTL
 * asked for, when the request may write it (a premium over uncached) — every output token, and the most web
 * searches its tools allow.
 */
export function worstClasses(prompt: number, completion: number, extras: WorstExtras = {}): UsageClasses {
  const classes: UsageClasses = {
    input_tokens: prompt,
    uncached_input_tokens: extras.cacheWrite ? 0 : prompt,
    cache_read_tokens: 0,
    cache_write_tokens: extras.cacheWrite ? prompt : 0,
    output_tokens: completion,
    output_reasoning_tokens: 0,
  };
  if (extras.cacheWrite === '1h') classes.cache_write_1h_tokens = prompt;
  else if (extras.cacheWrite === '5m') classes.cache_write_5m_tokens = prompt;
  if (extras.webSearches !== undefined && extras.webSearches > 0) classes.web_searches = extras.webSearches;
  return classes;
}

/**
 * Splits a billed usage (the chat shape every meter event carries: the Responses API's and the Messages API's
 * already renamed by `parseUsage`) into its priced classes.
 *
 * - A usage the gateway estimated (`estimated: true`, the provider sent none) has no split of its own: its input
 *   takes the worst case's share of cache writes (uncached otherwise) — a cache discount is never assumed.
 * - Cache reads that are not a count, or more than the input, are dropped (priced uncached); cache writes are at
 *   most the input less the reads; a TTL split that does not add up puts the rest at 1 hour (the dearer TTL).
 * - Reasoning is at most the output; audio and image at most their whole.
 * - Web searches: the provider's count, else `extraWebSearches` (the Responses API's `web_search_call` items).
 */
export function classesOf(usage: Usage, worst: UsageClasses, extraWebSearches = 0): UsageClasses {
  const input = usage.prompt_tokens;
  const output = usage.completion_tokens;
  if (usage.estimated === true && usage.cache_read_input_tokens === undefined && usage.prompt_tokens_details === undefined) {
    return estimatedClasses(input, output, worst, extraWebSearches);
  }
  const promptDetails = countsIn(usage, 'prompt_tokens_details');
  const completionDetails = countsIn(usage, 'completion_tokens_details');
  const cachedRaw = promptDetails.cached_tokens;
  const read = isCount(cachedRaw) && cachedRaw <= input ? cachedRaw : 0;
  // Anthropic's writes (parseUsage checked them), or an OpenAI-compatible provider's `cache_write_tokens`
  const writeRaw = usage.cache_creation_input_tokens ?? promptDetails.cache_write_tokens;
  const write = writeRaw === undefined ? 0 : isCount(writeRaw) ? Math.min(writeRaw, input - read) : input - read;
  const classes: UsageClasses = {
    input_tokens: input,
    uncached_input_tokens: input - read - write,
    cache_read_tokens: read,
    cache_write_tokens: write,
    output_tokens: output,
    output_reasoning_tokens: part(completionDetails.reasoning_tokens, output) ?? 0,
  };
  if (write > 0) splitWrites(classes, countsIn(usage, 'cache_creation'));
  const inAudio = part(promptDetails.audio_tokens, input);
  if (inAudio) classes.input_audio_tokens = inAudio;
  const inImage = part(promptDetails.image_tokens, input);
  if (inImage) classes.input_image_tokens = inImage;
  const outAudio = part(completionDetails.audio_tokens, output);
  if (outAudio) classes.output_audio_tokens = outAudio;
  const outImage = part(completionDetails.image_tokens, output);
  if (outImage) classes.output_image_tokens = outImage;
  const tools = countsIn(usage, 'server_tool_use');
  const searches = Math.max(isCount(tools.web_search_requests) ? tools.web_search_requests : 0, extraWebSearches);
  if (searches > 0) classes.web_searches = searches;
  if (isCount(tools.web_fetch_requests) && tools.web_fetch_requests > 0) classes.web_fetches = tools.web_fetch_requests;
  if (isCount(tools.code_execution_requests) && tools.code_execution_requests > 0) classes.code_executions = tools.code_execution_requests;
  return classes;
}

/** The cache writes by TTL, from Anthropic's `cache_creation`: what its split leaves out counts at 1 hour. */
function splitWrites(classes: UsageClasses, split: Record<string, unknown>): void {
  const short = split.ephemeral_5m_input_tokens;
  const long = split.ephemeral_1h_input_tokens;
  if (short === undefined && long === undefined) return;
  const write = classes.cache_write_tokens;
  const fiveMinutes = isCount(short) ? Math.min(short, write) : 0;
  classes.cache_write_5m_tokens = fiveMinutes;
  classes.cache_write_1h_tokens = write - fiveMinutes;
}

/** An estimated usage by class: the worst case's shape (cache writes, web searches) scaled to what was counted. */
function estimatedClasses(input: number, output: number, worst: UsageClasses, extraWebSearches: number): UsageClasses {
  const write = worst.cache_write_tokens > 0 ? input : 0;
  const classes: UsageClasses = {
    input_tokens: input,
    uncached_input_tokens: input - write,
    cache_read_tokens: 0,
    cache_write_tokens: write,
    output_tokens: output,
    output_reasoning_tokens: 0,
  };
  if (write > 0) {
    if (worst.cache_write_1h_tokens) classes.cache_write_1h_tokens = write;
    else if (worst.cache_write_5m_tokens) classes.cache_write_5m_tokens = write;
  }
  // searches the provider may have run and not reported: the most the request allowed
  const searches = Math.max(worst.web_searches ?? 0, extraWebSearches);
  if (searches > 0) classes.web_searches = searches;
  return classes;
}
