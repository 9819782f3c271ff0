/**
 * Several upstreams (the `upstreams` option) and fallback before the first byte, through the whole gateway over
 * real sockets: local scripted providers (and the example app's mock provider) stand for the real ones, the
 * openai SDK is the client where a client's view matters. Every server is stopped in afterEach/afterAll.
 */
import OpenAI, { APIError } from 'openai';
import type { Options, UpstreamConfig } from '../lib';
import { startMockProvider, type MockProvider } from '../example-app/mock-provider';
import { KEY, startGateway, type Account, type TestGateway } from './helpers/gateway';
import { BASE, contentChunk, refusedURL, ScriptedProvider, sleep, textSteps, type Reply } from './helpers/provider';
import { jsonEvents, postStream, waitFor } from './helpers/sse-client';
import { completionSteps, embeddingsJson, responsesPrefix, responsesSteps, responsesUsage } from './helpers/surface-scripts';

const FIRST_KEY = 'sk-first-upstream-key-1111111111';
const SECOND_KEY = 'sk-second-upstream-key-222222222';
const MESSAGES = [{ role: 'user' as const, content: 'Say hello' }];

let first: ScriptedProvider;
let second: ScriptedProvider;
const gateways: TestGateway[] = [];

beforeEach(async () => {
  first = await new ScriptedProvider().start();
  second = await new ScriptedProvider().start();
  second.reply = () => ({ steps: textSteps(['Served', ' by', ' second'], { usage: [10, 3] }) });
});

afterEach(async () => {
  for (const gw of gateways.splice(0)) await gw.close();
  await first.stop();
  await second.stop();
});

function up(name: string, baseURL: string, apiKey: string, extra: Partial<UpstreamConfig> = {}): UpstreamConfig {
  return { name, baseURL, apiKey, ...extra };
}

/** A gateway over `upstreams` (the single `upstream` option of startGateway left out). */
async function gatewayOver(upstreams: UpstreamConfig[], overrides: Partial<Options<Account>> = {}): Promise<TestGateway> {
  const gw = await startGateway('http://unused.invalid/v1', { upstream: undefined, upstreams, ...overrides });
  gateways.push(gw);
  return gw;
}

const pair = (overrides: Partial<Options<Account>> = {}): Promise<TestGateway> =>
  gatewayOver([up('first', first.url, FIRST_KEY), up('second', second.url, SECOND_KEY)], overrides);

const sdk = (gw: TestGateway): OpenAI => new OpenAI({ apiKey: KEY, baseURL: `${gw.url}/v1`, maxRetries: 0, timeout: 15_000 });

const settle = (): Promise<void> => sleep(60);

const unavailable: Reply = { status: 503, json: { error: { message: 'The server is overloaded', type: 'server_error', code: 'overloaded', param: null } } };

/** The one request line logged for the generation. */
function requestLine(gw: TestGateway): Record<string, unknown> {
  const lines = gw.logs.filter((l) => l.msg === 'infery-stream request');
  expect(lines).toHaveLength(1);
  return lines[0]!;
}

