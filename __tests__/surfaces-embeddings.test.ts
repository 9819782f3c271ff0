/**
 * Embeddings (`POST /v1/embeddings`) with the official `openai` SDK as the client of a real gateway over real
 * sockets, in front of a scripted provider that answers like OpenAI.
 * Tests named "regression (was a BUG): …" pin bugs these suites found, fixed since.
 */
import { APIError } from 'openai';
import type { ReserveContext } from '../lib';
import { type Account } from './helpers/gateway';
import { embeddingsJson, vectors } from './helpers/surface-scripts';
import { waitFor } from './helpers/sse-client';
import { provider, gateway, client, sdk, gatewayWith, settle, rawPost } from './helpers/surfaces';

describe('Embeddings', () => {
  test.each<[string, 'float' | undefined]>([
    ['encoding_format float', 'float'],
    ['the SDK default (base64, decoded by the SDK)', undefined],
  ])('embeddings.create with %s: vectors intact, top-level credits_used, metered once as embeddings with completion_tokens 0', async (_name, format) => {
    provider.reply = (req) => ({ json: embeddingsJson(req.json) });
    const input = ['first text', 'second text', 'third'];
    const answer = await client.embeddings.create({ model: 'text-embedding-test', input, ...(format ? { encoding_format: format } : {}) });
    expect(provider.last.json?.encoding_format).toBe(format ?? 'base64');
    expect(answer.data.map((d) => d.embedding)).toEqual(vectors(3));
    expect((answer as any).credits_used).toBe(21);
    expect(answer.usage).toEqual({ prompt_tokens: 21, total_tokens: 21 });
    expect(gateway.meterCalls).toHaveLength(1);
    const meter = gateway.meterCalls[0]!;
    expect(meter).toMatchObject({ endpoint: 'embeddings', path: '/embeddings', outcome: 'completed', stream: false });
    expect(meter.usage).toMatchObject({ prompt_tokens: 21, completion_tokens: 0, total_tokens: 21 });
    expect(meter.providerUsage).toEqual({ prompt_tokens: 21, total_tokens: 21 });
    expect(meter.worstCase.completion_tokens).toBe(0);
    // base64 on the wire, unchanged
    if (!format) {
      const raw = await rawPost(gateway.url, '/embeddings', { model: 'text-embedding-test', input, encoding_format: 'base64' });
      const json = JSON.parse(raw.text) as { data: Array<{ embedding: unknown }> };
      expect(typeof json.data[0]!.embedding).toBe('string');
    }
  });

  test('provider omits usage → the estimate is billed and marked', async () => {
    provider.reply = (req) => ({ json: embeddingsJson(req.json, null) });
    const answer = await client.embeddings.create({ model: 'text-embedding-test', input: 'a sentence of a few words to embed', encoding_format: 'float' });
    expect((answer.usage as any).estimated).toBe(true);
    expect(answer.usage.prompt_tokens).toBeGreaterThan(0);
    const meter = gateway.meterCalls[0]!;
    expect(meter.usage).toMatchObject({ completion_tokens: 0, estimated: true });
    expect((answer as any).credits_used).toBe(meter.usage.total_tokens);
  });

  test('a provider reporting zero or absurd usage fails closed: the estimate is billed', async () => {
    for (const usage of [{ prompt_tokens: 0, total_tokens: 0 }, { prompt_tokens: 1e308, total_tokens: 1e308 }, { prompt_tokens: '7' }]) {
      provider.reply = (req) => ({ json: embeddingsJson(req.json, usage) });
      const answer = await client.embeddings.create({ model: 'text-embedding-test', input: 'a sentence of a few words to embed', encoding_format: 'float' });
      expect(answer.usage.prompt_tokens).toBeGreaterThan(0);
      expect(answer.usage.prompt_tokens).toBeLessThan(100);
      expect((answer.usage as any).estimated).toBe(true);
    }
    expect(gateway.meterCalls).toHaveLength(3);
  });

  test('regression (was a BUG): an embeddings provider reporting completion_tokens does not get them billed (an embedding generates nothing; worst case 0)', async () => {
    provider.reply = (req) => ({ json: embeddingsJson(req.json, { prompt_tokens: 7, completion_tokens: 100_000, total_tokens: 100_007 }) });
    const answer = await client.embeddings.create({ model: 'text-embedding-test', input: 'hello', encoding_format: 'float' });
    const meter = gateway.meterCalls[0]!;
    console.log(`embeddings with provider completion_tokens 100000: meter sees completion_tokens ${meter.usage.completion_tokens}, total ${meter.usage.total_tokens}; client charged ${(answer as any).credits_used}`);
    expect(meter.usage.completion_tokens).toBe(0);
    expect(meter.usage.total_tokens).toBe(7);
  });

  test('regression (was a BUG): token-array inputs are billed by their length (not twice) when the provider sends no usage', async () => {
    const reserves: ReserveContext<Account>[] = [];
    const gw = await gatewayWith({ reserve: (ctx) => void reserves.push(ctx) });
    provider.reply = (req) => ({ json: embeddingsJson(req.json, null) });
    const input = [Array.from({ length: 300 }, (_, i) => i + 1), Array.from({ length: 100 }, (_, i) => i + 1)];
    const answer = await sdk(gw).embeddings.create({ model: 'text-embedding-test', input, encoding_format: 'float' });
    expect(answer.data).toHaveLength(2);
    const billed = gw.meterCalls[0]!.usage.prompt_tokens;
    console.log(`token-array embeddings input of 400 tokens: reserved ${reserves[0]!.worstCase.prompt_tokens}, billed ${billed}`);
    expect(billed).toBeGreaterThanOrEqual(400);
    expect(billed).toBeLessThan(400 * 1.25);
  });

  test.each<[string, unknown]>([
    ['an empty string', ''],
    ['an empty array', []],
    ['mixed strings and numbers', ['a', 1]],
    ['an object', { text: 'a' }],
    ['2049 inputs', Array.from({ length: 2049 }, () => 'x')],
  ])('input that is %s → 400, nothing sent, nothing metered', async (_name, input) => {
    const res = await rawPost(gateway.url, '/embeddings', { model: 'text-embedding-test', input });
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text).error.param).toBe('input');
    expect(provider.requests).toHaveLength(0);
    await settle();
    expect(gateway.meterCalls).toHaveLength(0);
  });

  test('stream: true → 400, and an unknown encoding_format → 400', async () => {
    const streamed = await rawPost(gateway.url, '/embeddings', { model: 'text-embedding-test', input: 'hi', stream: true });
    expect(streamed.status).toBe(400);
    expect(JSON.parse(streamed.text).error.param).toBe('stream');
    const format = await rawPost(gateway.url, '/embeddings', { model: 'text-embedding-test', input: 'hi', encoding_format: 'int8' });
    expect(format.status).toBe(400);
    expect(provider.requests).toHaveLength(0);
    const bad = await client.embeddings.create({ model: 'text-embedding-test', input: '' }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(bad).toBeInstanceOf(APIError);
    expect((bad as APIError).status).toBe(400);
  });

  test('a provider answer that is not JSON → 502, settled as failed at the prompt estimate', async () => {
    provider.reply = () => ({ status: 200, steps: [{ raw: '{"object":"list","data":[' }] , headers: { 'content-type': 'application/json' } });
    const res = await rawPost(gateway.url, '/embeddings', { model: 'text-embedding-test', input: 'hello world' });
    expect(res.status).toBe(502);
    // billed at the estimate: counted in the tokenizer thread, which may be starting
    await waitFor(() => gateway.meterCalls.length > 0, 5000);
    await settle();
    expect(gateway.meterCalls).toHaveLength(1);
    expect(gateway.meterCalls[0]).toMatchObject({ endpoint: 'embeddings', outcome: 'failed' });
  });
});
