import express from 'express';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { mountMetrics } from '../example-app/metrics';
import { inferyStream, InferyOptionsError } from '../lib';
import { prometheusObserver, type PrometheusObserver } from '../lib/ledgers/metrics/prometheus';
import { KEY, startGateway, type TestGateway } from './helpers/gateway';
import { contentChunk, ScriptedProvider, textSteps } from './helpers/provider';
import { postStream, waitFor } from './helpers/sse-client';

const streamRequest = (model = 'test-model') => ({ model, stream: true, messages: [{ role: 'user', content: 'hi' }] });

/** A plain request over a real socket; resolves with the status and body. */
function send(url: string, path: string, o: { method?: string; auth?: string | null; body?: unknown } = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    const payload = o.body === undefined ? undefined : JSON.stringify(o.body);
    const headers: Record<string, string | number> = {};
    if (o.auth !== null) headers.authorization = o.auth ?? `Bearer ${KEY}`;
    if (payload !== undefined) Object.assign(headers, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) });
    const req = http.request(`${url}${path}`, { method: o.method ?? (payload ? 'POST' : 'GET'), headers, agent: false, timeout: 3000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      // 'close' also comes when the body was cut: the test then reads what arrived
      res.on('close', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer to ${path} within 3 s`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** The value of one series of a counter or gauge (0 when it does not exist yet). */
async function value(metrics: PrometheusObserver, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = metrics.registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  const { values } = await metric.get();
  const match = values.find((v) => Object.entries(labels).every(([k, l]) => String(v.labels[k]) === l) && Object.keys(v.labels).length === Object.keys(labels).length);
  return match?.value ?? 0;
}

/** A histogram's observation count for the series with these labels. */
async function histogramCount(metrics: PrometheusObserver, name: string, labels: Record<string, string>): Promise<number> {
  const { values } = await metrics.registry.getSingleMetric(name)!.get();
  const count = values.find((v) => (v as { metricName?: string }).metricName === `${name}_count` && Object.entries(labels).every(([k, l]) => String(v.labels[k]) === l));
  return count?.value ?? 0;
}

/** The distinct values one label takes in a metric. */
async function labelValues(metrics: PrometheusObserver, name: string, label: string): Promise<Set<string>> {
  const { values } = await metrics.registry.getSingleMetric(name)!.get();
  return new Set(values.map((v) => String(v.labels[label])));
}

const requestLines = (gw: TestGateway) => gw.logs.filter((l) => l.msg === 'infery-stream request').length;

let provider: ScriptedProvider;
beforeAll(async () => {
  provider = await new ScriptedProvider().start();
});
afterAll(() => provider.stop());
beforeEach(() => {
  provider.reply = () => ({ steps: textSteps(['Hello', ' world'], { usage: [12, 2] }) });
});

/** Runs `run` with a gateway observed by a fresh prometheus observer, always closing it. */
async function withMetrics(overrides: Parameters<typeof startGateway>[1], run: (gw: TestGateway, metrics: PrometheusObserver) => Promise<void>, metricsOptions: Parameters<typeof prometheusObserver>[0] = {}): Promise<void> {
  const metrics = prometheusObserver(metricsOptions);
  const gw = await startGateway(provider.url, { observer: metrics.observer, ...overrides });
  try {
    await run(gw, metrics);
  } finally {
    await gw.close();
  }
}

describe('prometheus metrics from real requests', () => {
  test('counts requests by route template, method and status: 200, 401, 404, 405 and 400 (never the raw path)', async () => {
    await withMetrics({}, async (gw, metrics) => {
      provider.reply = (req) => (req.path.startsWith('/v1/models') ? { json: { object: 'list', data: [] } } : { steps: textSteps(['a'], { usage: [3, 1] }) });
      expect((await postStream(gw.url, streamRequest())).status).toBe(200);
      expect((await send(gw.url, '/v1/models/some-model-id')).status).toBe(200);
      expect((await send(gw.url, '/v1/models')).status).toBe(200);
      expect((await send(gw.url, '/v1/chat/completions', { auth: 'Bearer wrong', body: streamRequest() })).status).toBe(401);
      expect((await send(gw.url, '/v1/embeddings/secret-looking-path', { body: {} })).status).toBe(404);
      expect((await send(gw.url, '/v1/models', { method: 'DELETE' })).status).toBe(405);
      expect((await send(gw.url, '/v1//chat/completions', { body: streamRequest() })).status).toBe(400);
      await waitFor(() => requestLines(gw) === 7, 2000, 'seven request lines');

      const requests = 'infery_requests_total';
      expect(await value(metrics, requests, { route: '/chat/completions', method: 'POST', status: '200' })).toBe(1);
      expect(await value(metrics, requests, { route: '/models/{id}', method: 'GET', status: '200' })).toBe(1);
      expect(await value(metrics, requests, { route: '/models', method: 'GET', status: '200' })).toBe(1);
      expect(await value(metrics, requests, { route: '/chat/completions', method: 'POST', status: '401' })).toBe(1);
      expect(await value(metrics, requests, { route: 'unmatched', method: 'POST', status: '404' })).toBe(1);
      expect(await value(metrics, requests, { route: '/models', method: 'DELETE', status: '405' })).toBe(1);
      expect(await value(metrics, requests, { route: 'unmatched', method: 'POST', status: '400' })).toBe(1);
      const text = await metrics.registry.metrics();
      expect(text).not.toContain('secret-looking-path');
      expect(text).not.toContain('some-model-id');
    });
  });

  test("a body the host's parser refused on a gateway route is counted under that route", async () => {
    const metrics = prometheusObserver();
    const gw = await startGateway(provider.url, { observer: metrics.observer }, { json: true });
    try {
      const res = await new Promise<number>((resolve, reject) => {
        const req = http.request(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' } }, (r) => {
          r.resume();
          resolve(r.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end('{"model":');
      });
      expect(res).toBe(400);
      expect(await value(metrics, 'infery_requests_total', { route: '/chat/completions', method: 'POST', status: '400' })).toBe(1);
      expect(gw.logs.filter((l) => l.msg === 'infery-stream request')).toEqual([expect.objectContaining({ status: 400, errorCode: 'invalid_json' })]);
    } finally {
      await gw.close();
    }
  });

  test('limit refusals by reason: rate and concurrency (both 429), quota (402)', async () => {
    await withMetrics({ limits: { maxConcurrent: 1, requestsPerMinute: 3 } }, async (gw, metrics) => {
      // one stream holds the only concurrency slot until its client leaves
      provider.reply = () => ({ steps: [{ data: contentChunk('a') }, { hang: true }] });
      const payload = JSON.stringify(streamRequest());
      const held = http.request(`${gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      });
      held.on('error', () => undefined); // destroyed below, on purpose
      held.end(payload);
      await provider.waitForRequests(provider.requests.length + 1);
      expect((await send(gw.url, '/v1/chat/completions', { body: streamRequest() })).status).toBe(429); // 2nd this minute: no slot
      expect((await send(gw.url, '/v1/chat/completions', { body: streamRequest() })).status).toBe(429); // 3rd: no slot
      expect((await send(gw.url, '/v1/chat/completions', { body: streamRequest() })).status).toBe(429); // 4th this minute: rate
      expect(await value(metrics, 'infery_limit_refusals_total', { reason: 'concurrency' })).toBe(2);
      expect(await value(metrics, 'infery_limit_refusals_total', { reason: 'rate' })).toBe(1);
      expect(await value(metrics, 'infery_requests_total', { route: '/chat/completions', method: 'POST', status: '429' })).toBe(3);
      expect(await value(metrics, 'infery_upstream_errors_total', { code: 'rate_limit_exceeded' })).toBe(0);
      held.destroy();
      await waitFor(() => requestLines(gw) === 4, 2000, 'the held stream to settle');
      expect(await value(metrics, 'infery_cancellations_total', { route: '/chat/completions' })).toBe(1);
    });
    await withMetrics({ reserve: () => false }, async (gw, metrics) => {
      expect((await send(gw.url, '/v1/chat/completions', { body: streamRequest() })).status).toBe(402);
      expect(await value(metrics, 'infery_limit_refusals_total', { reason: 'quota' })).toBe(1);
      expect(await value(metrics, 'infery_upstream_errors_total', { code: 'insufficient_quota' })).toBe(0);
    });
  });

  test('time to first token and stream duration histograms, tokens and credits by model', async () => {
    await withMetrics({}, async (gw, metrics) => {
      for (let i = 0; i < 3; i++) expect((await postStream(gw.url, streamRequest('model-a'))).status).toBe(200);
      expect((await postStream(gw.url, streamRequest('model-b'))).status).toBe(200);
      await waitFor(() => gw.meterCalls.length === 4, 2000, 'four settlements');
      await waitFor(() => requestLines(gw) === 4, 2000, 'four request lines');
      const route = '/chat/completions';
      expect(await histogramCount(metrics, 'infery_time_to_first_token_seconds', { route, model: 'model-a' })).toBe(3);
      expect(await histogramCount(metrics, 'infery_time_to_first_token_seconds', { route, model: 'model-b' })).toBe(1);
      expect(await histogramCount(metrics, 'infery_stream_duration_seconds', { route, model: 'model-a' })).toBe(3);
      expect(await histogramCount(metrics, 'infery_stream_duration_seconds', { route, model: 'model-b' })).toBe(1);
      expect(await value(metrics, 'infery_tokens_total', { model: 'model-a', kind: 'prompt' })).toBe(36);
      expect(await value(metrics, 'infery_tokens_total', { model: 'model-a', kind: 'completion' })).toBe(6);
      expect(await value(metrics, 'infery_tokens_total', { model: 'model-b', kind: 'completion' })).toBe(2);
      // the test gateway's meter charges total_tokens
      expect(await value(metrics, 'infery_credits_total', { model: 'model-a' })).toBe(42);
      expect(await value(metrics, 'infery_credits_total', { model: 'model-b' })).toBe(14);
    });
  });

  test('open streams goes up while a stream is open and back to 0 when it ends', async () => {
    await withMetrics({}, async (gw, metrics) => {
      provider.reply = () => ({ steps: [...textSteps(['a'], { usage: false, done: false }), { wait: 300 }, { data: '[DONE]' }] });
      let during = -1;
      const reading: Array<Promise<void>> = [];
      const result = await postStream(gw.url, streamRequest(), {
        onEvent: (_data, i) => {
          if (i === 0) reading.push(value(metrics, 'infery_open_streams').then((v) => void (during = v)));
        },
      });
      expect(result.status).toBe(200);
      await Promise.all(reading);
      expect(during).toBe(1);
      await waitFor(() => requestLines(gw) === 1, 2000, 'the request line');
      expect(await value(metrics, 'infery_open_streams')).toBe(0);
    });
  });

  test('a client that aborts a stream is counted as a cancellation (status 499), and open streams returns to 0', async () => {
    await withMetrics({}, async (gw, metrics) => {
      provider.reply = () => ({ steps: textSteps(Array.from({ length: 50 }, (_, i) => ` w${i}`), { gap: 20, usage: false }) });
      await postStream(gw.url, streamRequest(), { onEvent: (_data, i) => (i === 3 ? 'abort' : undefined) });
      await waitFor(() => requestLines(gw) === 1, 3000, 'the request line');
      expect(await value(metrics, 'infery_cancellations_total', { route: '/chat/completions' })).toBe(1);
      expect(await value(metrics, 'infery_requests_total', { route: '/chat/completions', method: 'POST', status: '499' })).toBe(1);
      expect(await value(metrics, 'infery_open_streams')).toBe(0);
    });
  });

  test('upstream errors by code: a provider 500 with its code, one without, and a provider that cuts a pass-through body', async () => {
    await withMetrics({}, async (gw, metrics) => {
      provider.reply = () => ({ status: 500, json: { error: { message: 'boom', type: 'server_error', code: 'server_overloaded' } } });
      expect((await send(gw.url, '/v1/chat/completions', { body: streamRequest() })).status).toBe(500);
      provider.reply = () => ({ status: 503, json: {} });
      expect((await send(gw.url, '/v1/chat/completions', { body: streamRequest() })).status).toBe(503);
      provider.reply = () => ({ steps: [{ data: { n: 1 } }, { wait: 20 }, { destroy: true }] });
      await send(gw.url, '/v1/models').catch(() => undefined);
      // the provider's own 429 is its error, not one of the gateway's limits
      provider.reply = () => ({ status: 429, json: { error: { message: 'slow down', type: 'requests', code: 'rate_limit_exceeded' } } });
      expect((await send(gw.url, '/v1/chat/completions', { body: streamRequest() })).status).toBe(429);
      await waitFor(() => requestLines(gw) === 4, 2000, 'four request lines');
      expect(await value(metrics, 'infery_upstream_errors_total', { code: 'rate_limit_exceeded' })).toBe(1);
      expect(await value(metrics, 'infery_limit_refusals_total', { reason: 'rate' })).toBe(0);
      expect(await value(metrics, 'infery_upstream_errors_total', { code: 'server_overloaded' })).toBe(1);
      expect(await value(metrics, 'infery_upstream_errors_total', { code: 'upstream_error' })).toBe(1);
      expect(await value(metrics, 'infery_upstream_errors_total', { code: 'upstream_connection_lost' })).toBe(1);
      expect(await value(metrics, 'infery_requests_total', { route: '/chat/completions', method: 'POST', status: '500' })).toBe(1);
      expect(await value(metrics, 'infery_open_streams')).toBe(0);
    });
  });

  test('label cardinality is bounded: model names are cut to 64 characters, and past the cap new ones are "other"', async () => {
    await withMetrics(
      {},
      async (gw, metrics) => {
        const models = ['m-1', 'm-2', 'x'.repeat(300), 'm-4', 'm-5', 'm-6'];
        for (const model of models) expect((await postStream(gw.url, streamRequest(model))).status).toBe(200);
        await waitFor(() => requestLines(gw) === models.length, 2000, 'every request line');
        const seen = await labelValues(metrics, 'infery_tokens_total', 'model');
        expect(seen).toEqual(new Set(['m-1', 'm-2', 'x'.repeat(64), 'other']));
        expect(await value(metrics, 'infery_tokens_total', { model: 'other', kind: 'prompt' })).toBe(36);
        expect(await labelValues(metrics, 'infery_stream_duration_seconds', 'model')).toEqual(new Set(['m-1', 'm-2', 'x'.repeat(64), 'other']));
      },
      { maxLabelValues: 3 },
    );
  });

  test('ledger queue depth is read from the host callback at scrape time; a callback that throws keeps the last value', async () => {
    let depth = 0;
    let broken = false;
    const metrics = prometheusObserver({
      ledgerQueueDepth: () => {
        if (broken) throw new Error('store gone');
        return depth;
      },
    });
    depth = 7;
    expect(await value(metrics, 'infery_ledger_queue_depth')).toBe(7);
    broken = true;
    expect(await value(metrics, 'infery_ledger_queue_depth')).toBe(7);
    broken = false;
    depth = 0;
    expect(await value(metrics, 'infery_ledger_queue_depth')).toBe(0);
    expect(await prometheusObserver().registry.metrics()).toMatch(/^infery_ledger_queue_depth 0$/m);
  });

  test('a custom prefix and a shared registry', async () => {
    const registry = new Registry();
    prometheusObserver({ registry, prefix: 'gw_' });
    const text = await registry.metrics();
    expect(text).toContain('# TYPE gw_requests_total counter');
    expect(text).toContain('# TYPE gw_stream_duration_seconds histogram');
    expect(text).not.toContain('infery_');
    expect(() => prometheusObserver({ prefix: 'bad prefix' })).toThrow(/prefix/);
  });
});

