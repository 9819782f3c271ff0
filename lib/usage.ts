import { countTokens as o200kCount } from 'gpt-tokenizer';

/** Token usage as OpenAI reports it; `estimated: true` when the gateway counted the tokens itself. */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** Present (true) only when the provider sent no usage and the gateway counted with a tokenizer. */
  estimated?: true;
  [key: string]: unknown;
}

export type TokenCounter = (text: string, model: string) => number;

const NO_SPECIAL = { disallowedSpecial: new Set<string>() };

/** Counts tokens with gpt-tokenizer's o200k_base encoding; special-token text counts as plain text. */
export const defaultCountTokens: TokenCounter = (text) => (text === '' ? 0 : o200kCount(text, NO_SPECIAL));

/** Flushes pending completion text to the tokenizer past this many characters, so memory stays bounded. */
const FLUSH_AT = 64 * 1024;

/**
 * Counts completion tokens as a stream goes by, for when the provider sends no usage. Text is kept only until
 * 64 KiB are pending, then counted, so a long generation does not grow memory.
 */
export class CompletionTally {
  private pending: string[] = [];
  private pendingLength = 0;
  private counted = 0;

  constructor(
    private readonly count: TokenCounter,
    private readonly model: string,
  ) {}

  /** Adds generated text; returns false for an empty string. */
  add(text: string): boolean {
    if (text.length === 0) return false;
    this.pending.push(text);
    this.pendingLength += text.length;
    if (this.pendingLength >= FLUSH_AT) this.flush();
    return true;
  }

  /**
   * Adds what a chunk's `choices[].delta` (or a full `message`) carries: content, reasoning, refusal, tool
   * calls. Returns true when it carried any generated text.
   */
  addMessage(message: unknown): boolean {
    if (typeof message !== 'object' || message === null) return false;
    const m = message as Record<string, unknown>;
    let added = false;
    if (typeof m.content === 'string') added = this.add(m.content) || added;
    if (typeof m.reasoning_content === 'string') added = this.add(m.reasoning_content) || added;
    else if (typeof m.reasoning === 'string') added = this.add(m.reasoning) || added;
    if (typeof m.refusal === 'string') added = this.add(m.refusal) || added;
    if (Array.isArray(m.tool_calls)) {
      for (const call of m.tool_calls as Array<Record<string, unknown> | null>) {
        const f = call?.function as Record<string, unknown> | undefined;
        if (typeof f?.name === 'string') added = this.add(f.name) || added;
        if (typeof f?.arguments === 'string') added = this.add(f.arguments) || added;
      }
    }
    return added;
  }

  tokens(): number {
    this.flush();
    return this.counted;
  }

  private flush(): void {
    if (this.pendingLength === 0) return;
    this.counted += this.count(this.pending.join(''), this.model);
    this.pending = [];
    this.pendingLength = 0;
  }
}

/**
 * Estimates the prompt tokens of a chat request the way OpenAI's cookbook does for chat models: 3 tokens per
 * message, the tokens of its role, content and name, 3 to prime the reply, plus the tools' JSON.
 */
export function estimatePromptTokens(body: Record<string, unknown>, count: TokenCounter, model: string): number {
  let tokens = 3;
  const messages = Array.isArray(body.messages) ? body.messages : [];
  for (const message of messages as Array<Record<string, unknown>>) {
    if (typeof message !== 'object' || message === null) continue;
    tokens += 3;
    if (typeof message.role === 'string') tokens += count(message.role, model);
    if (typeof message.name === 'string') tokens += 1 + count(message.name, model);
    const content = message.content;
    if (typeof content === 'string') tokens += count(content, model);
    else if (Array.isArray(content)) {
      for (const part of content as Array<Record<string, unknown>>) {
        if (typeof part?.text === 'string') tokens += count(part.text, model);
        else if (part?.type === 'image_url') tokens += 85;
      }
    }
    if (Array.isArray(message.tool_calls)) tokens += count(JSON.stringify(message.tool_calls), model);
  }
  if (Array.isArray(body.tools) && body.tools.length > 0) tokens += count(JSON.stringify(body.tools), model);
  return tokens;
}

/** True when `value` looks like a usage object a provider sent (zero counts included). */
export function isUsage(value: unknown): value is Usage {
  return (
    typeof value === 'object' &&
    value !== null &&
    (typeof (value as Usage).prompt_tokens === 'number' || typeof (value as Usage).completion_tokens === 'number')
  );
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
