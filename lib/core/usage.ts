import type { Usage } from '../contract/hooks';
import { countYielding } from '../ledgers/billing/token-count';
import { fallbackCount, sharedTokenizer } from '../ledgers/billing/tokenizer-thread';

/** The host's `countTokens`: one text's tokens, synchronously. */
export type TokenCounter = (text: string, model: string) => number;
/**
 * What the gateway counts with: several texts' tokens together, asynchronously; `undefined` when they could not
 * be counted (the caller bounds by bytes instead); never rejects.
 */
export type TextsCounter = (texts: readonly string[], model: string) => Promise<number | undefined>;

/** How often, at most, a counting problem is logged. */
const WARN_EVERY_MS = 60_000;

/**
 * The counter the gateway uses. Without a host `countTokens`: gpt-tokenizer's o200k_base encoding (special-token
 * text as plain text) in a worker thread started on first need (`TokenizerThread`), so counting never runs on the
 * event loop and the vocabulary is resident only while counts are needed. With one: the host's counter in
 * slices, yielding to the event loop every few milliseconds, contained (see `containedCounter`). A thread that
 * cannot count is logged, at most once a minute, and its count is `undefined`.
 */
export function textsCounter(count: TokenCounter | undefined, warn: (err: unknown) => void): TextsCounter {
  if (count === undefined) {
    let warnedAt = -Infinity;
    const onFallback = (reason: string): void => {
      if (performance.now() - warnedAt < WARN_EVERY_MS) return;
      warnedAt = performance.now();
      warn(new Error(reason));
    };
    return (texts) => sharedTokenizer().count(texts, onFallback);
  }
  const contained = containedCounter(count, warn);
  return (texts, model) => countYielding(texts, (slice) => contained(slice, model));
}

/**
 * A host's token counter, contained — a counter that throws or returns something that is not a whole number ≥ 0
 * counts a token per 3 UTF-8 bytes instead, with one warning. Estimating usage never throws.
 */
export function containedCounter(count: TokenCounter, warn: (err: unknown) => void): TokenCounter {
  let warned = false;
  return (text, model) => {
    try {
      const n = count(text, model);
      if (typeof n === 'number' && Number.isSafeInteger(n) && n >= 0) return n;
      throw new TypeError(`countTokens returned ${String(n)}`);
    } catch (err) {
      if (!warned) {
        warned = true;
        warn(err);
      }
      return Math.ceil(Buffer.byteLength(text) / 3);
    }
  };
}

/** Pending completion text past this many characters is counted in the background, so memory stays bounded. */
const FLUSH_AT = 1024 * 1024;
/** Past this many pending characters (the background count falling behind), text is counted at 3 bytes a token. */
const PENDING_MAX = 4 * FLUSH_AT;

/**
 * Tallies the text a generation produces, for when the provider sends no usage (or the client cancels). Adding
 * text only keeps it: nothing is tokenised on the per-chunk path. Counting happens when the count is asked for
 * (`tokens()`, at settlement, in slices that yield to the event loop), or in the background once a megabyte is
 * pending, so memory stays bounded.
 */
export class CompletionTally {
  private pending: string[] = [];
  private pendingLength = 0;
  private counted = 0;
  private background: Promise<void> | undefined;
  /** Characters of generated text seen in all. */
  produced = 0;

  constructor(
    private readonly count: TextsCounter,
    private readonly model: string,
  ) {}

  /** Adds generated text; returns false for an empty string. */
  add(text: string): boolean {
    if (text.length === 0) return false;
    this.produced += text.length;
    if (this.pendingLength >= PENDING_MAX) {
      this.counted += Math.ceil(Buffer.byteLength(text) / 3);
      return true;
    }
    this.pending.push(text);
    this.pendingLength += text.length;
    if (this.pendingLength >= FLUSH_AT && !this.background) {
      this.background = new Promise<void>((resolve) => setImmediate(resolve))
        .then(() => this.flush())
        .catch(() => undefined) // the counter is contained; nothing may go unhandled here
        .finally(() => {
          this.background = undefined;
        });
    }
    return true;
  }

