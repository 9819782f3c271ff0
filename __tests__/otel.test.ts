/**
 * `infery-stream/otel`: the OpenTelemetry observer's contract, read from the OpenTelemetry SDK's own in-memory
 * exporters (spans and metrics) over real sockets: a scripted provider stands for the real one and records the
 * `traceparent` the gateway sent it. Every server is stopped in afterEach.
 */
import { context, propagation, SpanKind, SpanStatusCode, trace, type Attributes } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { CompositePropagator, isTracingSuppressed, W3CBaggagePropagator, W3CTraceContextPropagator } from '@opentelemetry/core';
import { AggregationTemporality, DataPointType, MeterProvider, MetricReader, type HistogramMetricData, type MetricData } from '@opentelemetry/sdk-metrics';
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider, type ReadableSpan } from '@opentelemetry/sdk-trace';
import express from 'express';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { inferyStream, bearerToken, type Observer, type Options, type UpstreamConfig } from '../lib';
import { GEN_AI_SEMCONV_VERSION, otelObserver, type OtelObserverOptions } from '../lib/ledgers/metrics/otel';
import { KEY, startGateway, UPSTREAM_KEY, type Account, type TestGateway } from './helpers/gateway';
import { BASE, ScriptedProvider, sleep, textSteps, usageChunk, type Reply } from './helpers/provider';
import { jsonEvents, postStream, waitFor } from './helpers/sse-client';
import { completionSteps, embeddingsJson, responsesSteps } from './helpers/surface-scripts';

/** A metric reader the test collects from on demand. */
class TestReader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
  }
  protected async onForceFlush(): Promise<void> {}
  protected async onShutdown(): Promise<void> {}
}

const CLIENT_TRACE = '0af7651916cd43dd8448eb211c80319c';
const CLIENT_SPAN = 'b7ad6b7169203331';
const TRACEPARENT = `00-${CLIENT_TRACE}-${CLIENT_SPAN}-01`;
const PROMPT = 'What is the secret plan for tomorrow?';
const SECOND_KEY = 'sk-second-upstream-key-222222222';

let contextManager: AsyncLocalStorageContextManager;
let exporter: InMemorySpanExporter;
let tracerProvider: TracerProvider;
let reader: TestReader;
let meterProvider: MeterProvider;
let provider: ScriptedProvider;
const gateways: TestGateway[] = [];
const servers: http.Server[] = [];

beforeAll(() => {
  contextManager = new AsyncLocalStorageContextManager().enable();
  context.setGlobalContextManager(contextManager);
  propagation.setGlobalPropagator(new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] }));
});

afterAll(() => {
  context.disable();
  propagation.disable();
});

beforeEach(async () => {
  exporter = new InMemorySpanExporter();
  tracerProvider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  reader = new TestReader();
  meterProvider = new MeterProvider({ readers: [reader] });
  provider = await new ScriptedProvider().start();
  provider.reply = () => ({ steps: textSteps(['Hello', ' traced', ' world'], { usage: [12, 3] }) });
});

afterEach(async () => {
  for (const gw of gateways.splice(0)) await gw.close();
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  await provider.stop();
  await tracerProvider.shutdown();
  await meterProvider.shutdown();
});

function observer(options: OtelObserverOptions = {}): Observer {
  return otelObserver({ tracerProvider, meterProvider, ...options });
}

async function tracedGateway(overrides: Partial<Options<Account>> = {}, otel: OtelObserverOptions = {}): Promise<TestGateway> {
  const gw = await startGateway(provider.url, { observer: observer(otel), accountTag: (account) => `customer:${account.id}`, ...overrides });
  gateways.push(gw);
  return gw;
}

/** The finished spans, once `count` of them have ended. */
async function spans(count: number): Promise<ReadableSpan[]> {
  await waitFor(() => exporter.getFinishedSpans().length >= count, 3000, `${count} finished spans`);
  return exporter.getFinishedSpans();
}

const generationSpan = (all: ReadableSpan[]): ReadableSpan => {
  const found = all.filter((s) => s.attributes['infery.generation_id'] !== undefined);
  expect(found).toHaveLength(1);
  return found[0]!;
};
const upstreamSpans = (all: ReadableSpan[]): ReadableSpan[] => all.filter((s) => s.name === 'POST').sort((a, b) => Number(a.attributes['infery.attempt']) - Number(b.attributes['infery.attempt']));
const parentOf = (span: ReadableSpan): string | undefined => span.parentSpanContext?.spanId;

