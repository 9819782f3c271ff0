/**
 * The example app with OpenTelemetry on, as a user runs it: its own Node process with OTEL_EXPORTER_OTLP_ENDPOINT
 * pointing at a local OTLP/HTTP receiver (a real protobuf and JSON endpoint on loopback, what a Collector is),
 * the OpenTelemetry Node SDK and its OTLP exporter inside the app. A streamed chat, a cancelled one, a fallback,
 * a failure and a Messages API stream each give the expected span tree — host request → generation → upstream
 * request → the provider's own span — under the client's traceparent; the GenAI metrics arrive too.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { startExampleApp, stopAllApps, type AppProcess } from './helpers/app-process';
import { removeTemporaryDir, temporaryDir } from './helpers/local-process';
import { OtlpReceiver, SPAN_KIND, type ReceivedSpan } from './helpers/otlp-receiver';
import { KEY } from './helpers/gateway';
import { refusedURL } from './helpers/provider';
import { jsonEvents, postStream, waitFor } from './helpers/sse-client';

/** A client's own trace context: a fresh trace per test, so each test reads its own tree. */
function clientTrace(): { traceId: string; spanId: string; traceparent: string } {
  const traceId = randomBytes(16).toString('hex');
  const spanId = randomBytes(8).toString('hex');
  return { traceId, spanId, traceparent: `00-${traceId}-${spanId}-01` };
}

let receiver: OtlpReceiver;
let dir: string;
let app: AppProcess;

/** A config with a dead upstream for `mock-fallback` before the mock, and the mock for both dialects. */
async function writeConfig(): Promise<string> {
  const file = path.join(dir, 'upstreams.json');
  const upstreams = [
    { name: 'flaky', baseURL: await refusedURL(), models: ['mock-fallback'] },
    { name: 'mock', baseURL: 'mock' },
    { name: 'mock-messages', baseURL: 'mock', api: 'anthropic', models: ['claude-*'] },
  ];
  fs.writeFileSync(file, JSON.stringify({ upstreams }));
  return file;
}

const otelEnv = (extra: Record<string, string> = {}): Record<string, string> => ({
  OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
  OTEL_BSP_SCHEDULE_DELAY: '100',
  OTEL_METRIC_EXPORT_INTERVAL: '300',
  OTEL_METRIC_EXPORT_TIMEOUT: '250',
  INFERY_API_KEYS: `${KEY}:1000`,
  LOG_LEVEL: 'warn',
  ...extra,
});