  /**
   * Adds every kind of generated text a chunk's `choices[].delta` (or a full `message`) carries: content
   * (string or text parts), reasoning (`reasoning_content`, `reasoning` or `reasoning_details`), refusal, audio
   * transcript, tool calls and legacy function calls. Returns true when it carried any.
   */
  addMessage(message: unknown): boolean {
    if (typeof message !== 'object' || message === null) return false;
    const m = message as Record<string, unknown>;
    let added = false;
    if (typeof m.content === 'string') added = this.add(m.content) || added;
    else if (Array.isArray(m.content)) {
      for (const part of m.content as Array<Record<string, unknown> | null>) {
        if (typeof part?.text === 'string') added = this.add(part.text) || added;
      }
    }
    if (typeof m.reasoning_content === 'string') added = this.add(m.reasoning_content) || added;
    else if (typeof m.reasoning === 'string') added = this.add(m.reasoning) || added;
    else if (Array.isArray(m.reasoning_details)) {
      for (const detail of m.reasoning_details as Array<Record<string, unknown> | null>) {
        if (typeof detail?.text === 'string') added = this.add(detail.text) || added;
        else if (typeof detail?.summary === 'string') added = this.add(detail.summary) || added;
      }
    }
    if (typeof m.refusal === 'string') added = this.add(m.refusal) || added;
    const audio = m.audio as Record<string, unknown> | undefined;
    if (typeof audio?.transcript === 'string') added = this.add(audio.transcript) || added;
    const legacyCall = m.function_call as Record<string, unknown> | undefined;
    if (typeof legacyCall?.name === 'string') added = this.add(legacyCall.name) || added;
    if (typeof legacyCall?.arguments === 'string') added = this.add(legacyCall.arguments) || added;
    if (Array.isArray(m.tool_calls)) {
      for (const call of m.tool_calls as Array<Record<string, unknown> | null>) {
        const f = call?.function as Record<string, unknown> | undefined;
        if (typeof f?.name === 'string') added = this.add(f.name) || added;
        if (typeof f?.arguments === 'string') added = this.add(f.arguments) || added;
      }
    }
    return added;
  }

  /** The tokens of everything produced so far (counted off the event loop, or yielding to it). */
  async tokens(): Promise<number> {
    await this.background;
    await this.flush();
    return this.counted;
  }

  private async flush(): Promise<void> {
    while (this.pendingLength > 0) {
      const text = this.pending.join('');
      this.pending = [];
      this.pendingLength = 0;
      this.counted += (await this.count([text], this.model)) ?? fallbackCount([text]);
    }
  }
}

/**
 * Whether a usage field is an object of counts worth keeping: OpenAI's `*_details`, and the Messages API's
 * `server_tool_use` (`web_search_requests`, …) and `cache_creation` (`ephemeral_5m_input_tokens`, …).
 */
function holdsCounts(key: string): boolean {
  return key.endsWith('_details') || key === 'server_tool_use' || key === 'cache_creation';
}

/** A token count a provider may report: a whole, non-negative, exactly representable number. */
function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/**
 * Reads a provider's `usage`: `undefined` when there is none (`null`, absent), `'invalid'` when it is there but
 * cannot be billed (counts that are not whole non-negative numbers, or no `completion_tokens`), else the usage
 * with `total_tokens` made consistent.
 */
export function parseUsage(value: unknown, dialect: UsageDialect = 'chat'): Usage | 'invalid' | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) return 'invalid';
  const u = dialect === 'chat' ? (value as Record<string, unknown>) : normalizeUsage(value as Record<string, unknown>, dialect);
  if (!isCount(u.prompt_tokens) || !isCount(u.completion_tokens)) return 'invalid';
  if (u.total_tokens !== undefined && u.total_tokens !== null && !isCount(u.total_tokens)) return 'invalid';
  const usage: Usage = {
    prompt_tokens: u.prompt_tokens,
    completion_tokens: u.completion_tokens,
    total_tokens: Math.max(u.prompt_tokens + u.completion_tokens, (u.total_tokens as number | undefined) ?? 0),
  };
  // Only counts are kept (the provider's details and cost figures): never strings or nested values a provider
  // could fill with anything, which would reach the client, the meter and the logs.
  let kept = 0;
  for (const key in u) {
    if (!Object.hasOwn(u, key) || key in usage) continue;
    if (++kept > 32) break; // a real usage has a handful of fields
    const field = u[key];
    if (typeof field === 'number' && Number.isFinite(field)) usage[key] = field;
    else if (holdsCounts(key) && typeof field === 'object' && field !== null && !Array.isArray(field)) {
      const details: Record<string, number> = {};
      let names = 0;
      for (const name in field) {
        const count = (field as Record<string, unknown>)[name];
        if (++names > 32) break;
        if (Object.hasOwn(field, name) && typeof count === 'number' && Number.isFinite(count)) details[name] = count;
      }
      usage[key] = details;
    }
  }
  return usage;
}

