/**
 * Relay benchmark: what the gateway adds over talking to the provider directly. Provider (bench/mock-provider),
 * gateway (express + compression() + express.json() + inferyStream) and client run in this one process on
 * 127.0.0.1, so the CPU figures are the whole process's and the gateway's share is the gateway − direct
 * difference. Every figure has its direct baseline measured in the same run. No thresholds: it prints figures.
 *
 *   npm run bench            (re-spawns itself with --expose-gc for the memory figures)
 */
import { spawnSync } from 'node:child_process';
import http, { type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import compression from 'compression';
import express from 'express';
import { inferyStream, type InferyStreamMiddleware } from '../lib';
import { benchBigEvent, benchTokenizerAttack } from './attack';
import { benchSharedLedger } from './ledger-bench';
import { benchTracing } from './tracing-bench';
import { streamChat, type StreamResult, type Target } from './client';
import { BenchProvider, contentEventBytes, type WriteStats } from './mock-provider';
import { percentile, median, cpuMs, round } from './stats';

function slowMiB(): number {
  const v = Number(process.env.BENCH_SLOW_MIB ?? 16);
  return Number.isFinite(v) && v > 0 && v <= 64 ? v : 16;
}

const CONFIG = {
  latency: { warmup: 20, runs: 200, chunks: 20 },
  throughput: { chunks: 20_000, warmupChunks: 2_000, runs: 3 },
  // Loopback TCP buffers on Linux autotune to ~4-5 MiB per hop (tcp_wmem max 4 MiB), so a 5 MiB stream fits in
  // the kernel and never back-pressures the provider through the gateway's two hops; 16 MiB does, with margin.
  // BENCH_SLOW_MIB=5 runs the 5 MiB variant.
  slow: { streams: 4, bytes: slowMiB() * 1024 * 1024, contentChars: 256, intervalMs: 100, bytesPerTick: 512 * 1024 },
  concurrency: { streams: 50, chunks: 200, rounds: 3 },
};
/** Hard stop so a hung stream cannot keep the bench running. */
const WATCHDOG_MS = 240_000;

// ---------------------------------------------------------------------------------------------- helpers

const ms = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(2)} ms` : 'n/a');
const mb = (bytes: number): string => `${(bytes / (1024 * 1024)).toFixed(2)} MiB`;
const kib = (bytes: number): string => `${(bytes / 1024).toFixed(1)} KiB`;
const int = (v: number): string => Math.round(v).toLocaleString('en-US');
const signedMs = (v: number): string => `${v >= 0 ? '+' : ''}${v.toFixed(2)} ms`;

/** A text table: first column left-aligned, the others right-aligned. */
function table(head: string[], rows: string[][]): string {
  const all = [head, ...rows];
  const widths = head.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('   ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('   '), ...rows.map(line)].map((l) => `  ${l}`).join('\n');
}

function section(title: string): void {
  console.log(`\n${title}\n${'='.repeat(title.length)}`);
}

function gc(): void {
  if (globalThis.gc) {
    globalThis.gc();
    globalThis.gc();
  }
}

let nextId = 0;
function chatBody(chunks: number, content: string): { id: string; body: Record<string, unknown> } {
  const id = `b${++nextId}`;
  return {
    id,
    body: {
      model: 'bench-model',
      stream: true,
      messages: [{ role: 'user', content: 'Write something for the benchmark.' }],
      bench: { id, chunks, content },
    },
  };
}

/** Events a client must receive: role + content chunks + finish + usage + [DONE], and the gateway's credits chunk. */
function expectedEvents(target: Target, chunks: number): number {
  return chunks + 4 + (target.name === 'gateway' ? 1 : 0);
}

function check(target: Target, chunks: number, r: StreamResult): StreamResult {
  const want = expectedEvents(target, chunks);
  if (r.events !== want || !r.done || r.ttfcMs < 0) {
    throw new Error(`${target.name}: got ${r.events} events (want ${want}), done=${r.done}, ttfc=${r.ttfcMs}`);
  }
  return r;
}

async function run(target: Target, chunks: number, content: string, slow?: { intervalMs: number; bytesPerTick: number }): Promise<StreamResult & { id: string }> {
  const { id, body } = chatBody(chunks, content);
  const r = await streamChat(target, body, { slow, timeoutMs: 30_000 });
  return { ...check(target, chunks, r), id };
}

// ---------------------------------------------------------------------------------------------- setup

interface Gateway {
  middleware: InferyStreamMiddleware;
  server: http.Server;
  url: string;
  /** The gateway's responses now open, by x-bench-id, to read how much it buffers for a slow client. */
  open: Map<string, ServerResponse>;
}

async function startGateway(upstreamURL: string): Promise<Gateway> {
  // The whole admission and settlement path, as a billing host runs it: a per-minute and a concurrency limit,
  // a reservation held and settled per request.
  const holds = new Set<string>();
  const middleware = inferyStream({
    upstream: { baseURL: upstreamURL, apiKey: 'sk-bench' },
    authenticate: () => 'bench-account',
    reserve: ({ generationId }) => (holds.add(generationId), generationId),
    meter: ({ generationId }) => (holds.delete(generationId), 1),
    limits: { maxConcurrent: 100_000, requestsPerMinute: 100_000_000 },
    heartbeatInterval: 0,
  });
  const open = new Map<string, ServerResponse>();
  const app = express();
  app.disable('x-powered-by');
  // As real apps do: compression() and express.json() mounted globally, before the gateway.
  app.use(compression());
  app.use(express.json({ limit: '10mb' }));
  app.use((req, res, next) => {
    const id = req.headers['x-bench-id'];
    if (typeof id === 'string') {
      open.set(id, res);
      res.once('close', () => open.delete(id));
    }
    next();
  });
  app.use(middleware);
  const server = http.createServer(app);
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { middleware, server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, open };
}

function target(name: Target['name'], baseURL: string): Target {
  return { name, url: new URL(`${baseURL}/chat/completions`), agent: new http.Agent({ keepAlive: true }) };
}

// ---------------------------------------------------------------------------------------------- 1. latency

async function benchLatency(direct: Target, gateway: Target): Promise<Record<string, unknown>> {
  const { warmup, runs, chunks } = CONFIG.latency;
  const content = ' word';
  for (let i = 0; i < warmup; i++) {
    await run(direct, chunks, content);
    await run(gateway, chunks, content);
  }
  const res = { direct: { ttfb: [] as number[], ttfc: [] as number[] }, gateway: { ttfb: [] as number[], ttfc: [] as number[] } };
  for (let i = 0; i < runs; i++) {
    // Alternate the order so drift (GC, CPU frequency, neighbours) hits both sides alike.
    const order = i % 2 === 0 ? [direct, gateway] : [gateway, direct];
    for (const t of order) {
      const r = await run(t, chunks, content);
      res[t.name].ttfb.push(r.ttfbMs);
      res[t.name].ttfc.push(r.ttfcMs);
    }
  }
  section(`1. Added latency: ${runs} sequential streams of ${chunks} content chunks each side (after ${warmup} warm-up)`);
  const ps = [50, 95, 99];
  const rows: string[][] = [];
  const json: Record<string, unknown> = { runs, warmup, chunks };
  for (const metric of ['ttfb', 'ttfc'] as const) {
    const label = metric === 'ttfb' ? 'time to first byte (headers)' : 'time to first content event';
    const d = ps.map((p) => percentile(res.direct[metric], p));
    const g = ps.map((p) => percentile(res.gateway[metric], p));
    rows.push([`${label}, direct`, ...d.map(ms)]);
    rows.push([`${label}, gateway`, ...g.map(ms)]);
    rows.push([`${label}, added by gateway`, ...g.map((v, i) => signedMs(v - d[i]!))]);
    json[metric] = {
      direct: Object.fromEntries(ps.map((p, i) => [`p${p}`, round(d[i]!)])),
      gateway: Object.fromEntries(ps.map((p, i) => [`p${p}`, round(g[i]!)])),
      added: Object.fromEntries(ps.map((p, i) => [`p${p}`, round(g[i]! - d[i]!)])),
    };
  }
  console.log(table(['', 'p50', 'p95', 'p99'], rows));
  return json;
}

// ---------------------------------------------------------------------------------------------- 2. throughput

async function benchThroughput(direct: Target, gateway: Target, provider: BenchProvider): Promise<Record<string, unknown>> {
  const { chunks, warmupChunks, runs } = CONFIG.throughput;
  const content = ' tok';
  for (const t of [direct, gateway]) await run(t, warmupChunks, content);
  const res = {
    direct: { wall: [] as number[], cpu: [] as number[], drainWaits: [] as number[] },
    gateway: { wall: [] as number[], cpu: [] as number[], drainWaits: [] as number[] },
  };
  for (let i = 0; i < runs; i++) {
    for (const t of i % 2 === 0 ? [direct, gateway] : [gateway, direct]) {
      gc();
      const cpu0 = process.cpuUsage();
      const r = await run(t, chunks, content);
      res[t.name].cpu.push(cpuMs(cpu0));
      res[t.name].wall.push(r.totalMs);
      res[t.name].drainWaits.push(provider.stats.get(r.id)?.drainWaits ?? 0);
    }
  }
  section(`2. Per-chunk throughput: 1 stream of ${int(chunks)} chunks, sent as fast as the socket takes them (median of ${runs} runs)`);
  const out: Record<string, unknown> = { chunks, runs };
  const rows: string[][] = [];
  const summary: Record<string, { wall: number; cpu: number }> = {};
  for (const name of ['direct', 'gateway'] as const) {
    const wall = median(res[name].wall);
    const cpu = median(res[name].cpu);
    summary[name] = { wall, cpu };
    rows.push([name, ms(wall), int((chunks / wall) * 1000), ms(cpu), ((cpu * 1000) / chunks).toFixed(2), int(median(res[name].drainWaits))]);
    out[name] = {
      wallMs: round(wall, 1),
      chunksPerSec: Math.round((chunks / wall) * 1000),
      cpuMs: round(cpu, 1),
      cpuUsPerChunk: round((cpu * 1000) / chunks, 2),
      providerDrainWaits: median(res[name].drainWaits),
    };
  }
  console.log(table(['', 'wall', 'chunks/s', 'CPU (process)', 'CPU µs/chunk', 'provider drain waits'], rows));
  const addedUs = ((summary.gateway!.cpu - summary.direct!.cpu) * 1000) / chunks;
  console.log(`  gateway's own CPU per chunk (gateway − direct): ${addedUs.toFixed(2)} µs; throughput ratio gateway/direct: ${(summary.direct!.wall / summary.gateway!.wall).toFixed(2)}`);
  out.gatewayCpuUsPerChunk = round(addedUs, 2);
  return out;
}