beforeAll(async () => {
  receiver = await new OtlpReceiver().start();
  dir = temporaryDir('infery-otel-');
  app = await startExampleApp(otelEnv({ INFERY_CONFIG: await writeConfig(), OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' }));
  expect(app.stdout).toContain(`tracing: OpenTelemetry to ${receiver.url}/v1/traces (http/protobuf), service infery-stream-example`);
}, 30_000);

afterAll(async () => {
  await stopAllApps();
  await receiver.stop();
  removeTemporaryDir(dir);
});

/** The spans of the trace that holds the generation with this id, once `count` of them (at least) arrived. */
async function traceOf(generationId: string, count: number): Promise<ReceivedSpan[]> {
  let trace: ReceivedSpan[] = [];
  await waitFor(
    () => {
      const gen = receiver.spans.find((s) => s.attributes['infery.generation_id'] === generationId);
      trace = gen ? receiver.spans.filter((s) => s.traceId === gen.traceId) : [];
      return trace.length >= count;
    },
    8_000,
    `${count} spans of ${generationId} (received: ${receiver.spans.map((s) => s.name).join(', ')}; errors: ${receiver.errors.join('; ')})`,
  );
  return trace;
}

const only = (spans: ReceivedSpan[], test: (s: ReceivedSpan) => boolean, what: string): ReceivedSpan => {
  const found = spans.filter(test);
  if (found.length !== 1) throw new Error(`expected one ${what}, got ${found.length}: ${spans.map((s) => `${s.name}/${s.kind}`).join(', ')}`);
  return found[0]!;
};
const generationOf = (spans: ReceivedSpan[]): ReceivedSpan => only(spans, (s) => s.attributes['infery.generation_id'] !== undefined, 'generation span');
/** The gateway's own upstream spans (HTTP client spans of the infery-stream scope), in attempt order. */
const upstreamsOf = (spans: ReceivedSpan[]): ReceivedSpan[] =>
  spans.filter((s) => s.kind === SPAN_KIND.CLIENT && s.attributes['infery.attempt'] !== undefined).sort((a, b) => Number(a.attributes['infery.attempt']) - Number(b.attributes['infery.attempt']));

describe('the example app exports a span tree per request (OTLP/HTTP protobuf)', () => {
  test('a streamed chat with a traceparent: host request → generation → upstream request → the provider, in the client’s trace, GenAI attributes', async () => {
    const { traceId: CLIENT_TRACE, spanId: CLIENT_SPAN, traceparent: TRACEPARENT } = clientTrace();
    const res = await postStream(app.url, { model: 'mock-1', stream: true, messages: [{ role: 'user', content: 'Hello there' }] }, { headers: { traceparent: TRACEPARENT } });
    expect(res.status).toBe(200);
    expect(jsonEvents(res).at(-1)!.credits_used).toEqual(expect.any(Number));
    const id = String(res.headers['x-generation-id']);
    const trace = await traceOf(id, 4);
    expect(new Set(trace.map((s) => s.traceId))).toEqual(new Set([CLIENT_TRACE]));

    const host = only(trace, (s) => s.kind === SPAN_KIND.SERVER && s.parentSpanId === CLIENT_SPAN, 'host request span');
    expect(host.attributes['http.request.method']).toBe('POST');
    expect(host.scope).toBe('@opentelemetry/instrumentation-http');
    const gen = generationOf(trace);
    expect(gen.parentSpanId).toBe(host.spanId);
    expect(gen.name).toBe('chat mock-1');
    expect(gen.kind).toBe(SPAN_KIND.CLIENT);
    expect(gen.scope).toBe('infery-stream');
    expect(gen.resource['service.name']).toBe('infery-stream-example');
    expect(gen.encoding).toBe('protobuf');
    expect(gen.attributes).toMatchObject({
      'gen_ai.operation.name': 'chat',
      'gen_ai.provider.name': 'openai',
      'gen_ai.request.model': 'mock-1',
      'gen_ai.response.model': 'mock-1',
      'gen_ai.request.stream': true,
      'gen_ai.response.finish_reasons': ['stop'],
      'infery.outcome': 'completed',
      'infery.upstream': 'mock',
      'infery.generation_id': id,
    });
    for (const name of ['gen_ai.request.max_tokens', 'gen_ai.usage.input_tokens', 'gen_ai.usage.output_tokens', 'infery.credits', 'infery.ttft_ms']) expect(gen.attributes[name]).toEqual(expect.any(Number));
    expect(String(gen.attributes['gen_ai.response.id'])).toMatch(/^chatcmpl-/);
    expect(gen.attributes['infery.account_tag']).toMatch(/^key-[0-9a-f]{12}$/);
    // the key is nowhere: not in a name, an attribute or an event of any span of the trace
    expect(JSON.stringify(trace.map((s) => [s.name, s.attributes, s.events.map((e) => [e.name, e.attributes])]))).not.toContain(KEY);
    expect(gen.events.map((e) => e.name)).toContain('infery.first_token');
    // prompts and answers are not recorded unless asked for
    for (const name of ['gen_ai.input.messages', 'gen_ai.output.messages']) expect(gen.attributes[name]).toBeUndefined();
    expect(JSON.stringify(trace.map((s) => s.attributes))).not.toContain('Hello there');

    const [upstream] = upstreamsOf(trace);
    expect(upstream!.parentSpanId).toBe(gen.spanId);
    expect(upstream!.name).toBe('POST');
    expect(upstream!.attributes['http.response.status_code']).toBe(200);
    // no second client span for the same request (the host's HTTP instrumentation is kept off it)
    expect(trace.filter((s) => s.kind === SPAN_KIND.CLIENT)).toHaveLength(2);
    // the built-in mock provider runs in the app's process, traced by the same instrumentation: it continued the trace
    const providerSide = only(trace, (s) => s.kind === SPAN_KIND.SERVER && s.parentSpanId === upstream!.spanId, 'provider span');
    expect(providerSide.attributes['url.path'] ?? providerSide.attributes['http.target']).toBe('/v1/chat/completions');
    // the tree's times nest
    expect(gen.startNs).toBeGreaterThanOrEqual(host.startNs);
    expect(upstream!.endNs).toBeLessThanOrEqual(gen.endNs);
  });

  test('a cancelled stream: outcome cancelled and its event, the upstream span ended', async () => {
    const { traceId: CLIENT_TRACE, spanId: CLIENT_SPAN, traceparent: TRACEPARENT } = clientTrace();
    const res = await postStream(app.url, { model: 'mock-slow', stream: true, messages: [{ role: 'user', content: 'Hello' }] }, { headers: { traceparent: TRACEPARENT }, onEvent: (_d, i) => (i === 1 ? 'abort' : undefined) });
    const trace = await traceOf(String(res.headers['x-generation-id']), 4);
    const gen = generationOf(trace);
    expect(gen.attributes['infery.outcome']).toBe('cancelled');
    expect(gen.events.map((e) => e.name)).toEqual(expect.arrayContaining(['infery.first_token', 'infery.cancelled']));
    expect(gen.status.code).toBe(0);
    const [upstream] = upstreamsOf(trace);
    expect(upstream!.endNs).toBeGreaterThan(0n);
    only(trace, (s) => s.kind === SPAN_KIND.SERVER && s.parentSpanId === upstream!.spanId, 'provider span');
  });

  test('a fallback: the refused upstream’s span in error, the fallback event, then the mock’s span', async () => {
    const { traceId: CLIENT_TRACE, spanId: CLIENT_SPAN, traceparent: TRACEPARENT } = clientTrace();
    const res = await postStream(app.url, { model: 'mock-fallback', stream: true, messages: [{ role: 'user', content: 'Hello' }] }, { headers: { traceparent: TRACEPARENT } });
    expect(res.status).toBe(200);
    const trace = await traceOf(String(res.headers['x-generation-id']), 5);
    const gen = generationOf(trace);
    expect(gen.attributes).toMatchObject({ 'infery.upstream': 'mock', 'infery.failed_upstreams': ['flaky'], 'infery.outcome': 'completed' });
    const fallback = gen.events.find((e) => e.name === 'infery.fallback');
    expect(fallback?.attributes).toMatchObject({ 'infery.failed_upstream': 'flaky', 'error.type': 'upstream_unreachable', 'infery.attempt': 2 });
    const [refused, served] = upstreamsOf(trace);
    expect(refused!.attributes).toMatchObject({ 'infery.upstream': 'flaky', 'error.type': 'upstream_unreachable' });
    expect(refused!.status.code).toBe(2);
    expect(served!.attributes).toMatchObject({ 'infery.upstream': 'mock', 'http.response.status_code': 200 });
    // the provider that served continued the client's trace under the attempt that reached it
    only(trace, (s) => s.kind === SPAN_KIND.SERVER && s.parentSpanId === served!.spanId, 'provider span');
  });

  test('a failure before the first byte (the provider’s 429) and one mid-stream: error status and error.type', async () => {
    const { traceId: CLIENT_TRACE, spanId: CLIENT_SPAN, traceparent: TRACEPARENT } = clientTrace();
    const refused = await postStream(app.url, { model: 'mock-429', stream: true, messages: [{ role: 'user', content: 'Hello' }] }, { headers: { traceparent: TRACEPARENT } });
    expect(refused.status).toBe(429);
    const cut = await postStream(app.url, { model: 'mock-error', stream: true, messages: [{ role: 'user', content: 'Hello' }] }, { headers: { traceparent: clientTrace().traceparent } });
    expect(cut.status).toBe(200);
    const unserved = generationOf(await traceOf(String(refused.headers['x-generation-id']), 3));
    expect(unserved.status.code).toBe(2);
    expect(unserved.attributes).toMatchObject({ 'infery.outcome': 'unserved', 'error.type': expect.any(String) });
    const failed = generationOf(await traceOf(String(cut.headers['x-generation-id']), 3));
    expect(failed.status.code).toBe(2);
    expect(failed.attributes['infery.outcome']).toBe('failed');
  });

  test('the Messages API: a chat span with the anthropic provider', async () => {
    const { traceId: CLIENT_TRACE, spanId: CLIENT_SPAN, traceparent: TRACEPARENT } = clientTrace();
    const res = await fetch(`${app.url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': KEY, 'content-type': 'application/json', traceparent: TRACEPARENT },
      body: JSON.stringify({ model: 'claude-mock-1', max_tokens: 128, stream: true, messages: [{ role: 'user', content: 'Hello' }] }),
    });
    expect(res.status).toBe(200);
    await res.text();
    const gen = generationOf(await traceOf(String(res.headers.get('x-generation-id')), 3));
    expect(gen.name).toBe('chat claude-mock-1');
    expect(gen.attributes).toMatchObject({ 'gen_ai.provider.name': 'anthropic', 'gen_ai.request.max_tokens': 128, 'infery.upstream': 'mock-messages', 'infery.outcome': 'completed' });
    expect(String(gen.attributes['gen_ai.response.id'])).toMatch(/^msg_/);
  });

  test('the GenAI metrics arrive at the same endpoint', async () => {
    const { traceId: CLIENT_TRACE, spanId: CLIENT_SPAN, traceparent: TRACEPARENT } = clientTrace();
    await waitFor(() => ['gen_ai.client.token.usage', 'gen_ai.server.request.duration', 'gen_ai.server.time_to_first_token'].every((n) => receiver.metrics.some((m) => m.name === n && m.points.length > 0)), 8_000, 'GenAI metrics');
    const tokens = receiver.metrics.filter((m) => m.name === 'gen_ai.client.token.usage').at(-1)!;
    expect(tokens.unit).toBe('{token}');
    expect(tokens.resource['service.name']).toBe('infery-stream-example');
    expect(tokens.points.some((p) => p.attributes['gen_ai.token.type'] === 'output' && p.attributes['gen_ai.request.model'] === 'mock-1' && (p.sum ?? 0) > 0)).toBe(true);
    expect(receiver.errors).toEqual([]);
  });
});

describe('the standard OTEL_* variables', () => {
  test('http/json, OTEL_SERVICE_NAME, a traces-only endpoint, OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT', async () => {
    const { traceId: CLIENT_TRACE, spanId: CLIENT_SPAN, traceparent: TRACEPARENT } = clientTrace();
    const other = await new OtlpReceiver().start();
    try {
      const json = await startExampleApp(otelEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: '', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${other.url}/v1/traces`, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_SERVICE_NAME: 'billing-gateway', OTEL_METRICS_EXPORTER: 'none', OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: 'true' }));
      expect(json.stdout).toContain('service billing-gateway, prompts and answers recorded');
      const res = await postStream(json.url, { model: 'mock-1', stream: true, messages: [{ role: 'user', content: 'Hello' }] }, { headers: { traceparent: TRACEPARENT } });
      expect(res.status).toBe(200);
      const id = String(res.headers['x-generation-id']);
      await waitFor(() => other.spans.some((s) => s.attributes['infery.generation_id'] === id), 8_000, 'the JSON-encoded generation span');
      const gen = other.spans.find((s) => s.attributes['infery.generation_id'] === id)!;
      expect(gen.encoding).toBe('json');
      expect(gen.traceId).toBe(CLIENT_TRACE);
      expect(gen.resource['service.name']).toBe('billing-gateway');
      expect(other.contentTypes.every((t) => t.startsWith('application/json'))).toBe(true);
      expect(JSON.parse(String(gen.attributes['gen_ai.input.messages']))).toEqual([{ role: 'user', parts: [{ type: 'text', content: 'Hello' }] }]);
      const [answer] = JSON.parse(String(gen.attributes['gen_ai.output.messages'])) as Array<{ parts: Array<{ content: string }>; finish_reason: string }>;
      const streamed = jsonEvents(res).map((c) => (c.choices as Array<{ delta?: { content?: string } }>)[0]?.delta?.content ?? '').join('');
      expect(answer!.parts[0]!.content).toBe(streamed);
      expect(answer!.finish_reason).toBe('stop');

      // the Messages API: its system prompt apart
      const messages = await fetch(`${json.url}/v1/messages`, {
        method: 'POST',
        headers: { 'x-api-key': KEY, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'claude-mock-1', max_tokens: 64, system: 'You are terse.', messages: [{ role: 'user', content: [{ type: 'text', text: 'Hi there' }] }] }),
      });
      expect(messages.status).toBe(200);
      const message = (await messages.json()) as { content: Array<{ text: string }> };
      const messageId = String(messages.headers.get('x-generation-id'));
      await waitFor(() => other.spans.some((s) => s.attributes['infery.generation_id'] === messageId), 8_000, 'the Messages API span');
      const span = other.spans.find((s) => s.attributes['infery.generation_id'] === messageId)!;
      expect(JSON.parse(String(span.attributes['gen_ai.system_instructions']))).toEqual([{ type: 'text', content: 'You are terse.' }]);
      expect(JSON.parse(String(span.attributes['gen_ai.input.messages']))).toEqual([{ role: 'user', parts: [{ type: 'text', content: 'Hi there' }] }]);
      expect(JSON.parse(String(span.attributes['gen_ai.output.messages']))[0].parts[0].content).toBe(message.content.map((b) => b.text).join(''));
      await json.stop();
    } finally {
      await other.stop();
    }
  }, 30_000);

  test('OTEL_TRACES_SAMPLER=always_off: nothing exported, the request served', async () => {
    const { traceId: CLIENT_TRACE, spanId: CLIENT_SPAN, traceparent: TRACEPARENT } = clientTrace();
    const other = await new OtlpReceiver().start();
    try {
      const off = await startExampleApp(otelEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: other.url, OTEL_TRACES_SAMPLER: 'always_off', OTEL_METRICS_EXPORTER: 'none' }));
      const res = await postStream(off.url, { model: 'mock-1', stream: true, messages: [{ role: 'user', content: 'Hello' }] });
      expect(res.status).toBe(200);
      await off.stop();
      expect(other.spans).toEqual([]);
    } finally {
      await other.stop();
    }
  }, 30_000);

  test('a protocol this app does not speak, or an endpoint that is no URL: one clear line, exit 1', async () => {
    const { traceId: CLIENT_TRACE, spanId: CLIENT_SPAN, traceparent: TRACEPARENT } = clientTrace();
    for (const [env, message] of [
      [{ OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }, /OTEL_EXPORTER_OTLP_PROTOCOL must be http\/protobuf or http\/json/],
      [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'not a url' }, /OTEL_EXPORTER_OTLP_ENDPOINT must be an http\(s\) URL/],
      [{ OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: 'yes please' }, /OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT must be true or false/],
    ] as const) {
      await expect(startExampleApp(otelEnv(env))).rejects.toThrow(message);
    }
  }, 30_000);
});
