import request from 'supertest';
import { ScriptedProvider, textSteps } from './helpers/provider';
import { KEY, startGateway, type TestGateway, withGateway as withGatewayOn } from './helpers/gateway';
import { jsonEvents, postStream, waitFor } from './helpers/sse-client';

const chat = { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] };

let provider: ScriptedProvider;
beforeAll(async () => {
  provider = await new ScriptedProvider().start();
  provider.reply = () => ({ steps: textSteps(['Hello', ' world']) });
});
afterAll(() => provider.stop());

const withGateway = (overrides: Parameters<typeof startGateway>[1], run: (gw: TestGateway) => Promise<void>): Promise<void> =>
  withGatewayOn(provider.url, overrides ?? {}, run);

describe('metering exactly once, whatever meter does', () => {
  test.each<[string, () => unknown, string]>([
    ['throws', () => { throw new Error('ledger down'); }, 'threw'],
    ['rejects', () => Promise.reject(new Error('ledger down')), 'threw'],
    ['returns a negative number', () => -1, 'invalid'],
    ['returns a string', () => '3', 'invalid'],
    ['is slower than meterTimeout', () => new Promise((r) => setTimeout(() => r(3), 400)), 'timeout'],
  ])('a meter that %s: the stream still ends with [DONE], without the credits chunk, and it is logged', async (_name, impl, failure) => {
    let calls = 0;
    await withGateway(
      {
        meterTimeout: 150,
        meter: () => {
          calls++;
          return impl() as number;
        },
      },
      async (gw) => {
        const result = await postStream(gw.url, chat);
        expect(result.events.at(-1)).toBe('[DONE]');
        expect(jsonEvents(result).some((c) => 'credits_used' in c)).toBe(false);
        const text = jsonEvents(result).flatMap((c) => (c.choices as Array<{ delta?: { content?: string } }>).map((ch) => ch.delta?.content ?? '')).join('');
        expect(text).toBe('Hello world');
        expect(calls).toBe(1);
        expect(gw.logs.find((l) => l.level === 'error' && String(l.msg).startsWith('infery-stream meter'))).toMatchObject({ failure });
        expect(gw.logs.find((l) => l.msg === 'infery-stream request')).toMatchObject({ credits: null, outcome: 'completed' });
      },
    );
  });

  test('a meter that returns nothing counts as 0 credits', async () => {
    await withGateway({ meter: () => undefined }, async (gw) => {
      const result = await postStream(gw.url, chat);
      expect(jsonEvents(result).at(-1)).toHaveProperty('credits_used', 0);
    });
  });

  test('a slow meter (within meterTimeout) delays the credits chunk, never drops or repeats it', async () => {
    await withGateway({ meter: () => new Promise((r) => setTimeout(() => r(7), 200)) }, async (gw) => {
      const result = await postStream(gw.url, chat);
      expect(jsonEvents(result).filter((c) => 'credits_used' in c)).toEqual([expect.objectContaining({ credits_used: 7 })]);
      expect(result.events.at(-1)).toBe('[DONE]');
    });
  });

  test('concurrent streams are metered once each, with their own ids and usage', async () => {
    let n = 0;
    provider.reply = () => {
      n++;
      const id = `chatcmpl-c${n}`;
      return { steps: textSteps(Array.from({ length: n }, () => ' w'), { usage: [10, n] }).map((s) => ('data' in s && typeof s.data === 'object' ? { data: { ...(s.data as object), id } } : s)) };
    };
    await withGateway({}, async (gw) => {
      const results = await Promise.all(Array.from({ length: 6 }, () => postStream(gw.url, chat)));
      const credits = results.map((r) => jsonEvents(r).at(-1)!.credits_used as number).sort((a, b) => a - b);
      expect(credits).toEqual([11, 12, 13, 14, 15, 16]);
      expect(gw.meterCalls).toHaveLength(6);
      expect(new Set(gw.meterCalls.map((c) => c.generationId)).size).toBe(6);
    });
    provider.reply = () => ({ steps: textSteps(['Hello', ' world']) });
  });
});