describe('fallback before the first byte', () => {
  test('the first answering 503 → the second serves; metered once naming the second and the failed first; the log line names both', async () => {
    first.reply = () => unavailable;
    const gw = await pair();
    const res = await postStream(gw.url, { model: 'test-model', messages: MESSAGES, stream: true });
    expect(res.status).toBe(200);
    const chunks = jsonEvents(res);
    expect(chunks.map((c) => (c.choices as any[])[0]?.delta?.content ?? '').join('')).toBe('Served by second');
    expect(chunks.at(-1)!.credits_used).toBe(13);
    expect(res.events.at(-1)).toBe('[DONE]');

    expect(first.requests).toHaveLength(1);
    expect(second.requests).toHaveLength(1);
    await settle();
    expect(gw.meterCalls).toHaveLength(1);
    const event = gw.meterCalls[0]!;
    expect(event.upstream).toBe('second');
    expect(event.failedUpstreams).toEqual([{ upstream: 'first', status: 503, code: expect.any(String) }]);
    expect(event.outcome).toBe('completed');
    expect(event.usage).toMatchObject({ prompt_tokens: 10, completion_tokens: 3 });

    const line = requestLine(gw);
    expect(line.upstream).toBe('second');
    expect(line.failedUpstreams).toEqual([expect.objectContaining({ upstream: 'first', status: 503 })]);
    const attempt = gw.logs.find((l) => l.msg === 'infery-stream upstream attempt failed');
    expect(attempt).toMatchObject({ upstream: 'first', status: 503, attempt: 1 });
    // the first's error never reached the client
    expect(res.raw).not.toContain('overloaded');
  });

  test('a 429 and a 500 from the first are retried too', async () => {
    const gw = await pair();
    for (const status of [429, 500, 502]) {
      first.reply = () => ({ status, json: { error: { message: `status ${status}`, type: 'server_error', code: null, param: null } } });
      const res = await postStream(gw.url, { model: 'test-model', messages: MESSAGES, stream: true });
      expect(res.status).toBe(200);
      expect(res.raw).toContain('Served');
    }
    await settle();
    expect(gw.meterCalls.map((e) => [e.upstream, e.failedUpstreams.map((f) => f.status)])).toEqual([
      ['second', [429]],
      ['second', [500]],
      ['second', [502]],
    ]);
  });

  test('the first refusing the connection (a closed port) → the second serves', async () => {
    const gw = await gatewayOver([up('first', await refusedURL(), FIRST_KEY), up('second', second.url, SECOND_KEY)]);
    const res = await postStream(gw.url, { model: 'test-model', messages: MESSAGES, stream: true });
    expect(res.status).toBe(200);
    expect(res.raw).toContain('Served');
    await settle();
    expect(gw.meterCalls).toHaveLength(1);
    expect(gw.meterCalls[0]).toMatchObject({ upstream: 'second', failedUpstreams: [{ upstream: 'first', status: 502, code: 'upstream_unreachable' }] });
  });

  test('the first sending no headers within upstreamTimeout → the second serves, and the first sees its request closed', async () => {
    first.reply = () => ({ delay: Infinity });
    const gw = await pair({ upstreamTimeout: 300 });
    const started = Date.now();
    const res = await postStream(gw.url, { model: 'test-model', messages: MESSAGES, stream: true });
    const took = Date.now() - started;
    console.log(`fallback after a timed-out first upstream: answered in ${took} ms (upstreamTimeout 300 ms)`);
    expect(res.status).toBe(200);
    expect(res.raw).toContain('Served');
    expect(took).toBeLessThan(3000);
    await waitFor(() => first.last.closedEarlyAt !== undefined, 2000, 'the first provider to see its request closed');
    expect(gw.meterCalls[0]).toMatchObject({ upstream: 'second', failedUpstreams: [{ upstream: 'first', status: 504, code: 'upstream_timeout' }] });
  });

  test('a failure AFTER the first byte is never retried: the second never sees the request, the client gets the error chunk, metered once as failed at the first', async () => {
    first.reply = () => ({ steps: [{ data: { ...BASE, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] } }, { data: contentChunk('Partial') }, { wait: 30 }, { destroy: true }] });
    const gw = await pair();
    const res = await postStream(gw.url, { model: 'test-model', messages: MESSAGES, stream: true });
    expect(res.status).toBe(200);
    const chunks = jsonEvents(res);
    expect((chunks[1]!.choices as any[])[0].delta.content).toBe('Partial');
    const last = chunks.at(-1)!;
    expect(last.error).toMatchObject({ code: 'upstream_connection_lost' });
    expect(res.raw).not.toContain('Served');
    // billed at the estimate: counted in the tokenizer thread, which may be starting
    await waitFor(() => gw.meterCalls.length > 0, 5000);
    await settle();
    expect(second.requests).toHaveLength(0);
    expect(gw.meterCalls).toHaveLength(1);
    expect(gw.meterCalls[0]).toMatchObject({ upstream: 'first', failedUpstreams: [], outcome: 'failed' });
  });

  test('a 200 whose body fails before any event is not retried either (the client already has its 200)', async () => {
    first.reply = () => ({ steps: [{ wait: 30 }, { destroy: true }] });
    const gw = await pair();
    const res = await postStream(gw.url, { model: 'test-model', messages: MESSAGES, stream: true });
    expect(res.status).toBe(200);
    expect(jsonEvents(res).at(-1)!.error).toBeDefined();
    await waitFor(() => gw.meterCalls.length > 0, 5000);
    await settle();
    expect(second.requests).toHaveLength(0);
    expect(gw.meterCalls).toHaveLength(1);
  });

  test('the same through the SDK with the Responses API: a provider dropping mid-stream is not retried; the SDK raises the error event', async () => {
    first.reply = () => ({ steps: [...responsesPrefix(['Half']), { wait: 30 }, { destroy: true }] });
    second.reply = () => ({ steps: responsesSteps(['Second']) });
    const gw = await pair();
    const stream = await sdk(gw).responses.create({ model: 'test-model', input: 'hi', stream: true });
    let caught: unknown;
    const seen: string[] = [];
    try {
      for await (const event of stream) if (event.type === 'response.output_text.delta') seen.push(event.delta);
    } catch (err) {
      caught = err;
    }
    expect(seen).toEqual(['Half']);
    expect(caught).toBeInstanceOf(APIError);
    await settle();
    expect(second.requests).toHaveLength(0);
    expect(gw.meterCalls).toHaveLength(1);
    expect(gw.meterCalls[0]).toMatchObject({ endpoint: 'responses', upstream: 'first', outcome: 'failed' });
  });

  test('a 400 from the first is not retried: the client gets it (in OpenAI shape), metered once as unserved', async () => {
    first.reply = () => ({ status: 400, json: { error: { message: 'Invalid value for temperature', type: 'invalid_request_error', code: 'invalid_value', param: 'temperature' } } });
    const gw = await pair();
    const err = await sdk(gw)
      .chat.completions.create({ model: 'test-model', messages: MESSAGES })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(APIError);
    expect((err as APIError).status).toBe(400);
    expect((err as APIError).message).toMatch(/Invalid value for temperature/);
    await settle();
    expect(second.requests).toHaveLength(0);
    expect(gw.meterCalls).toHaveLength(1);
    expect(gw.meterCalls[0]).toMatchObject({ outcome: 'unserved', usage: { total_tokens: 0 }, failedUpstreams: [{ upstream: 'first', status: 400 }] });
  });

  test('fallback.on: ["connection"] → a 503 is not retried, a refused connection still is', async () => {
    first.reply = () => unavailable;
    const gw = await pair({ fallback: { on: ['connection'] } });
    const res = await postStream(gw.url, { model: 'test-model', messages: MESSAGES, stream: true });
    expect(res.status).toBe(503);
    expect(second.requests).toHaveLength(0);
    await settle();
    expect(gw.meterCalls).toHaveLength(1);
    expect(gw.meterCalls[0]).toMatchObject({ outcome: 'unserved', failedUpstreams: [{ upstream: 'first', status: 503 }] });

    const refusing = await gatewayOver([up('first', await refusedURL(), FIRST_KEY), up('second', second.url, SECOND_KEY)], { fallback: { on: ['connection'] } });
    const ok = await postStream(refusing.url, { model: 'test-model', messages: MESSAGES, stream: true });
    expect(ok.status).toBe(200);
    expect(refusing.meterCalls[0]!.upstream).toBe('second');
  });

  test('every upstream failing: the client gets the last failure, metered once as unserved with both', async () => {
    first.reply = () => unavailable;
    second.reply = () => ({ status: 500, json: { error: { message: 'second broke', type: 'server_error', code: 'server_error', param: null } } });
    const gw = await pair();
    const res = await postStream(gw.url, { model: 'test-model', messages: MESSAGES, stream: true });
    expect(res.status).toBe(500);
    await settle();
    expect(gw.meterCalls).toHaveLength(1);
    expect(gw.meterCalls[0]!.outcome).toBe('unserved');
    expect(gw.meterCalls[0]!.failedUpstreams.map((f) => [f.upstream, f.status])).toEqual([
      ['first', 503],
      ['second', 500],
    ]);
  });

  test('a client that leaves while the first upstream is still silent: the attempt is aborted, the second never tried, metered once as cancelled (the prompt only)', async () => {
    first.reply = () => ({ delay: Infinity });
    const gw = await pair({ upstreamTimeout: 5000 });
    const controller = new AbortController();
    const pending = fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'test-model', messages: MESSAGES, stream: true }),
      signal: controller.signal,
    }).catch((e: unknown) => e);
    await first.waitForRequests(1);
    const abortedAt = Date.now();
    controller.abort();
    await pending;
    await waitFor(() => first.last.closedEarlyAt !== undefined, 2000, 'the first provider to see its request closed');
    console.log(`client left during the first attempt: the first provider saw its request closed ${first.last.closedEarlyAt! - abortedAt} ms later`);
    await waitFor(() => gw.meterCalls.length > 0, 2000, 'meter');
    await sleep(300);
    expect(second.requests).toHaveLength(0);
    expect(gw.meterCalls).toHaveLength(1);
    // as with one upstream: the provider had the prompt, so the prompt is billed, nothing else
    expect(gw.meterCalls[0]).toMatchObject({ outcome: 'cancelled', usage: { completion_tokens: 0 } });
  });
});