// ---------------------------------------------------------------------------------------------- 3. slow reader

interface SlowSide {
  durationMs: number;
  before: NodeJS.MemoryUsage;
  after: NodeJS.MemoryUsage;
  peakHeap: number;
  peakExternal: number;
  peakRss: number;
  /** Largest sum over the streams of what the gateway's responses held queued for the client (bytes). */
  peakGatewayBuffered: number;
  /** Per stream: the most bytes the provider had written beyond what the reader had received. */
  peakInFlight: number[];
  provider: WriteStats[];
  clientMs: number[];
}

async function slowSide(t: Target, gw: Gateway, provider: BenchProvider): Promise<SlowSide> {
  const { streams, bytes, contentChars, intervalMs, bytesPerTick } = CONFIG.slow;
  const content = 'lorem ipsum dolor sit amet '.repeat(Math.ceil(contentChars / 27)).slice(0, contentChars);
  const chunks = Math.ceil(bytes / contentEventBytes(content));
  const reqs = Array.from({ length: streams }, () => ({ ...chatBody(chunks, content), progress: { bytes: 0 }, peakInFlight: 0 }));
  gc();
  const before = process.memoryUsage();
  let peakHeap = before.heapUsed;
  let peakExternal = before.external;
  let peakRss = before.rss;
  let peakGatewayBuffered = 0;
  // Cheap, frequent: how far ahead of the reader the provider got, and what the gateway holds for the client.
  const tracker = setInterval(() => {
    for (const r of reqs) {
      const written = provider.stats.get(r.id)?.bytes ?? 0;
      r.peakInFlight = Math.max(r.peakInFlight, written - r.progress.bytes);
    }
    let buffered = 0;
    for (const res of gw.open.values()) buffered += res.writableLength;
    peakGatewayBuffered = Math.max(peakGatewayBuffered, buffered);
  }, 10);
  // Sampled after a full GC, so the peaks are memory held, not garbage awaiting collection.
  const sampler = setInterval(() => {
    gc();
    const m = process.memoryUsage();
    peakHeap = Math.max(peakHeap, m.heapUsed);
    peakExternal = Math.max(peakExternal, m.external);
    peakRss = Math.max(peakRss, m.rss);
  }, intervalMs);
  const t0 = performance.now();
  let results: StreamResult[];
  try {
    results = await Promise.all(
      reqs.map(async (r) =>
        check(t, chunks, await streamChat(t, r.body, { slow: { intervalMs, bytesPerTick }, timeoutMs: 60_000, headers: { 'x-bench-id': r.id }, progress: r.progress })),
      ),
    );
  } finally {
    clearInterval(tracker);
    clearInterval(sampler);
  }
  const durationMs = performance.now() - t0;
  gc();
  const after = process.memoryUsage();
  return {
    durationMs,
    before,
    after,
    peakHeap,
    peakExternal,
    peakRss,
    peakGatewayBuffered,
    peakInFlight: reqs.map((r) => r.peakInFlight),
    provider: reqs.map((r) => provider.stats.get(r.id)!),
    clientMs: results.map((r) => r.totalMs),
  };
}