/** Every attribute and event attribute value of every span, as text. */
function everyValue(all: ReadableSpan[]): string {
  const values: unknown[] = [];
  const take = (attributes: Attributes): void => {
    for (const value of Object.values(attributes)) values.push(value);
  };
  for (const span of all) {
    values.push(span.name);
    take(span.attributes);
    for (const event of span.events) take(event.attributes ?? {});
  }
  return JSON.stringify(values);
}

async function collected(): Promise<MetricData[]> {
  const { resourceMetrics } = await reader.collect();
  return resourceMetrics.scopeMetrics.flatMap((scope) => scope.metrics);
}

const metricNamed = (all: MetricData[], name: string): HistogramMetricData => {
  const found = all.find((m) => m.descriptor.name === name);
  expect(found).toBeDefined();
  expect(found!.dataPointType).toBe(DataPointType.HISTOGRAM);
  return found as HistogramMetricData;
};

describe('a generation is a span in the GenAI conventions', () => {
  test('a streamed chat under the client’s traceparent: generation span → upstream span, attributes, first-token event, the provider continues the trace', async () => {
    const gw = await tracedGateway();
    const res = await postStream(gw.url, { model: 'test-model', stream: true, max_tokens: 64, messages: [{ role: 'user', content: PROMPT }] }, { headers: { traceparent: TRACEPARENT } });
    expect(res.status).toBe(200);
    expect(jsonEvents(res).at(-1)!.credits_used).toBe(15);

    const all = await spans(2);
    const gen = generationSpan(all);
    const [upstream] = upstreamSpans(all);
    expect(gen.name).toBe('chat test-model');
    expect(gen.kind).toBe(SpanKind.CLIENT);
    expect(gen.spanContext().traceId).toBe(CLIENT_TRACE);
    expect(parentOf(gen)).toBe(CLIENT_SPAN);
    expect(gen.status.code).toBe(SpanStatusCode.UNSET);
    expect(gen.attributes).toMatchObject({
      'gen_ai.operation.name': 'chat',
      'openai.api.type': 'chat_completions',
      'gen_ai.provider.name': 'openai',
      'gen_ai.request.model': 'test-model',
      'gen_ai.request.max_tokens': 64,
      'gen_ai.request.stream': true,
      'gen_ai.response.model': 'test-model',
      'gen_ai.response.id': 'chatcmpl-test123',
      'gen_ai.response.finish_reasons': ['stop'],
      'gen_ai.usage.input_tokens': 12,
      'gen_ai.usage.output_tokens': 3,
      'gen_ai.usage.cache_read.input_tokens': 0,
      'gen_ai.usage.cache_creation.input_tokens': 0,
      'server.address': '127.0.0.1',
      'server.port': Number(new URL(provider.url).port),
      'infery.generation_id': res.headers['x-generation-id'],
      'infery.credits': 15,
      'infery.outcome': 'completed',
      'infery.upstream': 'default',
      'infery.account_tag': 'customer:acct-1',
    });
    expect(gen.attributes['infery.ttft_ms']).toEqual(expect.any(Number));
    expect(gen.attributes['gen_ai.response.time_to_first_chunk']).toBeCloseTo(Number(gen.attributes['infery.ttft_ms']) / 1000, 6);
    expect(gen.attributes['infery.failed_upstreams']).toBeUndefined();
    expect(gen.attributes['error.type']).toBeUndefined();
    const first = gen.events.find((e) => e.name === 'infery.first_token');
    expect(first?.attributes?.['infery.ttft_ms']).toBe(gen.attributes['infery.ttft_ms']);

    // the upstream request: an HTTP client span under the generation's, in the same trace
    expect(upstream).toBeDefined();
    expect(upstream!.kind).toBe(SpanKind.CLIENT);
    expect(parentOf(upstream!)).toBe(gen.spanContext().spanId);
    expect(upstream!.spanContext().traceId).toBe(CLIENT_TRACE);
    expect(upstream!.attributes).toMatchObject({
      'http.request.method': 'POST',
      'http.response.status_code': 200,
      'url.full': `${provider.url}/chat/completions`,
      'infery.upstream': 'default',
      'infery.attempt': 1,
    });
    // it lasts until the relayed answer ended, not just its headers
    expect(upstream!.endTime[0] * 1e3 + upstream!.endTime[1] / 1e6).toBeGreaterThanOrEqual(Number(first?.time[0]) * 1e3 + Number(first?.time[1]) / 1e6);

    // the provider got the upstream span's trace context: it continues the same trace
    const sent = provider.requests[0]!.headers.traceparent;
    expect(sent).toBe(`00-${CLIENT_TRACE}-${upstream!.spanContext().spanId}-01`);

    // never a key, the client's or the provider's, and never the prompt or the answer
    const text = everyValue(all);
    for (const secret of [KEY, UPSTREAM_KEY, PROMPT, 'traced world']) expect(text).not.toContain(secret);
  });

  test('the host’s active span (its HTTP instrumentation) is the parent, not the raw header; meter runs in the request’s context', async () => {
    const tracer = tracerProvider.getTracer('host');
    const metered: Array<{ active: string | undefined; suppressed: boolean }> = [];
    const app = express();
    // what @opentelemetry/instrumentation-http does for every incoming request: a SERVER span, made current
    app.use((req, res, next) => {
      const span = tracer.startSpan(`${req.method} ${req.path}`, { kind: SpanKind.SERVER });
      res.on('close', () => span.end());
      context.with(trace.setSpan(context.active(), span), next);
    });
    app.use(
      inferyStream<Account>({
        upstream: { baseURL: provider.url, apiKey: UPSTREAM_KEY },
        authenticate: (req) => (bearerToken(req) === KEY ? { id: 'acct-1' } : null),
        meter: (e) => {
          metered.push({ active: trace.getActiveSpan()?.spanContext().spanId, suppressed: isTracingSuppressed(context.active()) });
          tracer.startSpan('ledger write').end();
          return e.usage.total_tokens;
        },
        observer: observer(),
      }),
    );
    const server = http.createServer(app);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const res = await postStream(url, { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] }, { headers: { traceparent: TRACEPARENT } });
    expect(res.status).toBe(200);
    // a stream the provider cuts, and a JSON answer: settled from the upstream socket's events
    const replies: Reply[] = [
      { steps: [...textSteps(['cut', ' short'], { usage: false, done: false }), { wait: 30 }, { destroy: true }] },
      { json: { ...BASE, object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: 'whole' }, finish_reason: 'stop' }], usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 } } },
    ];
    for (const reply of replies) {
      provider.reply = () => reply;
      const other = await postStream(url, { model: 'test-model', stream: reply.json === undefined, messages: [{ role: 'user', content: 'hi' }] });
      expect(other.status).toBe(200);
    }
    await waitFor(() => metered.length === 3);
    expect(metered.every((m) => !m.suppressed)).toBe(true);

    const finished = await spans(12);
    const firstTrace = finished.find((s) => s.attributes['infery.generation_id'] === res.headers['x-generation-id'])!.spanContext().traceId;
    const all = finished.filter((s) => s.spanContext().traceId === firstTrace);
    const host = all.find((s) => s.kind === SpanKind.SERVER)!;
    const gen = generationSpan(all);
    const [upstream] = upstreamSpans(all);
    expect(parentOf(gen)).toBe(host.spanContext().spanId);
    expect(gen.spanContext().traceId).toBe(host.spanContext().traceId);
    expect(parentOf(upstream!)).toBe(gen.spanContext().spanId);
    expect(provider.requests[0]!.headers.traceparent).toBe(`00-${host.spanContext().traceId}-${upstream!.spanContext().spanId}-01`);
    // the host's meter runs in the request's context: its own spans (a ledger write) go under the host span, traced
    expect(metered[0]).toEqual({ active: host.spanContext().spanId, suppressed: false });
    const ledgerWrite = all.find((s) => s.name === 'ledger write')!;
    expect(parentOf(ledgerWrite)).toBe(host.spanContext().spanId);
  });

  test('without a traceparent the generation starts a trace; a malformed one is ignored the same way', async () => {
    const gw = await tracedGateway();
    for (const traceparent of [undefined, 'garbage', `00-${'0'.repeat(32)}-${CLIENT_SPAN}-01`, `00-${CLIENT_TRACE}-${'x'.repeat(5000)}-01`]) {
      const res = await postStream(gw.url, { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] }, { headers: traceparent ? { traceparent } : {} });
      expect(res.status).toBe(200);
    }
    const gens = (await spans(8)).filter((s) => s.attributes['infery.generation_id'] !== undefined);
    expect(gens).toHaveLength(4);
    for (const gen of gens) {
      expect(gen.parentSpanContext).toBeUndefined();
      expect(gen.spanContext().traceId).not.toBe(CLIENT_TRACE);
    }
    expect(new Set(gens.map((g) => g.spanContext().traceId)).size).toBe(4);
  });

  test('continueClientTrace: false — the client’s traceparent is not followed; the provider gets the gateway’s own trace', async () => {
    const gw = await tracedGateway({}, { continueClientTrace: false });
    const res = await postStream(gw.url, { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] }, { headers: { traceparent: TRACEPARENT } });
    expect(res.status).toBe(200);
    const all = await spans(2);
    const gen = generationSpan(all);
    expect(gen.parentSpanContext).toBeUndefined();
    expect(gen.spanContext().traceId).not.toBe(CLIENT_TRACE);
    expect(provider.requests[0]!.headers.traceparent).toBe(`00-${gen.spanContext().traceId}-${upstreamSpans(all)[0]!.spanContext().spanId}-01`);
  });

  test('a client that leaves mid-stream: outcome cancelled, a cancellation event, the upstream span ended too, no error status', async () => {
    provider.reply = () => ({ steps: textSteps(['one', ' two', ' three', ' four', ' five'], { gap: 150, usage: [8, 5] }) });
    const gw = await tracedGateway();
    await postStream(gw.url, { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] }, { headers: { traceparent: TRACEPARENT }, onEvent: (_d, i) => (i === 1 ? 'abort' : undefined) });
    const all = await spans(2);
    const gen = generationSpan(all);
    expect(gen.attributes['infery.outcome']).toBe('cancelled');
    expect(gen.status.code).toBe(SpanStatusCode.UNSET);
    const cancelled = gen.events.find((e) => e.name === 'infery.cancelled');
    expect(cancelled).toBeDefined();
    expect(Number(cancelled!.attributes?.['gen_ai.usage.output_tokens'])).toBeGreaterThan(0);
    expect(gen.events.map((e) => e.name)).toEqual(['infery.first_token', 'infery.cancelled']);
    expect(gen.attributes['gen_ai.usage.output_tokens']).toBeLessThan(5);
    expect(upstreamSpans(all)).toHaveLength(1);
    expect(upstreamSpans(all)[0]!.ended).toBe(true);
  });

  test('fallback: a span per attempt, the failed one in error, a fallback event, infery.failed_upstreams', async () => {
    const second = await new ScriptedProvider().start();
    try {
      provider.reply = (): Reply => ({ status: 503, json: { error: { message: 'overloaded', type: 'server_error', code: 'overloaded' } } });
      second.reply = () => ({ steps: textSteps(['Served', ' by', ' second'], { usage: [10, 3] }) });
      const upstreams: UpstreamConfig[] = [
        { name: 'first', baseURL: provider.url, apiKey: UPSTREAM_KEY },
        { name: 'second', baseURL: second.url, apiKey: SECOND_KEY },
      ];
      const gw = await tracedGateway({ upstream: undefined, upstreams });
      const res = await postStream(gw.url, { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] }, { headers: { traceparent: TRACEPARENT } });
      expect(res.status).toBe(200);
      const all = await spans(3);
      const gen = generationSpan(all);
      const [failed, served] = upstreamSpans(all);
      expect(gen.attributes).toMatchObject({ 'infery.upstream': 'second', 'infery.failed_upstreams': ['first'], 'infery.outcome': 'completed' });
      expect(gen.status.code).toBe(SpanStatusCode.UNSET);
      const fallback = gen.events.find((e) => e.name === 'infery.fallback');
      expect(fallback?.attributes).toMatchObject({ 'infery.upstream': 'second', 'infery.attempt': 2, 'infery.failed_upstream': 'first', 'error.type': 'overloaded' });
      expect(failed!.attributes).toMatchObject({ 'infery.upstream': 'first', 'http.response.status_code': 503, 'error.type': '503' });
      expect(failed!.status.code).toBe(SpanStatusCode.ERROR);
      expect(served!.attributes).toMatchObject({ 'infery.upstream': 'second', 'infery.attempt': 2, 'http.response.status_code': 200 });
      for (const span of [failed!, served!]) expect(parentOf(span)).toBe(gen.spanContext().spanId);
      // each provider got its own attempt's context
      expect(provider.requests[0]!.headers.traceparent).toBe(`00-${CLIENT_TRACE}-${failed!.spanContext().spanId}-01`);
      expect(second.requests[0]!.headers.traceparent).toBe(`00-${CLIENT_TRACE}-${served!.spanContext().spanId}-01`);
      expect(everyValue(all)).not.toContain(SECOND_KEY);
    } finally {
      await second.stop();
    }
  });

  test('a failure before the first byte: error status and error.type, outcome unserved, nothing billed', async () => {
    provider.reply = () => ({ status: 500, json: { error: { message: 'boom', type: 'server_error', code: 'server_boom' } } });
    const gw = await tracedGateway();
    const res = await postStream(gw.url, { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] });
    expect(res.status).toBe(500);
    const all = await spans(2);
    const gen = generationSpan(all);
    expect(gen.status).toMatchObject({ code: SpanStatusCode.ERROR, message: 'server_boom' });
    expect(gen.attributes).toMatchObject({ 'infery.outcome': 'unserved', 'error.type': 'server_boom', 'infery.credits': 0 });
    expect(gen.attributes['gen_ai.usage.input_tokens']).toBeUndefined();
    expect(upstreamSpans(all)[0]!.status.code).toBe(SpanStatusCode.ERROR);
  });

  test('a failure mid-stream: outcome failed, error status, what was produced is in the usage', async () => {
    provider.reply = () => ({ steps: [...textSteps(['partial', ' answer'], { usage: false, done: false }), { wait: 50 }, { destroy: true }] });
    const gw = await tracedGateway();
    const res = await postStream(gw.url, { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] });
    expect(res.status).toBe(200);
    const gen = generationSpan(await spans(2));
    expect(gen.attributes['infery.outcome']).toBe('failed');
    expect(gen.status.code).toBe(SpanStatusCode.ERROR);
    expect(gen.attributes['error.type']).toEqual(expect.any(String));
    expect(Number(gen.attributes['gen_ai.usage.output_tokens'])).toBeGreaterThan(0);
    expect(gen.attributes['infery.usage_estimated']).toBe(true);
  });

  test('every API names its operation: text_completion, embeddings, and the Responses API as chat', async () => {
    provider.reply = (req): Reply =>
      req.path.endsWith('/embeddings') ? { json: embeddingsJson(req.json) } : req.path.endsWith('/responses') ? { steps: responsesSteps(['a', 'b']) } : { steps: completionSteps(['a', 'b']) };
    const gw = await tracedGateway();
    const client = new OpenAI({ apiKey: KEY, baseURL: `${gw.url}/v1`, maxRetries: 0 });
    await client.embeddings.create({ model: 'text-embedding-test', input: 'x', encoding_format: 'float' });
    const stream = await client.completions.create({ model: 'test-instruct', prompt: 'x', stream: true });
    for await (const chunk of stream) void chunk;
    const responses = await client.responses.create({ model: 'test-model', input: 'x', stream: true });
    for await (const event of responses) void event;
    const gens = (await spans(6)).filter((s) => s.attributes['infery.generation_id'] !== undefined);
    const byOp = Object.fromEntries(gens.map((g) => [g.attributes['gen_ai.operation.name'], g]));
    expect(byOp.embeddings!.name).toBe('embeddings text-embedding-test');
    expect(byOp.embeddings!.attributes['gen_ai.request.stream']).toBeUndefined();
    expect(byOp.embeddings!.attributes['gen_ai.request.max_tokens']).toBeUndefined();
    expect(byOp.text_completion!.name).toBe('text_completion test-instruct');
    expect(byOp.chat!.attributes).toMatchObject({ 'openai.api.type': 'responses', 'gen_ai.response.id': expect.stringMatching(/^resp_/), 'infery.outcome': 'completed' });
  });
});

