/**
 * The official `openai` SDK (v6) as a real client of the real gateway, in front of the scripted provider.
 * Everything runs on 127.0.0.1; each test gets its own provider and gateway, stopped in afterEach.
 */
import OpenAI, { APIError, APIUserAbortError } from 'openai';
import type { ChatCompletionChunk, ChatCompletionTool } from 'openai/resources/chat/completions';
import { expectNothingBilled, KEY, startGateway, type TestGateway } from './helpers/gateway';
import { BASE, ScriptedProvider, sleep, textSteps, type Step } from './helpers/provider';
import { waitFor } from './helpers/sse-client';

const MESSAGES = [{ role: 'user' as const, content: 'Say hello' }];

let provider: ScriptedProvider;
let gateway: TestGateway;
let client: OpenAI;

beforeEach(async () => {
  provider = await new ScriptedProvider().start();
  gateway = await startGateway(provider.url);
  client = new OpenAI({ apiKey: KEY, baseURL: gateway.url + '/v1', maxRetries: 0 });
});

afterEach(async () => {
  await gateway.close();
  await provider.stop();
});

/** Lets a late, unexpected meter call show up before a test checks there was exactly one (or none). */
const settle = (): Promise<void> => sleep(50);

test('plain stream iteration: the text is what the provider sent, and the credits_used chunk (provider id) follows the provider usage chunk', async () => {
  const words = ['Hello', ' world', ',', ' how', ' are', ' you', '?'];
  provider.reply = () => ({ steps: textSteps(words, { usage: [12, 7] }) });

  const stream = await client.chat.completions.create({ model: 'test-model', messages: MESSAGES, stream: true });
  const chunks: ChatCompletionChunk[] = [];
  for await (const chunk of stream) chunks.push(chunk);

  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  expect(text).toBe(words.join(''));

  const usageIndex = chunks.findIndex((c) => c.usage && (c as any).credits_used === undefined);
  const creditsIndex = chunks.findIndex((c) => (c as any).credits_used !== undefined);
  expect(usageIndex).toBeGreaterThanOrEqual(0);
  expect(creditsIndex).toBeGreaterThan(usageIndex);
  expect(creditsIndex).toBe(chunks.length - 1);
  expect(chunks[usageIndex]!.usage).toEqual({ prompt_tokens: 12, completion_tokens: 7, total_tokens: 19 });

  expect(gateway.meterCalls).toHaveLength(1);
  const meterReturned = gateway.meterCalls[0]!.usage.total_tokens; // startGateway's meter returns total_tokens
  expect(meterReturned).toBe(19);
  const creditsChunk = chunks[creditsIndex] as any;
  expect(creditsChunk.credits_used).toBe(meterReturned);
  expect(creditsChunk.id).toBe(BASE.id);
  expect(creditsChunk.object).toBe(BASE.object);
  expect(creditsChunk.created).toBe(BASE.created);
  expect(creditsChunk.model).toBe(BASE.model);
  expect(creditsChunk.choices).toEqual([]);
  expect(gateway.meterCalls[0]!.providerId).toBe(BASE.id);
  // the gateway always asks the provider for usage on a stream
  expect(provider.last.json?.stream_options).toEqual({ include_usage: true });
});

