/**
 * Translation between the dialects: a Chat Completions request (the openai SDK) for a model only an Anthropic
 * Messages upstream serves, streaming and not, text and tools, metered from the Messages API's usage; the request
 * as the upstream receives it; what cannot be translated is a 400 naming the field.
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { dialectUpstreams, startExampleServer, type ExampleServer } from './helpers/example-server';
import { startGateway, UPSTREAM_KEY } from './helpers/gateway';
import { ScriptedProvider } from './helpers/provider';
import { postStream, waitFor } from './helpers/sse-client';

const ALICE = 'alice-translation-key';

describe('the openai SDK with a Claude model, through an Anthropic upstream', () => {
  let app: ExampleServer;
  let example: ExampleServer['example'];
  let base: string;
  let alice: OpenAI;

  beforeAll(async () => {
    app = await startExampleServer({ [ALICE]: 1000 }, (url) => dialectUpstreams(url));
    ({ example, origin: base } = app);
    alice = new OpenAI({ apiKey: ALICE, baseURL: `${base}/v1`, maxRetries: 0, timeout: 15_000 });
  });
  afterAll(() => app.close());

  const used = (): number => example.ledger.balanceOf(ALICE)!.used;
  const settled = (): Promise<void> => waitFor(() => example.ledger.balanceOf(ALICE)?.held === 0, 3000, 'the holds to be released');
  const record = async (id: string): Promise<Record<string, unknown>> =>
    ((await (await fetch(`${base}/v1/generation?id=${encodeURIComponent(id)}`, { headers: { authorization: `Bearer ${ALICE}` } })).json()) as { data: Record<string, unknown> }).data;

  test('streams chunk by chunk in chat\'s shape: role, content, finish, the provider\'s usage, then the gateway\'s with credits_used and [DONE]', async () => {
    const before = used();
    const { data: stream, response } = await alice.chat.completions.create({ model: 'claude-mock-1', messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello there' }], stream: true }).withResponse();
    const chunks: any[] = [];
    const at: number[] = [];
    const t0 = Date.now();
    for await (const chunk of stream) {
      chunks.push(chunk);
      at.push(Date.now() - t0);
    }
    const content = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    expect(content).toMatch(/^You said: "Hello there"\./);
    expect(chunks[0].choices[0].delta.role).toBe('assistant');
    expect(chunks[0].object).toBe('chat.completion.chunk');
    // flushed as the provider wrote them, not at the end
    expect(at.at(-3)! - at[1]!).toBeGreaterThan(300);
    const finish = chunks.findIndex((c) => c.choices[0]?.finish_reason);
    expect(chunks[finish].choices[0].finish_reason).toBe('stop');
    const gatewayChunk = chunks.at(-1);
    expect(gatewayChunk.choices).toEqual([]);
    expect(typeof gatewayChunk.credits_used).toBe('number');
    expect(chunks.at(-2).usage).toMatchObject({ prompt_tokens: expect.any(Number), completion_tokens: expect.any(Number), prompt_tokens_details: { cached_tokens: 0 } });
    expect(finish).toBe(chunks.length - 3);
    await settled();
    expect(used() - before).toBeCloseTo(gatewayChunk.credits_used, 6);
    const rec = await record(response.headers.get('x-generation-id')!);
    expect(rec).toMatchObject({ endpoint: 'chat.completions', upstream: 'mock-messages', outcome: 'completed', credits_used: gatewayChunk.credits_used });
  });

  test('not streamed: a chat.completion with the billed usage and credits_used', async () => {
    const completion = (await alice.chat.completions.create({ model: 'claude-mock-1', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 5 })) as OpenAI.ChatCompletion & { credits_used?: number };
    expect(completion.object).toBe('chat.completion');
    expect(completion.choices[0]!.message.content).toMatch(/^You said/);
    expect(completion.choices[0]!.finish_reason).toBe('length');
    expect(completion.usage).toMatchObject({ completion_tokens: 5 });
    expect(typeof completion.credits_used).toBe('number');
    await settled();
  });

  test('tools: the streamed tool_use input arrives as tool-call argument fragments the SDK assembles exactly', async () => {
    const stream = alice.chat.completions.stream({
      model: 'claude-mock-1',
      messages: [{ role: 'user', content: 'Weather in Paris?' }],
      tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' } } } } }],
    });
    const done = await stream.finalChatCompletion();
    const call = done.choices[0]!.message.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
    expect(call.function.name).toBe('get_weather');
    expect(JSON.parse(call.function.arguments)).toEqual({ city: 'city value', days: 42 });
    expect(call.id).toMatch(/^toolu_mock/);
    expect(done.choices[0]!.finish_reason).toBe('tool_calls');
    await settled();
  });

  test('what the Messages API cannot take is a 400 naming the field, before anything is held', async () => {
    const before = used();
    for (const [extra, param] of [
      [{ logprobs: true }, 'logprobs'],
      [{ n: 2 }, 'n'],
      [{ response_format: { type: 'json_object' } }, 'response_format'],
      [{ temperature: 1.5 }, 'temperature'],
    ] as const) {
      const err = await alice.chat.completions.create({ model: 'claude-mock-1', messages: [{ role: 'user', content: 'Hi' }], ...extra } as never).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.APIError);
      expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(400);
      expect((err as InstanceType<typeof OpenAI.APIError>).param).toBe(param);
      expect((err as Error).message).toContain(`\`${param}\``);
    }
    expect(used()).toBe(before);
  });
});

describe('the Anthropic SDK with an OpenAI model, through an OpenAI upstream (Claude Code on an OpenAI-compatible model)', () => {
  let app: ExampleServer;
  let example: ExampleServer['example'];
  let claude: Anthropic;

  beforeAll(async () => {
    app = await startExampleServer({ [ALICE]: 1000 }, (url) => dialectUpstreams(url));
    example = app.example;
    claude = new Anthropic({ apiKey: ALICE, baseURL: app.origin, maxRetries: 0, timeout: 15_000 });
  });
  afterAll(() => app.close());
  const used = (): number => example.ledger.balanceOf(ALICE)!.used;
  const settled = (): Promise<void> => waitFor(() => example.ledger.balanceOf(ALICE)?.held === 0, 3000, 'the holds to be released');

  test('streams the Messages API\'s events delta by delta, credits_used on the final message_delta, charged once', async () => {
    const before = used();
    const stream = await claude.messages.create({ model: 'mock-1', max_tokens: 200, system: 'Be brief.', messages: [{ role: 'user', content: 'Hello there' }], stream: true });
    const types: string[] = [];
    let text = '';
    let final: any;
    const at: number[] = [];
    const t0 = Date.now();
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') {
        text += event.delta.text;
        at.push(Date.now() - t0);
      }
      if (event.type === 'message_delta') final = event;
    }
    expect(types[0]).toBe('message_start');
    expect(types[1]).toBe('content_block_start');
    expect(types.slice(-3)).toEqual(['content_block_stop', 'message_delta', 'message_stop']);
    expect(text).toMatch(/^You said: "Hello there"\./);
    expect(at.at(-1)! - at[0]!).toBeGreaterThan(300);
    expect(final.delta.stop_reason).toBe('end_turn');
    expect(final.usage.input_tokens).toBeGreaterThan(0);
    expect(final.usage.output_tokens).toBeGreaterThan(10);
    await settled();
    expect(used() - before).toBeCloseTo(final.credits_used, 6);
  });

  test('messages.stream() with tools: the tool call arrives as a tool_use block whose input the SDK assembles exactly', async () => {
    const message = await claude.messages
      .stream({ model: 'mock-1', max_tokens: 200, messages: [{ role: 'user', content: 'Weather?' }], tools: [{ name: 'get_weather', input_schema: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' } } } }] })
      .finalMessage();
    const block = message.content.find((b) => b.type === 'tool_use') as Anthropic.ToolUseBlock;
    expect(block).toMatchObject({ name: 'get_weather', input: { city: 'city value', days: 42 } });
    expect(message.stop_reason).toBe('tool_use');
    await settled();
  });

  test('not streamed: a Messages API message with credits_used; what chat cannot take is a 400 naming the field', async () => {
    const message = (await claude.messages.create({ model: 'mock-1', max_tokens: 5, messages: [{ role: 'user', content: 'Hi' }] })) as Anthropic.Message & { credits_used?: number };
    expect(message).toMatchObject({ type: 'message', role: 'assistant', usage: { output_tokens: 5 } });
    expect((message.content[0] as Anthropic.TextBlock).text).toMatch(/^You said/);
    expect(typeof message.credits_used).toBe('number');
    const before = used();
    for (const [extra, param] of [
      [{ top_k: 5 }, 'top_k'],
      [{ thinking: { type: 'enabled', budget_tokens: 1024 } }, 'thinking'],
    ] as const) {
      const err = await claude.messages.create({ model: 'mock-1', max_tokens: 5, messages: [{ role: 'user', content: 'Hi' }], ...extra } as never).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(Anthropic.BadRequestError);
      expect((err as Error).message).toContain(`\`${param}\``);
    }
    expect(used()).toBe(before);
  });
});

describe('the request an OpenAI upstream receives for a Messages request', () => {
  test('system, blocks, tool_use and tool_result, tools and tool_choice in chat\'s shape; usage asked for', async () => {
    const provider = await new ScriptedProvider().start();
    const gw = await startGateway(provider.url, { upstream: undefined, upstreams: [{ name: 'openai', baseURL: provider.url, apiKey: UPSTREAM_KEY }] });
    try {
      const res = await fetch(`${gw.url}/v1/messages`, {
        method: 'POST',
        headers: { 'x-api-key': 'client-key-1', 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'gpt-x',
          max_tokens: 300,
          stream: true,
          system: [{ type: 'text', text: 'Be brief.' }],
          stop_sequences: ['END'],
          metadata: { user_id: 'u-7' },
          tool_choice: { type: 'tool', name: 'get_weather', disable_parallel_tool_use: true },
          tools: [{ name: 'get_weather', description: 'Weather', input_schema: { type: 'object', properties: { city: { type: 'string' } } } }],
          messages: [
            { role: 'user', content: 'Weather?' },
            { role: 'assistant', content: [{ type: 'thinking', thinking: 'hmm', signature: 's' }, { type: 'text', text: 'Checking.' }, { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Paris' } }] },
            { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: [{ type: 'text', text: 'clear' }] }, { type: 'text', text: 'And tomorrow?' }] },
          ],
        }),
      });
      expect(res.status).toBe(200);
      await res.text();
      expect(provider.last.path).toBe('/v1/chat/completions');
      expect(provider.last.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
      expect(JSON.parse(provider.last.body)).toEqual({
        model: 'gpt-x',
        max_completion_tokens: 300,
        stream: true,
        stream_options: { include_usage: true },
        stop: ['END'],
        user: 'u-7',
        parallel_tool_calls: false,
        tool_choice: { type: 'function', function: { name: 'get_weather' } },
        tools: [{ type: 'function', function: { name: 'get_weather', description: 'Weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }],
        messages: [
          { role: 'system', content: 'Be brief.' },
          { role: 'user', content: 'Weather?' },
          { role: 'assistant', content: 'Checking.', tool_calls: [{ id: 'toolu_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
          { role: 'tool', tool_call_id: 'toolu_1', content: 'clear' },
          { role: 'user', content: 'And tomorrow?' },
        ],
      });
      await waitFor(() => gw.meterCalls.length === 1);
      expect(gw.meterCalls[0]).toMatchObject({ endpoint: 'messages', upstream: 'openai', outcome: 'completed' });
    } finally {
      await gw.close();
      await provider.stop();
    }
  });
});

describe('the request an Anthropic upstream receives for a chat request', () => {
  test('system, turns, tool calls and results, tools, tool_choice, stop and the cap in the Messages API\'s shape; a mid-stream error is chat\'s bare error event', async () => {
    const provider = await new ScriptedProvider().start();
    provider.reply = () => ({
      steps: [
        { data: { type: 'message_start', message: { id: 'msg_t', type: 'message', role: 'assistant', model: 'claude-x', content: [], usage: { input_tokens: 20, cache_read_input_tokens: 5, output_tokens: 1 } } } },
        { data: { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } } },
        { data: { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Sunny' } } },
        { data: { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } } },
      ],
    });
    const gw = await startGateway(provider.url, { upstream: undefined, upstreams: [{ name: 'claude', baseURL: provider.url, api: 'anthropic', apiKey: UPSTREAM_KEY }] });
    try {
      const res = await postStream(gw.url, {
        model: 'claude-x',
        stream: true,
        max_tokens: 300,
        stop: 'END',
        user: 'u-42',
        tool_choice: 'required',
        tools: [{ type: 'function', function: { name: 'get_weather', description: 'Weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }],
        messages: [
          { role: 'system', content: 'Be brief.' },
          { role: 'user', content: [{ type: 'text', text: 'Weather?' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } }] },
          { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
          { role: 'tool', tool_call_id: 'call_1', content: '{"sky":"clear"}' },
        ],
      });
      expect(provider.last.path).toBe('/v1/messages');
      expect(provider.last.headers['x-api-key']).toBe(UPSTREAM_KEY);
      expect(JSON.parse(provider.last.body)).toEqual({
        model: 'claude-x',
        max_tokens: 300,
        stream: true,
        system: 'Be brief.',
        stop_sequences: ['END'],
        metadata: { user_id: 'u-42' },
        tool_choice: { type: 'any' },
        tools: [{ name: 'get_weather', description: 'Weather', input_schema: { type: 'object', properties: { city: { type: 'string' } } } }],
        messages: [
          { role: 'user', content: [{ type: 'text', text: 'Weather?' }, { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } }] },
          { role: 'assistant', content: [{ type: 'tool_use', id: 'call_1', name: 'get_weather', input: { city: 'Paris' } }] },
          { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'call_1', content: '{"sky":"clear"}' }] },
        ],
      });
      expect(res.status).toBe(200);
      const events = res.events.filter((e) => e !== '[DONE]').map((e) => JSON.parse(e));
      expect(events.map((e) => e.choices?.[0]?.delta?.content ?? '').join('')).toBe('Sunny');
      expect(events.at(-1)).toEqual({ error: { message: 'Overloaded', type: 'overloaded_error', code: 'upstream_error' } });
      await waitFor(() => gw.meterCalls.length === 1);
      expect(gw.meterCalls[0]).toMatchObject({ outcome: 'failed', endpoint: 'chat.completions', upstream: 'claude' });
      expect(gw.meterCalls[0]!.usage.prompt_tokens).toBe(25);
    } finally {
      await gw.close();
      await provider.stop();
    }
  });
});
