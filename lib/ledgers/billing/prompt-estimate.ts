import { InferyError } from '../../base/errors';
import { walkJson, Yielder } from '../../base/json-walk';
import { fallbackCount } from './tokenizer-thread';

/** Tokens an image part adds to the estimate (OpenAI's low-detail figure) and to the bound (its high-detail maximum). */
const IMAGE_ESTIMATE = 85;
/** What a media part (image, audio, file, or any base64 data: URL) adds to the bound, whatever its size. */
export const MEDIA_PART_TOKENS = 1_105;
/** Past this many bytes of prompt text nothing is tokenised: the strict bound (a token per byte) is used. */
export const TOKENIZE_LIMIT = 1024 * 1024;
/**
 * A prompt whose strict bound is at most this many tokens is held at that bound, and counted only if the count is
 * ever needed (the provider sends no usable usage): most prompts, so most generations never tokenise anything.
 */
export const UNCOUNTED_BOUND = 4096;
const DATA_URL = /^data:[^,]{0,200};base64,/;

/**
 * Counts the tokens of several texts together (the gateway's counter, bound to the request's model); `undefined`
 * when they could not be counted.
 */
export type TextsCount = (texts: readonly string[]) => Promise<number | undefined>;

/** A chat request's prompt tokens: the estimate billed when the provider sends no usage, and the reserved bound. */
export interface PromptEstimate {
  /**
   * OpenAI's cookbook count: 3 per message, its role, name and content, 3 to prime the reply, the tools' JSON.
   * Counted on the first call (once), unless it was needed for the bound.
   */
  tokens: () => Promise<number>;
  /**
   * The reserved worst case: the strict bound (a token per UTF-8 byte of text, a fixed figure per media part)
   * when it is at most {@link UNCOUNTED_BOUND} or the text is over {@link TOKENIZE_LIMIT}; otherwise the estimate
   * plus 10% and 16, never above the strict bound, never below the estimate.
   */
  bound: number;
}

/** JSON of a tool list or schema; 400 when it is nested too deeply to serialise. */
function json(value: unknown, param: string): string {
  try {
    return JSON.stringify(value) ?? '';
  } catch {
    throw new InferyError(400, 'invalid_json', `\`${param}\` is nested too deeply.`, { param });
  }
}

/** Top-level request fields that are settings, not prompt text. */
const SETTINGS = new Set([
  'model', 'messages', 'stream', 'stream_options', 'n', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p',
  'frequency_penalty', 'presence_penalty', 'logit_bias', 'logprobs', 'top_logprobs', 'seed', 'stop', 'user', 'metadata',
  'store', 'service_tier', 'parallel_tool_calls', 'modalities', 'reasoning_effort', 'verbosity',
]);
const MEDIA_TYPES = new Set(['image_url', 'input_image', 'image', 'input_audio', 'audio', 'file', 'input_file']);

/**
 * Estimates the prompt tokens of a chat request and bounds them, in time linear in its size (the walk yields to
 * the event loop every few milliseconds; `count` counts off it). A short prompt is bounded without counting;
 * past {@link TOKENIZE_LIMIT} bytes of text the strict bound stands for both. Every string a provider could read counts: the messages' roles, names and
 * content (OpenAI's cookbook count), their tool calls, the tools and response format as JSON, and any other
 * field of a message, a content part or the request (`reasoning_content`, `refusal`, `prediction`,
 * `tool_choice`, …), keys included.
 */
export async function estimatePrompt(body: Record<string, unknown>, count: TextsCount): Promise<PromptEstimate> {
  const texts: string[] = [];
  let fixed = 3;
  /** UTF-8 bytes of text (the strict bound counts a token per byte), and the structure's size beside them */
  let bytes = 0;
  let structure = 0;
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
  /** Every string in `value` (keys too), walked without recursion and yielding; data: URLs are media unless `skipData`. */
  const yielder = new Yielder();
  const other = (value: unknown, skipData = false): Promise<unknown> =>
    walkJson(value, (item, _depth, key) => {
      if (key !== undefined) text(key);
      if (typeof item === 'string') {
        if (!(skipData && DATA_URL.test(item))) text(item);
      } else if (typeof item === 'number' || typeof item === 'boolean') {
        fixed += 1;
        structure += 1;
      } else if (typeof item === 'object' && item !== null) {
        fixed += 1;
        structure += 2;
      }
    }, Infinity, yielder);
  const part = async (value: unknown): Promise<void> => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      await other(value);
      return;
    }
    const { type, text: partText, ...rest } = value as Record<string, unknown>;
    if (typeof partText === 'string') text(partText);
    else if (partText !== undefined) await other(partText);
    const isMedia = typeof type === 'string' && MEDIA_TYPES.has(type);
    if (isMedia) {
      media += 1;
      if (type === 'image_url' || type === 'input_image' || type === 'image') images += 1;
    }
    await other(rest, isMedia);
  };

  const messages = Array.isArray(body.messages) ? body.messages : [];
  for (const message of messages as unknown[]) {
    if (yielder.due()) await yielder.pause();
    if (typeof message !== 'object' || message === null || Array.isArray(message)) {
      await other(message);
      continue;
    }
    fixed += 3;
    const fields = message as Record<string, unknown>;
    for (const key in fields) {
      const value = fields[key];
      if (!Object.hasOwn(fields, key) || value === undefined || value === null) continue;
      if (key === 'role' && typeof value === 'string') text(value);
      else if (key === 'name' && typeof value === 'string') {
        fixed += 1;
        text(value);
      } else if (key === 'content' && typeof value === 'string') text(value);
      else if (key === 'content' && Array.isArray(value)) {
        for (const item of value) {
          await part(item);
          if (yielder.due()) await yielder.pause();
        }
      }
      else if (key === 'tool_calls' || key === 'function_call') text(json(value, 'messages'));
      else {
        text(key);
        await other(value);
      }
    }
  }
  for (const key in body) {
    const value = body[key];
    if (!Object.hasOwn(body, key) || SETTINGS.has(key) || value === undefined || value === null) continue;
    if (key === 'tools' || key === 'functions' || key === 'response_format') {
      if (!(Array.isArray(value) && value.length === 0)) text(json(value, key));
    } else await other(value);
  }
  const strict = fixed + bytes + media * MEDIA_PART_TOKENS;
  if (bytes + structure > TOKENIZE_LIMIT) return { tokens: () => Promise.resolve(strict), bound: strict };
  let counted: Promise<number | undefined> | undefined;
  const exact = (): Promise<number | undefined> => (counted ??= count(texts).then((n) => (n === undefined ? undefined : fixed + images * IMAGE_ESTIMATE + n)));
  // not counted (the counter could not): billed at a token per 3 bytes, never above the strict bound
  const tokens = async (): Promise<number> => (await exact()) ?? Math.min(strict, fixed + images * IMAGE_ESTIMATE + fallbackCount(texts));
  if (strict <= UNCOUNTED_BOUND) return { tokens, bound: strict };
  const estimate = await exact();
  // a prompt that could not be counted is held at the strict bound
  if (estimate === undefined) return { tokens, bound: strict };
  return { tokens, bound: Math.max(estimate, Math.min(strict, Math.ceil(estimate * 1.1) + 16)) };
}
