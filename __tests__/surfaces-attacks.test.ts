/**
 * Regression tests for what a hostile review of the metered APIs found (each failed before its fix): a list of
 * prompts reserved as one, a Responses client hanging up once the answer was done to skip the reasoning bill, a
 * timed-out non-streaming answer run again on the next upstream and billed 0, upstream keys listed as model ids, and
 * the SDK's stream helper failing on a provider that answered JSON to a stream request.
 */
import OpenAI from 'openai';
import type { ReserveContext } from '../lib';
import { KEY, startGateway, type Account, type TestGateway } from './helpers/gateway';
import { ScriptedProvider, sleep, textSteps, type Step } from './helpers/provider';
import { waitFor } from './helpers/sse-client';
import { completionJson, responseObject, responsesSteps, responsesUsage, typed } from './helpers/surface-scripts';

let provider: ScriptedProvider;
let second: ScriptedProvider;
const gateways: TestGateway[] = [];

beforeEach(async () => {
  provider = await new ScriptedProvider().start();
  second = await new ScriptedProvider().start();
});
afterEach(async () => {
  for (const gw of gateways.splice(0)) await gw.close();
  await provider.stop();
  await second.stop();
});

async function gateway(overrides: Parameters<typeof startGateway>[1] = {}): Promise<TestGateway> {
  const gw = await startGateway(provider.url, overrides);
  gateways.push(gw);
  return gw;
}
const sdk = (gw: TestGateway): OpenAI => new OpenAI({ apiKey: KEY, baseURL: `${gw.url}/v1`, maxRetries: 0, timeout: 15_000 });

test('legacy completions: a list of prompts reserves max(n, best_of) completions for each prompt', async () => {
  const seen: Array<ReserveContext<Account>> = [];
  provider.reply = () => ({ json: completionJson('x') });
  const gw = await gateway({ reserve: (ctx) => (seen.push(ctx), true) });
  const c = sdk(gw);
  await c.completions.create({ model: 'm', prompt: Array.from({ length: 200 }, (_, i) => `hi ${i}`), max_tokens: 100 });
  await c.completions.create({ model: 'm', prompt: [[1, 2], [3], [4]], max_tokens: 10, n: 2, best_of: 3 });
  await c.completions.create({ model: 'm', prompt: [1, 2, 3], max_tokens: 10 });
  expect(seen.map((ctx) => [ctx.choices, ctx.worstCase.completion_tokens])).toEqual([
    [200, 20_000],
    [9, 90],
    [1, 10],
  ]);
});

test('Responses: a client that hangs up once the answer is done still pays the final usage, reasoning included', async () => {
  const words = ['All', ' done', '.'];
  const steps = responsesSteps(words, { final: false });
  provider.reply = () => ({
    steps: [
      ...steps,
      { wait: 300 },
      typed('response.completed', { sequence_number: 99, response: responseObject('completed', words.join(''), responsesUsage(12, 5000, 0, 4990)) }),
    ],
  });
  const gw = await gateway();
  const controller = new AbortController();
  const stream = await sdk(gw).responses.create({ model: 'm', input: 'think hard', stream: true }, { signal: controller.signal });
  try {
    for await (const event of stream) if (event.type === 'response.output_item.done') controller.abort();
  } catch {
    // the abort ends the iteration
  }
  await waitFor(() => gw.meterCalls.length === 1, 5_000, 'the generation settled');
  expect(gw.meterCalls[0]).toMatchObject({ outcome: 'completed', cancelled: false, usage: { prompt_tokens: 12, completion_tokens: 5000 } });
});

test('Responses: a client that leaves before the answer is done is cancelled at once (upstream closed), as before', async () => {
  provider.reply = () => ({ steps: [...responsesSteps(['a', 'b', 'c', 'd'], { gap: 150, final: false }), { hang: true } as Step] });
  const gw = await gateway();
  const controller = new AbortController();
  const stream = await sdk(gw).responses.create({ model: 'm', input: 'x', stream: true }, { signal: controller.signal });
  let deltas = 0;
  try {
    for await (const event of stream) if (event.type === 'response.output_text.delta' && ++deltas === 2) controller.abort();
  } catch {
    // aborted
  }
  await waitFor(() => gw.meterCalls.length === 1, 5_000, 'the generation settled');
  expect(gw.meterCalls[0]).toMatchObject({ outcome: 'cancelled' });
  await waitFor(() => provider.requests[0]?.closedEarlyAt !== undefined, 2_000, 'the provider saw the close');
});

