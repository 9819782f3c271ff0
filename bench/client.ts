import http from 'node:http';
import { performance } from 'node:perf_hooks';

/** Where a bench client sends its chat completions: the provider itself or the gateway in front of it. */
export interface Target {
  name: 'direct' | 'gateway';
  /** Full URL of `POST .../chat/completions`. */
  url: URL;
  agent: http.Agent;
}

/** A client that reads slowly: paused, then every `intervalMs` it reads about `bytesPerTick` and pauses again. */
export interface SlowRead {
  intervalMs: number;
  bytesPerTick: number;
}

export interface StreamResult {
  status: number;
  /** Request start → response headers. */
  ttfbMs: number;
  /** Request start → first SSE event whose delta carries non-empty content. */
  ttfcMs: number;
  totalMs: number;
  events: number;
  bytes: number;
  /** The last event was `data: [DONE]`. */
  done: boolean;
}

function hasContent(ev: string): boolean {
  if (!ev.startsWith('data: ') || ev === 'data: [DONE]') return false;
  try {
    const chunk = JSON.parse(ev.slice(6)) as { choices?: Array<{ delta?: { content?: unknown } }> };
    const content = chunk.choices?.[0]?.delta?.content;
    return typeof content === 'string' && content !== '';
  } catch {
    return false;
  }
}

/**
 * POSTs one streaming chat completion and reads the SSE answer to its end. Counts events cheaply (the same
 * code for direct and gateway runs, so its cost cancels out) and parses only until the first content event.
 */
export function streamChat(
  target: Target,
  body: Record<string, unknown>,
  opts: {
    slow?: SlowRead;
    timeoutMs?: number;
    headers?: Record<string, string>;
    /** Updated live with the characters received so far (all ASCII here, so bytes). */
    progress?: { bytes: number };
  } = {},
): Promise<StreamResult> {
  const payload = JSON.stringify(body);
  return new Promise<StreamResult>((resolve, reject) => {
    const t0 = performance.now();
    let interval: NodeJS.Timeout | undefined;
    let settled = false;
    const finish = (err: Error | undefined, result?: StreamResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearInterval(interval);
      if (err) reject(err);
      else resolve(result!);
    };
    const req = http.request(target.url, {
      method: 'POST',
      agent: target.agent,
      headers: {
        'content-type': 'application/json',
        'content-length': String(Buffer.byteLength(payload)),
        accept: 'text/event-stream',
        authorization: 'Bearer bench-client',
        ...opts.headers,
      },
    });
    const timer = setTimeout(() => {
      req.destroy();
      finish(new Error(`${target.name}: stream did not finish within ${opts.timeoutMs ?? 30_000} ms`));
    }, opts.timeoutMs ?? 30_000);
    req.on('error', (err) => finish(err));
    req.on('response', (res) => {
      const ttfbMs = performance.now() - t0;
      const status = res.statusCode ?? 0;
      res.setEncoding('utf8');
      if (status !== 200) {
        let text = '';
        res.on('data', (t: string) => (text += t));
        res.on('end', () => finish(new Error(`${target.name}: HTTP ${status}: ${text.slice(0, 300)}`)));
        return;
      }
      let pending = '';
      let ttfcMs = -1;
      let events = 0;
      let bytes = 0;
      let last = '';
      let tickBytes = 0;
      const slow = opts.slow;
      res.on('data', (text: string) => {
        bytes += text.length;
        if (opts.progress) opts.progress.bytes = bytes;
        const buf = pending + text;
        let pos = 0;
        let lastStart = -1;
        let lastEnd = -1;
        for (let idx = buf.indexOf('\n\n'); idx !== -1; idx = buf.indexOf('\n\n', pos)) {
          if (ttfcMs < 0 && hasContent(buf.slice(pos, idx))) ttfcMs = performance.now() - t0;
          events++;
          lastStart = pos;
          lastEnd = idx;
          pos = idx + 2;
        }
        if (lastStart !== -1) last = buf.slice(lastStart, lastEnd);
        pending = buf.slice(pos);
        if (slow) {
          tickBytes += text.length;
          if (tickBytes >= slow.bytesPerTick) res.pause();
        }
      });
      res.on('end', () =>
        finish(undefined, { status, ttfbMs, ttfcMs, totalMs: performance.now() - t0, events, bytes, done: last === 'data: [DONE]' }),
      );
      res.on('close', () => {
        if (!res.complete) finish(new Error(`${target.name}: the response closed before its end`));
      });
      if (slow) {
        res.pause();
        interval = setInterval(() => {
          tickBytes = 0;
          res.resume();
        }, slow.intervalMs);
      }
    });
    req.end(payload);
  });
}