describe('the observer hook', () => {
  test('an observer that throws or rejects in every member never breaks a request, and is logged, not once per request', async () => {
    const observer = {
      requestEnded: () => {
        throw new Error('observer bug');
      },
      generationStarted: () => {
        throw new Error('observer bug');
      },
      generationSettled: () => Promise.reject(new Error('async observer bug')),
    };
    const gw = await startGateway(provider.url, { observer: observer as never });
    try {
      for (let i = 0; i < 3; i++) {
        const result = await postStream(gw.url, streamRequest());
        expect(result.status).toBe(200);
        expect(result.events.at(-1)).toBe('[DONE]');
      }
      expect((await send(gw.url, '/v1/nope')).status).toBe(404);
      await waitFor(() => requestLines(gw) === 4, 2000, 'four request lines');
      await new Promise((r) => setTimeout(r, 20)); // the rejection is reported on a later tick
      const failures = gw.logs.filter((l) => l.msg === 'infery-stream observer failed; the request is unaffected');
      expect(failures.map((l) => l.member).sort()).toEqual(['generationSettled', 'generationStarted', 'requestEnded']);
      expect(gw.meterCalls).toHaveLength(3);
    } finally {
      await gw.close();
    }
  });

  test('each request is reported once, generations start and settle in pairs, and the events carry no key', async () => {
    const events: Array<[string, Record<string, unknown>]> = [];
    const observer = {
      requestEnded: (e: object) => void events.push(['end', { ...e }]),
      generationStarted: (e: object) => void events.push(['start', { ...e }]),
      generationSettled: (e: object) => void events.push(['settled', { ...e }]),
    };
    const gw = await startGateway(provider.url, { observer });
    try {
      await postStream(gw.url, streamRequest());
      await send(gw.url, '/v1/chat/completions', { auth: null, body: streamRequest() });
      await waitFor(() => events.filter(([kind]) => kind === 'end').length === 2, 2000, 'two request ends');
      expect(events.map(([kind]) => kind)).toEqual(['start', 'settled', 'end', 'end']);
      expect(events[1]![1]).toMatchObject({ route: '/chat/completions', model: 'test-model', outcome: 'completed', usage: { prompt_tokens: 12, completion_tokens: 2 }, credits: 14, stream: true });
      expect(events[3]![1]).toMatchObject({ route: '/chat/completions', status: 401, errorCode: 'invalid_api_key', errorSource: 'gateway', cancelled: false });
      expect(JSON.stringify(events)).not.toContain(KEY);
    } finally {
      await gw.close();
    }
  });

  const BAD_OBSERVERS: Array<[string, unknown, RegExp]> = [
    ['a function', () => undefined, /`observer` must be an object/],
    ['null', null, /`observer` must be an object/],
    ['an empty array', [], /`observer` is an empty array/],
    ['an array holding a non-observer', [{ requestEnded() {} }, 5], /`observer\[1\]` must be an object/],
    ['a member that is not a function', { requestEnded: 'yes' }, /`observer.requestEnded` must be a function/],
    ['no member at all', {}, /has none of requestEnded/],
    ['what prometheusObserver() returned', { observer: {}, registry: {} }, /prometheusObserver\(\)\.observer/],
  ];
  test.each(BAD_OBSERVERS)('a bad observer option (%s) throws InferyOptionsError at creation', (_name, observer, message) => {
    const create = () => inferyStream({ upstream: { baseURL: provider.url }, authenticate: () => ({}), observer: observer as never });
    expect(create).toThrow(InferyOptionsError);
    expect(create).toThrow(message);
  });
});

