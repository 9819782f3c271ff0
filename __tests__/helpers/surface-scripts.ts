/**
 * Scripts for the ScriptedProvider that answer like OpenAI's other APIs: the Responses API's typed events and
 * Response objects, legacy completions chunks and JSON, and embeddings lists. Shapes follow the API reference
 * (and what the openai SDK's accumulators require: `response.created` first, items and parts added before their
 * deltas).
 */
import type { Step } from './provider';

export const RESP_ID = 'resp_test0123456789';
export const MSG_ID = 'msg_test0123456789';
export const CREATED_AT = 1_700_000_000;

/** One SSE event as the Responses API frames it. */
export function typed(type: string, fields: Record<string, unknown>): Step {
  return { raw: `event: ${type}\ndata: ${JSON.stringify({ type, ...fields })}\n\n` };
}

export interface ResponsesUsage {
  input_tokens: number;
  output_tokens: number;
  input_tokens_details?: Record<string, number>;
  output_tokens_details?: Record<string, number>;
  total_tokens?: number;
}

export function responsesUsage(input: number, output: number, cached = 0, reasoning = 0): ResponsesUsage {
  return {
    input_tokens: input,
    input_tokens_details: { cached_tokens: cached },
    output_tokens: output,
    output_tokens_details: { reasoning_tokens: reasoning },
    total_tokens: input + output,
  };
}

/** A Response object. */
export function responseObject(
  status: 'in_progress' | 'completed' | 'incomplete' | 'failed',
  text: string | undefined,
  usage: unknown,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const output =
    text === undefined
      ? []
      : [{ id: MSG_ID, type: 'message', status: status === 'in_progress' ? 'in_progress' : 'completed', role: 'assistant', content: [{ type: 'output_text', text, annotations: [] }] }];
  return {
    id: RESP_ID,
    object: 'response',
    created_at: CREATED_AT,
    status,
    error: null,
    incomplete_details: null,
    model: 'test-model-2025',
    output,
    parallel_tool_calls: true,
    tool_choice: 'auto',
    tools: [],
    usage,
    ...extra,
  };
}

export interface ResponsesScript {
  /** ms between deltas */
  gap?: number;
  /** the final event's type */
  final?: 'response.completed' | 'response.incomplete' | 'response.failed' | false;
  /** the usage in the final event (`null` for none) */
  usage?: unknown;
  /** extra fields for the final response object */
  finalExtra?: Record<string, unknown>;
}

/**
 * A whole Responses stream: created, in_progress, item and part added, one `response.output_text.delta` per word
 * (with `gap` ms before each), text done, part and item done, then the final event with usage.
 */
export function responsesSteps(words: string[], script: ResponsesScript = {}): Step[] {
  let seq = 0;
  const ev = (type: string, fields: Record<string, unknown>): Step => typed(type, { ...fields, sequence_number: seq++ });
  const text = words.join('');
  const steps: Step[] = [
    ev('response.created', { response: responseObject('in_progress', undefined, null) }),
    ev('response.in_progress', { response: responseObject('in_progress', undefined, null) }),
    ev('response.output_item.added', { output_index: 0, item: { id: MSG_ID, type: 'message', status: 'in_progress', role: 'assistant', content: [] } }),
    ev('response.content_part.added', { item_id: MSG_ID, output_index: 0, content_index: 0, part: { type: 'output_text', text: '', annotations: [] } }),
  ];
  for (const word of words) {
    if (script.gap) steps.push({ wait: script.gap });
    steps.push(ev('response.output_text.delta', { item_id: MSG_ID, output_index: 0, content_index: 0, delta: word, logprobs: [] }));
  }
  steps.push(
    ev('response.output_text.done', { item_id: MSG_ID, output_index: 0, content_index: 0, text, logprobs: [] }),
    ev('response.content_part.done', { item_id: MSG_ID, output_index: 0, content_index: 0, part: { type: 'output_text', text, annotations: [] } }),
    ev('response.output_item.done', {
      output_index: 0,
      item: { id: MSG_ID, type: 'message', status: 'completed', role: 'assistant', content: [{ type: 'output_text', text, annotations: [] }] },
    }),
  );
  const final = script.final === undefined ? 'response.completed' : script.final;
  if (final) {
    const status = final === 'response.completed' ? 'completed' : final === 'response.incomplete' ? 'incomplete' : 'failed';
    const usage = script.usage === undefined ? responsesUsage(11, words.length) : script.usage;
    steps.push(ev(final, { response: responseObject(status, text, usage, script.finalExtra) }));
  }
  return steps;
}

/** The deltas of a Responses stream only (no final event), for streams that fail or are cancelled. */
export function responsesPrefix(words: string[], gap = 0): Step[] {
  return responsesSteps(words, { gap, final: false }).slice(0, -3);
}

export const CMPL = { id: 'cmpl-test123', object: 'text_completion', created: CREATED_AT, model: 'test-instruct' };

/** A legacy completions stream: one chunk per word (choices[].text), a finish chunk, a usage chunk, [DONE]. */
export function completionSteps(words: string[], opts: { gap?: number; usage?: [number, number] | false; choices?: number } = {}): Step[] {
  const steps: Step[] = [];
  const choices = opts.choices ?? 1;
  for (const word of words) {
    if (opts.gap) steps.push({ wait: opts.gap });
    for (let index = 0; index < choices; index++) steps.push({ data: { ...CMPL, choices: [{ text: word, index, logprobs: null, finish_reason: null }] } });
  }
  for (let index = 0; index < choices; index++) steps.push({ data: { ...CMPL, choices: [{ text: '', index, logprobs: null, finish_reason: 'length' }] } });
  if (opts.usage !== false) {
    const [p, c] = opts.usage ?? [5, words.length * choices];
    steps.push({ data: { ...CMPL, choices: [], usage: { prompt_tokens: p, completion_tokens: c, total_tokens: p + c } } });
  }
  steps.push({ data: '[DONE]' });
  return steps;
}

export function completionJson(text: string, usage: unknown = { prompt_tokens: 5, completion_tokens: 4, total_tokens: 9 }): Record<string, unknown> {
  return { ...CMPL, choices: [{ text, index: 0, logprobs: null, finish_reason: 'length' }], usage };
}

/** Deterministic vectors. */
export function vectors(count: number, dims = 4): number[][] {
  return Array.from({ length: count }, (_, i) => Array.from({ length: dims }, (_, j) => Math.fround((i + 1) * 0.25 - j * 0.125)));
}

/** A float32 vector as base64, as OpenAI sends it for `encoding_format: "base64"`. */
export function toBase64(vector: number[]): string {
  return Buffer.from(new Float32Array(vector).buffer).toString('base64');
}

/** An embeddings answer in the format asked for. */
export function embeddingsJson(body: Record<string, unknown> | undefined, usage: unknown = undefined, dims = 4): Record<string, unknown> {
  const input = body?.input;
  const count = Array.isArray(input) && (typeof input[0] === 'string' || Array.isArray(input[0])) ? input.length : 1;
  const base64 = body?.encoding_format === 'base64';
  const data = vectors(count, dims).map((v, index) => ({ object: 'embedding', index, embedding: base64 ? toBase64(v) : v }));
  const out: Record<string, unknown> = { object: 'list', data, model: 'text-embedding-test' };
  if (usage !== null) out.usage = usage ?? { prompt_tokens: 7 * count, total_tokens: 7 * count };
  return out;
}