async function benchSlowReader(direct: Target, gateway: Target, gw: Gateway, provider: BenchProvider): Promise<Record<string, unknown>> {
  const { streams, bytes, intervalMs, bytesPerTick } = CONFIG.slow;
  const d = await slowSide(direct, gw, provider);
  const g = await slowSide(gateway, gw, provider);
  section(
    `3. Slow reader: ${streams} concurrent streams × ${mb(bytes)} pushed as fast as possible, client reads ~${kib(bytesPerTick)} per ${intervalMs} ms; per stream`,
  );
  if (!globalThis.gc) console.log('  (global.gc unavailable: run node with --expose-gc for stable memory figures)');
  const per = (v: number): number => v / streams;
  const col = (f: (s: SlowSide) => string): string[] => [f(d), f(g)];
  const sum = (s: SlowSide, f: (w: WriteStats) => number): number => s.provider.reduce((a, w) => a + f(w), 0);
  const writeSpan = (w: WriteStats): number => w.writesDoneAt - w.startedAt;
  // Back-pressured: the provider had to wait for 'drain' and could never get the whole stream ahead of the reader.
  const pressured = (s: SlowSide): boolean => s.provider.every((w, i) => w.drainWaits > 0 && s.peakInFlight[i]! < 0.95 * w.bytes);
  const heapGrowth = (s: SlowSide): number => per(s.peakHeap - s.before.heapUsed);
  const extGrowth = (s: SlowSide): number => per(s.peakExternal - s.before.external);
  const rows: string[][] = [
    ['stream duration (client, median)', ...col((s) => ms(median(s.clientMs)))],
    ['peak heapUsed growth (after GC)', ...col((s) => kib(heapGrowth(s)))],
    ['peak external+arrayBuffers growth (after GC)', ...col((s) => kib(extGrowth(s)))],
    ['peak RSS growth', ...col((s) => kib(per(s.peakRss - s.before.rss)))],
    ['heapUsed after − before (after GC)', ...col((s) => kib(per(s.after.heapUsed - s.before.heapUsed)))],
    ['peak bytes queued in gateway res (user space)', '-', kib(per(g.peakGatewayBuffered))],
    ['peak bytes queued in provider res (user space)', ...col((s) => kib(Math.max(...s.provider.map((w) => w.peakBuffered))))],
    ['peak provider lead over reader (max)', ...col((s) => mb(Math.max(...s.peakInFlight)))],
    ['provider drain waits', ...col((s) => int(per(sum(s, (w) => w.drainWaits))))],
    ['provider time waiting for drain', ...col((s) => ms(per(sum(s, (w) => w.drainWaitMs))))],
    ['provider writes took (first → last, median)', ...col((s) => ms(median(s.provider.map(writeSpan))))],
    ['provider back-pressured by the reader', ...col((s) => (pressured(s) ? 'YES' : 'NO'))],
  ];
  console.log(table(['', 'direct', 'gateway'], rows));
  console.log(
    `  gateway − direct per stream: peak heap ${kib(heapGrowth(g) - heapGrowth(d))}, peak external ${kib(extGrowth(g) - extGrowth(d))}; ` +
      `provider lead ${mb(Math.max(...g.peakInFlight) - Math.max(...d.peakInFlight))} more (the second hop's kernel socket buffers).`,
  );
  console.log(`  A relay that ignored back-pressure would let the provider lead by the whole ${mb(bytes)} and hold most of it in the gateway.`);
  for (const [name, s] of Object.entries({ direct: d, gateway: g })) {
    if (!pressured(s)) {
      console.log(`  NOTE: ${name}: the provider was NOT back-pressured: the stream fits in the socket buffers on the way (try a larger BENCH_SLOW_MIB).`);
    }
  }
  const json = (s: SlowSide): Record<string, unknown> => ({
    durationMs: round(median(s.clientMs), 1),
    peakHeapGrowthKiB: round(heapGrowth(s) / 1024, 1),
    peakExternalGrowthKiB: round(extGrowth(s) / 1024, 1),
    peakRssGrowthKiB: round(per(s.peakRss - s.before.rss) / 1024, 1),
    heapAfterMinusBeforeKiB: round(per(s.after.heapUsed - s.before.heapUsed) / 1024, 1),
    providerPeakBufferedKiB: round(Math.max(...s.provider.map((w) => w.peakBuffered)) / 1024, 1),
    providerPeakLeadMiB: round(Math.max(...s.peakInFlight) / (1024 * 1024), 2),
    providerDrainWaits: per(sum(s, (w) => w.drainWaits)),
    providerDrainWaitMs: round(per(sum(s, (w) => w.drainWaitMs)), 1),
    providerWriteSpanMs: round(median(s.provider.map(writeSpan)), 1),
    providerBackPressured: pressured(s),
  });
  return {
    streams,
    bytesPerStream: bytes,
    readBytesPerTick: bytesPerTick,
    tickMs: intervalMs,
    gcExposed: Boolean(globalThis.gc),
    direct: json(d),
    gateway: { ...json(g), peakGatewayBufferedKiB: round(per(g.peakGatewayBuffered) / 1024, 1) },
  };
}