/**
 * How a provider writes its usage: chat and legacy completions `{prompt_tokens, completion_tokens}`, the
 * Responses API `{input_tokens, output_tokens, input_tokens_details, output_tokens_details}`, embeddings
 * `{prompt_tokens, total_tokens}` (nothing is generated), the Messages API `{input_tokens,
 * cache_creation_input_tokens, cache_read_input_tokens, output_tokens}`.
 */
export type UsageDialect = 'chat' | 'responses' | 'embeddings' | 'anthropic';

/** A Responses or embeddings usage in the chat shape every meter event carries (details renamed alike). */
function normalizeUsage(u: Record<string, unknown>, dialect: Exclude<UsageDialect, 'chat'>): Record<string, unknown> {
  // an embedding generates nothing: completion tokens a provider reports are not believed
  if (dialect === 'embeddings') return { ...u, completion_tokens: 0, total_tokens: undefined };
  if (dialect === 'anthropic') return anthropicUsage(u);
  const { input_tokens: input, output_tokens: output, input_tokens_details: inDetails, output_tokens_details: outDetails, ...rest } = u;
  const out: Record<string, unknown> = { ...rest, prompt_tokens: input, completion_tokens: output };
  if (inDetails !== undefined) out.prompt_tokens_details = inDetails;
  if (outDetails !== undefined) out.completion_tokens_details = outDetails;
  return out;
}

/**
 * A Messages API usage in the chat shape: `prompt_tokens` counts every input token — uncached, cache writes and
 * cache reads, as OpenAI counts them — with the cache reads as `prompt_tokens_details.cached_tokens`; the cache
 * counts stay beside them under their own names. A cache count that is not a whole number ≥ 0 makes it unbillable.
 */
function anthropicUsage(u: Record<string, unknown>): Record<string, unknown> {
  const { input_tokens: input, output_tokens: output, cache_creation_input_tokens: rawWritten, cache_read_input_tokens: rawRead, ...rest } = u;
  const written = rawWritten ?? 0;
  const read = rawRead ?? 0;
  const out: Record<string, unknown> = { ...rest, prompt_tokens: undefined, completion_tokens: output, total_tokens: undefined };
  if (isCount(input) && isCount(written) && isCount(read)) {
    out.prompt_tokens = input + written + read;
    out.cache_creation_input_tokens = written;
    out.cache_read_input_tokens = read;
    out.prompt_tokens_details = { cached_tokens: read };
  }
  return out;
}

/**
 * A provider's usage as it sent it, counts only (numbers, and numbers inside `*_details` objects; at most 32 of
 * each): what `MeterEvent.providerUsage` carries, in the provider's own shape (`input_tokens` for the Responses
 * API). `undefined` when it sent none or something that is not an object.
 */
export function providerCounts(value: unknown): Record<string, unknown> | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const out: Record<string, unknown> = {};
  let kept = 0;
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    if (++kept > 32) break;
    const field = (value as Record<string, unknown>)[key];
    if (typeof field === 'number' && Number.isFinite(field)) out[key] = field;
    else if (holdsCounts(key) && typeof field === 'object' && field !== null && !Array.isArray(field)) {
      const details: Record<string, number> = {};
      let names = 0;
      for (const name in field) {
        if (++names > 32) break;
        const count = (field as Record<string, unknown>)[name];
        if (Object.hasOwn(field, name) && typeof count === 'number' && Number.isFinite(count)) details[name] = count;
      }
      out[key] = details;
    }
  }
  return out;
}

/** Combines two usages of one generation so that a later one never lowers what is billed. */
export function mergeUsage(previous: Usage | undefined, next: Usage): Usage {
  if (!previous) return next;
  const prompt = Math.max(previous.prompt_tokens, next.prompt_tokens);
  const completion = Math.max(previous.completion_tokens, next.completion_tokens);
  return { ...previous, ...next, prompt_tokens: prompt, completion_tokens: completion, total_tokens: Math.max(previous.total_tokens, next.total_tokens, prompt + completion) };
}

/** A usage's raw value for a log line: JSON, at most 300 characters. */
export function describeRawUsage(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}

/** Builds an estimated usage object. */
export function estimatedUsage(promptTokens: number, completionTokens: number): Usage {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    estimated: true,
  };
}