describe('prompt and answer text: only when the host opts in', () => {
  test('by default no span and no observer event carries the prompt or the answer', async () => {
    const settled: unknown[] = [];
    const gw = await tracedGateway({ observer: [observer(), { generationSettled: (e) => void settled.push(e) }] });
    await postStream(gw.url, { model: 'test-model', stream: true, messages: [{ role: 'user', content: PROMPT }] });
    const gen = generationSpan(await spans(2));
    for (const name of ['gen_ai.input.messages', 'gen_ai.output.messages', 'gen_ai.system_instructions']) expect(gen.attributes[name]).toBeUndefined();
    await waitFor(() => settled.length === 1);
    expect(JSON.stringify(settled)).not.toContain(PROMPT);
    expect(JSON.stringify(settled)).not.toContain('traced world');
    expect((settled[0] as { content?: unknown }).content).toBeUndefined();
  });

  test('captureContent: the conventions’ input and output messages (chat with a tool result, and each choice of n=2)', async () => {
    provider.reply = () => ({
      steps: [
        { data: { ...BASE, choices: [{ index: 0, delta: { role: 'assistant', content: 'First' } }, { index: 1, delta: { role: 'assistant', content: 'Second' } }] } },
        { data: { ...BASE, choices: [{ index: 0, delta: { content: ' answer' } }, { index: 5, delta: { content: 'not asked for' } }] } },
        { data: { ...BASE, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }, { index: 1, delta: {}, finish_reason: 'stop' }] } },
        { data: usageChunk(20, 4) },
        { data: '[DONE]' },
      ],
    });
    const gw = await tracedGateway({}, { captureContent: true });
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: [{ type: 'text', text: PROMPT }, { type: 'image_url', image_url: { url: 'https://example.com/secret.png' } }] },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'lookup', arguments: '{"q":"x"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: 'found it' },
    ];
    const res = await postStream(gw.url, { model: 'test-model', stream: true, n: 2, messages });
    expect(res.status).toBe(200);
    const gen = generationSpan(await spans(2));
    expect(JSON.parse(String(gen.attributes['gen_ai.input.messages']))).toEqual([
      { role: 'system', parts: [{ type: 'text', content: 'Be brief.' }] },
      { role: 'user', parts: [{ type: 'text', content: PROMPT }, { type: 'image_url' }] },
      { role: 'assistant', parts: [{ type: 'tool_call', id: 'call_1', name: 'lookup', arguments: '{"q":"x"}' }] },
      { role: 'tool', parts: [{ type: 'tool_call_response', id: 'call_1', response: 'found it' }] },
    ]);
    expect(JSON.parse(String(gen.attributes['gen_ai.output.messages']))).toEqual([
      { role: 'assistant', parts: [{ type: 'text', content: 'First answer' }], finish_reason: 'stop' },
      { role: 'assistant', parts: [{ type: 'text', content: 'Second' }], finish_reason: 'stop' },
    ]);
    expect(gen.attributes['gen_ai.request.choice.count']).toBe(2);
    expect(gen.attributes['infery.content_truncated']).toBeUndefined();
    // an image's URL is not text: never recorded
    expect(String(gen.attributes['gen_ai.input.messages'])).not.toContain('secret.png');
  });

  test('captureContent.maxChars cuts the prompt and the answer and says so; the Responses API and legacy completions too', async () => {
    provider.reply = (req): Reply => (req.path.endsWith('/responses') ? { steps: responsesSteps(['Streamed', ' reply', ' text']) } : { steps: completionSteps(['legacy', ' text']) });
    const gw = await tracedGateway({}, { captureContent: { maxChars: 8 } });
    const client = new OpenAI({ apiKey: KEY, baseURL: `${gw.url}/v1`, maxRetries: 0 });
    const responses = await client.responses.create({ model: 'test-model', instructions: 'System words here', input: 'A long prompt for the model', stream: true });
    for await (const event of responses) void event;
    const legacy = await client.completions.create({ model: 'test-instruct', prompt: 'Say it', stream: true });
    for await (const chunk of legacy) void chunk;
    const gens = (await spans(4)).filter((s) => s.attributes['infery.generation_id'] !== undefined);
    const resp = gens.find((g) => g.attributes['openai.api.type'] === 'responses')!;
    expect(JSON.parse(String(resp.attributes['gen_ai.system_instructions']))).toEqual([{ type: 'text', content: 'System w' }]);
    expect(JSON.parse(String(resp.attributes['gen_ai.input.messages']))).toEqual([{ role: 'user', parts: [{ type: 'text', content: 'A long p' }] }]);
    expect(JSON.parse(String(resp.attributes['gen_ai.output.messages']))[0].parts).toEqual([{ type: 'text', content: 'Streamed' }]);
    expect(resp.attributes['infery.content_truncated']).toBe(true);
    const text = gens.find((g) => g.attributes['gen_ai.operation.name'] === 'text_completion')!;
    expect(JSON.parse(String(text.attributes['gen_ai.input.messages']))).toEqual([{ role: 'user', parts: [{ type: 'text', content: 'Say it' }] }]);
    expect(JSON.parse(String(text.attributes['gen_ai.output.messages']))[0].parts).toEqual([{ type: 'text', content: 'legacy t' }]);
  });

  test('a prompt of 5,000 one-letter messages is converted no further than the budget', async () => {
    const gw = await tracedGateway({}, { captureContent: { maxChars: 100 } });
    const messages = Array.from({ length: 5_000 }, () => ({ role: 'user', content: 'x' }));
    const res = await postStream(gw.url, { model: 'test-model', stream: true, messages });
    expect(res.status).toBe(200);
    const gen = generationSpan(await spans(2));
    expect(JSON.parse(String(gen.attributes['gen_ai.input.messages']))).toHaveLength(100);
    expect(gen.attributes['infery.content_truncated']).toBe(true);
  });

  test('a bad content request throws at startup', async () => {
    expect(() => otelObserver({ captureContent: { maxChars: 0 } })).toThrow(/captureContent\.maxChars/);
    await expect(startGateway(provider.url, { observer: { generationSettled() {}, content: { maxChars: -1 } } as never })).rejects.toThrow(/observer\.content/);
  });
});