describe('tool calls', () => {
  const TOOLS: ChatCompletionTool[] = [
    {
      type: 'function',
      function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string' } } } },
    },
    {
      type: 'function',
      function: { name: 'get_time', parameters: { type: 'object', properties: { tz: { type: 'string' } } } },
    },
  ];
  /** Two parallel tool calls, interleaved, each one's arguments split across fragments. */
  const TOOL_DELTAS: Array<Array<Record<string, unknown>>> = [
    [{ index: 0, id: 'call_A', type: 'function', function: { name: 'get_weather', arguments: '' } }],
    [{ index: 1, id: 'call_B', type: 'function', function: { name: 'get_time', arguments: '' } }],
    [{ index: 0, function: { arguments: '{"city":' } }],
    [{ index: 1, function: { arguments: '{"tz":"Eu' } }],
    [{ index: 0, function: { arguments: '"Paris, ' } }],
    [{ index: 1, function: { arguments: 'rope/Paris"}' } }],
    [{ index: 0, function: { arguments: 'FR","unit":"c"}' } }],
  ];
  const toolSteps = (): Step[] => [
    { data: { ...BASE, choices: [{ index: 0, delta: { role: 'assistant', content: null }, finish_reason: null }] } },
    ...TOOL_DELTAS.map((tool_calls): Step => ({ data: { ...BASE, choices: [{ index: 0, delta: { tool_calls }, finish_reason: null }] } })),
    { data: { ...BASE, choices: [{ index: 0, delta: {}, finish_reason: 'tool_calls' }] } },
    { data: { ...BASE, choices: [], usage: { prompt_tokens: 40, completion_tokens: 25, total_tokens: 65 } } },
    { data: '[DONE]' },
  ];

  test('the .stream() helper assembles two interleaved parallel tool calls, and create() sees every fragment unchanged and in order', async () => {
    provider.reply = () => ({ steps: toolSteps() });

    const helper = client.chat.completions.stream({ model: 'test-model', messages: MESSAGES, tools: TOOLS });
    const final = await helper.finalChatCompletion();
    const choice = final.choices[0]!;
    expect(choice.finish_reason).toBe('tool_calls');
    const calls = (choice.message.tool_calls ?? []).map((c) => {
      if (c.type !== 'function') throw new Error(`unexpected tool call type ${c.type}`);
      return { id: c.id, name: c.function.name, args: JSON.parse(c.function.arguments) as unknown };
    });
    expect(calls).toEqual([
      { id: 'call_A', name: 'get_weather', args: { city: 'Paris, FR', unit: 'c' } },
      { id: 'call_B', name: 'get_time', args: { tz: 'Europe/Paris' } },
    ]);
    expect(final.id).toBe(BASE.id);
    expect(final.usage).toMatchObject({ prompt_tokens: 40, completion_tokens: 25, total_tokens: 65 });

    // The same script through plain create(): every tool_calls fragment arrives as the provider sent it.
    const stream = await client.chat.completions.create({ model: 'test-model', messages: MESSAGES, tools: TOOLS, stream: true });
    const received: unknown[] = [];
    let credits: unknown;
    for await (const chunk of stream) {
      const toolCalls = chunk.choices[0]?.delta?.tool_calls;
      if (toolCalls !== undefined) received.push(toolCalls);
      if ((chunk as any).credits_used !== undefined) credits = (chunk as any).credits_used;
    }
    expect(received).toEqual(TOOL_DELTAS);
    expect(credits).toBe(65);

    expect(provider.requests).toHaveLength(2);
    await settle();
    expect(gateway.meterCalls).toHaveLength(2);
    for (const call of gateway.meterCalls) {
      expect(call.finishReason).toBe('tool_calls');
      expect(call.cancelled).toBe(false);
      expect(call.error).toBeUndefined();
    }
  });
});

test('AbortController cancellation: the SDK ends with APIUserAbortError, the provider connection closes within 250 ms, meter runs once as cancelled with an estimate', async () => {
  const words = Array.from({ length: 100 }, () => ' word');
  provider.reply = () => ({ steps: textSteps(words, { gap: 50, usage: false }) });

  const controller = new AbortController();
  const stream = client.chat.completions.stream({ model: 'test-model', messages: MESSAGES }, { signal: controller.signal });
  // Registers the catching promise up front, so the abort is not an unhandled rejection.
  const outcome = stream.finalChatCompletion().then(
    () => 'completed' as const,
    (err: unknown) => err,
  );

  let contentChunks = 0;
  let abortedAt = 0;
  let iterationError: unknown;
  try {
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content) contentChunks++;
      if (contentChunks === 5 && abortedAt === 0) {
        abortedAt = Date.now();
        controller.abort();
      }
      if (contentChunks > 50) break; // bound: the abort did not stop the stream
    }
  } catch (err) {
    iterationError = err;
  }
  expect(abortedAt).toBeGreaterThan(0);
  const result = await outcome;
  expect(result).toBeInstanceOf(APIUserAbortError);
  expect(iterationError).toBeInstanceOf(APIUserAbortError); // the helper's iterator rejects too
  expect(stream.aborted).toBe(true);
  expect(contentChunks).toBeLessThan(10);

  await waitFor(() => provider.last.closedEarlyAt !== undefined, 2000, 'the provider to see its connection closed');
  expect(provider.last.closedEarlyAt! - abortedAt).toBeLessThanOrEqual(250);
  expect(provider.last.stepsWritten).toBeLessThan(100);

  await waitFor(() => gateway.meterCalls.length > 0, 2000, 'meter to be called');
  await settle();
  expect(gateway.meterCalls).toHaveLength(1);
  const event = gateway.meterCalls[0]!;
  expect(event.cancelled).toBe(true);
  expect(event.error).toBeUndefined();
  expect(event.usage.estimated).toBe(true);
  expect(event.usage.completion_tokens).toBeGreaterThan(0);
  expect(event.usage.completion_tokens).toBeLessThan(100);
});

