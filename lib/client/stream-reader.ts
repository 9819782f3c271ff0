/**
 * A small client for the gateway's `text/event-stream` answers, for browsers and Node 20 alike: no imports, no
 * dependencies, only `TextDecoder` and a minimal SSE parser. It is also compiled on its own as an ES module
 * (`tsconfig.browser.json` → `dist/browser/stream-reader.js`) for the example chat page.
 *
 * ```ts
 * const res = await fetch('/v1/chat/completions', { method: 'POST', headers, body, signal });
 * if (!res.ok) throw new Error((await res.json()).error.message);
 * const result = await readGatewayStream(res.body!, { onText: (delta) => out.append(delta) });
 * console.log(result.creditsUsed);
 * ```
 */

/** A tool call assembled from the stream's `tool_calls` deltas (one entry per `index`). */
export interface ToolCall {
  /** The `index` the provider gave this call in its deltas. */
  index: number;
  /** The call id (`call_…`), once a delta carried it. */
  id?: string;
  /** The tool type; `'function'` unless a delta said otherwise. */
  type: string;
  function: {
    /** The function name (the last non-empty name a delta carried). */
    name: string;
    /** The JSON arguments: every `arguments` fragment concatenated in arrival order. May be incomplete JSON mid-stream. */
    arguments: string;
  };
}

/** Token counts from a usage chunk. The gateway's own chunk adds `estimated: true` when it counted them itself. */
export interface GatewayUsage {
  prompt_tokens?: number;
  completion_tokens?: number;
  total_tokens?: number;
  estimated?: boolean;
  [key: string]: unknown;
}

/** What a gateway stream produced. */
export interface GatewayStreamResult {
  /** The completion id (the first chunk's `id`). */
  id?: string;
  /** All `delta.content` of choice 0, concatenated. */
  text: string;
  /** The tool calls of choice 0, assembled by `index` and sorted by it. */
  toolCalls: ToolCall[];
  /** Choice 0's last `finish_reason` (`'stop'`, `'length'`, `'tool_calls'`, …; `'error'` in a {@link GatewayStreamError}'s `partial`), or `null`. */
  finishReason: string | null;
  /** The last `usage` object seen: the gateway's usage chunk when it came. */
  usage?: GatewayUsage;
  /** `credits_used` from the gateway's usage chunk, when it came. */
  creditsUsed?: number;
  /** True when `data: [DONE]` was received: the generation completed normally. */
  done: boolean;
}

/** Callbacks invoked while the stream is read, in arrival order. An exception thrown by one rejects the read. */
export interface GatewayStreamHandlers {
  /** New content for choice 0: `delta` is the new piece, `text` everything so far. Not called for empty pieces. */
  onText?(delta: string, text: string): void;
  /** A tool call changed: `calls` is a copy of every call assembled so far, sorted by index. */
  onToolCalls?(calls: ToolCall[]): void;
  /** Every parsed JSON chunk (content, finish, usage and the gateway's `credits_used` chunk), before the other callbacks. */
  onChunk?(chunk: object): void;
}

/**
 * The stream failed after it began: the gateway sent its final `{"error":{…}}` event (or a chunk that is not
 * JSON arrived). `partial` holds what was received before the failure.
 */
export class GatewayStreamError extends Error {
  override readonly name = 'GatewayStreamError';
  /** The error code, e.g. `upstream_connection_lost`, `upstream_timeout`, or the provider's own code. */
  readonly code: string;
  /** The error type, e.g. `upstream_error`. */
  readonly type: string;
  /** Everything received before the error (`done` is false, `finishReason` is `'error'`). */
  readonly partial: GatewayStreamResult;

  /**
   * @param message human-readable message from the error event
   * @param details the event's `code` and `type`, and the result so far
   */
  constructor(message: string, details: { code: string; type: string; partial: GatewayStreamResult }) {
    super(message);
    this.code = details.code;
    this.type = details.type;
    this.partial = details.partial;
  }
}

