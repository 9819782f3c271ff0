import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';

/**
 * What a bench request asks the mock provider for, sent as the `bench` field of the chat body (the gateway
 * passes the body through, so the same request works direct and through the gateway).
 */
export interface StreamSpec {
  /** Key under which the provider records its write statistics. */
  id: string;
  /** Number of content chunks between the role chunk and the finish/usage/[DONE] chunks. */
  chunks: number;
  /** The `delta.content` of every content chunk. */
  content: string;
}

/** What the provider saw while writing one stream. */
export interface WriteStats {
  id: string;
  chunks: number;
  bytes: number;
  writes: number;
  /** `res.write()` calls that returned false (the socket buffer was over its high-water mark). */
  refused: number;
  /** Times the writer stopped and waited for 'drain'. */
  drainWaits: number;
  drainWaitMs: number;
  /** Largest `res.writableLength` seen right after a write (bytes Node held for this response). */
  peakBuffered: number;
  /** performance.now() at the first write, when the last write was accepted, and when the response finished. */
  startedAt: number;
  writesDoneAt: number;
  finishedAt: number;
  closedEarly: boolean;
}

const BASE = { id: 'chatcmpl-bench', object: 'chat.completion.chunk', created: 1_700_000_000, model: 'bench-model' };

function event(payload: unknown): string {
  return `data: ${typeof payload === 'string' ? payload : JSON.stringify(payload)}\n\n`;
}

/** Size in bytes of one content event with this content, to size a stream in bytes. */
export function contentEventBytes(content: string): number {
  return Buffer.byteLength(event({ ...BASE, choices: [{ index: 0, delta: { content }, finish_reason: null }] }));
}

function waitDrain(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/**
 * A minimal OpenAI-compatible streaming provider on 127.0.0.1. It answers at once (no artificial delay):
 * role chunk, `chunks` content chunks, finish chunk, usage chunk, [DONE], each its own `res.write()`,
 * as fast as the socket takes them (it waits for 'drain' when `write()` returns false, as a real server does).
 */
export class BenchProvider {
  url = '';
  readonly stats = new Map<string, WriteStats>();
  private readonly server = http.createServer((req, res) => void this.handle(req, res));

  async start(): Promise<this> {
    this.server.keepAliveTimeout = 60_000;
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1`;
    return this;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const parts: Buffer[] = [];
    for await (const part of req) parts.push(part as Buffer);
    let spec: StreamSpec | undefined;
    try {
      spec = (JSON.parse(Buffer.concat(parts).toString('utf8')) as { bench?: StreamSpec }).bench;
    } catch {
      spec = undefined;
    }
    if (req.method !== 'POST' || !req.url?.endsWith('/chat/completions') || !spec) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"error":{"message":"not found","type":"invalid_request_error","code":"not_found","param":null}}');
      return;
    }

    const st: WriteStats = {
      id: spec.id,
      chunks: spec.chunks,
      bytes: 0,
      writes: 0,
      refused: 0,
      drainWaits: 0,
      drainWaitMs: 0,
      peakBuffered: 0,
      startedAt: performance.now(),
      writesDoneAt: 0,
      finishedAt: 0,
      closedEarly: false,
    };
    this.stats.set(spec.id, st);
    res.on('close', () => {
      if (!res.writableFinished) st.closedEarly = true;
    });
    res.on('finish', () => {
      st.finishedAt = performance.now();
    });

    const content = event({ ...BASE, choices: [{ index: 0, delta: { content: spec.content }, finish_reason: null }] });
    const write = (text: string): boolean => {
      const ok = res.write(text);
      st.writes++;
      st.bytes += text.length; // all ASCII
      if (!ok) st.refused++;
      if (res.writableLength > st.peakBuffered) st.peakBuffered = res.writableLength;
      return ok;
    };
    const pace = async (ok: boolean): Promise<void> => {
      if (ok) return;
      const t0 = performance.now();
      st.drainWaits++;
      await waitDrain(res);
      st.drainWaitMs += performance.now() - t0;
    };

    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    await pace(write(event({ ...BASE, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] })));
    for (let i = 0; i < spec.chunks && !res.destroyed; i++) await pace(write(content));
    if (res.destroyed) return;
    await pace(write(event({ ...BASE, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })));
    const usage = { prompt_tokens: 12, completion_tokens: spec.chunks, total_tokens: 12 + spec.chunks };
    await pace(write(event({ ...BASE, choices: [], usage })));
    write(event('[DONE]'));
    st.writesDoneAt = performance.now();
    res.end();
  }
}
