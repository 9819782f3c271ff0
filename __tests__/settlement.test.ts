import http from 'node:http';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import { createApp } from '../example-app/app';
import { PriceList, priceOf } from '../example-app/ledger';
import { BASE, contentChunk, finishChunk, ScriptedProvider, textSteps, usageChunk, type Step } from './helpers/provider';
import { KEY, startGateway, type TestGateway, withGateway as withGatewayOn } from './helpers/gateway';
import { jsonEvents, postStream, waitFor } from './helpers/sse-client';

const chat = { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] };
const role: Step = { data: { ...BASE, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] } };
/** A stream's first chunks, then the finish chunk. */
const finished = (words: string[]): Step[] => [role, ...words.map((w) => ({ data: contentChunk(w) })), { data: finishChunk() }];
/** Characters as tokens, so the estimates are exact in assertions. */
const countTokens = (text: string): number => text.length;

let provider: ScriptedProvider;
beforeAll(async () => {
  provider = await new ScriptedProvider().start();
});
afterAll(() => provider.stop());

const withGateway = (overrides: Parameters<typeof startGateway>[1], run: (gw: TestGateway) => Promise<void>): Promise<void> =>
  withGatewayOn(provider.url, overrides ?? {}, run);

const abortOnFinish = (data: string): 'abort' | undefined => (data.includes('"finish_reason":"stop"') ? 'abort' : undefined);

describe('a finished generation is billed at the provider usage', () => {
  test('a client that hangs up after the finish chunk, before the usage, is billed the provider usage as completed', async () => {
    // a reasoning model: 5,008 completion tokens, most of them never visible
    provider.reply = () => ({ steps: [...finished(['Hi', ' there']), { wait: 300 }, { data: usageChunk(40, 5008) }, { data: '[DONE]' }] });
    await withGateway({ countTokens }, async (gw) => {
      const result = await postStream(gw.url, chat, { onEvent: abortOnFinish });
      expect(jsonEvents(result).some((c) => 'credits_used' in c)).toBe(false);
      await waitFor(() => gw.meterCalls.length === 1, 3000, 'meter');
      expect(gw.meterCalls[0]).toMatchObject({ outcome: 'completed', cancelled: false, finishReason: 'stop', usage: { prompt_tokens: 40, completion_tokens: 5008 } });
      expect(gw.meterCalls[0]!.usage.estimated).toBeUndefined();
      expect(provider.last.closedEarlyAt).toBeUndefined(); // the gateway read the provider's answer to its end
      expect(gw.logs.some((l) => l.msg === 'infery-stream client disconnected after the finish; reading on for the provider usage')).toBe(true);
    });
  });

  test('reading on is bounded by usageGraceTimeout: a provider that never sends the usage is aborted, the estimate billed', async () => {
    provider.reply = () => ({ steps: [...finished(['Hi', ' there']), { hang: true }] });
    await withGateway({ countTokens, usageGraceTimeout: 300 }, async (gw) => {
      const started = Date.now();
      await postStream(gw.url, chat, { onEvent: abortOnFinish });
      await waitFor(() => gw.meterCalls.length === 1, 3000, 'meter');
      const waited = Date.now() - started;
      expect(waited).toBeGreaterThanOrEqual(250);
      expect(waited).toBeLessThan(2500);
      expect(gw.meterCalls[0]).toMatchObject({ outcome: 'completed', usage: { completion_tokens: 'Hi there'.length, estimated: true } });
      await waitFor(() => provider.last.closedEarlyAt !== undefined, 2000, 'the provider to see the abort');
    });
  });

  test('with n = 2, leaving after only one choice finished is a cancellation: the upstream is aborted at once', async () => {
    const two: Step[] = [
      { data: { ...BASE, choices: [{ index: 0, delta: { content: 'a' }, finish_reason: null }, { index: 1, delta: { content: 'b' }, finish_reason: null }] } },
      { data: { ...BASE, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] } },
      { wait: 2000 },
      { data: { ...BASE, choices: [{ index: 1, delta: {}, finish_reason: 'stop' }] } },
      { data: usageChunk(5, 2) },
      { data: '[DONE]' },
    ];
    provider.reply = () => ({ steps: two });
    await withGateway({ countTokens }, async (gw) => {
      const left = Date.now();
      await postStream(gw.url, { ...chat, n: 2 }, { onEvent: abortOnFinish });
      await waitFor(() => provider.last.closedEarlyAt !== undefined, 2000, 'the provider to see the abort');
      expect(provider.last.closedEarlyAt! - left).toBeLessThan(250 + 150);
      await waitFor(() => gw.meterCalls.length === 1, 2000, 'meter');
      expect(gw.meterCalls[0]).toMatchObject({ outcome: 'cancelled', usage: { completion_tokens: 2, estimated: true } });
    });
  });

  test('a cancellation mid-generation estimates every kind of generated delta', async () => {
    const delta = (d: Record<string, unknown>): Step => ({ data: { ...BASE, choices: [{ index: 0, delta: d, finish_reason: null }] } });
    provider.reply = () => ({
      steps: [
        delta({ reasoning_content: 'think' }),
        delta({ content: 'text' }),
        delta({ refusal: 'no' }),
        delta({ audio: { transcript: 'spoken' } }),
        delta({ tool_calls: [{ index: 0, id: 'call_1', type: 'function', function: { name: 'fn', arguments: '{"a":1}' } }] }),
        delta({ function_call: { name: 'old', arguments: '{}' } }),
        delta({ content: [{ type: 'text', text: 'parts' }] }),
        delta({ content: '!' }),
        { hang: true },
      ],
    });
    await withGateway({ countTokens }, async (gw) => {
      await postStream(gw.url, chat, { onEvent: (data) => (data.includes('"content":"!"') ? 'abort' : undefined) });
      await waitFor(() => gw.meterCalls.length === 1, 2000, 'meter');
      const produced = ['think', 'text', 'no', 'spoken', 'fn', '{"a":1}', 'old', '{}', 'parts', '!'].join('');
      expect(gw.meterCalls[0]).toMatchObject({ outcome: 'cancelled', usage: { completion_tokens: produced.length, estimated: true } });
    });
  });
});

