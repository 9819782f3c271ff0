import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One thing the scripted provider does while answering a stream. */
export type Step =
  | { data: unknown } // writes `data: <JSON>\n\n` (a string is written as is after `data: `)
  | { raw: string } // writes bytes exactly
  | { wait: number } // pauses this many ms
  | { until: Promise<unknown> } // pauses until the test says so (at most 5 s)
  | { destroy: true } // drops the connection mid-stream
  | { hang: true }; // stops sending, keeps the connection open

/** How the provider answers one request. */
export interface Reply {
  status?: number;
  headers?: Record<string, string>;
  /** A JSON body (non-streaming answers and errors). */
  json?: unknown;
  /** An SSE answer, written step by step. Ends with the response unless a step destroys or hangs. */
  steps?: Step[];
  /** Wait this long before sending headers; `Infinity` never answers. */
  delay?: number;
  /** Refuse by destroying the socket before any response. */
  destroy?: true;
}

export interface SeenRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  json: Record<string, unknown> | undefined;
  /** performance-style timestamp (Date.now()) when the provider saw its response close early, if it did. */
  closedEarlyAt?: number;
  /** Steps fully written before the connection closed. */
  stepsWritten: number;
}

/**
 * A scripted OpenAI-compatible provider on 127.0.0.1 that stands for the real one in tests. Each test sets
 * `reply` and reads `requests` to see what the gateway sent, and when the gateway closed the connection.
 */
export class ScriptedProvider {
  reply: (req: SeenRequest) => Reply = () => ({ steps: textSteps(['Hello', ' world']) });
  readonly requests: SeenRequest[] = [];
  private server: http.Server | undefined;
  private readonly timers = new Set<NodeJS.Timeout>();
  url = '';

  async start(): Promise<this> {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1`;
    return this;
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  /** The last request the provider received. */
  get last(): SeenRequest {
    const last = this.requests[this.requests.length - 1];
    if (!last) throw new Error('the provider received no request');
    return last;
  }

  /** Resolves once the provider has seen `n` requests (bounded wait). */
  async waitForRequests(n: number, timeoutMs = 5000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (this.requests.length < n) {
      if (Date.now() > until) throw new Error(`provider saw ${this.requests.length} requests, expected ${n}`);
      await sleep(5);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve();
      }, ms);
      this.timers.add(t);
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    let json: Record<string, unknown> | undefined;
    try {
      json = JSON.parse(body) as Record<string, unknown>;
    } catch {
      json = undefined;
    }
    const seen: SeenRequest = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body, json, stepsWritten: 0 };
    this.requests.push(seen);
    res.on('close', () => {
      if (!res.writableFinished) seen.closedEarlyAt = Date.now();
    });
    const reply = this.reply(seen);
    if (reply.destroy) {
      req.socket.destroy();
      return;
    }
    if (reply.delay === Infinity) return;
    if (reply.delay) await this.sleep(reply.delay);
    if (res.destroyed) return;
    if (reply.json !== undefined || !reply.steps) {
      const text = JSON.stringify(reply.json ?? {});
      res.writeHead(reply.status ?? 200, { 'content-type': 'application/json', ...reply.headers });
      res.end(text);
      return;
    }
    res.writeHead(reply.status ?? 200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', ...reply.headers });
    res.flushHeaders();
    for (const step of reply.steps) {
      if (res.destroyed) return;
      if ('wait' in step) await this.sleep(step.wait);
      else if ('until' in step) await Promise.race([step.until, this.sleep(5_000)]);
      else if ('destroy' in step) {
        res.destroy();
        return;
      } else if ('hang' in step) return;
      else if ('raw' in step) res.write(step.raw);
      else res.write(`data: ${typeof step.data === 'string' ? step.data : JSON.stringify(step.data)}\n\n`);
      seen.stepsWritten++;
    }
    res.end();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export const BASE = { id: 'chatcmpl-test123', object: 'chat.completion.chunk', created: 1_700_000_000, model: 'test-model' };

/** A content chunk as OpenAI sends it. */
export function contentChunk(content: string): Record<string, unknown> {
  return { ...BASE, choices: [{ index: 0, delta: { content }, finish_reason: null }] };
}

export function finishChunk(reason = 'stop'): Record<string, unknown> {
  return { ...BASE, choices: [{ index: 0, delta: {}, finish_reason: reason }] };
}

export function usageChunk(prompt: number, completion: number): Record<string, unknown> {
  return { ...BASE, choices: [], usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion } };
}

/**
 * A whole OpenAI-like stream: role chunk, one chunk per word (with `gap` ms between), finish chunk, usage
 * chunk (unless `usage` is false), [DONE].
 */
export function textSteps(words: string[], opts: { gap?: number; usage?: [number, number] | false; done?: boolean } = {}): Step[] {
  const steps: Step[] = [{ data: { ...BASE, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] } }];
  for (const word of words) {
    if (opts.gap) steps.push({ wait: opts.gap });
    steps.push({ data: contentChunk(word) });
  }
  steps.push({ data: finishChunk() });
  if (opts.usage !== false) steps.push({ data: usageChunk(...(opts.usage ?? [12, words.length])) });
  if (opts.done !== false) steps.push({ data: '[DONE]' });
  return steps;
}

/** A base URL on 127.0.0.1 where nothing listens (a port just freed), for connection-refused tests. */
export async function refusedURL(): Promise<string> {
  const closed = http.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  return `http://127.0.0.1:${port}/v1`;
}