describe('routing and keys', () => {
  test('aliases: the body each provider receives names the model its own way; the meter keeps the client\'s name', async () => {
    first.reply = () => unavailable;
    const gw = await gatewayOver([
      up('first', first.url, FIRST_KEY, { models: ['nothing-else'], aliases: { fast: 'first-fast-v1' } }),
      up('second', second.url, SECOND_KEY, { models: ['nothing-else'], aliases: { fast: 'second-fast-v2' } }),
    ]);
    const res = await postStream(gw.url, { model: 'fast', messages: MESSAGES, stream: true });
    expect(res.status).toBe(200);
    expect(first.last.json?.model).toBe('first-fast-v1');
    expect(second.last.json?.model).toBe('second-fast-v2');
    // everything else in the body is what the client sent
    expect(second.last.json?.messages).toEqual(MESSAGES);
    await settle();
    expect(gw.meterCalls[0]).toMatchObject({ model: 'fast', upstream: 'second' });
    // an alias of one upstream is not a name the other serves
    const unknown = await postStream(gw.url, { model: 'first-fast-v1', messages: MESSAGES, stream: true });
    expect(unknown.status).toBe(404);
  });

  test('models patterns: gpt-* goes to the first, anything else to the second', async () => {
    first.reply = () => ({ steps: textSteps(['From', ' first']) });
    const gw = await gatewayOver([up('first', first.url, FIRST_KEY, { models: ['gpt-*'] }), up('second', second.url, SECOND_KEY, { models: ['*'] })]);
    const a = await postStream(gw.url, { model: 'gpt-4o-mini', messages: MESSAGES, stream: true });
    const b = await postStream(gw.url, { model: 'llama-3-70b', messages: MESSAGES, stream: true });
    const c = await postStream(gw.url, { model: 'my-gpt-4o', messages: MESSAGES, stream: true }); // the pattern matches the whole name
    expect(a.raw).toContain('From');
    expect(b.raw).toContain('Served');
    expect(c.raw).toContain('Served');
    expect(first.requests.map((r) => r.json?.model)).toEqual(['gpt-4o-mini']);
    expect(second.requests.map((r) => r.json?.model)).toEqual(['llama-3-70b', 'my-gpt-4o']);
    await settle();
    expect(gw.meterCalls.map((e) => e.upstream)).toEqual(['first', 'second', 'second']);
  });

  test('each provider gets only its own key and headers, never the client\'s key', async () => {
    first.reply = () => ({ status: 503, json: { error: { message: `overloaded, key ${FIRST_KEY}`, type: 'server_error', code: null, param: null } } });
    second.reply = () => ({ status: 500, json: { error: { message: `broken, key ${SECOND_KEY}`, type: 'server_error', code: null, param: null } } });
    const gw = await gatewayOver([
      up('first', first.url, FIRST_KEY, { headers: { 'OpenAI-Organization': 'org-first' } }),
      up('second', second.url, SECOND_KEY, { headers: { 'X-Second': 'yes' } }),
    ]);
    const res = await postStream(gw.url, { model: 'test-model', messages: MESSAGES, stream: true });
    expect(res.status).toBe(500);
    expect(first.last.headers.authorization).toBe(`Bearer ${FIRST_KEY}`);
    expect(first.last.headers['openai-organization']).toBe('org-first');
    expect(first.last.headers['x-second']).toBeUndefined();
    expect(second.last.headers.authorization).toBe(`Bearer ${SECOND_KEY}`);
    expect(second.last.headers['x-second']).toBe('yes');
    expect(second.last.headers['openai-organization']).toBeUndefined();
    for (const seen of [first.last, second.last]) expect(JSON.stringify(seen.headers)).not.toContain(KEY);
    // neither key reached the client or a log line
    for (const key of [FIRST_KEY, SECOND_KEY]) {
      expect(res.raw).not.toContain(key.slice(3));
      expect(JSON.stringify(gw.logs)).not.toContain(key.slice(3));
    }
  });

  test('a streamed answer from the second that echoes the second\'s key is redacted', async () => {
    first.reply = () => unavailable;
    second.reply = () => ({ steps: textSteps(['my key is ', SECOND_KEY]) });
    const gw = await pair();
    const res = await postStream(gw.url, { model: 'test-model', messages: MESSAGES, stream: true });
    expect(res.status).toBe(200);
    expect(res.raw).not.toContain(SECOND_KEY.slice(3));
  });

  test('the single `upstream` option still works and is named "default"', async () => {
    const gw = await startGateway(second.url);
    gateways.push(gw);
    const res = await postStream(gw.url, { model: 'test-model', messages: MESSAGES, stream: true });
    expect(res.status).toBe(200);
    await settle();
    expect(gw.meterCalls[0]).toMatchObject({ upstream: 'default', failedUpstreams: [] });
  });
});