test('a mid-stream upstream disconnect makes the SDK iterator throw an APIError about the upstream connection; meter runs once with the error', async () => {
  provider.reply = () => ({
    steps: [...textSteps(['One', ' two', ' three'], { usage: false, done: false }).slice(0, 4), { wait: 20 }, { destroy: true }],
  });

  const stream = await client.chat.completions.create({ model: 'test-model', messages: MESSAGES, stream: true });
  let text = '';
  let caught: unknown;
  try {
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  } catch (err) {
    caught = err;
  }
  expect(text).toBe('One two three');
  expect(caught).toBeInstanceOf(APIError);
  const err = caught as APIError;
  expect(err.message).toMatch(/connection to the upstream provider/i);
  expect(err.status).toBeUndefined();
  expect(err.code).toBe('upstream_connection_lost');

  await waitFor(() => gateway.meterCalls.length > 0, 2000, 'meter to be called');
  await settle();
  expect(gateway.meterCalls).toHaveLength(1);
  const event = gateway.meterCalls[0]!;
  expect(event.error).toBeDefined();
  expect(event.error?.code).toBe('upstream_connection_lost');
  expect(event.cancelled).toBe(false);
  expect(event.usage.completion_tokens).toBeGreaterThan(0);
});

test('an upstream 429 before the first byte makes create() reject with RateLimitError carrying the provider message; nothing is metered', async () => {
  provider.reply = () => ({
    status: 429,
    json: { error: { message: 'Rate limit reached', type: 'requests', code: 'rate_limit_exceeded' } },
  });

  let caught: unknown;
  try {
    await client.chat.completions.create({ model: 'test-model', messages: MESSAGES, stream: true });
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(OpenAI.RateLimitError);
  const err = caught as InstanceType<typeof OpenAI.RateLimitError>;
  expect(err.status).toBe(429);
  expect(err.message).toContain('Rate limit reached');
  expect(err.code).toBe('rate_limit_exceeded');
  expect(provider.requests).toHaveLength(1);
  await settle();
  expectNothingBilled(gateway.meterCalls, 1);
});

test('a non-streaming create() returns the completion with a top-level credits_used; meter runs once', async () => {
  const completion = {
    id: 'chatcmpl-json1',
    object: 'chat.completion',
    created: 1_700_000_000,
    model: 'test-model',
    choices: [{ index: 0, message: { role: 'assistant', content: 'Hi there', refusal: null }, finish_reason: 'stop', logprobs: null }],
    usage: { prompt_tokens: 9, completion_tokens: 3, total_tokens: 12 },
  };
  provider.reply = () => ({ json: completion });

  const answer = await client.chat.completions.create({ model: 'test-model', messages: MESSAGES, stream: false });
  expect(answer.id).toBe('chatcmpl-json1');
  expect(answer.choices[0]?.message.content).toBe('Hi there');
  expect(answer.usage).toEqual(completion.usage);
  expect((answer as any).credits_used).toBe(12);

  await settle();
  expect(gateway.meterCalls).toHaveLength(1);
  expect(gateway.meterCalls[0]!.stream).toBe(false);
  expect(gateway.meterCalls[0]!.providerId).toBe('chatcmpl-json1');
  expect(gateway.meterCalls[0]!.usage.total_tokens).toBe(12);
});

test('a bad key gets AuthenticationError 401 and no request reaches the provider', async () => {
  const wrong = new OpenAI({ apiKey: 'wrong', baseURL: gateway.url + '/v1', maxRetries: 0 });
  let caught: unknown;
  try {
    await wrong.chat.completions.create({ model: 'test-model', messages: MESSAGES, stream: true });
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(OpenAI.AuthenticationError);
  expect((caught as APIError).status).toBe(401);
  expect((caught as APIError).code).toBe('invalid_api_key');
  expect(provider.requests).toHaveLength(0);
  expect(gateway.meterCalls).toHaveLength(0);
});
