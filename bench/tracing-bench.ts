/**
 * Section 8 of `npm run bench`: what tracing costs. The same gateway (express + compression() + express.json()
 * + inferyStream, reserve and meter hooks) without an observer, and with `otelObserver()` over the OpenTelemetry
 * SDK as a host runs it: the AsyncLocalStorage context manager, the W3C propagator, a BatchSpanProcessor with the
 * OTLP/HTTP protobuf exporter and a periodic OTLP metric reader, both sending to a local sink (so serializing
 * and sending the spans is in the figures), every trace sampled. Both gateways talk to the same mock provider;
 * the runs alternate, and the context manager is registered only while the traced gateway runs.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import compression from 'compression';
import express from 'express';
import { context, propagation } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-proto';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { BatchSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
import { inferyStream, type Observer } from '../lib';
import { otelObserver } from '../lib/ledgers/metrics/otel';
import { streamChat, type StreamResult, type Target } from './client';
import { percentile, median, cpuMs, round } from './stats';

type Section = (title: string) => void;
type Table = (head: string[], rows: string[][]) => string;

interface Served {
  server: http.Server;
  target: Target;
  close(): Promise<void>;
}

async function listen(server: http.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function gateway(providerURL: string, observer: Observer | undefined): Promise<Served> {
  const middleware = inferyStream({
    upstream: { baseURL: providerURL, apiKey: 'sk-bench' },
    authenticate: () => 'bench-account',
    reserve: ({ generationId }) => generationId,
    meter: () => 1,
    heartbeatInterval: 0,
    ...(observer ? { observer, accountTag: (account: string) => account } : {}),
  });
  const app = express();
  app.disable('x-powered-by');
  app.use(compression());
  app.use(express.json({ limit: '10mb' }));
  app.use(middleware);
  const server = http.createServer(app);
  server.keepAliveTimeout = 60_000;
  const url = await listen(server);
  const agent = new http.Agent({ keepAlive: true });
  return {
    server,
    target: { name: 'gateway', url: new URL(`${url}/v1/chat/completions`), agent },
    close: async () => {
      middleware.close();
      agent.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

let nextId = 0;
async function stream(target: Target, chunks: number): Promise<StreamResult> {
  const id = `t${++nextId}`;
  const body = { model: 'bench-model', stream: true, messages: [{ role: 'user', content: 'Trace this.' }], bench: { id, chunks, content: ' tok' } };
  const r = await streamChat(target, body, { timeoutMs: 30_000 });
  if (!r.done) throw new Error(`tracing bench: a stream did not end with [DONE] (${r.events} events)`);
  return r;
}

/** Section 8: the gateway without tracing and with it, same run, alternating. */
export async function benchTracing(providerURL: string, section: Section, table: Table): Promise<Record<string, unknown>> {
  // the collector: takes OTLP exports and drops them
  let exports = 0;
  const sink = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      exports++;
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  const sinkURL = await listen(sink);
  const tracerProvider = new TracerProvider({ spanProcessors: [new BatchSpanProcessor({ exporter: new OTLPTraceExporter({ url: `${sinkURL}/v1/traces` }), scheduledDelayMillis: 200 })] });
  const meterProvider = new MeterProvider({ readers: [new PeriodicExportingMetricReader({ exporter: new OTLPMetricExporter({ url: `${sinkURL}/v1/metrics` }), exportIntervalMillis: 1_000 })] });
  const contextManager = new AsyncLocalStorageContextManager();
  const off = await gateway(providerURL, undefined);
  const on = await gateway(providerURL, otelObserver({ tracerProvider, meterProvider }));
  const sides = { off, on };
  const tracingOn = (yes: boolean): void => {
    if (yes) {
      context.setGlobalContextManager(contextManager.enable());
      propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    } else {
      context.disable();
      propagation.disable();
    }
  };
  const each = async (round: number, fn: (name: 'off' | 'on', side: Served) => Promise<void>): Promise<void> => {
    for (const name of round % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
      tracingOn(name === 'on');
      await fn(name, sides[name]);
    }
  };
  const out: Record<string, unknown> = {};
  try {
    // warm-up
    for (let i = 0; i < 30; i++) await each(i, async (_n, side) => void (await stream(side.target, 10)));
    tracingOn(true);
    await tracerProvider.forceFlush();

    // 1. one stream at a time: time to first content event
    const runs = 150;
    const ttfc = { off: [] as number[], on: [] as number[] };
    for (let i = 0; i < runs; i++) await each(i, async (name, side) => void ttfc[name].push((await stream(side.target, 10)).ttfcMs));

    // 2. CPU per chunk and per generation: batches of 80 streams × 50 chunks, 4 at once; the traced side's
    // window ends with its spans exported (forceFlush), so their serializing and sending counts on its side
    const rounds = 8;
    const streams = 80;
    const chunks = 50;
    const cpu = { off: [] as number[], on: [] as number[] };
    for (let i = 0; i < rounds; i++) {
      await each(i, async (name, side) => {
        globalThis.gc?.();
        const cpu0 = process.cpuUsage();
        for (let s = 0; s < streams; s += 4) await Promise.all([0, 1, 2, 3].map(() => stream(side.target, chunks)));
        if (name === 'on') await tracerProvider.forceFlush();
        cpu[name].push(cpuMs(cpu0));
      });
    }

    // 3. 100 streams at once: wall time and TTFC
    const concurrent = 100;
    const wall = { off: [] as number[], on: [] as number[] };
    const burstTtfc = { off: [] as number[], on: [] as number[] };
    for (let i = 0; i < 4; i++) {
      await each(i, async (name, side) => {
        const t0 = performance.now();
        const results = await Promise.all(Array.from({ length: concurrent }, () => stream(side.target, 20)));
        wall[name].push(performance.now() - t0);
        burstTtfc[name].push(...results.map((r) => r.ttfcMs));
      });
    }
    tracingOn(true);
    await tracerProvider.forceFlush();
    await meterProvider.forceFlush();
    tracingOn(false);

    section(`8. Tracing: no observer vs otelObserver() over the OpenTelemetry SDK (OTLP/HTTP protobuf to a local sink, every trace sampled), alternating in one run`);
    const rows: string[][] = [];
    const ms = (v: number): string => `${v.toFixed(2)} ms`;
    const perChunk = (side: 'off' | 'on'): number => (median(cpu[side]) * 1000) / (streams * chunks);
    const perGeneration = (side: 'off' | 'on'): number => median(cpu[side]) / streams;
    for (const side of ['off', 'on'] as const) {
      rows.push([
        side === 'off' ? 'tracing off' : 'tracing on',
        ms(percentile(ttfc[side], 50)),
        ms(percentile(ttfc[side], 95)),
        `${perChunk(side).toFixed(2)} µs`,
        ms(perGeneration(side)),
        ms(median(wall[side])),
        ms(percentile(burstTtfc[side], 50)),
      ]);
    }
    rows.push([
      'added by tracing',
      `${(percentile(ttfc.on, 50) - percentile(ttfc.off, 50)).toFixed(2)} ms`,
      `${(percentile(ttfc.on, 95) - percentile(ttfc.off, 95)).toFixed(2)} ms`,
      `${(perChunk('on') - perChunk('off')).toFixed(2)} µs (${(perChunk('on') / perChunk('off')).toFixed(2)}x)`,
      ms(perGeneration('on') - perGeneration('off')),
      ms(median(wall.on) - median(wall.off)),
      ms(percentile(burstTtfc.on, 50) - percentile(burstTtfc.off, 50)),
    ]);
    console.log(table(['', 'TTFC p50', 'TTFC p95', `CPU per chunk (${chunks}-chunk streams)`, 'CPU per generation', `${concurrent} at once: wall`, `${concurrent} at once: TTFC p50`], rows));
    console.log(`  CPU is the whole process (client, provider and gateway); OTLP exports received by the sink: ${exports}`);
    out.ttfcP50 = { off: round(percentile(ttfc.off, 50)), on: round(percentile(ttfc.on, 50)) };
    out.ttfcP95 = { off: round(percentile(ttfc.off, 95)), on: round(percentile(ttfc.on, 95)) };
    out.cpuUsPerChunk = { off: round(perChunk('off'), 2), on: round(perChunk('on'), 2) };
    out.cpuMsPerGeneration = { off: round(perGeneration('off')), on: round(perGeneration('on')) };
    out.concurrentWallMs = { off: round(median(wall.off), 1), on: round(median(wall.on), 1) };
    out.exports = exports;
  } finally {
    tracingOn(false);
    await off.close();
    await on.close();
    await tracerProvider.shutdown().catch(() => undefined);
    await meterProvider.shutdown().catch(() => undefined);
    sink.closeAllConnections();
    await new Promise<void>((resolve) => sink.close(() => resolve()));
  }
  return out;
}