describe('GenAI metrics from the same observer', () => {
  test('gen_ai.client.token.usage, gen_ai.server.request.duration and gen_ai.server.time_to_first_token, with the conventions’ buckets', async () => {
    const gw = await tracedGateway();
    await postStream(gw.url, { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] });
    await spans(2);
    const all = await collected();
    const tokens = metricNamed(all, 'gen_ai.client.token.usage');
    expect(tokens.descriptor.unit).toBe('{token}');
    const byType = Object.fromEntries(tokens.dataPoints.map((p) => [p.attributes['gen_ai.token.type'], p]));
    expect(byType.input!.value.sum).toBe(12);
    expect(byType.output!.value.sum).toBe(3);
    expect(byType.input!.attributes).toMatchObject({ 'gen_ai.operation.name': 'chat', 'gen_ai.provider.name': 'openai', 'gen_ai.request.model': 'test-model', 'gen_ai.response.model': 'test-model', 'server.address': '127.0.0.1' });
    expect(byType.input!.value.buckets.boundaries).toEqual([1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]);
    const duration = metricNamed(all, 'gen_ai.server.request.duration');
    expect(duration.descriptor.unit).toBe('s');
    expect(duration.dataPoints[0]!.value.count).toBe(1);
    expect(duration.dataPoints[0]!.value.buckets.boundaries[0]).toBe(0.01);
    const ttft = metricNamed(all, 'gen_ai.server.time_to_first_token');
    expect(ttft.dataPoints[0]!.value.count).toBe(1);
    expect(ttft.dataPoints[0]!.value.buckets.boundaries[0]).toBe(0.001);
  });

  test('a failure counts its duration with error.type and no tokens; client-chosen model names are bounded', async () => {
    provider.reply = (req): Reply => (String(req.json?.model).startsWith('bad') ? { status: 500, json: { error: { message: 'x', code: 'server_boom' } } } : { steps: textSteps(['ok'], { usage: [2, 1] }) });
    const gw = await tracedGateway({}, { maxModelValues: 2 });
    for (const model of ['m-1', 'm-2', 'm-3', 'm-4', 'bad-1']) {
      await postStream(gw.url, { model, stream: true, messages: [{ role: 'user', content: 'hi' }] });
    }
    await spans(10);
    const all = await collected();
    const duration = metricNamed(all, 'gen_ai.server.request.duration');
    const failed = duration.dataPoints.filter((p) => p.attributes['error.type'] !== undefined);
    expect(failed).toHaveLength(1);
    expect(failed[0]!.attributes['error.type']).toBe('server_boom');
    // two distinct names kept (m-1, and test-model: the provider's name for every answer), the rest are `other`
    const models = new Set(duration.dataPoints.flatMap((p) => [p.attributes['gen_ai.request.model'], p.attributes['gen_ai.response.model']]));
    expect(models).toEqual(new Set(['m-1', 'test-model', 'other', undefined]));
    const tokens = metricNamed(all, 'gen_ai.client.token.usage');
    expect(tokens.dataPoints.every((p) => p.attributes['error.type'] === undefined)).toBe(true);
    expect(tokens.dataPoints.reduce((n, p) => n + p.value.count, 0)).toBe(8); // 4 served × input and output
  });
});