describe('the openai SDK through fallback', () => {
  test('chat stream: the first 503, the second serves; credits_used at the end', async () => {
    first.reply = () => unavailable;
    const gw = await pair();
    const stream = await sdk(gw).chat.completions.create({ model: 'test-model', messages: MESSAGES, stream: true });
    let text = '';
    let credits: unknown;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      if ((chunk as any).credits_used !== undefined) credits = (chunk as any).credits_used;
    }
    expect(text).toBe('Served by second');
    expect(credits).toBe(13);
    expect(gw.meterCalls).toHaveLength(1);
  });

  test('responses stream helper: the first refusing, the second serves; finalResponse has credits_used', async () => {
    second.reply = () => ({ steps: responsesSteps(['From', ' second'], { usage: responsesUsage(6, 2) }) });
    const gw = await gatewayOver([up('first', await refusedURL(), FIRST_KEY), up('second', second.url, SECOND_KEY)]);
    const final = await sdk(gw).responses.stream({ model: 'test-model', input: 'hi' }).finalResponse();
    expect(final.output_text).toBe('From second');
    expect((final as any).credits_used).toBe(8);
    expect(gw.meterCalls).toHaveLength(1);
    expect(gw.meterCalls[0]).toMatchObject({ endpoint: 'responses', upstream: 'second', failedUpstreams: [{ upstream: 'first', code: 'upstream_unreachable' }] });
  });

  test('completions and embeddings fall back too', async () => {
    first.reply = () => unavailable;
    second.reply = (req) => (req.path.endsWith('/embeddings') ? { json: embeddingsJson(req.json) } : { steps: completionSteps(['a', 'b']) });
    const gw = await pair();
    const c = sdk(gw);
    const stream = await c.completions.create({ model: 'test-instruct', prompt: 'x', stream: true });
    let last: any;
    for await (const chunk of stream) last = chunk;
    expect(last.credits_used).toBeGreaterThan(0);
    const emb = await c.embeddings.create({ model: 'text-embedding-test', input: 'x', encoding_format: 'float' });
    expect((emb as any).credits_used).toBe(7);
    await settle();
    expect(gw.meterCalls.map((e) => [e.endpoint, e.upstream, e.failedUpstreams[0]?.upstream])).toEqual([
      ['completions', 'second', 'first'],
      ['embeddings', 'second', 'first'],
    ]);
  });
});

