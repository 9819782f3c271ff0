/**
 * Attack figures for `npm run bench`: what a hostile client or provider does to everyone else.
 *
 * 5. Tokenizer attack: an attacker streams requests whose prompt is ~1 MiB of one letter (the worst case for a
 *    BPE tokenizer) and hangs up; meanwhile a victim runs short streams. Event-loop delay and the victim's time
 *    to first content event, with and without the attacker, in the same run.
 * 6. Big event: a provider sends one 96 MiB SSE event; the gateway's RSS and heap growth while it refuses it
 *    (maxEventBytes, 8 MiB by default).
 */
import http from 'node:http';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { inferyStream } from '../lib';
import { streamChat, type Target } from './client';
import { percentile } from './stats';

const ms = (v: number): string => `${v.toFixed(2)} ms`;
const round = (v: number, digits = 2): number => Number(v.toFixed(digits));

/** Sends a request with a ~1 MiB one-letter prompt and hangs up after `hangUpMs`. Resolves when it is gone. */
function attack(port: number, body: string, hangUpMs: number): Promise<void> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/v1/chat/completions', method: 'POST', agent: false, headers: { authorization: 'Bearer bench', 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } });
    req.on('error', () => resolve());
    req.on('close', () => resolve());
    req.end(body, () => setTimeout(() => req.destroy(), hangUpMs));
  });
}

interface Sample {
  ttfc: number[];
  loopMaxMs: number;
  loopP99Ms: number;
}

async function victim(gateway: Target, runs: number, body: (i: number) => Record<string, unknown>): Promise<Sample> {
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  const ttfc: number[] = [];
  for (let i = 0; i < runs; i++) ttfc.push((await streamChat(gateway, body(i), { timeoutMs: 60_000 })).ttfcMs);
  loop.disable();
  return { ttfc, loopMaxMs: loop.max / 1e6, loopP99Ms: loop.percentile(99) / 1e6 };
}

/** Section 5: the tokenizer attack. `gatewayPort` serves the gateway; `body(i)` is a short victim stream. */
export async function benchTokenizerAttack(gateway: Target, gatewayPort: number, body: (i: number) => Record<string, unknown>): Promise<Record<string, unknown>> {
  const runs = 60;
  const prompt = 'a'.repeat(1024 * 1024 - 1024);
  const attackBody = JSON.stringify({ model: 'bench-model', stream: true, messages: [{ role: 'user', content: prompt }], bench: { id: 'attack', chunks: 50, content: ' x' } });
  const baseline = await victim(gateway, runs, body);
  let attacking = true;
  let sent = 0;
  const attacker = (async () => {
    while (attacking) {
      sent += 1;
      await attack(gatewayPort, attackBody, 30);
    }
  })();
  const underAttack = await victim(gateway, runs, body);
  attacking = false;
  await attacker;
  console.log(`\n5. Tokenizer attack: ~1 MiB one-letter prompts, sent one after another and hung up after 30 ms (${sent} sent), against ${runs} short victim streams`);
  console.log('='.repeat(100));
  const row = (label: string, s: Sample): string =>
    `  ${label.padEnd(16)} victim TTFC p50 ${ms(percentile(s.ttfc, 50)).padStart(10)}  p95 ${ms(percentile(s.ttfc, 95)).padStart(10)}  max ${ms(Math.max(...s.ttfc)).padStart(10)}   event-loop delay p99 ${ms(s.loopP99Ms).padStart(9)}  max ${ms(s.loopMaxMs).padStart(9)}`;
  console.log(row('no attacker', baseline));
  console.log(row('under attack', underAttack));
  const summary = (s: Sample) => ({ ttfcP50: round(percentile(s.ttfc, 50)), ttfcP95: round(percentile(s.ttfc, 95)), ttfcMax: round(Math.max(...s.ttfc)), loopP99Ms: round(s.loopP99Ms), loopMaxMs: round(s.loopMaxMs) });
  return { attackRequests: sent, baseline: summary(baseline), underAttack: summary(underAttack) };
}

/** Section 6: one 96 MiB upstream event, refused at maxEventBytes; RSS and heap growth. */
export async function benchBigEvent(): Promise<Record<string, unknown>> {
  const eventMiB = 96;
  const piece = Buffer.alloc(1024 * 1024, 'y');
  const provider = http.createServer((req, res) => {
    req.resume();
    req.on('end', async () => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"id":"big","choices":[{"index":0,"delta":{"content":"');
      for (let i = 0; i < eventMiB && !res.destroyed; i++) {
        if (!res.write(piece)) {
          await new Promise<void>((r) => {
            const done = (): void => {
              res.off('drain', done);
              res.off('close', done);
              r();
            };
            res.on('drain', done);
            res.on('close', done);
          });
        }
      }
      if (!res.destroyed) res.end('"}}]}\n\n');
    });
  });
  await new Promise<void>((r) => provider.listen(0, '127.0.0.1', r));
  const middleware = inferyStream({
    upstream: { baseURL: `http://127.0.0.1:${(provider.address() as AddressInfo).port}/v1` },
    authenticate: () => 'bench',
    heartbeatInterval: 0,
  });
  const app = express();
  app.use(express.json({ limit: '10mb' }));
  app.use(middleware);
  const server = http.createServer(app);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  globalThis.gc?.();
  const before = process.memoryUsage();
  let peakRss = before.rss;
  let peakHeap = before.heapUsed;
  const sampler = setInterval(() => {
    const m = process.memoryUsage();
    peakRss = Math.max(peakRss, m.rss);
    peakHeap = Math.max(peakHeap, m.heapUsed);
  }, 5);
  const started = performance.now();
  const result = await new Promise<string>((resolve) => {
    const req = http.request({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, path: '/v1/chat/completions', method: 'POST', agent: false, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve(text));
      res.on('error', () => resolve(text));
    });
    req.end(JSON.stringify({ model: 'm', stream: true, messages: [{ role: 'user', content: 'big' }] }));
  });
  const tookMs = performance.now() - started;
  clearInterval(sampler);
  middleware.close();
  server.closeAllConnections();
  provider.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  await new Promise<void>((r) => provider.close(() => r()));
  const code = /"code":"([a-z_]+)"/.exec(result)?.[1] ?? 'none';
  const mib = (b: number): number => round(b / 1024 / 1024, 1);
  console.log(`\n6. Big upstream event: one ${eventMiB} MiB SSE event, maxEventBytes 8 MiB`);
  console.log('='.repeat(60));
  console.log(`  client got: ${code} after ${ms(tookMs)}; peak RSS growth ${mib(peakRss - before.rss)} MiB, peak heap growth ${mib(peakHeap - before.heapUsed)} MiB`);
  return { eventMiB, errorCode: code, tookMs: round(tookMs), peakRssGrowthMiB: mib(peakRss - before.rss), peakHeapGrowthMiB: mib(peakHeap - before.heapUsed) };
}