describe('usage fails closed', () => {
  test.each<[string, unknown]>([
    ['no completion_tokens', { prompt_tokens: 5000 }],
    ['1e308 tokens', { prompt_tokens: 10, completion_tokens: 1e308, total_tokens: 1e308 }],
    ['negative counts', { prompt_tokens: -5, completion_tokens: 3 }],
    ['fractional counts', { prompt_tokens: 1.5, completion_tokens: 3 }],
    ['counts as strings', { prompt_tokens: '10', completion_tokens: '3' }],
    ['NaN-like total', { prompt_tokens: 1, completion_tokens: 1, total_tokens: -1 }],
    ['an array', [1, 2]],
  ])('a provider usage with %s is ignored: the estimate is billed and a warning logged with the raw value', async (_name, usage) => {
    provider.reply = () => ({ steps: [...finished(['Hello', ' world']), { data: { ...BASE, choices: [], usage } }, { data: '[DONE]' }] });
    await withGateway({ countTokens }, async (gw) => {
      const result = await postStream(gw.url, chat);
      expect(result.events.at(-1)).toBe('[DONE]');
      const credits = jsonEvents(result).at(-1)!;
      expect(credits.usage).toMatchObject({ completion_tokens: 'Hello world'.length, estimated: true });
      expect(gw.meterCalls).toHaveLength(1);
      expect({ ...gw.meterCalls[0]!.usage, classes: undefined }).toEqual(credits.usage);
      expect(credits.credits_used).toBe((credits.usage as { total_tokens: number }).total_tokens);
      const warning = gw.logs.find((l) => l.msg === 'infery-stream ignored an unusable provider usage; the estimate is billed');
      expect(warning).toMatchObject({ level: 'warn', usage: JSON.stringify(usage) });
    });
  });

  test('a second usage chunk never lowers what is billed', async () => {
    provider.reply = () => ({ steps: [...finished(['a']), { data: usageChunk(30, 400) }, { data: usageChunk(1, 1) }, { data: '[DONE]' }] });
    await withGateway({}, async (gw) => {
      const result = await postStream(gw.url, chat);
      expect(jsonEvents(result).at(-1)!.usage).toMatchObject({ prompt_tokens: 30, completion_tokens: 400, total_tokens: 430 });
      expect(gw.meterCalls[0]!.usage).toMatchObject({ prompt_tokens: 30, completion_tokens: 400 });
    });
  });

  test('a non-streaming answer with an unusable usage gets the estimate, marked, in its body and in meter', async () => {
    provider.reply = () => ({
      json: { id: 'chatcmpl-json1', object: 'chat.completion', model: 'm', choices: [{ index: 0, message: { role: 'assistant', content: 'Hello' }, finish_reason: 'stop' }], usage: { prompt_tokens: 5000 } },
    });
    await withGateway({ countTokens }, async (gw) => {
      const res = await request(gw.url).post('/v1/chat/completions').set('Authorization', `Bearer ${KEY}`).send({ ...chat, stream: false });
      expect(res.status).toBe(200);
      expect(res.body.usage).toMatchObject({ completion_tokens: 5, estimated: true });
      expect(res.body.credits_used).toBe(res.body.usage.total_tokens);
      expect({ ...gw.meterCalls[0]!.usage, classes: undefined }).toEqual(res.body.usage);
    });
  });

  test('an estimate never exceeds the reserved worst case (the completion cap)', async () => {
    provider.reply = () => ({ steps: [...finished(['a very long answer that the provider should not have sent']), { data: '[DONE]' }] });
    await withGateway({ countTokens }, async (gw) => {
      await postStream(gw.url, { ...chat, max_tokens: 7 });
      expect(gw.meterCalls[0]!.usage).toMatchObject({ completion_tokens: 7, estimated: true });
      expect(gw.meterCalls[0]!.worstCase.completion_tokens).toBe(7);
    });
  });
});