// ---------------------------------------------------------------------------------------------- 4. concurrency

async function benchConcurrency(direct: Target, gateway: Target): Promise<Record<string, unknown>> {
  const { streams, chunks, rounds } = CONFIG.concurrency;
  const content = ' word';
  const round1 = (t: Target): Promise<StreamResult[]> => Promise.all(Array.from({ length: streams }, () => run(t, chunks, content)));
  for (const t of [direct, gateway]) await round1(t); // opens the keep-alive sockets on both hops
  const res = {
    direct: { wall: [] as number[], cpu: [] as number[], ttfc: [] as number[] },
    gateway: { wall: [] as number[], cpu: [] as number[], ttfc: [] as number[] },
  };
  for (let i = 0; i < rounds; i++) {
    for (const t of i % 2 === 0 ? [direct, gateway] : [gateway, direct]) {
      gc();
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const rs = await round1(t);
      res[t.name].wall.push(performance.now() - t0);
      res[t.name].cpu.push(cpuMs(cpu0));
      res[t.name].ttfc.push(...rs.map((r) => r.ttfcMs));
    }
  }
  section(`4. Concurrency: ${streams} concurrent streams × ${chunks} chunks (median wall of ${rounds} rounds, TTFC over all ${rounds * streams} streams)`);
  const rows: string[][] = [];
  const out: Record<string, unknown> = { streams, chunks, rounds };
  for (const name of ['direct', 'gateway'] as const) {
    const r = res[name];
    const wall = median(r.wall);
    rows.push([name, ms(wall), ms(percentile(r.ttfc, 50)), ms(percentile(r.ttfc, 95)), int((streams * chunks * 1000) / wall), ms(median(r.cpu))]);
    out[name] = {
      wallMs: round(wall, 1),
      ttfcP50Ms: round(percentile(r.ttfc, 50)),
      ttfcP95Ms: round(percentile(r.ttfc, 95)),
      chunksPerSec: Math.round((streams * chunks * 1000) / wall),
      cpuMs: round(median(r.cpu), 1),
    };
  }
  console.log(table(['', 'wall', 'TTFC p50', 'TTFC p95', 'chunks/s', 'CPU (process)'], rows));
  console.log('  (one process, one event loop: TTFC here includes queueing behind the other streams\' work on both sides)');
  return out;
}