describe('end to end: two upstreams, the first down, the mock provider second', () => {
  // The example app (createApp) takes one upstream URL (AppConfig.upstreamURL) and no INFERY_CONFIG yet, so this
  // builds the same host with startGateway and the `upstreams` option in the INFERY_CONFIG shape.
  let mock: MockProvider;
  beforeAll(async () => {
    mock = await startMockProvider();
  });
  afterAll(async () => {
    await mock.close();
  });

  test('every surface is served by the second', async () => {
    const gw = await gatewayOver([
      { name: 'primary', baseURL: await refusedURL(), apiKey: FIRST_KEY, models: ['gpt-*'] },
      { name: 'backup', baseURL: mock.url, apiKey: SECOND_KEY, models: ['*'] },
    ]);
    const c = sdk(gw);
    // gpt-* is served by both: the primary is down, so the backup serves it
    const chat = await c.chat.completions.create({ model: 'gpt-4o-mini', messages: MESSAGES });
    expect(chat.choices[0]!.message.content!.length).toBeGreaterThan(0);
    const responses = await c.responses.create({ model: 'gpt-4o-mini', input: 'hello' });
    expect(responses.output_text.length).toBeGreaterThan(0);
    const completions = await c.completions.create({ model: 'gpt-4o-mini', prompt: 'hello' });
    expect(completions.choices[0]!.text.length).toBeGreaterThan(0);
    const embeddings = await c.embeddings.create({ model: 'gpt-embed', input: 'hello' });
    expect(embeddings.data[0]!.embedding.length).toBeGreaterThan(0);
    // a model only the backup serves goes there directly
    const direct = await c.chat.completions.create({ model: 'mock-1', messages: MESSAGES });
    expect(direct.choices[0]!.message.content!.length).toBeGreaterThan(0);
    await settle();
    expect(gw.meterCalls.map((e) => [e.endpoint, e.upstream, e.failedUpstreams.map((f) => f.upstream).join()])).toEqual([
      ['chat.completions', 'backup', 'primary'],
      ['responses', 'backup', 'primary'],
      ['completions', 'backup', 'primary'],
      ['embeddings', 'backup', 'primary'],
      ['chat.completions', 'backup', ''],
    ]);
    for (const e of gw.meterCalls) expect(e.outcome).toBe('completed');
  });
});