/**
 * Reads a gateway (or any OpenAI-compatible) chat-completion stream to its end, calling `handlers` as chunks
 * arrive. Events may be split anywhere across network chunks; CRLF/CR line endings, comment lines
 * (`: keep-alive`) and multi-line `data:` fields are handled. Reading stops at `data: [DONE]` (the rest of the
 * body is cancelled).
 *
 * Check `response.ok` before calling it: an HTTP error body is not an event stream.
 *
 * @param body `response.body` from `fetch` (read with `getReader()`), or any async iterable of bytes (e.g. a
 *   Node `IncomingMessage`).
 * @param handlers optional callbacks for text, tool calls and raw chunks.
 * @returns the assembled result; `done: false` when the body ended without `[DONE]` and without an error event.
 * @throws {GatewayStreamError} when an error event (or a chunk that is not JSON) arrives mid-stream.
 * Errors of the body itself (e.g. an `AbortError` after `AbortController.abort()`) are rethrown as they are.
 */
export async function readGatewayStream(
  body: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>,
  handlers: GatewayStreamHandlers = {},
): Promise<GatewayStreamResult> {
  const acc = new Accumulator(handlers);
  const parser = new SseParser();
  const decoder = new TextDecoder('utf-8');
  for await (const bytes of chunksOf(body)) {
    const text = typeof bytes === 'string' ? bytes : decoder.decode(bytes, { stream: true });
    for (const event of parser.feed(text)) {
      if (acc.event(event)) return acc.snapshot(); // [DONE]: leaving the loop cancels the body
    }
  }
  // An event left without its closing blank line at the end of the body is incomplete and dropped, as in EventSource.
  for (const event of parser.feed(decoder.decode())) {
    if (acc.event(event)) return acc.snapshot();
  }
  return acc.snapshot();
}

/** One dispatched SSE event. */
interface SseEvent {
  /** The `event:` field, `''` when absent. */
  type: string;
  /** The `data:` lines joined with `\n`. */
  data: string;
}

/** A minimal incremental SSE parser (the parts of the EventSource rules a chat stream uses). */
class SseParser {
  private buffer = '';
  /** The previous piece ended with CR: a LF starting the next piece belongs to that line end. */
  private skipLF = false;
  private dataLines: string[] = [];
  private eventType = '';

  /** Feeds decoded text; returns the events it completed. */
  feed(piece: string): SseEvent[] {
    const events: SseEvent[] = [];
    if (piece === '') return events;
    if (this.skipLF) {
      this.skipLF = false;
      if (piece.charCodeAt(0) === 10) piece = piece.slice(1);
    }
    // The kept buffer holds no line end, so the search starts at the new text.
    const lineEnd = /\r\n|\r|\n/g;
    lineEnd.lastIndex = this.buffer.length;
    const buf = this.buffer + piece;
    let start = 0;
    for (let m = lineEnd.exec(buf); m !== null; m = lineEnd.exec(buf)) {
      const line = buf.slice(start, m.index);
      start = m.index + m[0].length;
      if (m[0] === '\r' && start === buf.length) this.skipLF = true;
      this.line(line, events);
    }
    this.buffer = buf.slice(start);
    return events;
  }

  private line(line: string, events: SseEvent[]): void {
    if (line === '') {
      if (this.dataLines.length > 0) events.push({ type: this.eventType, data: this.dataLines.join('\n') });
      this.dataLines = [];
      this.eventType = '';
      return;
    }
    if (line.charCodeAt(0) === 58) return; // ':' comment, e.g. ": keep-alive"
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    if (field === 'data') this.dataLines.push(value);
    else if (field === 'event') this.eventType = value;
    // id:, retry: and unknown fields do not matter here
  }
}

/** Turns a web ReadableStream (via getReader, which every browser has) or an async iterable into chunks. */
async function* chunksOf(body: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array | string> {
  if (typeof (body as ReadableStream<Uint8Array>).getReader !== 'function') {
    yield* body as AsyncIterable<Uint8Array>;
    return;
  }
  const reader = (body as ReadableStream<Uint8Array>).getReader();
  let ended = false;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        ended = true;
        return;
      }
      if (value !== undefined) yield value;
    }
  } catch (err) {
    ended = true; // the stream errored: nothing to cancel
    throw err;
  } finally {
    // Left early ([DONE], an error event, a throwing handler): tell the body we are done with it.
    if (!ended) reader.cancel().catch(() => undefined);
  }
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Folds chunks into a {@link GatewayStreamResult} and calls the handlers. */
class Accumulator {
  private readonly result: GatewayStreamResult = { text: '', toolCalls: [], finishReason: null, done: false };

