/**
 * The Messages API (`POST /v1/messages`) end to end through the example app (createApp) and its built-in mock
 * provider as an Anthropic-dialect upstream, the Anthropic SDK as the client; and the upstream side of the
 * dialect (the key as `x-api-key`, `anthropic-version`, `anthropic-beta`) against a scripted provider.
 */
import http from 'node:http';
import Anthropic from '@anthropic-ai/sdk';
import { dialectUpstreams, startExampleServer, type ExampleServer } from './helpers/example-server';
import { startGateway, UPSTREAM_KEY } from './helpers/gateway';
import { ScriptedProvider } from './helpers/provider';
import { waitFor } from './helpers/sse-client';

const ALICE = 'alice-messages-key';
const POOR = 'poor-messages-key';

describe('the Messages API through the example app, the Anthropic SDK as the client', () => {
  let app: ExampleServer;
  let example: ExampleServer['example'];
  let base: string;
  let alice: Anthropic;

  beforeAll(async () => {
    // the Messages upstream also serves the mock's misbehaving names (mock-slow, mock-error, mock-429)
    app = await startExampleServer({ [ALICE]: 1000, [POOR]: 0.01 }, (url) => dialectUpstreams(url, ['gpt-only-*'], ['mock-*']), { 'gpt-only-1': { prompt: 10, completion: 30 } });
    ({ example, origin: base } = app);
    alice = new Anthropic({ apiKey: ALICE, baseURL: base, maxRetries: 0, timeout: 15_000 });
  });
  afterAll(() => app.close());

  const balance = async (key = ALICE): Promise<{ used: number; held: number; balance: number }> => {
    const res = await fetch(`${base}/v1/credits`, { headers: { 'x-api-key': key } });
    expect(res.status).toBe(200);
    return ((await res.json()) as { data: { used: number; held: number; balance: number } }).data;
  };
  const record = async (id: string): Promise<Record<string, unknown>> => {
    const res = await fetch(`${base}/v1/generation?id=${encodeURIComponent(id)}`, { headers: { 'x-api-key': ALICE } });
    expect(res.status).toBe(200);
    return ((await res.json()) as { data: Record<string, unknown> }).data;
  };
  const nothingHeld = (): Promise<void> => waitFor(() => example.ledger.balanceOf(ALICE)?.held === 0, 3000, 'the holds to be released');
  const hello = { model: 'claude-mock-1', max_tokens: 256, messages: [{ role: 'user' as const, content: 'Hello there' }] };

  test('messages.create({stream:true}): typed events as the provider sends them, credits_used on the final message_delta, charged and recorded once', async () => {
    const before = await balance();
    const { data: stream, response } = await alice.messages.create({ ...hello, stream: true }).withResponse();
    const generationId = response.headers.get('x-generation-id')!;
    const types: string[] = [];
    let text = '';
    let final: any;
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') text += event.delta.text;
      if (event.type === 'message_delta') final = event;
    }
    expect(types[0]).toBe('message_start');
    expect(types.at(-1)).toBe('message_stop');
    expect(types.at(-2)).toBe('message_delta');
    // (the SDK does not yield the provider's `ping`; a raw reader gets it, see the hostile-provider tests)
    expect(types.filter((t) => t === 'content_block_delta').length).toBeGreaterThan(10);
    expect(text).toMatch(/^You said: "Hello there"\./);
    expect(final.delta.stop_reason).toBe('end_turn');
    expect(typeof final.credits_used).toBe('number');
    expect(final.credits_used).toBeGreaterThan(0);
    await nothingHeld();
    const after = await balance();
    expect(after.used - before.used).toBeCloseTo(final.credits_used, 6);
    const rec = await record(generationId);
    expect(rec).toMatchObject({ endpoint: 'messages', model: 'claude-mock-1', outcome: 'completed', credits_used: final.credits_used, upstream: 'mock-messages' });
    expect(rec.provider_id).toMatch(/^msg_mock/);
  });

  test('messages.stream().finalMessage(): the SDK assembles the message; usage counts every input token', async () => {
    const message = await alice.messages.stream(hello).finalMessage();
    expect(message.role).toBe('assistant');
    expect(message.content[0]).toMatchObject({ type: 'text' });
    expect((message.content[0] as Anthropic.TextBlock).text).toMatch(/^You said/);
    expect(message.usage.output_tokens).toBeGreaterThan(10);
    expect(message.stop_reason).toBe('end_turn');
    await nothingHeld();
  });

  test('not streamed: the message with a top-level credits_used, charged once', async () => {
    const before = await balance();
    const message = (await alice.messages.create(hello)) as Anthropic.Message & { credits_used?: number };
    expect(message.type).toBe('message');
    expect(message.content[0]).toMatchObject({ type: 'text' });
    expect(typeof message.credits_used).toBe('number');
    await nothingHeld();
    expect((await balance()).used - before.used).toBeCloseTo(message.credits_used!, 6);
  });

  test('tool use: the input streams as input_json_delta and the SDK assembles it exactly', async () => {
    const tools: Anthropic.Tool[] = [{ name: 'get_weather', description: 'Weather in a city', input_schema: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' } } } }];
    const stream = alice.messages.stream({ ...hello, tools });
    const partials: string[] = [];
    stream.on('inputJson', (partial) => partials.push(partial));
    const message = await stream.finalMessage();
    expect(partials.length).toBeGreaterThan(1);
    const block = message.content.find((b) => b.type === 'tool_use') as Anthropic.ToolUseBlock;
    expect(block).toMatchObject({ name: 'get_weather', input: { city: 'city value', days: 42 } });
    expect(message.stop_reason).toBe('tool_use');
    await nothingHeld();
  });

  test('a client that aborts mid-stream: metered once as cancelled, for what was produced', async () => {
    const controller = new AbortController();
    const { data: stream, response } = await alice.messages.create({ ...hello, model: 'mock-slow', stream: true }, { signal: controller.signal }).withResponse();
    const generationId = response.headers.get('x-generation-id')!;
    let deltas = 0;
    // the SDK ends the iteration when its signal aborts (or throws, by version): either way the client has left
    await (async () => {
      for await (const event of stream) {
        if (event.type === 'content_block_delta' && ++deltas === 2) {
          controller.abort();
          break;
        }
      }
    })().catch(() => undefined);
    await nothingHeld();
    const rec = await record(generationId);
    expect(rec.outcome).toBe('cancelled');
    expect((rec.usage as { completion_tokens: number }).completion_tokens).toBeGreaterThan(0);
    expect((rec.usage as { completion_tokens: number }).completion_tokens).toBeLessThan(10);
  });

  test('a provider that drops mid-stream: the SDK raises the event: error, metered once as failed', async () => {
    const before = await balance();
    const run = async (): Promise<void> => {
      for await (const _event of await alice.messages.create({ ...hello, model: 'mock-error', stream: true })) void _event;
    };
    const err = await run().then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.APIError);
    expect(String((err as Error).message)).toMatch(/upstream|connection/i);
    await nothingHeld();
    expect((await balance()).used).toBeGreaterThanOrEqual(before.used);
  });

  test('errors before the first byte are the Messages API\'s, which the SDK raises as its typed errors', async () => {
    const stranger = new Anthropic({ apiKey: 'not-a-key', baseURL: base, maxRetries: 0 });
    await expect(stranger.messages.create(hello)).rejects.toBeInstanceOf(Anthropic.AuthenticationError);
    const unauthorized = await fetch(`${base}/v1/messages`, { method: 'POST', headers: { 'x-api-key': 'not-a-key', 'content-type': 'application/json' }, body: JSON.stringify(hello) });
    expect(await unauthorized.json()).toEqual({ type: 'error', error: { type: 'authentication_error', message: expect.stringContaining('x-api-key'), code: 'invalid_api_key' } });
    await expect(alice.messages.create({ ...hello, model: 'mock-429' })).rejects.toBeInstanceOf(Anthropic.RateLimitError);
    const poor = new Anthropic({ apiKey: POOR, baseURL: base, maxRetries: 0 });
    const refused = await poor.messages.create(hello).then(() => undefined, (e: unknown) => e);
    expect(refused).toBeInstanceOf(Anthropic.APIError);
    expect((refused as InstanceType<typeof Anthropic.APIError>).status).toBe(402);
    expect((refused as InstanceType<typeof Anthropic.APIError>).error).toMatchObject({ type: 'error', error: { type: 'billing_error', code: 'insufficient_quota' } });
    const res = await fetch(`${base}/v1/messages`, { method: 'POST', headers: { 'x-api-key': ALICE, 'content-type': 'application/json' }, body: JSON.stringify({ model: 'claude-mock-1', messages: hello.messages }) });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ type: 'error', error: { type: 'invalid_request_error', message: expect.stringContaining('max_tokens'), code: 'missing_required_parameter' } });
    expect((await balance(POOR)).used).toBe(0);
  });

  test('count_tokens: answered by the Anthropic upstream, free (nothing held or charged), authenticated; the SDK reads it', async () => {
    const before = await balance();
    const counted = await alice.messages.countTokens({ model: 'claude-mock-1', system: 'Be brief.', messages: hello.messages });
    // the mock's count: a token per 4 characters of the system prompt and the messages as JSON
    expect(counted.input_tokens).toBe(Math.ceil(JSON.stringify(['Be brief.', hello.messages]).length / 4));
    const after = await balance();
    expect(after).toEqual(before);
    const stranger = new Anthropic({ apiKey: 'not-a-key', baseURL: base, maxRetries: 0 });
    await expect(stranger.messages.countTokens({ model: 'claude-mock-1', messages: hello.messages })).rejects.toBeInstanceOf(Anthropic.AuthenticationError);
    const bad = await fetch(`${base}/v1/messages/count_tokens?beta=true`, { method: 'POST', headers: { 'x-api-key': ALICE, 'content-type': 'application/json' }, body: JSON.stringify({ model: 'claude-mock-1' }) });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { type: string; error: { type: string } }).error.type).toBe('invalid_request_error');
  });

  test('Claude Code\'s `?beta=true` is accepted; a Messages request for a model only an OpenAI upstream serves is translated', async () => {
    const res = await fetch(`${base}/v1/messages?beta=true`, { method: 'POST', headers: { authorization: `Bearer ${ALICE}`, 'content-type': 'application/json' }, body: JSON.stringify(hello) });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { type: string }).type).toBe('message');
    const other = await fetch(`${base}/v1/messages`, { method: 'POST', headers: { 'x-api-key': ALICE, 'content-type': 'application/json' }, body: JSON.stringify({ ...hello, model: 'gpt-only-1' }) });
    expect(other.status).toBe(200);
    expect(await other.json()).toMatchObject({ type: 'message', role: 'assistant', content: [{ type: 'text', text: expect.stringMatching(/^You said/) }], stop_reason: 'end_turn', credits_used: expect.any(Number) });
    await nothingHeld();
  });
});

