import { InferyError } from '../errors';
import { countYielding } from './token-count';

/** Tokens an image part adds to the estimate (OpenAI's low-detail figure) and to the bound (its high-detail maximum). */
const IMAGE_ESTIMATE = 85;
/** What a media part (image, audio, file, or any base64 data: URL) adds to the bound, whatever its size. */
export const MEDIA_PART_TOKENS = 1_105;
/** Past this many bytes of prompt text nothing is tokenised: the strict bound (a token per byte) is used. */
export const TOKENIZE_LIMIT = 1024 * 1024;
const DATA_URL = /^data:[^,]{0,200};base64,/;

/** A chat request's prompt tokens: the estimate billed when the provider sends no usage, and the reserved bound. */
export interface PromptEstimate {
  /** OpenAI's cookbook count: 3 per message, its role, name and content, 3 to prime the reply, the tools' JSON. */
  tokens: number;
  /**
   * The reserved worst case: the estimate plus 10% and 16, never above a strict bound (a token per UTF-8 byte of
   * text, a fixed figure per media part), never below the estimate.
   */
  bound: number;
}

/** JSON of a tool list or schema; 400 when it is nested too deeply to serialise. */
function json(value: unknown, param: string): string {
  try {
    return JSON.stringify(value) ?? '';
  } catch {
    throw new InferyError(400, 'invalid_body', `\`${param}\` is nested too deeply.`, { param });
  }
}

/**
 * Estimates the prompt tokens of a chat request and bounds them, in time linear in its size: text is counted
 * in slices, yielding to the event loop every few milliseconds; past {@link TOKENIZE_LIMIT} bytes of text the
 * strict bound stands for both.
 */
export async function estimatePrompt(body: Record<string, unknown>, count: (text: string) => number): Promise<PromptEstimate> {
  const texts: string[] = [];
  let fixed = 3;
  let bytes = 0;
  let media = 0;
  let images = 0;
  const text = (value: string): void => {
    if (DATA_URL.test(value)) {
      media += 1;
      return;
    }
    texts.push(value);
    bytes += Buffer.byteLength(value);
  };
  const messages = Array.isArray(body.messages) ? body.messages : [];
  for (const message of messages as Array<Record<string, unknown> | null>) {
    if (typeof message !== 'object' || message === null) continue;
    fixed += 3;
    if (typeof message.role === 'string') text(message.role);
    if (typeof message.name === 'string') {
      fixed += 1;
      text(message.name);
    }
    const content = message.content;
    if (typeof content === 'string') text(content);
    else if (Array.isArray(content)) {
      for (const part of content as Array<Record<string, unknown> | null>) {
        if (typeof part?.text === 'string') text(part.text);
        else if (typeof part === 'object' && part !== null) {
          media += 1;
          if (part.type === 'image_url') images += 1;
        }
      }
    }
    if (message.tool_calls !== undefined && message.tool_calls !== null) text(json(message.tool_calls, 'messages'));
    if (message.function_call !== undefined && message.function_call !== null) text(json(message.function_call, 'messages'));
  }
  for (const field of ['tools', 'functions', 'response_format'] as const) {
    const value = body[field];
    if (value !== undefined && value !== null && !(Array.isArray(value) && value.length === 0)) text(json(value, field));
  }
  const strict = fixed + bytes + media * MEDIA_PART_TOKENS;
  if (bytes > TOKENIZE_LIMIT) return { tokens: strict, bound: strict };
  const tokens = fixed + images * IMAGE_ESTIMATE + (await countYielding(texts, count));
  return { tokens, bound: Math.max(tokens, Math.min(strict, Math.ceil(tokens * 1.1) + 16)) };
}
