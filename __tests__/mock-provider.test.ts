/**
 * The example app's built-in mock provider, beyond chat: the official `openai` SDK (v6) talks to it directly
 * (no gateway) on /responses, /completions and /embeddings, so the mock is a faithful stand-in for OpenAI when
 * the gateway's own suites use it. One mock for the file; every stream is read to its end or aborted.
 */
import OpenAI, { APIError, BadRequestError, NotFoundError, RateLimitError } from 'openai';
import type { Response as OpenAIResponse, ResponseStreamEvent } from 'openai/resources/responses/responses';
import { startMockProvider, type MockProvider } from '../example-app/mock-provider';

let mock: MockProvider;
let client: OpenAI;

beforeAll(async () => {
  mock = await startMockProvider();
  client = new OpenAI({ apiKey: 'mock-key', baseURL: mock.url, maxRetries: 0, logLevel: 'off' });
});

afterAll(async () => {
  await mock.close();
});

const ANSWER_WORDS = 63; // `You said: "<up to 8 words>".` (3 + the said words) + the four sentences, for a 3-word prompt

/** POSTs raw JSON (or a raw string) to the mock and returns the status and parsed body. */
async function post(path: string, body: unknown): Promise<{ status: number; json: any; contentType: string | null }> {
  const res = await fetch(`${mock.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: JSON.parse(text), contentType: res.headers.get('content-type') };
}

/** Reads a raw SSE body to its end. */
async function rawStream(path: string, body: unknown): Promise<{ status: number; contentType: string | null; text: string }> {
  const res = await fetch(`${mock.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, contentType: res.headers.get('content-type'), text: await res.text() };
}

function expectOpenAIError(json: any, param?: string | null): void {
  expect(Object.keys(json)).toEqual(['error']);
  expect(Object.keys(json.error).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(json.error).toMatchObject({ message: expect.any(String), type: expect.any(String) });
  if (param !== undefined) expect(json.error.param).toBe(param);
}

describe('POST /v1/responses', () => {
  test('responses.create({ stream: true }): typed events in order, text deltas, usage in response.completed', async () => {
    const stream = await client.responses.create({ model: 'mock-1', input: 'Write a haiku', instructions: 'Be brief.', stream: true });
    const events: ResponseStreamEvent[] = [];
    for await (const event of stream) events.push(event);

    const types = events.map((e) => e.type);
    const deltas = events.filter((e): e is Extract<ResponseStreamEvent, { type: 'response.output_text.delta' }> => e.type === 'response.output_text.delta');
    expect(types.slice(0, 4)).toEqual(['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added']);
    expect(types.slice(4, 4 + deltas.length).every((t) => t === 'response.output_text.delta')).toBe(true);
    expect(types.slice(4 + deltas.length)).toEqual(['response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.completed']);
    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));

    const created = events[0] as Extract<ResponseStreamEvent, { type: 'response.created' }>;
    expect(created.response).toMatchObject({ object: 'response', status: 'in_progress', output: [], usage: null, model: 'mock-1' });
    const added = events[2] as Extract<ResponseStreamEvent, { type: 'response.output_item.added' }>;
    expect(added.item).toMatchObject({ type: 'message', status: 'in_progress', role: 'assistant', content: [] });
    expect(added.item.id).toMatch(/^msg_/);
    expect(deltas[0]).toMatchObject({ item_id: added.item.id, output_index: 0, content_index: 0, logprobs: [] });

    const text = deltas.map((d) => d.delta).join('');
    expect(text).toMatch(/^You said: "Write a haiku"\. Streaming lets a reader/);
    expect(deltas).toHaveLength(ANSWER_WORDS);

    const completed = events[events.length - 1] as Extract<ResponseStreamEvent, { type: 'response.completed' }>;
    const response = completed.response;
    expect(response.id).toMatch(/^resp_/);
    expect(created.response.id).toBe(response.id);
    expect(response).toMatchObject({
      object: 'response',
      status: 'completed',
      model: 'mock-1',
      instructions: 'Be brief.',
      error: null,
      incomplete_details: null,
      metadata: {},
      text: { format: { type: 'text' } },
      tools: [],
      parallel_tool_calls: true,
    });
    expect(response.output).toEqual([
      { id: added.item.id, type: 'message', status: 'completed', role: 'assistant', content: [{ type: 'output_text', text, annotations: [], logprobs: [] }] },
    ]);
    expect(response.usage).toEqual({
      input_tokens: expect.any(Number),
      input_tokens_details: { cached_tokens: 0 },
      output_tokens: ANSWER_WORDS,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: response.usage!.input_tokens + ANSWER_WORDS,
    });
    expect(response.usage!.input_tokens).toBeGreaterThan(0);
    expect(Object.prototype.hasOwnProperty.call(response, 'output_text')).toBe(false); // not a wire field
  });

  test('on the wire: text/event-stream, `event: <type>` + `data: {"type","sequence_number",…}`, no [DONE]', async () => {
    const { status, contentType, text } = await rawStream('/responses', { model: 'mock-1', input: 'hi', stream: true, max_output_tokens: 20 });
    expect(status).toBe(200);
    expect(contentType).toMatch(/^text\/event-stream/);
    expect(text).not.toContain('[DONE]');
    const blocks = text.split('\n\n').filter(Boolean);
    blocks.forEach((block, i) => {
      const [eventLine, dataLine, ...rest] = block.split('\n');
      expect(rest).toEqual([]);
      const type = eventLine!.replace(/^event: /, '');
      expect(dataLine!.startsWith(`data: {"type":"${type}","sequence_number":${i},`)).toBe(true);
    });
    expect(blocks[blocks.length - 1]).toMatch(/^event: response\.incomplete\n/);
  });

  test('responses.stream() helper: delta events with snapshots, and finalResponse() with output_text and usage', async () => {
    const runner = client.responses.stream({ model: 'mock-1', input: [{ role: 'user', content: [{ type: 'input_text', text: 'tell me about streams' }] }] });
    const snapshots: string[] = [];
    runner.on('response.output_text.delta', (event) => snapshots.push(event.snapshot));
    const final = await runner.finalResponse();
    expect(final.status).toBe('completed');
    expect(final.output_text).toMatch(/^You said: "tell me about streams"\. /);
    expect(snapshots[snapshots.length - 1]).toBe(final.output_text);
    expect(final.usage?.output_tokens).toBe(snapshots.length);
  });

  test('non-streamed responses.create(): the same Response object; the SDK computes output_text', async () => {
    const response = await client.responses.create({ model: 'mock-1', input: 'Hello there', temperature: 0.2, metadata: { k: 'v' } });
    expect(response).toMatchObject({ object: 'response', status: 'completed', model: 'mock-1', temperature: 0.2, metadata: { k: 'v' } });
    expect(response.output_text).toMatch(/^You said: "Hello there"\. Streaming lets/);
    expect(response.output_text.split(' ')).toHaveLength(ANSWER_WORDS - 1);
    expect(response.usage?.output_tokens).toBe(ANSWER_WORDS - 1);
  });

  test('the answer is deterministic: the same request gets the same text', async () => {
    const a = await client.responses.create({ model: 'mock-1', input: 'same words' });
    const b = await client.responses.create({ model: 'mock-1', input: 'same words' });
    expect(a.output_text).toBe(b.output_text);
    expect(a.id).not.toBe(b.id);
  });

  test('function tools: a function_call item whose arguments stream as function_call_arguments.delta then .done', async () => {
    const tools = [
      { type: 'function' as const, name: 'get_weather', strict: false, parameters: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' } } } },
    ];
    const stream = await client.responses.create({ model: 'mock-1', input: 'Weather in Paris?', tools, stream: true });
    const events: ResponseStreamEvent[] = [];
    for await (const event of stream) events.push(event);
    const types = events.map((e) => e.type);
    expect(types).not.toContain('response.output_text.delta');
    const argDeltas = events.filter((e) => e.type === 'response.function_call_arguments.delta') as Array<Extract<ResponseStreamEvent, { type: 'response.function_call_arguments.delta' }>>;
    expect(argDeltas.length).toBeGreaterThan(1);
    const done = events.find((e) => e.type === 'response.function_call_arguments.done') as Extract<ResponseStreamEvent, { type: 'response.function_call_arguments.done' }>;
    expect(done.arguments).toBe(argDeltas.map((d) => d.delta).join(''));
    expect((done as { name?: string }).name).toBe('get_weather');
    expect(JSON.parse(done.arguments)).toEqual({ city: 'city value', days: 42 });
    const final = (events[events.length - 1] as Extract<ResponseStreamEvent, { type: 'response.completed' }>).response;
    expect(final.output).toHaveLength(1);
    expect(final.output[0]).toMatchObject({ type: 'function_call', status: 'completed', name: 'get_weather', arguments: done.arguments });
    expect((final.output[0] as { call_id: string }).call_id).toMatch(/^call_/);
    expect(final.usage?.output_tokens).toBe(argDeltas.length);

    // the helper and the non-streamed answer agree; `tool_choice: 'none'` answers with text
    const helped = await client.responses.stream({ model: 'mock-1', input: 'Weather?', tools }).finalResponse();
    expect(helped.output[0]).toMatchObject({ type: 'function_call', arguments: done.arguments, parsed_arguments: null });
    const plain = await client.responses.create({ model: 'mock-1', input: 'Weather?', tools, tool_choice: 'none' });
    expect(plain.output[0]?.type).toBe('message');
    expect(plain.output_text).toMatch(/^You said/);
  });

  test('max_output_tokens cuts the answer: status incomplete, incomplete_details, final event response.incomplete', async () => {
    const stream = await client.responses.create({ model: 'mock-1', input: 'a long answer please', max_output_tokens: 16, stream: true });
    const events: ResponseStreamEvent[] = [];
    for await (const event of stream) events.push(event);
    const last = events[events.length - 1]!;
    expect(last.type).toBe('response.incomplete');
    const response = (last as Extract<ResponseStreamEvent, { type: 'response.incomplete' }>).response;
    expect(response).toMatchObject({ status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' }, max_output_tokens: 16 });
    expect(response.usage?.output_tokens).toBe(16);
    expect(events.filter((e) => e.type === 'response.output_text.delta')).toHaveLength(16);
    expect(response.output[0]).toMatchObject({ status: 'incomplete' });

    const final = await client.responses.stream({ model: 'mock-1', input: 'a long answer please', max_output_tokens: 16 }).finalResponse();
    expect(final.status).toBe('incomplete');
    expect(final.output_text.split(' ')).toHaveLength(16);
  });

  test('GET /v1/responses/{id} and …/input_items; 404 in OpenAI error shape for an unknown id', async () => {
    const created = await client.responses.create({
      model: 'mock-1',
      input: [
        { role: 'developer', content: 'You are terse.' },
        { role: 'user', content: [{ type: 'input_text', text: 'first question' }] },
        { role: 'assistant', content: 'first answer' },
        { role: 'user', content: [{ type: 'input_text', text: 'second' }, { type: 'input_text', text: 'question' }] },
      ],
    });
    expect(created.output_text).toMatch(/^You said: "second question"\./);

    const retrieved = await client.responses.retrieve(created.id);
    expect(retrieved).toEqual(created);

    const page = await client.responses.inputItems.list(created.id, { order: 'asc' });
    expect(page.data.map((item) => (item as { role: string }).role)).toEqual(['developer', 'user', 'assistant', 'user']);
    expect(page.data[1]).toMatchObject({ type: 'message', role: 'user', content: [{ type: 'input_text', text: 'first question' }] });
    expect(page.data[2]).toMatchObject({ type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'first answer' }] });
    for (const item of page.data) expect(item.id).toMatch(/^msg_/);
    expect(page.has_more).toBe(false);

    // the raw list: newest first by default, first_id/last_id, and a cursor that pages
    const raw = await (await fetch(`${mock.url}/responses/${created.id}/input_items`)).json();
    expect(raw).toMatchObject({ object: 'list', has_more: false, first_id: page.data[3]!.id, last_id: page.data[0]!.id });
    expect(raw.data).toHaveLength(4);
    const all: string[] = [];
    for await (const item of client.responses.inputItems.list(created.id, { limit: 1 })) all.push(item.id);
    expect(all).toEqual(page.data.map((item) => item.id).reverse());

    const missing = await fetch(`${mock.url}/responses/resp_nope`);
    expect(missing.status).toBe(404);
    expectOpenAIError(await missing.json(), null);
    await expect(client.responses.retrieve('resp_nope')).rejects.toBeInstanceOf(NotFoundError);
    await expect(client.responses.inputItems.list('resp_nope')).rejects.toBeInstanceOf(NotFoundError);
  });

  test('a streamed response is stored finished; responses.stream({ response_id }) replays it; store: false is not kept', async () => {
    const stream = await client.responses.create({ model: 'mock-1', input: 'keep me', stream: true });
    let id = '';
    for await (const event of stream) if (event.type === 'response.completed') id = event.response.id;
    const retrieved = await client.responses.retrieve(id);
    expect(retrieved.status).toBe('completed');
    expect(retrieved.output_text).toMatch(/^You said: "keep me"/);

    const replayed = await client.responses.stream({ response_id: id }).finalResponse();
    expect(replayed.output_text).toBe(retrieved.output_text);

    const unstored = await client.responses.create({ model: 'mock-1', input: 'forget me', store: false });
    await expect(client.responses.retrieve(unstored.id)).rejects.toBeInstanceOf(NotFoundError);

    await client.responses.delete(id);
    await expect(client.responses.retrieve(id)).rejects.toBeInstanceOf(NotFoundError);
  });

  test('background: answered at once as queued, finished when retrieved', async () => {
    const queued = await client.responses.create({ model: 'mock-1', input: 'later', background: true });
    expect(queued.status).toBe('queued');
    expect(queued.output).toEqual([]);
    const done = await client.responses.retrieve(queued.id);
    expect(done.status).toBe('completed');
    expect(done.output_text).toMatch(/^You said: "later"/);
  });

  test('the store is bounded: the newest 200 responses are kept, older ones are 404', async () => {
    const ids: string[] = [];
    for (let batch = 0; batch < 5; batch++) {
      const made = await Promise.all(Array.from({ length: 45 }, (_, i) => client.responses.create({ model: 'mock-1', input: `n ${batch} ${i}`, background: true })));
      ids.push(...made.map((r) => r.id));
    }
    await expect(client.responses.retrieve(ids[0]!)).rejects.toBeInstanceOf(NotFoundError);
    expect((await client.responses.retrieve(ids[ids.length - 1]!)).status).toBe('completed');
    expect((await client.responses.retrieve(ids[ids.length - 200]!)).status).toBe('completed');
    await expect(client.responses.retrieve(ids[ids.length - 201]!)).rejects.toBeInstanceOf(NotFoundError);
  });

  test('bad requests are 400 in OpenAI error shape', async () => {
    const cases: Array<[unknown, string | null]> = [
      [{ input: 'hi' }, 'model'],
      [{ model: 42, input: 'hi' }, 'model'],
      [{ model: 'mock-1' }, 'input'],
      [{ model: 'mock-1', input: 42 }, 'input'],
      [{ model: 'mock-1', input: [] }, 'input'],
      [{ model: 'mock-1', input: ['hi'] }, 'input[0]'],
      [{ model: 'mock-1', input: [{ role: 'wizard', content: 'hi' }] }, 'input[0].role'],
      [{ model: 'mock-1', input: [{ role: 'user', content: 7 }] }, 'input[0].content'],
      [{ model: 'mock-1', input: [{ role: 'user', content: [{ type: 'input_text' }] }] }, 'input[0].content[0].text'],
      [{ model: 'mock-1', input: 'hi', max_output_tokens: 0 }, 'max_output_tokens'],
      [{ model: 'mock-1', input: 'hi', max_output_tokens: 'many' }, 'max_output_tokens'],
      [{ model: 'mock-1', input: 'hi', stream: 'yes' }, 'stream'],
      [{ model: 'mock-1', input: 'hi', tools: {} }, 'tools'],
      [{ model: 'mock-1', input: 'hi', tools: [{ type: 'function' }] }, 'tools[0].name'],
      [{ model: 'mock-1', input: 'hi', instructions: 5 }, 'instructions'],
      [{ model: 'mock-1', input: 'hi', background: true, store: false }, 'background'],
      [[1, 2], null],
      ['null', null],
      ['{"model": "mock-1", "input": ', null],
    ];
    for (const [body, param] of cases) {
      const { status, json, contentType } = await post('/responses', body);
      expect({ body, status }).toEqual({ body, status: 400 });
      expect(contentType).toMatch(/^application\/json/);
      expectOpenAIError(json, param);
    }
    await expect(client.responses.create({ model: 'mock-1', input: 'hi', max_output_tokens: -1 })).rejects.toBeInstanceOf(BadRequestError);
  });

  describe('misbehaving models', () => {
    test('mock-429: 429 in OpenAI error shape, streamed or not', async () => {
      await expect(client.responses.create({ model: 'mock-429', input: 'hi', stream: true })).rejects.toBeInstanceOf(RateLimitError);
      const { status, json } = await post('/responses', { model: 'mock-429', input: 'hi' });
      expect(status).toBe(429);
      expect(json.error).toMatchObject({ code: 'rate_limit_exceeded', type: 'requests' });
    });

    test('mock-no-usage: usage null in the final response', async () => {
      const final = await client.responses.stream({ model: 'mock-no-usage', input: 'hi', max_output_tokens: 8 }).finalResponse();
      expect(final.status).toBe('incomplete');
      expect(final.output_text.split(' ')).toHaveLength(8);
      expect(final.usage).toBeNull();
    });

    test('mock-error: the connection drops after a few deltas; the SDK iteration throws', async () => {
      const stream = await client.responses.create({ model: 'mock-error', input: 'hi', stream: true });
      let deltas = 0;
      await expect(
        (async () => {
          for await (const event of stream) if (event.type === 'response.output_text.delta') deltas++;
        })(),
      ).rejects.toThrow();
      expect(deltas).toBe(4);
    });

    test('mock-garbage: invalid JSON mid-stream makes the SDK throw', async () => {
      await expect(client.responses.stream({ model: 'mock-garbage', input: 'hi' }).finalResponse()).rejects.toThrow();
    });

    test('mock-stall: silent after a few deltas (the client aborts)', async () => {
      const controller = new AbortController();
      const stream = await client.responses.create({ model: 'mock-stall', input: 'hi', stream: true }, { signal: controller.signal });
      const types: string[] = [];
      setTimeout(() => controller.abort(), 1000);
      for await (const event of stream) types.push(event.type); // ends quietly on abort
      expect(types.filter((t) => t === 'response.output_text.delta')).toHaveLength(4);
      expect(types).not.toContain('response.completed');
    });

    test('mock-fail: the Responses `error` event (raised by the SDK as an APIError), then response.failed', async () => {
      const stream = await client.responses.create({ model: 'mock-fail', input: 'hi', stream: true });
      let deltas = 0;
      const failure = await (async () => {
        try {
          for await (const event of stream) if (event.type === 'response.output_text.delta') deltas++;
        } catch (err) {
          return err;
        }
        return undefined;
      })();
      expect(deltas).toBe(4);
      expect(failure).toBeInstanceOf(APIError);
      expect((failure as APIError).code).toBe('server_error');
      await expect(client.responses.stream({ model: 'mock-fail', input: 'hi' }).finalResponse()).rejects.toBeInstanceOf(APIError);

      const { text } = await rawStream('/responses', { model: 'mock-fail', input: 'hi', stream: true });
      const blocks = text.split('\n\n').filter(Boolean);
      const error = JSON.parse(blocks[blocks.length - 2]!.split('\ndata: ')[1]!);
      expect(error).toMatchObject({ type: 'error', code: 'server_error', message: expect.any(String), param: null, error: { type: 'server_error', code: 'server_error' } });
      const failed = JSON.parse(blocks[blocks.length - 1]!.split('\ndata: ')[1]!);
      expect(failed.type).toBe('response.failed');
      expect(failed.response).toMatchObject({ status: 'failed', error: { code: 'server_error' }, usage: { output_tokens: 4 } });
      expect(failed.response.output[0].content[0].text.split(' ')).toHaveLength(4);
    });
  });
});

describe('POST /v1/completions', () => {
  test('non-streamed: text_completion, max_tokens 16 by default (finish_reason length), usage', async () => {
    const completion = await client.completions.create({ model: 'mock-1', prompt: 'Once upon a time' });
    expect(completion.id).toMatch(/^cmpl-/);
    expect(completion).toMatchObject({ object: 'text_completion', model: 'mock-1' });
    expect(completion.choices).toHaveLength(1);
    expect(completion.choices[0]).toMatchObject({ index: 0, logprobs: null, finish_reason: 'length' });
    expect(completion.choices[0]!.text).toMatch(/^ You said: "Once upon a time"\./);
    expect(completion.choices[0]!.text.trim().split(' ')).toHaveLength(16);
    expect(completion.usage).toEqual({ prompt_tokens: 4, completion_tokens: 16, total_tokens: 20 });

    const whole = await client.completions.create({ model: 'mock-1', prompt: ['one', 'two'], n: 2, max_tokens: 500 });
    expect(whole.choices.map((c) => [c.index, c.finish_reason])).toEqual([
      [0, 'stop'],
      [1, 'stop'],
      [2, 'stop'],
      [3, 'stop'],
    ]);
    expect(whole.choices[2]!.text).toMatch(/^ You said: "two"\./);
  });

  test('streamed: text chunks, a final chunk with finish_reason, the usage chunk (choices []) and [DONE]', async () => {
    const stream = await client.completions.create({ model: 'mock-1', prompt: 'Hi', max_tokens: 10, stream: true, stream_options: { include_usage: true } });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    const usageChunk = chunks[chunks.length - 1]!;
    expect(usageChunk.choices).toEqual([]);
    expect(usageChunk.usage).toEqual({ prompt_tokens: 1, completion_tokens: 10, total_tokens: 11 });
    const finish = chunks[chunks.length - 2]!;
    expect(finish.choices).toEqual([{ text: '', index: 0, logprobs: null, finish_reason: 'length' }]);
    const texts = chunks.slice(0, -2);
    expect(texts).toHaveLength(10);
    for (const chunk of texts) {
      expect(chunk).toMatchObject({ object: 'text_completion', model: 'mock-1', usage: null });
      expect(chunk.choices).toEqual([{ text: expect.stringMatching(/^ \S+$/), index: 0, logprobs: null, finish_reason: null }]);
      expect(chunk.id).toBe(usageChunk.id);
    }
    expect(texts.map((c) => c.choices[0]!.text).join('')).toMatch(/^ You said: "Hi"\. Streaming/);

    const raw = await rawStream('/completions', { model: 'mock-1', prompt: 'Hi', max_tokens: 3, stream: true });
    expect(raw.contentType).toMatch(/^text\/event-stream/);
    expect(raw.text.endsWith('data: [DONE]\n\n')).toBe(true);
    expect(raw.text).not.toContain('"usage"'); // no include_usage, no usage
  });

  test('bad requests are 400; mock-429 is 429; mock-no-usage has no usage', async () => {
    const cases: Array<[unknown, string]> = [
      [{ prompt: 'hi' }, 'model'],
      [{ model: 'mock-1' }, 'prompt'],
      [{ model: 'mock-1', prompt: {} }, 'prompt'],
      [{ model: 'mock-1', prompt: [] }, 'prompt'],
      [{ model: 'mock-1', prompt: ['a', 1] }, 'prompt'],
      [{ model: 'mock-1', prompt: 'hi', max_tokens: 1.5 }, 'max_tokens'],
      [{ model: 'mock-1', prompt: 'hi', n: 0 }, 'n'],
    ];
    for (const [body, param] of cases) {
      const { status, json } = await post('/completions', body);
      expect({ body, status }).toEqual({ body, status: 400 });
      expectOpenAIError(json, param);
    }
    await expect(client.completions.create({ model: 'mock-429', prompt: 'hi' })).rejects.toBeInstanceOf(RateLimitError);
    const noUsage = await client.completions.create({ model: 'mock-no-usage', prompt: 'hi' });
    expect(noUsage.usage).toBeUndefined();
  });
});

describe('POST /v1/embeddings', () => {
  const norm = (v: number[]): number => Math.sqrt(v.reduce((sum, x) => sum + x * x, 0));

  test('float and base64 (the SDK default, decoded by it) give the same deterministic unit vectors', async () => {
    const float = await client.embeddings.create({ model: 'mock-embed', input: ['hello', 'world'], encoding_format: 'float', dimensions: 16 });
    expect(float).toMatchObject({ object: 'list', model: 'mock-embed', usage: { prompt_tokens: 4, total_tokens: 4 } });
    expect(float.data.map((d) => [d.object, d.index, d.embedding.length])).toEqual([
      ['embedding', 0, 16],
      ['embedding', 1, 16],
    ]);
    for (const d of float.data) expect(norm(d.embedding)).toBeCloseTo(1, 5);
    expect(float.data[0]!.embedding).not.toEqual(float.data[1]!.embedding);

    const decoded = await client.embeddings.create({ model: 'mock-embed', input: ['hello', 'world'], dimensions: 16 });
    expect(decoded.data.map((d) => d.embedding)).toEqual(float.data.map((d) => d.embedding));

    // on the wire the default really is base64 of little-endian float32
    const raw = await post('/embeddings', { model: 'mock-embed', input: 'hello', encoding_format: 'base64', dimensions: 16 });
    const bytes = Buffer.from(raw.json.data[0].embedding, 'base64');
    expect(bytes).toHaveLength(64);
    expect(Array.from({ length: 16 }, (_, i) => bytes.readFloatLE(i * 4))).toEqual(float.data[0]!.embedding);
  });

  test('dimensions: 8 by default, up to 3072; a shorter vector is a rescaled prefix; token inputs work', async () => {
    const small = await client.embeddings.create({ model: 'mock-embed', input: 'hello' });
    expect(small.data[0]!.embedding).toHaveLength(8);
    const large = await client.embeddings.create({ model: 'mock-embed', input: 'hello', dimensions: 3072 });
    expect(large.data[0]!.embedding).toHaveLength(3072);
    expect(norm(large.data[0]!.embedding)).toBeCloseTo(1, 4);
    const prefix = large.data[0]!.embedding.slice(0, 8);
    const scaled = prefix.map((x) => x / norm(prefix));
    small.data[0]!.embedding.forEach((x, i) => expect(x).toBeCloseTo(scaled[i]!, 5));

    const tokens = await client.embeddings.create({ model: 'mock-embed', input: [[1, 2, 3], [4]], encoding_format: 'float' });
    expect(tokens.data).toHaveLength(2);
    expect(tokens.usage).toEqual({ prompt_tokens: 4, total_tokens: 4 });
  });

  test('bad requests are 400; mock-429 is 429; mock-no-usage has no usage', async () => {
    const cases: Array<[unknown, string]> = [
      [{ input: 'hi' }, 'model'],
      [{ model: 'mock-embed' }, 'input'],
      [{ model: 'mock-embed', input: '' }, 'input'],
      [{ model: 'mock-embed', input: [] }, 'input'],
      [{ model: 'mock-embed', input: [{}] }, 'input'],
      [{ model: 'mock-embed', input: Array.from({ length: 2049 }, () => 'x') }, 'input'],
      [{ model: 'mock-embed', input: 'hi', encoding_format: 'hex' }, 'encoding_format'],
      [{ model: 'mock-embed', input: 'hi', dimensions: 0 }, 'dimensions'],
      [{ model: 'mock-embed', input: 'hi', dimensions: 3073 }, 'dimensions'],
    ];
    for (const [body, param] of cases) {
      const { status, json } = await post('/embeddings', body);
      expect({ param, status }).toEqual({ param, status: 400 });
      expectOpenAIError(json, param);
    }
    await expect(client.embeddings.create({ model: 'mock-429', input: 'hi' })).rejects.toBeInstanceOf(RateLimitError);
    const noUsage = await client.embeddings.create({ model: 'mock-no-usage', input: 'hi' });
    expect(noUsage.usage).toBeUndefined();
    expect(noUsage.data[0]!.embedding).toHaveLength(8);
  });
});

test('GET /v1/models lists the chat models and the embedding model', async () => {
  const ids: string[] = [];
  for await (const model of client.models.list()) ids.push(model.id);
  expect(ids).toEqual(expect.arrayContaining(['mock-1', 'mock-slow', 'mock-error', 'mock-garbage', 'mock-429', 'mock-stall', 'mock-no-usage', 'mock-embed']));
});

test('chat completions are unchanged: the same words, usage only with include_usage', async () => {
  const completion = await client.chat.completions.create({ model: 'mock-1', messages: [{ role: 'user', content: 'Write a haiku' }] });
  const response: OpenAIResponse = await client.responses.create({ model: 'mock-1', input: 'Write a haiku' });
  expect(completion.choices[0]!.message.content).toBe(response.output_text);
});
