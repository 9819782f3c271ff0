import http, { type IncomingHttpHeaders } from 'node:http';
import { KEY } from './gateway';

export interface StreamResult {
  status: number;
  headers: IncomingHttpHeaders;
  raw: string;
  /** The data: payloads in order (`[DONE]` included), comments excluded. */
  events: string[];
  /** Comment lines (`: ...`) received. */
  comments: string[];
  /** ms since the request for each data event. */
  times: number[];
}

/** Splits raw SSE text into data payloads and comments. */
export function parseSse(raw: string): { events: string[]; comments: string[] } {
  const events: string[] = [];
  const comments: string[] = [];
  for (const block of raw.split('\n\n')) {
    if (block.trim() === '') continue;
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) comments.push(line);
      else if (line.startsWith('data: ')) data.push(line.slice(6));
    }
    if (data.length) events.push(data.join('\n'));
  }
  return { events, comments };
}

/**
 * POSTs to the gateway over a real socket and collects the answer as it arrives. `onEvent` may return
 * 'abort' to drop the connection there (as a browser Stop would).
 */
export function postStream(
  url: string,
  body: unknown,
  opts: { headers?: Record<string, string>; onEvent?: (data: string, index: number) => void | 'abort'; rawBody?: string } = {},
): Promise<StreamResult> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const payload = opts.rawBody ?? JSON.stringify(body);
    const req = http.request(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), ...opts.headers },
    });
    req.on('error', reject);
    req.on('response', (res) => {
      res.setEncoding('utf8');
      let raw = '';
      let buffer = '';
      const result: StreamResult = { status: res.statusCode ?? 0, headers: res.headers, raw: '', events: [], comments: [], times: [] };
      const finish = (): void => {
        result.raw = raw;
        resolve(result);
      };
      res.on('data', (text: string) => {
        raw += text;
        buffer += text;
        let cut: number;
        while ((cut = buffer.indexOf('\n\n')) !== -1) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const parsed = parseSse(`${block}\n\n`);
          result.comments.push(...parsed.comments);
          for (const data of parsed.events) {
            result.events.push(data);
            result.times.push(Date.now() - started);
            if (opts.onEvent?.(data, result.events.length - 1) === 'abort') {
              res.destroy();
              req.destroy();
              finish();
              return;
            }
          }
        }
      });
      res.on('end', finish);
      res.on('error', finish);
      res.on('close', finish);
    });
    req.end(payload);
  });
}

/** The JSON objects among the events ([DONE] left out). */
export function jsonEvents(result: StreamResult): Array<Record<string, unknown>> {
  return result.events.filter((e) => e !== '[DONE]').map((e) => JSON.parse(e) as Record<string, unknown>);
}

/** Waits until `check()` is true, polling every 5 ms, failing after `timeoutMs`. */
export async function waitFor(check: () => boolean, timeoutMs = 3000, what = 'condition'): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
