import request from 'supertest';
import { contentChunk, refusedURL, ScriptedProvider, textSteps, type Step } from './helpers/provider';
import { expectNothingBilled, startGateway, UPSTREAM_KEY, KEY, type TestGateway } from './helpers/gateway';
import { jsonEvents, postStream, waitFor } from './helpers/sse-client';

const chat = { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] };

let provider: ScriptedProvider;
let gw: TestGateway;
beforeAll(async () => {
  provider = await new ScriptedProvider().start();
  gw = await startGateway(provider.url, { upstreamTimeout: 300, idleTimeout: 300 });
});
afterAll(async () => {
  await gw.close();
  await provider.stop();
});
beforeEach(() => {
  gw.meterCalls.length = 0;
});

function expectOpenAIError(body: unknown, code?: string): void {
  expect(body).toEqual({ error: { message: expect.any(String), type: expect.any(String), code: code ?? expect.any(String), param: null } });
}

describe('errors before the first byte', () => {
  test.each([
    [400, { error: { message: 'Invalid value for temperature', type: 'invalid_request_error', code: 'invalid_value' } }, 'invalid_value'],
    [401, { error: { message: `Incorrect API key provided: ${UPSTREAM_KEY}.`, type: 'invalid_request_error', code: 'invalid_api_key' } }, 'invalid_api_key'],
    [429, { error: { message: 'Rate limit reached', type: 'requests', code: 'rate_limit_exceeded' } }, 'rate_limit_exceeded'],
    [500, { error: { message: 'The server had an error', type: 'server_error', code: null } }, 'upstream_error'],
    [503, '<html><body>Service Unavailable</body></html>', 'upstream_error'],
  ])('upstream %i reaches the client with the same status, in OpenAI shape, with no key', async (status, body, code) => {
    provider.reply = () => ({ status, json: body });
    for (const stream of [true, false]) {
      const res = await request(gw.url).post('/v1/chat/completions').set('Authorization', `Bearer ${KEY}`).send({ ...chat, stream });
      expect(res.status).toBe(status);
      expect(res.headers['content-type']).toMatch(/application\/json/);
      expectOpenAIError(res.body, code);
      expect(res.text).not.toContain(UPSTREAM_KEY);
      expect(res.text).not.toMatch(/sk-[a-z]/);
      expect(res.text).not.toMatch(/\bat .*\.ts:\d+/); // no stack trace
    }
    expectNothingBilled(gw.meterCalls);
  });

  test('a refused connection is 502 upstream_unreachable', async () => {
    const dead = await startGateway(await refusedURL());
    try {
      const res = await request(dead.url).post('/v1/chat/completions').set('Authorization', `Bearer ${KEY}`).send(chat);
      expect(res.status).toBe(502);
      expectOpenAIError(res.body, 'upstream_unreachable');
      expectNothingBilled(dead.meterCalls, 1);
    } finally {
      await dead.close();
    }
  });

  test('no answer within upstreamTimeout is 504 upstream_timeout, and the upstream request is aborted', async () => {
    provider.reply = () => ({ delay: Infinity });
    const res = await request(gw.url).post('/v1/chat/completions').set('Authorization', `Bearer ${KEY}`).send(chat);
    expect(res.status).toBe(504);
    expectOpenAIError(res.body, 'upstream_timeout');
    await waitFor(() => provider.last.closedEarlyAt !== undefined, 1000, 'upstream abort');
    expectNothingBilled(gw.meterCalls);
  });
});

describe('errors mid-stream', () => {
  // the seed's bare error event: `error` alone, no `choices` beside it (the AI SDK would read a chunk with
  // `choices` as a normal one and drop the error)
  const errorShape = {
    error: { message: expect.any(String), type: expect.any(String), code: expect.any(String) },
  };
  const started: Step[] = textSteps(['Hello', ' there']).slice(0, 3);

  test.each<[string, Step[], string]>([
    ['the upstream connection dies', [...started, { wait: 50 }, { destroy: true }], 'upstream_connection_lost'],
    ['the upstream ends without finishing', [...started], 'upstream_connection_lost'],
    ['the upstream stalls past idleTimeout', [...started, { hang: true }], 'upstream_timeout'],
    ['the upstream sends data that is not JSON', [...started, { raw: 'data: {"choices": [ oops\n\n' }, ...textSteps(['x']).slice(1)], 'upstream_invalid_response'],
    ['the upstream sends an error chunk', [...started, { data: { error: { message: `overloaded, key ${UPSTREAM_KEY}`, type: 'server_error', code: 'overloaded' } } }], 'overloaded'],
  ])('%s → an error chunk, the connection closes, produced tokens metered once', async (_name, steps, code) => {
    provider.reply = () => ({ steps });
    const result = await postStream(gw.url, chat);
    expect(result.status).toBe(200);
    expect(result.raw).toContain('" there"');
    const last = jsonEvents(result).at(-1)!;
    expect(last).toEqual(errorShape);
    expect((last.error as { code: string }).code).toBe(code);
    expect(result.events).not.toContain('[DONE]');
    expect(result.raw).not.toContain(UPSTREAM_KEY);
    expect(jsonEvents(result).some((c) => 'credits_used' in c)).toBe(false);
    await waitFor(() => gw.meterCalls.length === 1, 2000, 'meter');
    await new Promise((r) => setTimeout(r, 50));
    expect(gw.meterCalls).toHaveLength(1);
    const event = gw.meterCalls[0]!;
    expect(event.cancelled).toBe(false);
    expect(event.error?.code).toBe(code);
    expect(event.usage.completion_tokens).toBe(2);
    await waitFor(() => provider.last.closedEarlyAt !== undefined || steps.every((s) => !('hang' in s)), 1000, 'upstream closed');
  });

  test('a first-token timeout never fires on a stream that has already started', async () => {
    // upstreamTimeout is 300 ms; this stream lasts ~1 s with 200 ms gaps (under idleTimeout)
    provider.reply = () => ({ steps: textSteps(['a', 'b', 'c', 'd', 'e'], { gap: 200 }) });
    const result = await postStream(gw.url, chat);
    expect(result.events.at(-1)).toBe('[DONE]');
    expect(jsonEvents(result).some((c) => 'error' in c)).toBe(false);
  });

  test('a slow first token (after headers) is covered by idleTimeout, not upstreamTimeout', async () => {
    provider.reply = () => ({ steps: [{ wait: 200 }, { data: contentChunk('late but fine') }, { wait: 200 }, ...textSteps([]).slice(1)] });
    const result = await postStream(gw.url, chat);
    expect(result.events.at(-1)).toBe('[DONE]');
  });
});
