import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { calcPrice } from '@pydantic/genai-prices';
import { createApp } from '../example-app/app';
import { PriceList } from '../example-app/ledger';
import { parseUsage, type UsageDialect } from '../lib/core/usage';
import { classesOf, worstClasses } from '../lib/core/usage-classes';
import { catalogPricer } from '../lib/ledgers/billing/price-catalog';
import type { UsageClasses } from '../lib';
import { ScriptedProvider } from './helpers/provider';

/**
 * Pricing every token class: recorded usage objects of each provider dialect, split into classes and priced from
 * the catalog (`@pydantic/genai-prices`) — the charge equals the catalog's price to the thousandth of a credit
 * ($0.0001 of list price), and a cached prompt is never priced as a fresh one.
 */

// Recorded usage objects, as the providers send them.
/** OpenAI chat, a reasoning model with a cached prompt (the shape of platform.openai.com's reference). */
const OPENAI_CHAT = {
  prompt_tokens: 2006,
  completion_tokens: 300,
  total_tokens: 2306,
  prompt_tokens_details: { cached_tokens: 1920, audio_tokens: 0 },
  completion_tokens_details: { reasoning_tokens: 192, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
};
/** The Responses API, 90% of the prompt cached. */
const RESPONSES = { input_tokens: 5000, input_tokens_details: { cached_tokens: 4500 }, output_tokens: 200, output_tokens_details: { reasoning_tokens: 128 }, total_tokens: 5200 };
/** The Messages API, cache writes of both TTLs, a cache read and a web search. */
const ANTHROPIC = {
  input_tokens: 2095,
  cache_creation_input_tokens: 2051,
  cache_read_input_tokens: 310,
  cache_creation: { ephemeral_5m_input_tokens: 1024, ephemeral_1h_input_tokens: 1027 },
  output_tokens: 503,
  server_tool_use: { web_search_requests: 1 },
  service_tier: 'standard',
};

const NO_EXTRAS = worstClasses(0, 0);
const classes = (usage: unknown, dialect: UsageDialect): UsageClasses => {
  const parsed = parseUsage(usage, dialect);
  if (parsed === undefined || parsed === 'invalid') throw new Error('unusable usage');
  return classesOf(parsed, NO_EXTRAS);
};
/** The catalog's own price of a usage, in credits of $0.0001. */
const listCredits = (usage: Record<string, number>, model: string): number => calcPrice(usage, model)!.total_price / 0.0001;

describe('usage classes from each dialect', () => {
  test('OpenAI chat: cached and reasoning tokens', () => {
    expect(classes(OPENAI_CHAT, 'chat')).toEqual({ input_tokens: 2006, uncached_input_tokens: 86, cache_read_tokens: 1920, cache_write_tokens: 0, output_tokens: 300, output_reasoning_tokens: 192 });
  });

  test('Responses: input and output details renamed alike', () => {
    expect(classes(RESPONSES, 'responses')).toEqual({ input_tokens: 5000, uncached_input_tokens: 500, cache_read_tokens: 4500, cache_write_tokens: 0, output_tokens: 200, output_reasoning_tokens: 128 });
  });

  test('Messages: every input class, writes by TTL, web searches', () => {
    expect(classes(ANTHROPIC, 'anthropic')).toEqual({
      input_tokens: 2095 + 2051 + 310,
      uncached_input_tokens: 2095,
      cache_read_tokens: 310,
      cache_write_tokens: 2051,
      cache_write_5m_tokens: 1024,
      cache_write_1h_tokens: 1027,
      output_tokens: 503,
      output_reasoning_tokens: 0,
      web_searches: 1,
    });
  });

  test('audio and image tokens where present', () => {
    const c = classes({ prompt_tokens: 100, completion_tokens: 50, prompt_tokens_details: { audio_tokens: 40, image_tokens: 10 }, completion_tokens_details: { audio_tokens: 30 } }, 'chat');
    expect(c).toMatchObject({ input_audio_tokens: 40, input_image_tokens: 10, output_audio_tokens: 30, uncached_input_tokens: 100 });
  });

  test.each<[string, Record<string, unknown>, Partial<UsageClasses>]>([
    ['cached more than the prompt: the discount is dropped', { prompt_tokens: 100, completion_tokens: 1, prompt_tokens_details: { cached_tokens: 101 } }, { cache_read_tokens: 0, uncached_input_tokens: 100 }],
    ['cached not a count: the discount is dropped', { prompt_tokens: 100, completion_tokens: 1, prompt_tokens_details: { cached_tokens: -5 } }, { cache_read_tokens: 0, uncached_input_tokens: 100 }],
    ['cached a fraction: the discount is dropped', { prompt_tokens: 100, completion_tokens: 1, prompt_tokens_details: { cached_tokens: 50.5 } }, { cache_read_tokens: 0 }],
    ['reasoning above the output: at most the output', { prompt_tokens: 1, completion_tokens: 10, completion_tokens_details: { reasoning_tokens: 99 } }, { output_reasoning_tokens: 10 }],
    ['audio not a count: the whole input is audio (the dearer)', { prompt_tokens: 10, completion_tokens: 1, prompt_tokens_details: { audio_tokens: -3 } }, { input_audio_tokens: 10 }],
    ['cache writes beyond the uncached part: capped', { prompt_tokens: 100, completion_tokens: 1, prompt_tokens_details: { cached_tokens: 60, cache_write_tokens: 80 } }, { cache_read_tokens: 60, cache_write_tokens: 40, uncached_input_tokens: 0 }],
  ])('implausible classes fail closed: %s', (_name, usage, expected) => {
    expect(classes(usage, 'chat')).toMatchObject(expected);
  });

  test('a TTL split that does not add up puts the rest at 1 hour', () => {
    const c = classes({ input_tokens: 10, cache_creation_input_tokens: 100, cache_read_input_tokens: 0, cache_creation: { ephemeral_5m_input_tokens: 30, ephemeral_1h_input_tokens: 0 }, output_tokens: 1 }, 'anthropic');
    expect(c).toMatchObject({ cache_write_tokens: 100, cache_write_5m_tokens: 30, cache_write_1h_tokens: 70 });
  });

  test('an estimated usage takes the worst case\'s shape: cache writes at its TTL, its web searches, no discount', () => {
    const worst = worstClasses(500, 100, { cacheWrite: '1h', webSearches: 3 });
    expect(worst).toMatchObject({ input_tokens: 500, uncached_input_tokens: 0, cache_write_tokens: 500, cache_write_1h_tokens: 500, output_tokens: 100, web_searches: 3 });
    expect(classesOf({ prompt_tokens: 200, completion_tokens: 20, total_tokens: 220, estimated: true }, worst)).toMatchObject({ input_tokens: 200, cache_write_tokens: 200, cache_write_1h_tokens: 200, cache_read_tokens: 0, web_searches: 3 });
    expect(classesOf({ prompt_tokens: 200, completion_tokens: 20, total_tokens: 220, estimated: true }, worstClasses(500, 100))).toMatchObject({ uncached_input_tokens: 200, cache_write_tokens: 0 });
  });
});

describe('the catalog pricer', () => {
  const pricer = catalogPricer();

  test('OpenAI chat with cached and reasoning tokens: the catalog\'s price, to the thousandth', () => {
    const c = classes(OPENAI_CHAT, 'chat');
    const credits = pricer.price('gpt-4.1-mini-2025-04-14', c)!;
    // gpt-4.1-mini: $0.40 input, $0.10 cached input, $1.60 output per 1M tokens
    expect(credits).toBe(7.064);
    expect(credits).toBeCloseTo(listCredits({ input_tokens: 2006, cache_read_tokens: 1920, output_tokens: 300, output_reasoning_tokens: 192 }, 'gpt-4.1-mini'), 3);
  });

  test('Responses, 90% cached: the catalog\'s price, not the full one', () => {
    const c = classes(RESPONSES, 'responses');
    // gpt-4o: $2.50 input, $1.25 cached, $10 output per 1M: 500 × 2.5 + 4500 × 1.25 + 200 × 10 = 8,875 µ$
    expect(pricer.price('gpt-4o-2024-08-06', c)).toBe(88.75);
    const full = pricer.price('gpt-4o-2024-08-06', { ...c, cache_read_tokens: 0, uncached_input_tokens: 5000 });
    expect(full).toBe(145);
  });

  test('Messages with cache writes of both TTLs, a cache read and a web search: the catalog\'s price', () => {
    const c = classes(ANTHROPIC, 'anthropic');
    // claude-sonnet-4-5: $3 input, $3.75 5-minute write, $6 1-hour write, $0.30 read, $15 output per 1M; $10 per 1K searches
    const tokens = 2095 * 3 + 1024 * 3.75 + 1027 * 6 + 310 * 0.3 + 503 * 15;
    expect(pricer.price('claude-sonnet-4-5', c)).toBeCloseTo(tokens / 100 + 100, 3);
    expect(pricer.price('claude-sonnet-4-5-20250929', c)).toBeCloseTo(listCredits({ input_tokens: 4456, cache_write_tokens: 2051, cache_write_5m_tokens: 1024, cache_write_1h_tokens: 1027, cache_read_tokens: 310, output_tokens: 503, web_searches: 1 }, 'claude-sonnet-4-5'), 3);
  });

  test('above 200K input tokens, the catalog\'s higher tier', () => {
    const big = worstClasses(250_000, 1000);
    // claude-sonnet-4-5 over 200K: $6 input, $22.50 output per 1M
    expect(pricer.price('claude-sonnet-4-5', big)).toBeCloseTo((250_000 * 6 + 1000 * 22.5) / 100, 3);
  });

  test('a model the catalog does not know prices undefined, never 0', () => {
    expect(pricer.price('my-finetune-7', worstClasses(10, 10))).toBeUndefined();
    expect(pricer.sourceOf('my-finetune-7')).toBeUndefined();
  });

  test('markup and credit value', () => {
    const c = worstClasses(1000, 1000);
    expect(catalogPricer({ markup: 1.2 }).price('gpt-4o', c)).toBe(150);
    expect(catalogPricer({ creditValue: 0.001 }).price('gpt-4o', c)).toBe(12.5);
    expect(() => catalogPricer({ markup: 0 })).toThrow(TypeError);
    expect(() => catalogPricer({ creditValue: -1 })).toThrow(TypeError);
  });

  test('overrides: the host\'s price per class; classes it leaves out take the catalog\'s ratio for the model', () => {
    const own = catalogPricer({ overrides: { 'gpt-4o': { prompt: 30, completion: 120 }, 'claude-sonnet-4-5': { prompt: 40, completion: 200, cached_prompt: 2, cache_write: 50 }, mine: { prompt: 10, completion: 10 } } });
    // gpt-4o's catalog discount is 50% on cached input: 500 × 30 + 4500 × 15 + 200 × 120, per 1K
    expect(own.price('gpt-4o-2024-08-06', classes(RESPONSES, 'responses'))).toBe(106.5);
    // the catalog's 1-hour premium over the 5-minute one (6 / 3.75) scales the host's cache_write
    const c = classes(ANTHROPIC, 'anthropic');
    expect(own.price('claude-sonnet-4-5', c)).toBeCloseTo((2095 * 40 + 310 * 2 + 1024 * 50 + 1027 * 80 + 503 * 200) / 1000 + 100, 3);
    // a model the catalog does not know: the host's prices alone
    expect(own.price('mine-v2', classes(OPENAI_CHAT, 'chat'))).toBeCloseTo((86 * 10 + 1920 * 10 + 300 * 10) / 1000, 3);
    // an override of gpt-4o is not one of gpt-4o-mini, which the catalog knows as another model
    expect(own.sourceOf('gpt-4o-mini')).toMatchObject({ source: 'catalog', id: 'gpt-4o-mini' });
  });

  test('bad counts throw a RangeError, never price as 0', () => {
    expect(() => pricer.price('gpt-4o', { ...worstClasses(10, 10), cache_read_tokens: -1 })).toThrow(RangeError);
    expect(() => pricer.price('gpt-4o', { ...worstClasses(10, 10), output_tokens: undefined as unknown as number })).toThrow(RangeError);
  });
});

describe('the example app bills every class (a recorded usage from a scripted provider)', () => {
  const provider = new ScriptedProvider();
  let server: http.Server;
  let base = '';
  let example: ReturnType<typeof createApp>;

  beforeAll(async () => {
    await provider.start();
    example = createApp({
      upstreamURL: provider.url,
      upstreams: [
        { name: 'openai', baseURL: provider.url, models: ['gpt-*'] },
        { name: 'anthropic', baseURL: provider.url, api: 'anthropic', models: ['claude-*'] },
      ],
      apiKeys: { k: 100_000 },
    });
    server = http.createServer(example.app);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  });
  afterAll(async () => {
    example.gateway.close();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
    await provider.stop();
  });

  const post = async (path: string, body: unknown): Promise<Record<string, unknown>> => {
    const res = await fetch(`${base}${path}`, { method: 'POST', headers: { authorization: 'Bearer k', 'content-type': 'application/json' }, body: JSON.stringify(body) });
    expect(res.status).toBe(200);
    return (await res.json()) as Record<string, unknown>;
  };

  test('chat with a 96% cached prompt: the catalog\'s price, and the record keeps the classes', async () => {
    provider.reply = () => ({ json: { id: 'chatcmpl-1', object: 'chat.completion', model: 'gpt-4.1-mini-2025-04-14', choices: [{ index: 0, message: { role: 'assistant', content: 'Hi' }, finish_reason: 'stop' }], usage: OPENAI_CHAT } });
    const body = await post('/chat/completions', { model: 'gpt-4.1-mini-2025-04-14', messages: [{ role: 'user', content: 'Hi' }], max_completion_tokens: 400 });
    expect(body.credits_used).toBe(7.064);
    expect((body.usage as Record<string, unknown>).classes).toBeUndefined(); // the client's usage keeps OpenAI's shape
    const record = await example.store.findGeneration('k', 'chatcmpl-1');
    expect(record!.usage.classes).toMatchObject({ cache_read_tokens: 1920, output_reasoning_tokens: 192 });
  });

  test('Responses with 90% cached: the discounted price', async () => {
    provider.reply = () => ({ json: { id: 'resp_1', object: 'response', model: 'gpt-4o-2024-08-06', status: 'completed', output: [{ type: 'web_search_call', id: 'ws_1', status: 'completed' }, { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'Hi' }] }], usage: RESPONSES } });
    const body = await post('/responses', { model: 'gpt-4o', input: 'Hi', tools: [{ type: 'web_search' }], max_output_tokens: 300 });
    // 88.75 for the tokens, 100 for the web search the output shows ($10 per 1K searches)
    expect(body.credits_used).toBe(188.75);
    // the hold covered the built-in tool calls the provider was held to
    expect(provider.last.json!.max_tool_calls).toBe(10);
  });

  test('Messages with cache writes of both TTLs and a web search', async () => {
    provider.reply = () => ({ json: { id: 'msg_1', type: 'message', role: 'assistant', model: 'claude-sonnet-4-5-20250929', content: [{ type: 'text', text: 'Hi' }], stop_reason: 'end_turn', stop_sequence: null, usage: ANTHROPIC } });
    const body = await post('/messages', { model: 'claude-sonnet-4-5', max_tokens: 600, tools: [{ type: 'web_search_20250305', name: 'web_search' }], system: [{ type: 'text', text: 'Be brief.', cache_control: { type: 'ephemeral', ttl: '1h' } }], messages: [{ role: 'user', content: 'Hi' }] });
    const tokens = 2095 * 3 + 1024 * 3.75 + 1027 * 6 + 310 * 0.3 + 503 * 15;
    expect(body.credits_used).toBeCloseTo(tokens / 100 + 100, 3);
    // the web search tool went upstream with the bound its hold counted
    expect((provider.last.json!.tools as Array<Record<string, unknown>>)[0]!.max_uses).toBe(10);
  });

  test('a host price in INFERY_CONFIG\'s shape with cached_prompt and cache_write', () => {
    const list = new PriceList({ 'claude-sonnet-4-5': { prompt: 30, completion: 150, cached_prompt: 3, cache_write: 37.5 } });
    const c = classes(ANTHROPIC, 'anthropic');
    // the 1-hour writes at the catalog's premium over the 5-minute ones: 37.5 × 6 / 3.75 = 60
    expect(list.priceOf('claude-sonnet-4-5', { prompt_tokens: 0, completion_tokens: 0, classes: c })).toBeCloseTo((2095 * 30 + 310 * 3 + 1024 * 37.5 + 1027 * 60 + 503 * 150) / 1000 + 100, 3);
  });
});
