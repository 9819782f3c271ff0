/**
 * Legacy Completions (`POST /v1/completions`) with the official `openai` SDK as the client of a real gateway
 * over real sockets, in front of a scripted provider that answers like OpenAI.
 * Tests named "regression (was a BUG): …" pin bugs these suites found, fixed since.
 */
import type { ReserveContext } from '../lib';
import { type Account } from './helpers/gateway';
import { parseSse, waitFor } from './helpers/sse-client';
import { completionJson, completionSteps } from './helpers/surface-scripts';
import { provider, gateway, client, sdk, gatewayWith, settle, collect, rawPost } from './helpers/surfaces';

describe('Completions (legacy)', () => {
  test('completions.create({stream:true}): the chunks, then the gateway usage chunk with credits_used second-to-last, then [DONE]; metered once as completions; 16 max_tokens sent when absent', async () => {
    const words = ['Once', ' upon', ' a', ' time'];
    provider.reply = () => ({ steps: completionSteps(words, { usage: [6, 4] }) });
    const stream = await client.completions.create({ model: 'test-instruct', prompt: 'Tell a story', stream: true });
    const { events, error } = await collect(stream);
    expect(error).toBeUndefined();
    expect(events.map((c) => c.choices[0]?.text ?? '').join('')).toBe(words.join(''));
    const last = events.at(-1) as any;
    expect(last.choices).toEqual([]);
    expect(last.credits_used).toBe(10);
    expect(last.usage).toMatchObject({ prompt_tokens: 6, completion_tokens: 4, total_tokens: 10 });
    expect(last.id).toBe('cmpl-test123');
    expect(last.object).toBe('text_completion');
    expect(provider.last.path).toBe('/v1/completions');
    expect(provider.last.json).toMatchObject({ max_tokens: 16, stream: true, stream_options: { include_usage: true } });
    expect(gateway.meterCalls).toHaveLength(1);
    expect(gateway.meterCalls[0]).toMatchObject({ endpoint: 'completions', path: '/completions', outcome: 'completed', usage: { prompt_tokens: 6, completion_tokens: 4 } });
    expect(gateway.meterCalls[0]!.worstCase.completion_tokens).toBe(16);

    // the same on the wire
    const raw = await rawPost(gateway.url, '/completions', { model: 'test-instruct', prompt: 'Tell a story', stream: true });
    const { events: data } = parseSse(raw.text);
    expect(data.at(-1)).toBe('[DONE]');
    const usageChunk = JSON.parse(data.at(-2)!) as Record<string, unknown>;
    expect(usageChunk).toMatchObject({ choices: [], credits_used: 10, usage: { prompt_tokens: 6, completion_tokens: 4, total_tokens: 10 } });
    expect(data.filter((d) => d.includes('credits_used'))).toHaveLength(1);
    expect(data.filter((d) => d === '[DONE]')).toHaveLength(1);
    // the provider's own chunks are relayed unchanged
    expect(data.slice(0, 4).map((d) => (JSON.parse(d) as any).choices[0].text)).toEqual(words);
    await settle();
    expect(gateway.meterCalls).toHaveLength(2);
  });

  test('non-stream completions.create(): top-level credits_used and the billed usage', async () => {
    provider.reply = () => ({ json: completionJson('Hello there') });
    const answer = await client.completions.create({ model: 'test-instruct', prompt: 'Say hi', max_tokens: 30 });
    expect(answer.choices[0]!.text).toBe('Hello there');
    expect((answer as any).credits_used).toBe(9);
    expect(provider.last.json?.max_tokens).toBe(30);
    expect(gateway.meterCalls[0]).toMatchObject({ endpoint: 'completions', stream: false, outcome: 'completed' });
  });

  test('best_of and n: the worst case reserved is max(n, best_of) completions of max_tokens each', async () => {
    const reserves: ReserveContext<Account>[] = [];
    const gw = await gatewayWith({ reserve: (ctx) => void reserves.push(ctx) });
    provider.reply = () => ({ json: completionJson('x', { prompt_tokens: 5, completion_tokens: 20, total_tokens: 25 }) });
    await sdk(gw).completions.create({ model: 'test-instruct', prompt: 'Say hi', n: 2, best_of: 5, max_tokens: 10 });
    expect(reserves[0]!.choices).toBe(5);
    expect(reserves[0]!.maxCompletionTokens).toBe(10);
    expect(reserves[0]!.worstCase.completion_tokens).toBe(50);
    expect(reserves[0]!.endpoint).toBe('completions');
    await sdk(gw).completions.create({ model: 'test-instruct', prompt: 'Say hi', n: 3 });
    expect(reserves[1]!.choices).toBe(3);
    expect(reserves[1]!.worstCase.completion_tokens).toBe(48);
    expect(provider.last.json?.max_tokens).toBe(16);
  });

  test.each<[string, Record<string, unknown>, string]>([
    ['n: 1000', { n: 1000 }, 'n'],
    ['n: 0', { n: 0 }, 'n'],
    ['best_of: 1000', { best_of: 1000 }, 'best_of'],
    ['max_tokens: 0', { max_tokens: 0 }, 'max_tokens'],
    ['max_tokens: -1', { max_tokens: -1 }, 'max_tokens'],
    ['max_tokens: "16"', { max_tokens: '16' }, 'max_tokens'],
  ])('%s → 400 before anything is held or sent', async (_name, extra, param) => {
    const reserves: unknown[] = [];
    const gw = await gatewayWith({ reserve: (ctx) => void reserves.push(ctx) });
    const res = await rawPost(gw.url, '/completions', { model: 'test-instruct', prompt: 'hi', ...extra });
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text).error.param).toBe(param);
    expect(reserves).toHaveLength(0);
    expect(provider.requests).toHaveLength(0);
  });

  test.each<[string, unknown]>([
    ['missing', undefined],
    ['an empty array', []],
    ['an object', { text: 'hi' }],
    ['mixed strings and numbers', ['a', 1]],
  ])('a prompt that is %s → 400', async (_name, prompt) => {
    const res = await rawPost(gateway.url, '/completions', { model: 'test-instruct', prompt });
    expect(res.status).toBe(400);
    expect(provider.requests).toHaveLength(0);
  });

  test('regression (was a BUG): a token-array prompt is billed by its length (not twice): the reserved and estimated prompt tokens are about the number of tokens sent', async () => {
    const reserves: ReserveContext<Account>[] = [];
    const gw = await gatewayWith({ reserve: (ctx) => void reserves.push(ctx) });
    const tokens = Array.from({ length: 400 }, (_, i) => 1000 + i);
    // the provider sends no usage, so the estimate is what is billed
    provider.reply = () => ({ json: completionJson('ok', null) });
    await rawPost(gw.url, '/completions', { model: 'test-instruct', prompt: [tokens], max_tokens: 5 });
    const billed = gw.meterCalls[0]!.usage;
    console.log(`token-array prompt of 400 tokens: reserved ${reserves[0]!.worstCase.prompt_tokens}, billed ${billed.prompt_tokens} prompt tokens`);
    expect(billed.estimated).toBe(true);
    expect(billed.prompt_tokens).toBeGreaterThanOrEqual(400);
    expect(billed.prompt_tokens).toBeLessThan(400 * 1.25);
    expect(reserves[0]!.worstCase.prompt_tokens).toBeLessThan(400 * 1.5);
  });

  test('a completions stream aborted mid-way: the provider sees it closed, metered once as cancelled', async () => {
    provider.reply = () => ({ steps: completionSteps(Array.from({ length: 100 }, () => ' word'), { gap: 30, usage: false }) });
    const controller = new AbortController();
    const stream = await client.completions.create({ model: 'test-instruct', prompt: 'go', stream: true, max_tokens: 200 }, { signal: controller.signal });
    let seen = 0;
    let abortedAt = 0;
    await collect(
      (async function* () {
        for await (const chunk of stream) {
          seen++;
          if (seen === 4) {
            abortedAt = Date.now();
            controller.abort();
          }
          if (seen > 60) return;
          yield chunk;
        }
      })(),
    );
    await waitFor(() => provider.last.closedEarlyAt !== undefined, 3000, 'the provider to see its request closed');
    console.log(`completions abort: provider closed ${provider.last.closedEarlyAt! - abortedAt} ms after abort()`);
    expect(provider.last.closedEarlyAt! - abortedAt).toBeLessThan(1000);
    await waitFor(() => gateway.meterCalls.length > 0, 3000, 'meter');
    await settle();
    expect(gateway.meterCalls).toHaveLength(1);
    expect(gateway.meterCalls[0]).toMatchObject({ endpoint: 'completions', outcome: 'cancelled' });
    expect(gateway.meterCalls[0]!.usage.completion_tokens).toBeGreaterThan(0);
  });
});