describe('a non-streaming answer comes when the whole generation is done', () => {
  test('timed out waiting for it, it is not sent to the next upstream (the first may be running it), and the prompt is billed', async () => {
    provider.reply = () => ({ delay: 800, json: completionJson('slow') });
    second.reply = () => ({ json: completionJson('second') });
    const gw = await startGateway('http://unused.invalid/v1', {
      upstream: undefined,
      upstreams: [
        { name: 'first', baseURL: provider.url },
        { name: 'second', baseURL: second.url },
      ],
      upstreamTimeout: 300,
    });
    gateways.push(gw);
    const err = await sdk(gw)
      .completions.create({ model: 'm', prompt: 'a long generation' })
      .then(() => undefined, (e: unknown) => e as { status?: number });
    expect(err?.status).toBe(504);
    expect(second.requests).toHaveLength(0);
    await waitFor(() => gw.meterCalls.length === 1, 2_000, 'settled');
    expect(gw.meterCalls[0]).toMatchObject({ outcome: 'failed', failedUpstreams: [expect.objectContaining({ upstream: 'first', code: 'upstream_timeout' })] });
    expect(gw.meterCalls[0]!.usage.prompt_tokens).toBeGreaterThan(0);
    // a stream request's headers come at once when the provider works: a late one moves on to the next upstream
    provider.reply = () => ({ delay: 800, steps: textSteps(['late']) });
    second.reply = () => ({ steps: textSteps(['on', ' time'], { usage: [3, 2] }) });
    const stream = await sdk(gw).chat.completions.create({ model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
    expect(text).toBe('on time');
  });

  test('a provider that drops the connection without answering has not served it: the next upstream serves it', async () => {
    provider.reply = () => ({ delay: 50, destroy: true });
    second.reply = () => ({ json: completionJson('second') });
    const gw = await startGateway('http://unused.invalid/v1', {
      upstream: undefined,
      upstreams: [
        { name: 'first', baseURL: provider.url },
        { name: 'second', baseURL: second.url },
      ],
    });
    gateways.push(gw);
    const answer = await sdk(gw).completions.create({ model: 'm', prompt: 'hi' });
    expect(answer.choices[0]!.text).toBe('second');
    expect(gw.meterCalls[0]).toMatchObject({ outcome: 'completed', upstream: 'second' });
  });
});

test('GET /v1/models with several upstreams never lists an id that carries an upstream key', async () => {
  const FIRST_KEY = 'sk-first-secret-0123456789abcdef';
  provider.reply = () => ({ json: { object: 'list', data: [{ id: 'gpt-4o' }, { id: FIRST_KEY }, { id: 'first-secret-0123456789abcdef' }, { id: 'sk-other-looking-key-123456789' }] } });
  const gw = await startGateway('http://unused.invalid/v1', { upstream: undefined, upstreams: [{ name: 'first', baseURL: provider.url, apiKey: FIRST_KEY }] });
  gateways.push(gw);
  const res = await fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${KEY}` } });
  const text = await res.text();
  expect(JSON.parse(text).data.map((m: { id: string }) => m.id)).toEqual(['gpt-4o']);
  expect(text).not.toContain('0123456789abcdef');
});

test('GET /v1/models: an upstream that cannot list its models is not asked again on every request', async () => {
  provider.reply = () => ({ status: 500, json: { error: { message: 'down', type: 'server_error', code: null, param: null } } });
  const gw = await startGateway('http://unused.invalid/v1', { upstream: undefined, upstreams: [{ name: 'first', baseURL: provider.url, models: ['gpt-*', 'exact'] }] });
  gateways.push(gw);
  for (let i = 0; i < 5; i++) {
    const res = await fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${KEY}` } });
    expect((await res.json()).data.map((m: { id: string }) => m.id)).toEqual(['exact']);
  }
  expect(provider.requests).toHaveLength(1);
});

test('Responses: a provider answering JSON to a stream request still works with the SDK stream helper', async () => {
  provider.reply = () => ({ json: responseObject('completed', 'one piece', responsesUsage(4, 3)) });
  const gw = await gateway();
  const final = await sdk(gw).responses.stream({ model: 'm', input: 'hi' }).finalResponse();
  expect(final.output_text).toBe('one piece');
  expect((final as unknown as { credits_used: number }).credits_used).toBe(7);
  await sleep(10);
  expect(gw.meterCalls).toHaveLength(1);
});