describe('an Anthropic-dialect upstream', () => {
  test('gets the gateway\'s key as x-api-key with anthropic-version, the client\'s anthropic-beta, never the client\'s key', async () => {
    const provider = await new ScriptedProvider().start();
    provider.reply = () => ({ json: { id: 'msg_1', type: 'message', role: 'assistant', model: 'claude-x', content: [{ type: 'text', text: 'Hi' }], stop_reason: 'end_turn', stop_sequence: null, usage: { input_tokens: 5, cache_creation_input_tokens: 2, cache_read_input_tokens: 3, output_tokens: 1, server_tool_use: { web_search_requests: 1 } } } });
    const gw = await startGateway(provider.url, { upstream: undefined, upstreams: [{ name: 'claude', baseURL: provider.url, api: 'anthropic', apiKey: UPSTREAM_KEY }] });
    try {
      const res = await fetch(`${gw.url}/v1/messages`, {
        method: 'POST',
        headers: { 'x-api-key': 'client-key-1', 'anthropic-version': '2023-06-01', 'anthropic-beta': 'fine-grained-tool-streaming-2025-05-14,context-1m', 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'claude-x', max_tokens: 10, messages: [{ role: 'user', content: 'Hi' }] }),
      });
      expect(res.status).toBe(200);
      const seen = provider.last;
      expect(seen.path).toBe('/v1/messages');
      expect(seen.headers['x-api-key']).toBe(UPSTREAM_KEY);
      expect(seen.headers['anthropic-version']).toBe('2023-06-01');
      expect(seen.headers['anthropic-beta']).toBe('fine-grained-tool-streaming-2025-05-14,context-1m');
      expect(seen.headers.authorization).toBeUndefined();
      expect(JSON.stringify(seen.headers)).not.toContain('client-key-1');
      await waitFor(() => gw.meterCalls.length === 1);
      // every input token, cache writes and reads included, as OpenAI counts prompt tokens
      expect(gw.meterCalls[0]!.usage).toMatchObject({ prompt_tokens: 10, completion_tokens: 1, prompt_tokens_details: { cached_tokens: 3 }, cache_creation_input_tokens: 2, cache_read_input_tokens: 3 });
      expect(gw.meterCalls[0]!.endpoint).toBe('messages');
      // the provider's usage as it sent it, its count objects included
      expect(gw.meterCalls[0]!.providerUsage).toMatchObject({ input_tokens: 5, cache_creation_input_tokens: 2, cache_read_input_tokens: 3, output_tokens: 1, server_tool_use: { web_search_requests: 1 } });
    } finally {
      await gw.close();
      await provider.stop();
    }
  });

  const anthropicGateway = (provider: ScriptedProvider, overrides = {}) =>
    startGateway(provider.url, { upstream: undefined, upstreams: [{ name: 'claude', baseURL: provider.url, api: 'anthropic', apiKey: UPSTREAM_KEY }], ...overrides });
  const ask = (url: string, extra: Record<string, unknown> = {}) =>
    fetch(`${url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': 'client-key-1', 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'claude-x', max_tokens: 100, stream: true, messages: [{ role: 'user', content: 'Hi' }], ...extra }),
    });
  const start = (usage: Record<string, number>) => ({ data: { type: 'message_start', message: { id: 'msg_h', type: 'message', role: 'assistant', model: 'claude-x', content: [], usage } } });
  const text = (t: string) => ({ data: { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: t } } });

  test('a hostile provider: usage repeated and going down is billed at the highest count; events after message_stop never reach the client', async () => {
    const provider = await new ScriptedProvider().start();
    provider.reply = () => ({
      steps: [
        start({ input_tokens: 40, cache_read_input_tokens: 10, output_tokens: 1 }),
        text('Hello'),
        { data: { type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { input_tokens: 40, output_tokens: 30 } } },
        { data: { type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { input_tokens: 2, output_tokens: 3 } } },
        { data: { type: 'message_stop' } },
        text(' after the end'),
        { data: { type: 'message_delta', usage: { output_tokens: 1 } } },
      ],
    });
    const gw = await anthropicGateway(provider);
    try {
      const res = await ask(gw.url);
      const body = await res.text();
      expect(body).not.toContain('after the end');
      const events = body.split('\n\n').filter(Boolean);
      expect(events.at(-1)).toMatch(/^event: message_stop\n/);
      expect(events.at(-2)).toMatch(/^event: message_delta\n/);
      const final = JSON.parse(events.at(-2)!.split('\ndata: ')[1]!);
      await waitFor(() => gw.meterCalls.length === 1);
      expect(gw.meterCalls[0]!.usage).toMatchObject({ prompt_tokens: 50, completion_tokens: 30 });
      expect(final.credits_used).toBe(gw.meterCalls[0]!.usage.total_tokens);
    } finally {
      await gw.close();
      await provider.stop();
    }
  });

  test('a provider that sends no usage, or claims 0 output tokens for text it sent, is billed the gateway\'s count', async () => {
    const provider = await new ScriptedProvider().start();
    const answers = [
      // no usage anywhere
      [{ data: { type: 'message_start', message: { id: 'msg_a', type: 'message', role: 'assistant', model: 'claude-x', content: [] } } }, text('Hello'), text(' world'), { data: { type: 'message_delta', delta: { stop_reason: 'end_turn' } } }, { data: { type: 'message_stop' } }],
      // a lie: 0 output tokens for text it streamed
      [start({ input_tokens: 9, output_tokens: 0 }), text('Hello'), text(' world'), { data: { type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 0 } } }, { data: { type: 'message_stop' } }],
    ];
    let call = 0;
    provider.reply = () => ({ steps: answers[call++]! });
    const gw = await anthropicGateway(provider);
    try {
      for (let i = 0; i < answers.length; i++) {
        const body = await (await ask(gw.url)).text();
        expect(body).toContain('"credits_used"');
        await waitFor(() => gw.meterCalls.length === i + 1, 5000);
      }
      const [missing, lying] = gw.meterCalls;
      // "Hello world" is 2 o200k tokens; the prompt: 3 + 3 + "user" + "Hi"
      expect(missing!.usage).toMatchObject({ completion_tokens: 2, prompt_tokens: 3 + 3 + 1 + 1, estimated: true });
      expect(lying!.usage).toMatchObject({ completion_tokens: 2, prompt_tokens: 9, estimated: true });
    } finally {
      await gw.close();
      await provider.stop();
    }
  });

  test('a provider that only pings meets idleTimeout: pings are relayed but are not activity', async () => {
    const provider = await new ScriptedProvider().start();
    const pings = Array.from({ length: 40 }, () => [{ wait: 50 }, { data: { type: 'ping' } }]).flat();
    provider.reply = () => ({ steps: [start({ input_tokens: 5, output_tokens: 1 }), text('Hi'), ...pings] });
    const gw = await anthropicGateway(provider, { idleTimeout: 400 });
    try {
      const startedAt = Date.now();
      const body = await (await ask(gw.url)).text();
      expect(Date.now() - startedAt).toBeLessThan(1500);
      expect(body).toContain('event: ping');
      const events = body.split('\n\n').filter(Boolean);
      expect(events.at(-1)).toMatch(/^event: error\ndata: \{"type":"error","error":\{"type":"timeout_error|^event: error\ndata: \{"type":"error","error":\{"type":"/);
      await waitFor(() => gw.meterCalls.length === 1);
      expect(gw.meterCalls[0]!.outcome).toBe('failed');
    } finally {
      await gw.close();
      await provider.stop();
    }
  });

  test('count_tokens for a model only an OpenAI upstream serves is the gateway\'s own o200k estimate; one nobody serves is a 404', async () => {
    const provider = await new ScriptedProvider().start();
    const gw = await startGateway(provider.url, { upstream: undefined, upstreams: [{ name: 'openai', baseURL: provider.url, models: ['gpt-*'] }], limits: { requestsPerMinute: 2 } });
    try {
      const count = (model: string) =>
        fetch(`${gw.url}/v1/messages/count_tokens`, { method: 'POST', headers: { 'x-api-key': 'client-key-1', 'content-type': 'application/json' }, body: JSON.stringify({ model, messages: [{ role: 'user', content: 'Hello there' }] }) });
      const res = await count('gpt-4o');
      expect(res.status).toBe(200);
      // the cookbook count: 3 to prime the reply, 3 for the message, its role and content
      expect(await res.json()).toEqual({ input_tokens: 3 + 3 + 1 + 2 });
      const unknown = await count('claude-x');
      expect(unknown.status).toBe(404);
      expect(((await unknown.json()) as { error: { type: string } }).error.type).toBe('not_found_error');
      // counted against requestsPerMinute like every request
      const limited = await count('gpt-4o');
      expect(limited.status).toBe(429);
      expect(((await limited.json()) as { error: { type: string } }).error.type).toBe('rate_limit_error');
      expect(provider.requests).toHaveLength(0);
      expect(gw.meterCalls).toHaveLength(0);
    } finally {
      await gw.close();
      await provider.stop();
    }
  });

  test('a client that leaves mid-stream: the Anthropic upstream sees its request closed within 250 ms, metered once as cancelled for what was produced', async () => {
    const provider = await new ScriptedProvider().start();
    const words = Array.from({ length: 40 }, (_, i) => text(` w${i}`));
    provider.reply = () => ({ steps: [start({ input_tokens: 7, output_tokens: 1 }), ...words.flatMap((w) => [{ wait: 30 }, w])] });
    const gw = await anthropicGateway(provider);
    try {
      let abortedAt = 0;
      await new Promise<void>((resolve, reject) => {
        const payload = JSON.stringify({ model: 'claude-x', max_tokens: 100, stream: true, messages: [{ role: 'user', content: 'Hi' }] });
        const req = http.request(`${gw.url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': 'client-key-1', 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } });
        req.on('error', reject);
        req.on('response', (res) => {
          let deltas = 0;
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            deltas += chunk.split('event: content_block_delta').length - 1;
            if (deltas >= 5 && abortedAt === 0) {
              abortedAt = Date.now();
              req.destroy();
              resolve();
            }
          });
          res.on('error', () => undefined);
        });
        req.end(payload);
      });
      await waitFor(() => provider.last.closedEarlyAt !== undefined, 2000, 'the provider to see its connection closed');
      expect(provider.last.closedEarlyAt! - abortedAt).toBeLessThan(250);
      await waitFor(() => gw.meterCalls.length === 1, 5000);
      const event = gw.meterCalls[0]!;
      expect(event.outcome).toBe('cancelled');
      expect(event.usage.prompt_tokens).toBe(7);
      // what the provider counted so far is only its message_start (1); the gateway counts what was produced
      expect(event.usage.completion_tokens).toBeGreaterThanOrEqual(5);
      expect(event.usage.completion_tokens).toBeLessThan(20);
    } finally {
      await gw.close();
      await provider.stop();
    }
  });

  test('fallback before the first byte: an overloaded Anthropic upstream (529) hands the request to the next, metered once naming both', async () => {
    const first = await new ScriptedProvider().start();
    const second = await new ScriptedProvider().start();
    first.reply = () => ({ status: 529, json: { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } } });
    second.reply = () => ({ steps: [start({ input_tokens: 4, output_tokens: 1 }), text('Hi'), { data: { type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 2 } } }, { data: { type: 'message_stop' } }] });
    const gw = await startGateway(first.url, {
      upstream: undefined,
      upstreams: [
        { name: 'primary', baseURL: first.url, api: 'anthropic', apiKey: UPSTREAM_KEY },
        { name: 'backup', baseURL: second.url, api: 'anthropic', apiKey: 'sk-backup-key-000000000' },
      ],
    });
    try {
      const res = await ask(gw.url);
      expect(res.status).toBe(200);
      expect(await res.text()).toContain('"credits_used"');
      expect(second.last.headers['x-api-key']).toBe('sk-backup-key-000000000');
      await waitFor(() => gw.meterCalls.length === 1);
      expect(gw.meterCalls[0]).toMatchObject({ upstream: 'backup', failedUpstreams: [{ upstream: 'primary', status: 529 }], outcome: 'completed' });
      // both overloaded: the client gets the Messages API's 529 overloaded_error
      second.reply = first.reply;
      const refused = await ask(gw.url);
      expect(refused.status).toBe(529);
      expect(((await refused.json()) as { error: { type: string } }).error.type).toBe('overloaded_error');
    } finally {
      await gw.close();
      await first.stop();
      await second.stop();
    }
  });

  test('count_tokens from a hostile Anthropic upstream: an answer that is not JSON or too large is a 502 in the API\'s shape', async () => {
    const provider = await new ScriptedProvider().start();
    const gw = await anthropicGateway(provider);
    try {
      const count = () => fetch(`${gw.url}/v1/messages/count_tokens`, { method: 'POST', headers: { 'x-api-key': 'client-key-1', 'content-type': 'application/json' }, body: JSON.stringify({ model: 'claude-x', messages: [{ role: 'user', content: 'Hi' }] }) });
      provider.reply = () => ({ status: 200, headers: { 'content-type': 'application/json' }, steps: [{ raw: 'not json' }] });
      const bad = await count();
      expect(bad.status).toBe(502);
      expect(await bad.json()).toMatchObject({ type: 'error', error: { type: 'api_error', code: 'upstream_invalid_response' } });
      provider.reply = () => ({ status: 200, headers: { 'content-type': 'application/json' }, steps: [{ raw: `{"input_tokens": 1, "pad": "${'x'.repeat(100_000)}"}` }] });
      const huge = await count();
      expect(huge.status).toBe(502);
      expect(((await huge.json()) as { error: { message: string } }).error.message).toContain('larger than');
      expect(gw.meterCalls).toHaveLength(0);
    } finally {
      await gw.close();
      await provider.stop();
    }
  });

  test('`api` is validated when the middleware is created', async () => {
    await expect(startGateway('http://127.0.0.1:9/v1', { upstream: undefined, upstreams: [{ name: 'x', baseURL: 'http://127.0.0.1:9/v1', api: 'antropic' as never }] })).rejects.toThrow(
      /`upstreams\[0\]\.api` must be "openai", "anthropic".*did you mean "anthropic"/,
    );
  });
});