  constructor(private readonly handlers: GatewayStreamHandlers) {}

  /** A copy of the result so far. */
  snapshot(): GatewayStreamResult {
    return { ...this.result, toolCalls: copyCalls(this.result.toolCalls) };
  }

  /** Handles one event; returns true at `[DONE]`. Throws a GatewayStreamError for an error event. */
  event(event: SseEvent): boolean {
    const data = event.data;
    if (data.trim() === '[DONE]') {
      this.result.done = true;
      return true;
    }
    let chunk: unknown;
    try {
      chunk = JSON.parse(data);
    } catch {
      throw this.failure('The stream sent a chunk that is not valid JSON.', 'invalid_stream_chunk', 'invalid_response');
    }
    if (!isObject(chunk)) throw this.failure('The stream sent a chunk that is not a JSON object.', 'invalid_stream_chunk', 'invalid_response');
    if ((chunk.error !== undefined && chunk.error !== null) || event.type === 'error') {
      const e = isObject(chunk.error) ? chunk.error : chunk;
      const message = typeof e.message === 'string' && e.message !== '' ? e.message : 'The stream failed.';
      const code = typeof e.code === 'string' || typeof e.code === 'number' ? String(e.code) : 'stream_error';
      const type = typeof e.type === 'string' ? e.type : 'stream_error';
      throw this.failure(message, code, type);
    }
    this.handlers.onChunk?.(chunk);
    this.chunk(chunk);
    return false;
  }

  private failure(message: string, code: string, type: string): GatewayStreamError {
    const partial = this.snapshot();
    partial.finishReason = 'error';
    return new GatewayStreamError(message, { code, type, partial });
  }

  private chunk(chunk: Json): void {
    const result = this.result;
    if (result.id === undefined && typeof chunk.id === 'string' && chunk.id !== '') result.id = chunk.id;
    if (isObject(chunk.usage)) result.usage = chunk.usage as GatewayUsage;
    if (typeof chunk.credits_used === 'number') result.creditsUsed = chunk.credits_used;
    if (!Array.isArray(chunk.choices)) return;
    for (const choice of chunk.choices as unknown[]) {
      // Choice 0 only: the text of n > 1 choices is not interleaved into one string.
      if (!isObject(choice) || (choice.index !== undefined && choice.index !== 0)) continue;
      const delta = choice.delta;
      if (isObject(delta)) {
        if (typeof delta.content === 'string' && delta.content !== '') {
          result.text += delta.content;
          this.handlers.onText?.(delta.content, result.text);
        }
        if (Array.isArray(delta.tool_calls) && delta.tool_calls.length > 0) {
          delta.tool_calls.forEach((part: unknown, position) => this.toolCall(part, position));
          this.handlers.onToolCalls?.(copyCalls(result.toolCalls));
        }
      }
      if (typeof choice.finish_reason === 'string') result.finishReason = choice.finish_reason;
    }
  }

  /** Merges one `tool_calls` delta into the call with its index (a missing index counts as its position). */
  private toolCall(part: unknown, position: number): void {
    if (!isObject(part)) return;
    const index = typeof part.index === 'number' ? part.index : position;
    const calls = this.result.toolCalls;
    let call = calls.find((c) => c.index === index);
    if (!call) {
      call = { index, type: 'function', function: { name: '', arguments: '' } };
      calls.push(call);
      calls.sort((a, b) => a.index - b.index);
    }
    if (typeof part.id === 'string' && part.id !== '') call.id = part.id;
    if (typeof part.type === 'string' && part.type !== '') call.type = part.type;
    const fn = part.function;
    if (isObject(fn)) {
      if (typeof fn.name === 'string' && fn.name !== '') call.function.name = fn.name;
      if (typeof fn.arguments === 'string') call.function.arguments += fn.arguments;
    }
  }
}

function copyCalls(calls: ToolCall[]): ToolCall[] {
  return calls.map((c) => ({ ...c, function: { ...c.function } }));
}