describe('reads of stored responses with several upstreams', () => {
  test('regression (was a BUG): with the first upstream down, GET /v1/responses/{id} of a response the second created is read from the second', async () => {
    const stored = new Map<string, unknown>();
    second.reply = (req) => {
      if (req.method === 'POST') {
        const body = { id: 'resp_on_second', object: 'response', created_at: 1, status: 'completed', model: 'test-model', output: [], usage: responsesUsage(3, 1) };
        stored.set('resp_on_second', body);
        return { json: body };
      }
      const id = req.path.split('/')[3]!.split('?')[0]!;
      return stored.has(id) ? { json: stored.get(id) } : { status: 404, json: { error: { message: 'not found', type: 'invalid_request_error', code: null, param: null } } };
    };
    const gw = await gatewayOver([up('first', await refusedURL(), FIRST_KEY), up('second', second.url, SECOND_KEY)]);
    const c = sdk(gw);
    const created = await c.responses.create({ model: 'test-model', input: 'remember me' });
    expect(created.id).toBe('resp_on_second');
    const read = await c.responses.retrieve('resp_on_second').then(
      (r) => ({ status: 200, id: r.id }),
      (e: unknown) => ({ status: (e as APIError).status, id: undefined }),
    );
    console.log(`GET /v1/responses/{id} after fallback: ${read.status}; the second provider saw ${second.requests.filter((r) => r.method === 'GET').length} GET`);
    expect(read).toEqual({ status: 200, id: 'resp_on_second' });
  });
});

