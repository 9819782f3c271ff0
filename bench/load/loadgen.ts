/**
 * The load bench's client, a process of its own. Reads one job from argv (JSON):
 *   {"url":"http://127.0.0.1:N/v1/chat/completions","key":"…","concurrency":100,"streams":300}
 * keeps `concurrency` streams open until `streams` have run, and prints one JSON line: each stream's time to
 * first content byte and to [DONE] (ms), how many ended whole, and the content chunks received.
 */
import http from 'node:http';
import { performance } from 'node:perf_hooks';

interface Job {
  url: string;
  key: string;
  concurrency: number;
  streams: number;
}
const job = JSON.parse(process.argv[2] ?? '{}') as Job;
const target = new URL(job.url);
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
const body = JSON.stringify({ model: 'mock-1', stream: true, max_tokens: 16, messages: [{ role: 'user', content: 'Say hello' }] });
const CONTENT = Buffer.from('"content":"');

interface One {
  ttft: number;
  total: number;
  ok: boolean;
  chunks: number;
}

function one(): Promise<One> {
  return new Promise((resolve) => {
    const start = performance.now();
    let ttft = NaN;
    let chunks = 0;
    let tail = '';
    const req = http.request(
      {
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        method: 'POST',
        agent,
        headers: { authorization: `Bearer ${job.key}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        res.on('data', (bytes: Buffer) => {
          // a content chunk is counted where `"content":"` starts; the marker never spans two reads in practice,
          // and when it does the chunk count (not the timing) is off by one
          for (let at = bytes.indexOf(CONTENT); at !== -1; at = bytes.indexOf(CONTENT, at + 1)) {
            if (Number.isNaN(ttft)) ttft = performance.now() - start;
            chunks++;
          }
          tail = (tail + bytes.toString('latin1', Math.max(0, bytes.length - 32))).slice(-32);
        });
        res.on('end', () => resolve({ ttft, total: performance.now() - start, ok: res.statusCode === 200 && tail.includes('[DONE]'), chunks }));
        res.on('error', () => resolve({ ttft, total: performance.now() - start, ok: false, chunks }));
      },
    );
    req.on('error', () => resolve({ ttft, total: performance.now() - start, ok: false, chunks }));
    req.setTimeout(30_000, () => req.destroy());
    req.end(body);
  });
}

async function main(): Promise<void> {
  const results: One[] = [];
  let started = 0;
  const worker = async (): Promise<void> => {
    while (started < job.streams) {
      started++;
      results.push(await one());
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(job.concurrency, job.streams) }, worker));
  const wallMs = performance.now() - t0;
  process.stdout.write(
    JSON.stringify({
      wallMs,
      ok: results.filter((r) => r.ok).length,
      failed: results.filter((r) => !r.ok).length,
      chunks: results.reduce((s, r) => s + r.chunks, 0),
      ttft: results.filter((r) => r.ok).map((r) => r.ttft),
      total: results.filter((r) => r.ok).map((r) => r.total),
    }) + '\n',
  );
  agent.destroy();
}
void main();