describe('tracing never hurts a request', () => {
  test('an observer whose upstreamAttempt or run throws, or sets the key’s headers, changes nothing the provider or the client sees', async () => {
    let calls = 0;
    const hostile: Observer = {
      upstreamAttempt: () => {
        calls++;
        if (calls === 1) throw new Error('tracer exploded');
        return {
          headers: { authorization: 'Bearer stolen', 'x-api-key': 'stolen', 'content-length': '1', 'x-trace-extra': 'ok', 'bad header': 'x', 'x-crlf': 'a\r\nb: c' },
          run: () => {
            throw new Error('run exploded');
          },
          ended: () => {
            throw new Error('ended exploded');
          },
        };
      },
    };
    const gw = await tracedGateway({ observer: [hostile, observer()] });
    for (let i = 0; i < 2; i++) {
      const res = await postStream(gw.url, { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] }, { headers: { traceparent: TRACEPARENT } });
      expect(res.status).toBe(200);
      expect(jsonEvents(res).at(-1)!.credits_used).toBe(15);
    }
    expect(provider.requests).toHaveLength(2);
    for (const seen of provider.requests) {
      expect(seen.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
      expect(seen.headers['x-api-key']).toBeUndefined();
      expect(seen.headers['x-crlf']).toBeUndefined();
      expect(seen.headers.traceparent).toMatch(new RegExp(`^00-${CLIENT_TRACE}-`));
    }
    expect(provider.requests[1]!.headers['x-trace-extra']).toBe('ok');
    expect(gw.logs.some((l) => l.msg === 'infery-stream observer failed; the request is unaffected' && (l.member as string) === 'upstreamAttempt')).toBe(true);
  });

  test('with no tracer provider registered nothing is sent upstream and nothing breaks', async () => {
    const gw = await startGateway(provider.url, { observer: otelObserver() });
    gateways.push(gw);
    const res = await postStream(gw.url, { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] });
    expect(res.status).toBe(200);
    // the global provider is the API's no-op: a non-recording span, whose context is not propagated
    expect(provider.requests[0]!.headers.traceparent).toBeUndefined();
  });

  test('bad options throw at startup; the pinned conventions version is exported', async () => {
    expect(() => otelObserver({ maxOpenSpans: 0 })).toThrow(/maxOpenSpans/);
    expect(() => otelObserver({ providerNames: { a: '' } })).toThrow(/providerNames\.a/);
    await expect(startGateway(provider.url, { observer: [] as never })).rejects.toThrow(/empty array/);
    await expect(startGateway(provider.url, { observer: [{ requestEnded: 1 }] as never })).rejects.toThrow(/observer\[0\]\.requestEnded/);
    expect(GEN_AI_SEMCONV_VERSION).toBe('1.41.0');
  });

  test('maxOpenSpans: generations past it are served untraced', async () => {
    provider.reply = () => ({ steps: textSteps(['slow', ' answer'], { gap: 200, usage: [2, 2] }) });
    const otel = otelObserver({ tracerProvider, meterProvider, maxOpenSpans: 1 });
    const gw = await startGateway(provider.url, { observer: otel });
    gateways.push(gw);
    const results = await Promise.all([0, 1].map(() => postStream(gw.url, { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] })));
    for (const res of results) expect(res.status).toBe(200);
    await sleep(50);
    expect(exporter.getFinishedSpans().filter((s) => s.attributes['infery.generation_id'] !== undefined)).toHaveLength(1);
    expect(otel.dropped).toBe(1);
  });
});
