import http from 'node:http';
import { BASE, contentChunk, finishChunk, ScriptedProvider, textSteps, type Step } from './helpers/provider';
import { KEY, startGateway, type TestGateway } from './helpers/gateway';
import { jsonEvents, postStream } from './helpers/sse-client';

const request = { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'Write a haiku about TCP' }] };

let provider: ScriptedProvider;
beforeAll(async () => {
  provider = await new ScriptedProvider().start();
});
afterAll(() => provider.stop());

describe('streaming relay', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway(provider.url);
  });
  afterAll(() => gw.close());
  beforeEach(() => {
    gw.meterCalls.length = 0;
  });

  test('emits content → finish → provider usage → gateway usage → [DONE], the credits chunk second-to-last and once', async () => {
    provider.reply = () => ({ steps: textSteps(['Hello', ' world'], { usage: [12, 2] }) });
    const result = await postStream(gw.url, request);
    expect(result.status).toBe(200);
    const events = result.events;
    expect(events[events.length - 1]).toBe('[DONE]');
    const chunks = jsonEvents(result);
    const gateway = chunks[chunks.length - 1]!;
    expect(gateway).toEqual({ ...BASE, choices: [], usage: { prompt_tokens: 12, completion_tokens: 2, total_tokens: 14 }, credits_used: 14 });
    expect(chunks.filter((c) => 'credits_used' in c)).toHaveLength(1);
    const provUsage = chunks[chunks.length - 2]!;
    expect(provUsage.usage).toEqual({ prompt_tokens: 12, completion_tokens: 2, total_tokens: 14 });
    expect(provUsage).not.toHaveProperty('credits_used');
    const finish = chunks[chunks.length - 3]!;
    expect((finish.choices as Array<{ finish_reason: string }>)[0]!.finish_reason).toBe('stop');
    const text = chunks.flatMap((c) => (c.choices as Array<{ delta?: { content?: string } }>).map((ch) => ch.delta?.content ?? '')).join('');
    expect(text).toBe('Hello world');
    expect(gw.meterCalls).toHaveLength(1);
    expect(gw.meterCalls[0]).toMatchObject({ providerId: BASE.id, generationId: expect.stringMatching(/^gen-/), model: 'test-model', cancelled: false, error: undefined, stream: true, finishReason: 'stop' });
  });

  test('forwards each provider chunk byte for byte, without re-serialising it', async () => {
    const odd = '{"id":"chatcmpl-test123", "choices":[{"index":0,"delta":{"content":"spaced  out"},"finish_reason":null}] , "x":1}';
    provider.reply = () => ({ steps: [{ raw: `data: ${odd}\n\n` }, { data: finishChunk() }, { data: '[DONE]' }] });
    const result = await postStream(gw.url, request);
    expect(result.events[0]).toBe(odd);
  });

  test('sets SSE headers that defeat proxy buffering', async () => {
    provider.reply = () => ({ steps: textSteps(['a']) });
    const result = await postStream(gw.url, request);
    expect(result.headers['content-type']).toMatch(/^text\/event-stream/);
    expect(result.headers['cache-control']).toBe('no-cache, no-transform');
    expect(result.headers['x-accel-buffering']).toBe('no');
    expect(result.headers['content-length']).toBeUndefined();
  });

  test('sends the headers at once when the provider answers and then thinks before its first event', async () => {
    let gotHeaders!: () => void;
    const headersSeen = new Promise<void>((resolve) => (gotHeaders = resolve));
    // the provider's first event waits for the client to have the headers: held back for the first event, they never would
    provider.reply = () => ({ steps: [{ until: headersSeen }, ...textSteps(['thought'])] });
    const started = Date.now();
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' } }, (res) => {
        gotHeaders();
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end(JSON.stringify(request));
    });
    expect(status).toBe(200);
    // well under the provider's 5 s cap on waiting: the headers did not wait for an event
    expect(Date.now() - started).toBeLessThan(4_000);
  });

  test('writes the events of one upstream read in one write, with the closing when that read ends the stream', async () => {
    const usage = { ...BASE, choices: [], usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } };
    const event = (data: unknown): string => `data: ${JSON.stringify(data)}\n\n`;
    provider.reply = () => ({
      steps: [{ raw: event(contentChunk('one')) }, { wait: 30 }, { raw: event(contentChunk(' two')) + event(finishChunk()) + event(usage) + 'data: [DONE]\n\n' }],
    });
    const writes: string[] = [];
    const original = http.ServerResponse.prototype.write;
    // the gateway's responses only (the scripted provider answers in this process too)
    http.ServerResponse.prototype.write = function (this: http.ServerResponse, chunk: unknown, ...rest: unknown[]) {
      if (this.hasHeader('x-generation-id')) writes.push(String(chunk));
      return (original as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
    } as typeof original;
    try {
      const result = await postStream(gw.url, request);
      expect(result.events.at(-1)).toBe('[DONE]');
    } finally {
      http.ServerResponse.prototype.write = original;
    }
    expect(writes).toHaveLength(2);
    expect(writes[0]).toBe(event(contentChunk('one')));
    // content, finish, the provider's usage, the gateway's usage and [DONE]: one write
    expect(writes[1]!.split('\n\n').filter(Boolean)).toHaveLength(5);
    expect(writes[1]).toMatch(/credits_used.*\n\ndata: \[DONE\]\n\n$/s);
  });

  test('always asks the upstream for usage, even when the client opted out', async () => {
    provider.reply = () => ({ steps: textSteps(['a']) });
    await postStream(gw.url, { ...request, stream_options: { include_usage: false } });
    expect(provider.last.json?.stream_options).toEqual({ include_usage: true });
    expect(provider.last.json?.messages).toEqual(request.messages);
  });

  test('counts tokens with the tokenizer when the provider sends no usage, and says so', async () => {
    provider.reply = () => ({ steps: textSteps(['Hello', ' world', ' again'], { usage: false }) });
    const result = await postStream(gw.url, request);
    const gateway = jsonEvents(result).at(-1)!;
    expect(gateway.usage).toEqual({ prompt_tokens: expect.any(Number), completion_tokens: 3, total_tokens: expect.any(Number), estimated: true });
    const usage = gateway.usage as { prompt_tokens: number; total_tokens: number };
    // "Write a haiku about TCP" is 6 tokens; OpenAI's chat framing adds 3 per message and 3 for the reply, plus the role.
    expect(usage.prompt_tokens).toBe(13);
    expect(usage.total_tokens).toBe(16);
    expect(gw.meterCalls[0]!.usage.estimated).toBe(true);
  });

  test('keeps a plausible provider usage as it is, a zero completion for an empty answer included', async () => {
    provider.reply = () => ({ steps: textSteps([], { usage: [12, 0] }) });
    const result = await postStream(gw.url, request);
    expect(jsonEvents(result).at(-1)!.usage).toEqual({ prompt_tokens: 12, completion_tokens: 0, total_tokens: 12 });
    expect(gw.meterCalls[0]!.usage.estimated).toBeUndefined();
  });

  test('does not believe a zero usage for a prompt that was sent and text that was produced', async () => {
    provider.reply = () => ({ steps: textSteps(['Hello'], { usage: [0, 0] }) });
    const result = await postStream(gw.url, request);
    const usage = jsonEvents(result).at(-1)!.usage as { prompt_tokens: number; completion_tokens: number; estimated?: boolean };
    expect(usage.prompt_tokens).toBeGreaterThan(0);
    expect(usage.completion_tokens).toBeGreaterThan(0);
    expect(usage.estimated).toBe(true);
    expect({ ...gw.meterCalls[0]!.usage, classes: undefined }).toEqual(usage);
  });

  test('does not forward upstream SSE comments or keep-alives as data', async () => {
    provider.reply = () => ({ steps: [{ raw: ': OPENROUTER PROCESSING\n\n' }, ...textSteps(['a']).slice(0, 2), { raw: ': ping\n\n' }, ...textSteps(['a']).slice(2)] });
    const result = await postStream(gw.url, request);
    expect(result.raw).not.toContain('OPENROUTER');
    expect(result.raw).not.toContain('ping');
    expect(result.comments).toEqual([]);
    expect(result.events.at(-1)).toBe('[DONE]');
  });

  test('passes tool-call deltas through unchanged and in order, parallel calls included', async () => {
    const fragments = [
      { index: 0, id: 'call_a', type: 'function', function: { name: 'get_weather', arguments: '' } },
      { index: 1, id: 'call_b', type: 'function', function: { name: 'get_time', arguments: '' } },
      { index: 0, function: { arguments: '{"loc' } },
      { index: 1, function: { arguments: '{"tz":' } },
      { index: 0, function: { arguments: 'ation":' } },
      { index: 1, function: { arguments: '"UTC"}' } },
      { index: 0, function: { arguments: '"Paris"}' } },
    ];
    const steps: Step[] = fragments.map((f) => ({ data: { ...BASE, choices: [{ index: 0, delta: { tool_calls: [f] }, finish_reason: null }] } }));
    steps.push({ data: finishChunk('tool_calls') }, { data: '[DONE]' });
    provider.reply = () => ({ steps });
    const result = await postStream(gw.url, { ...request, tools: [{ type: 'function', function: { name: 'get_weather' } }] });
    const received = jsonEvents(result)
      .map((c) => (c.choices as Array<{ delta?: { tool_calls?: unknown[] } }>)[0]?.delta?.tool_calls)
      .filter(Boolean)
      .flat();
    expect(received).toEqual(fragments);
    const args: Record<number, string> = {};
    for (const f of received as Array<{ index: number; function: { arguments: string } }>) args[f.index] = (args[f.index] ?? '') + f.function.arguments;
    expect(JSON.parse(args[0]!)).toEqual({ location: 'Paris' });
    expect(JSON.parse(args[1]!)).toEqual({ tz: 'UTC' });
    expect(gw.meterCalls[0]!.finishReason).toBe('tool_calls');
  });

  test('ends a stream whose provider omits [DONE] after the finish chunk as complete', async () => {
    provider.reply = () => ({ steps: textSteps(['a'], { done: false }) });
    const result = await postStream(gw.url, request);
    expect(result.events.at(-1)).toBe('[DONE]');
    expect(jsonEvents(result).at(-1)).toHaveProperty('credits_used');
    expect(gw.meterCalls[0]!.cancelled).toBe(false);
  });

  test('ignores anything the provider sends after [DONE]', async () => {
    provider.reply = () => ({ steps: [...textSteps(['a']), { data: contentChunk('late') }] });
    const result = await postStream(gw.url, request);
    expect(result.raw).not.toContain('late');
    expect(gw.meterCalls).toHaveLength(1);
  });
});