describe('continuing a stored response (previous_response_id)', () => {
  const storing = (provider: ScriptedProvider, id: string): void => {
    provider.reply = (req) => {
      if (req.method !== 'POST') return { status: 404, json: { error: { message: 'not found', type: 'invalid_request_error', code: null, param: null } } };
      return { json: { id: `${id}-${provider.requests.length}`, object: 'response', created_at: 1, status: 'completed', model: 'test-model', output: [], usage: responsesUsage(3, 1) } };
    };
  };

  test('goes to the upstream that holds the response, even when another comes first', async () => {
    storing(first, 'resp_first');
    storing(second, 'resp_second');
    // the first upstream is down for the first request: the response is created (and stored) on the second
    const down = first.reply;
    first.reply = () => unavailable;
    const gw = await pair();
    const c = sdk(gw);
    const created = await c.responses.create({ model: 'test-model', input: 'remember me' });
    expect(created.id).toMatch(/^resp_second/);
    first.reply = down;
    const before = { first: first.requests.length, second: second.requests.length };
    const next = await c.responses.create({ model: 'test-model', input: 'and now?', previous_response_id: created.id });
    expect(next.id).toMatch(/^resp_second/);
    expect(first.requests.length).toBe(before.first);
    expect(second.requests.length).toBe(before.second + 1);
    expect(second.last.json).toMatchObject({ previous_response_id: created.id });
    expect(gw.meterCalls.at(-1)).toMatchObject({ upstream: 'second', failedUpstreams: [] });
  });

  test("another account's response cannot be continued: 404 response_not_found, nothing held or sent", async () => {
    storing(first, 'resp_a');
    const gw = await pair({ authenticate: (req) => ({ id: String(req.headers.authorization) }) });
    const alice = new OpenAI({ apiKey: 'alice', baseURL: `${gw.url}/v1`, maxRetries: 0 });
    const mallory = new OpenAI({ apiKey: 'mallory', baseURL: `${gw.url}/v1`, maxRetries: 0 });
    const created = await alice.responses.create({ model: 'test-model', input: 'my secret plan' });
    const sent = first.requests.length;
    const metered = gw.meterCalls.length;
    const err = await mallory.responses.create({ model: 'test-model', input: 'repeat the conversation', previous_response_id: created.id }).then(
      () => undefined,
      (e: unknown) => e as APIError,
    );
    expect(err?.status).toBe(404);
    expect(err?.code).toBe('response_not_found');
    expect(first.requests.length).toBe(sent);
    expect(gw.meterCalls.length).toBe(metered);
    // and the owner may continue it
    await expect(alice.responses.create({ model: 'test-model', input: 'go on', previous_response_id: created.id })).resolves.toMatchObject({ object: 'response' });
  });
});

describe('metrics of fallback', () => {
  test('infery_upstream_attempts_total names the upstream that failed and the one that served', async () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { prometheusObserver } = require('../lib/ledgers/metrics/prometheus') as typeof import('../lib/ledgers/metrics/prometheus');
    const metrics = prometheusObserver();
    first.reply = () => unavailable;
    const gw = await pair({ observer: metrics.observer });
    const stream = await sdk(gw).chat.completions.create({ model: 'test-model', stream: true, messages: MESSAGES });
    for await (const chunk of stream) void chunk;
    await settle();
    const text = await metrics.registry.metrics();
    expect(text).toContain('infery_upstream_attempts_total{upstream="first",result="overloaded"} 1');
    expect(text).toContain('infery_upstream_attempts_total{upstream="second",result="ok"} 1');
  });
});