test('Responses: continuing a stored response reserves and estimates what the provider reads again of it', async () => {
  const seen: Array<ReserveContext<Account>> = [];
  let n = 0;
  provider.reply = () => ({ json: { ...responseObject('completed', 'ok', responsesUsage(1000, 500)), id: `resp_chain_${++n}` } });
  const gw = await gateway({ reserve: (ctx) => (seen.push(ctx), true) });
  const c = sdk(gw);
  const first = await c.responses.create({ model: 'm', input: 'hi' });
  await c.responses.create({ model: 'm', input: 'go on', previous_response_id: first.id });
  expect(seen).toHaveLength(2);
  // the first response's input and output (1,500 tokens) are read again by the provider
  expect(seen[1]!.worstCase.prompt_tokens - seen[0]!.worstCase.prompt_tokens).toBeGreaterThanOrEqual(1500);
});

describe('second hostile review', () => {
  test('Responses: a reasoning item done before the text does not stop a cancellation — the upstream is aborted at once', async () => {
    const reasoning = { id: 'rs_1', type: 'reasoning', summary: [] };
    provider.reply = () => ({
      steps: [
        typed('response.created', { sequence_number: 0, response: responseObject('in_progress', undefined, null) }),
        typed('response.output_item.added', { sequence_number: 1, output_index: 0, item: reasoning }),
        typed('response.output_item.done', { sequence_number: 2, output_index: 0, item: reasoning }),
        ...responsesSteps(Array.from({ length: 40 }, (_, i) => ` w${i}`), { gap: 100, final: false }).slice(2),
      ],
    });
    const gw = await gateway();
    const controller = new AbortController();
    const stream = await sdk(gw).responses.create({ model: 'm', input: 'x', stream: true }, { signal: controller.signal });
    let deltas = 0;
    let abortedAt = 0;
    try {
      for await (const event of stream) {
        if (event.type === 'response.output_text.delta' && ++deltas === 3) {
          abortedAt = Date.now();
          controller.abort();
        }
      }
    } catch {
      // aborted
    }
    await waitFor(() => provider.requests[0]?.closedEarlyAt !== undefined, 3_000, 'the provider saw the close');
    expect(provider.requests[0]!.closedEarlyAt! - abortedAt).toBeLessThan(1_000);
    await waitFor(() => gw.meterCalls.length === 1, 2_000, 'settled');
    expect(gw.meterCalls[0]!.outcome).toBe('cancelled');
  });

  test('previous_response_id holds a request to the upstream that stores it only for models that upstream serves', async () => {
    provider.reply = () => ({ json: { ...responseObject('completed', 'ok', responsesUsage(3, 1)), id: 'resp_on_first' } });
    second.reply = () => ({ json: responseObject('completed', 'second', responsesUsage(3, 1)) });
    const gw = await startGateway('http://unused.invalid/v1', {
      upstream: undefined,
      upstreams: [
        { name: 'first', baseURL: provider.url, models: ['cheap'] },
        { name: 'second', baseURL: second.url, models: ['*'] },
      ],
    });
    gateways.push(gw);
    const c = sdk(gw);
    const created = await c.responses.create({ model: 'cheap', input: 'hi' });
    const sent = provider.requests.length;
    const err = await c.responses.create({ model: 'premium', input: 'go on', previous_response_id: created.id }).then(
      () => undefined,
      (e: unknown) => e as { status?: number; code?: string },
    );
    expect(err).toMatchObject({ status: 400, code: 'model_not_available' });
    expect(provider.requests.length).toBe(sent);
    expect(second.requests).toHaveLength(0);
  });

  test('Responses: item_reference inputs are refused (an item id is looked up with the gateway key, which reads every account)', async () => {
    const gw = await gateway();
    const err = await sdk(gw)
      .responses.create({ model: 'm', input: [{ type: 'item_reference', id: 'msg_of_someone_else' }] as never })
      .then(() => undefined, (e: unknown) => e as { status?: number; code?: string });
    expect(err).toMatchObject({ status: 400, code: 'item_reference_not_supported' });
    expect(provider.requests).toHaveLength(0);
  });

  test('a completion cap above 100,000,000 is a 400, never an unpriceable worst case', async () => {
    const gw = await gateway({ reserve: () => true });
    for (const body of [
      { path: '/completions', json: { model: 'm', prompt: [1], max_tokens: 9007199254740991, n: 2 } },
      { path: '/responses', json: { model: 'm', input: 'x', max_output_tokens: 100_000_001 } },
      { path: '/chat/completions', json: { model: 'm', messages: [{ role: 'user', content: 'x' }], max_tokens: 1e12 } },
    ]) {
      const res = await fetch(`${gw.url}/v1${body.path}`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body: JSON.stringify(body.json) });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('invalid_value');
    }
    expect(provider.requests).toHaveLength(0);
  });
});