describe('GET /metrics (example app)', () => {
  async function withMetricsApp(token: string | undefined, run: (url: string, metrics: PrometheusObserver) => Promise<void>): Promise<void> {
    const metrics = prometheusObserver();
    const app = express();
    mountMetrics(app, { registry: metrics.registry, token });
    const server = http.createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      await run(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, metrics);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }

  test('with a token: 401 in OpenAI shape without it or with a wrong one, the Prometheus text with it', async () => {
    await withMetricsApp('metrics-secret-1', async (url, metrics) => {
      for (const auth of [null, 'Bearer wrong', 'Bearer metrics-secret-', 'Basic metrics-secret-1', 'Bearer metrics-secret-1x']) {
        const res = await send(url, '/metrics', { auth });
        expect(res.status).toBe(401);
        expect(JSON.parse(res.text)).toEqual({ error: { message: expect.any(String), type: 'invalid_request_error', code: 'invalid_api_key', param: null } });
        expect(res.text).not.toContain('infery_');
      }
      const res = await send(url, '/metrics', { auth: 'Bearer metrics-secret-1' });
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toBe(metrics.registry.contentType);
      expect(res.text).toContain('# TYPE infery_requests_total counter');
      expect(res.text).toContain('infery_open_streams 0');
    });
  });

  test('without a token it is open; an empty token is refused at start-up', async () => {
    await withMetricsApp(undefined, async (url) => {
      const res = await send(url, '/metrics', { auth: null });
      expect(res.status).toBe(200);
      expect(res.text).toContain('# TYPE infery_time_to_first_token_seconds histogram');
    });
    expect(() => mountMetrics(express(), { registry: new Registry(), token: '' })).toThrow(/non-empty/);
  });
});