// ---------------------------------------------------------------------------------------------- main

async function main(): Promise<void> {
  const watchdog = setTimeout(() => {
    console.error(`relay-bench: still running after ${WATCHDOG_MS / 1000} s; giving up.`);
    process.exit(2);
  }, WATCHDOG_MS);
  watchdog.unref();

  const started = performance.now();
  const provider = await new BenchProvider().start();
  const gw = await startGateway(provider.url);
  const direct = target('direct', provider.url);
  const gateway = target('gateway', gw.url);
  console.log(`infery-stream relay bench — node ${process.version}, ${process.platform}/${process.arch}, gc ${globalThis.gc ? 'exposed' : 'NOT exposed'}`);
  console.log('provider, gateway (express + compression() + express.json() + inferyStream) and client in one process on 127.0.0.1;');
  console.log('"direct" = client → mock provider, "gateway" = client → gateway → mock provider. CPU is the whole process.');

  const result: Record<string, unknown> = { bench: 'infery-stream relay', node: process.version };
  let failed = false;
  try {
    result.latency = await benchLatency(direct, gateway);
    result.throughput = await benchThroughput(direct, gateway, provider);
    result.slowReader = await benchSlowReader(direct, gateway, gw, provider);
    result.concurrency = await benchConcurrency(direct, gateway);
    result.tokenizerAttack = await benchTokenizerAttack(gateway, Number(new URL(gw.url).port), () => chatBody(20, ' word').body);
    result.bigEvent = await benchBigEvent();
    result.sharedLedger = await benchSharedLedger(provider.url, section, table);
    result.tracing = await benchTracing(provider.url, section, table);
  } catch (err) {
    failed = true;
    console.error(`\nrelay-bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    result.error = err instanceof Error ? err.message : String(err);
  } finally {
    gw.middleware.close();
    direct.agent.destroy();
    gateway.agent.destroy();
    gw.server.closeAllConnections();
    await new Promise<void>((resolve) => gw.server.close(() => resolve()));
    await provider.close();
    clearTimeout(watchdog);
  }
  result.totalSeconds = round((performance.now() - started) / 1000, 1);
  console.log(`\ntotal ${result.totalSeconds} s`);
  console.log(JSON.stringify(result));
  if (failed) process.exitCode = 1;
}

if (typeof globalThis.gc !== 'function' && process.env.INFERY_BENCH_CHILD !== '1') {
  // Re-run under --expose-gc so the memory figures are measured after full collections.
  const child = spawnSync(process.execPath, ['--expose-gc', ...process.execArgv, __filename, ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, INFERY_BENCH_CHILD: '1' },
  });
  process.exitCode = child.status ?? 1;
} else {
  void main();
}