describe('every charge can be found', () => {
  test('each generation gets a gateway-unique X-Generation-Id: stream, non-stream and failures before the first byte', async () => {
    provider.reply = (req) => (req.json?.model === 'bad' ? { status: 500, json: { error: { message: 'boom' } } } : req.json?.stream ? { steps: textSteps(['x']) } : { json: { id: BASE.id, choices: [], usage: { prompt_tokens: 1, completion_tokens: 1 } } });
    await withGateway({}, async (gw) => {
      const ids = new Set<string>();
      for (let i = 0; i < 5; i++) {
        const s = await postStream(gw.url, chat);
        const j = await request(gw.url).post('/v1/chat/completions').set('Authorization', `Bearer ${KEY}`).send({ ...chat, stream: false });
        const e = await request(gw.url).post('/v1/chat/completions').set('Authorization', `Bearer ${KEY}`).send({ ...chat, model: 'bad' });
        expect(e.status).toBe(500);
        for (const id of [s.headers['x-generation-id'], j.headers['x-generation-id'], e.headers['x-generation-id']]) {
          expect(id).toMatch(/^gen-[0-9a-f-]{36}$/);
          ids.add(id as string);
        }
      }
      expect(ids.size).toBe(15); // the provider reused BASE.id every time
      expect(new Set(gw.meterCalls.map((c) => c.generationId))).toEqual(ids);
      const lines = gw.logs.filter((l) => l.msg === 'infery-stream request');
      expect(new Set(lines.map((l) => l.generationId))).toEqual(ids);
      expect(gw.meterCalls.filter((c) => c.outcome === 'completed').every((c) => c.providerId === BASE.id)).toBe(true);
    });
  });

  test('example app: a provider that reuses ids never lets one key shadow another; lookups find only the caller’s own', async () => {
    provider.reply = () => ({ steps: textSteps(['same', ' id']) }); // every answer has id BASE.id
    // the scripted provider's model is no real one: a `default` price, as INFERY_CONFIG can give
    const example = createApp({ upstreamURL: provider.url, apiKeys: { alice: 100, bob: 100 }, prices: { default: { prompt: 10, completion: 30 } } });
    const server = http.createServer(example.app);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const a = await postStream(url, chat, { headers: { authorization: 'Bearer alice' } });
      const b = await postStream(url, chat, { headers: { authorization: 'Bearer bob' } });
      const lookup = (key: string, id: string) => request(url).get('/v1/generation').query({ id }).set('Authorization', `Bearer ${key}`);
      const aliceByChunkId = await lookup('alice', BASE.id);
      const bobByChunkId = await lookup('bob', BASE.id);
      expect(aliceByChunkId.status).toBe(200);
      expect(aliceByChunkId.body.data).toMatchObject({ id: a.headers['x-generation-id'], provider_id: BASE.id });
      expect(bobByChunkId.body.data).toMatchObject({ id: b.headers['x-generation-id'], provider_id: BASE.id });
      expect((await lookup('alice', a.headers['x-generation-id'] as string)).status).toBe(200);
      const foreign = await lookup('alice', b.headers['x-generation-id'] as string);
      expect(foreign.status).toBe(404);
      expect(foreign.body.error.code).toBe('generation_not_found');
    } finally {
      example.gateway.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  test('example app: a generation is priced as the dearer of the model asked for and the model the provider reports', async () => {
    const dated = { ...BASE, model: 'gpt-4o-2024-08-06' };
    provider.reply = () => ({
      steps: [
        { data: { ...dated, choices: [{ index: 0, delta: { content: 'Hi' }, finish_reason: null }] } },
        { data: { ...dated, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] } },
        { data: { ...dated, choices: [], usage: { prompt_tokens: 100, completion_tokens: 100, total_tokens: 200 } } },
        { data: '[DONE]' },
      ],
    });
    const prices = { 'cheap-alias': { prompt: 1, completion: 1 } };
    const example = createApp({ upstreamURL: provider.url, apiKeys: { carol: 100 }, prices });
    const server = http.createServer(example.app);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const result = await postStream(url, { ...chat, model: 'cheap-alias', max_tokens: 200 }, { headers: { authorization: 'Bearer carol' } });
      const credits = jsonEvents(result).at(-1)!.credits_used;
      expect(credits).toBe(priceOf('gpt-4o', { prompt_tokens: 100, completion_tokens: 100 }));
      expect(credits).toBeGreaterThan(priceOf('cheap-alias', { prompt_tokens: 100, completion_tokens: 100 }, new PriceList(prices)));
    } finally {
      example.gateway.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