describe('non-streaming', () => {
  const completion = (usage?: object) => ({
    id: 'chatcmpl-json1',
    object: 'chat.completion',
    created: 1,
    model: 'test-model',
    choices: [{ index: 0, message: { role: 'assistant', content: 'Hello world' }, finish_reason: 'stop' }],
    ...(usage ? { usage } : {}),
  });

  test('returns the provider JSON with a top-level credits_used, metered once', async () => {
    provider.reply = () => ({ json: completion({ prompt_tokens: 9, completion_tokens: 2, total_tokens: 11 }) });
    await withGateway({}, async (gw) => {
      const res = await request(gw.url).post('/v1/chat/completions').set('Authorization', `Bearer ${KEY}`).send({ ...chat, stream: false });
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ ...completion({ prompt_tokens: 9, completion_tokens: 2, total_tokens: 11 }), credits_used: 11 });
      expect(provider.last.json).not.toHaveProperty('stream_options');
      expect(gw.meterCalls).toHaveLength(1);
      expect(gw.meterCalls[0]).toMatchObject({ providerId: 'chatcmpl-json1', stream: false, cancelled: false, finishReason: 'stop' });
    });
  });

  test('counts tokens itself when the provider sends no usage, and says so', async () => {
    provider.reply = () => ({ json: completion() });
    await withGateway({}, async (gw) => {
      const res = await request(gw.url).post('/v1/chat/completions').set('Authorization', `Bearer ${KEY}`).send({ ...chat, stream: false });
      expect(res.body.usage).toEqual({ prompt_tokens: 8, completion_tokens: 2, total_tokens: 10, estimated: true });
      expect(res.body.credits_used).toBe(10);
    });
  });

  test('an answer that is not JSON after a 2xx is a 502, settled as failed at the prompt estimate (the provider read the prompt)', async () => {
    provider.reply = () => ({ steps: [{ raw: 'not json' }], headers: { 'content-type': 'application/json' } });
    await withGateway({}, async (gw) => {
      const res = await request(gw.url).post('/v1/chat/completions').set('Authorization', `Bearer ${KEY}`).send({ ...chat, stream: false });
      expect(res.status).toBe(502);
      expect(res.body.error.code).toBe('upstream_invalid_response');
      await waitFor(() => gw.meterCalls.length === 1, 2000, 'meter');
      expect(gw.meterCalls[0]).toMatchObject({ outcome: 'failed', usage: { prompt_tokens: 8, completion_tokens: 0, estimated: true } });
    });
  });

  test('an answer larger than maxResponseBytes was generated in full: a 502, settled as failed at the worst case', async () => {
    provider.reply = () => ({ json: { id: 'x', choices: [{ index: 0, message: { role: 'assistant', content: 'y'.repeat(4000) }, finish_reason: 'stop' }] } });
    await withGateway({ maxResponseBytes: 1000 }, async (gw) => {
      const res = await request(gw.url).post('/v1/chat/completions').set('Authorization', `Bearer ${KEY}`).send({ ...chat, stream: false, max_tokens: 50 });
      expect(res.status).toBe(502);
      expect(res.body.error.code).toBe('upstream_response_too_large');
      await waitFor(() => gw.meterCalls.length === 1, 2000, 'meter');
      const call = gw.meterCalls[0]!;
      expect(call.outcome).toBe('failed');
      expect(call.usage).toMatchObject({ prompt_tokens: call.worstCase.prompt_tokens, completion_tokens: 50, estimated: true });
    });
  });

  test('a provider usage of zero for text that was produced is not believed: that count is estimated', async () => {
    provider.reply = () => ({ steps: textSteps(['Hello', ' world'], { usage: [0, 0] }) });
    await withGateway({}, async (gw) => {
      await postStream(gw.url, chat);
      expect(gw.meterCalls[0]!.usage).toMatchObject({ prompt_tokens: 8, completion_tokens: 2, estimated: true });
      expect(gw.logs.some((l) => l.level === 'warn' && String(l.msg).includes('reports zero tokens'))).toBe(true);
    });
  });

  test('a client that leaves before the answer aborts the upstream and is metered as cancelled, once', async () => {
    provider.reply = () => ({ delay: 5000, json: completion() });
    await withGateway({}, async (gw) => {
      const seen = provider.requests.length;
      const controller = new AbortController();
      const pending = fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ ...chat, stream: false }),
        signal: controller.signal,
      }).catch(() => undefined);
      await provider.waitForRequests(seen + 1);
      controller.abort();
      await pending;
      await waitFor(() => provider.last.closedEarlyAt !== undefined, 2000, 'upstream abort');
      await waitFor(() => gw.meterCalls.length === 1, 2000, 'meter');
      expect(gw.meterCalls[0]).toMatchObject({ cancelled: true, stream: false, usage: { completion_tokens: 0, estimated: true } });
    });
  });
});