describe('flushing per chunk, whatever the host app mounted', () => {
  const hosts = [
    { json: false, compression: false },
    { json: true, compression: false },
    { json: false, compression: true },
    { json: true, compression: true },
  ];
  test.each(hosts)('express.json: $json, compression: $compression → events arrive one by one, uncompressed', async (host) => {
    const gw = await startGateway(provider.url, {}, host);
    try {
      provider.reply = () => ({ steps: textSteps(['one', ' two', ' three', ' four'], { gap: 120 }) });
      const result = await postStream(gw.url, request, { headers: { 'accept-encoding': 'gzip, br' } });
      expect(result.headers['content-encoding']).toBeUndefined();
      expect(jsonEvents(result).at(-1)).toHaveProperty('credits_used', 16);
      // first content after ~120 ms, last after ~480 ms: a buffered relay would deliver them together
      const content = result.events.map((e, i) => ({ e, t: result.times[i]! })).filter(({ e }) => e.includes('"content":"'));
      const first = content.find(({ e }) => e.includes('"one"'))!;
      const last = content.find(({ e }) => e.includes('" four"'))!;
      expect(last.t - first.t).toBeGreaterThan(250);
      expect(provider.last.json?.model).toBe('test-model');
    } finally {
      await gw.close();
    }
  });
});

describe('heartbeats', () => {
  test('sends SSE comment lines while the upstream is silent, not as data', async () => {
    const gw = await startGateway(provider.url, { heartbeatInterval: 100 });
    try {
      provider.reply = () => ({ steps: [...textSteps(['a']).slice(0, 1), { wait: 450 }, ...textSteps(['a']).slice(1)] });
      const result = await postStream(gw.url, request);
      expect(result.comments.length).toBeGreaterThanOrEqual(2);
      expect(result.comments.every((c) => c.startsWith(':'))).toBe(true);
      expect(result.events.at(-1)).toBe('[DONE]');
    } finally {
      await gw.close();
    }
  });
});
