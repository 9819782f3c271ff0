import { randomBytes } from 'node:crypto';
import { Json, isObject } from './http';

/** What the mock provider says: deterministic words with realistic gaps, token estimates, tool-call arguments. */

const SENTENCES = [
  'Streaming lets a reader see the first words while the rest are still being written.',
  'This answer comes from the infery-stream mock provider, one word at a time.',
  'Each word travels as its own server-sent event through the gateway to your client.',
  'When the answer is done the gateway adds a usage chunk with the credits it charged.',
];

/** A deterministic gap in ms for word `i`: 20–60 ms, like a fast model. */
export function gap(i: number, slow: boolean): number {
  return slow ? 1000 : 20 + ((i * 37) % 41);
}

export function answerFor(body: Record<string, unknown>): string {
  const messages = Array.isArray(body.messages) ? (body.messages as Array<{ role?: string; content?: unknown }>) : [];
  const last = [...messages].reverse().find((m) => m.role === 'user');
  const said = typeof last?.content === 'string' ? last.content.split(/\s+/).slice(0, 8).join(' ') : '';
  const maxTokens = typeof body.max_tokens === 'number' ? body.max_tokens : typeof body.max_completion_tokens === 'number' ? body.max_completion_tokens : Infinity;
  const words = `You said: "${said}". ${SENTENCES.join(' ')}`.split(' ');
  return words.slice(0, Math.max(1, Math.min(words.length, maxTokens))).join(' ');
}

export function promptTokens(body: Record<string, unknown>): number {
  return Math.max(1, Math.ceil(JSON.stringify(body.messages ?? []).length / 4));
}

export function toolCallFor(body: Record<string, unknown>): { name: string; args: string } | undefined {
  const tools = Array.isArray(body.tools) ? (body.tools as Array<{ function?: { name?: string; parameters?: { properties?: Record<string, { type?: string }> } } }>) : [];
  const fn = tools[0]?.function;
  if (!fn?.name) return undefined;
  const args: Record<string, unknown> = {};
  for (const [key, schema] of Object.entries(fn.parameters?.properties ?? {})) {
    args[key] = schema.type === 'number' || schema.type === 'integer' ? 42 : schema.type === 'boolean' ? true : `${key} value`;
  }
  if (Object.keys(args).length === 0) args.location = 'Paris';
  return { name: fn.name, args: JSON.stringify(args) };
}

/** A unique completion id, as OpenAI's are (`chatcmpl-` and 24 random characters). */
export function completionId(): string {
  return `chatcmpl-mock${randomBytes(12).toString('base64url')}`;
}

/** The answer's words for what the user said: `You said: "<first 8 words>".` and the four sentences. */
export function answerWords(said: string): string[] {
  const first = said.split(/\s+/).filter(Boolean).slice(0, 8).join(' ');
  return `You said: "${first}". ${SENTENCES.join(' ')}`.split(' ');
}

export function estimateTokens(value: unknown): number {
  return Math.max(1, Math.ceil((JSON.stringify(value ?? '')?.length ?? 0) / 4));
}

/** Arguments for a function tool from its JSON schema: 42 for numbers, true for booleans, "<key> value" else. */
export function argumentsFor(parameters: unknown): string {
  const properties = isObject(parameters) && isObject(parameters.properties) ? parameters.properties : {};
  const args: Json = {};
  for (const [key, schema] of Object.entries(properties)) {
    const type = isObject(schema) ? schema.type : undefined;
    args[key] = type === 'number' || type === 'integer' ? 42 : type === 'boolean' ? true : `${key} value`;
  }
  if (Object.keys(args).length === 0) args.location = 'Paris';
  return JSON.stringify(args);
}

/** Tool-call arguments stream in slices of this many characters, one token each (as on the chat route). */
const ARGUMENT_SLICE = 6;

export function argumentSlices(args: string): string[] {
  const slices: string[] = [];
  for (let i = 0; i < args.length; i += ARGUMENT_SLICE) slices.push(args.slice(i, i + ARGUMENT_SLICE));
  return slices;
}
