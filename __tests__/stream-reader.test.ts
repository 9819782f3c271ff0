import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { GatewayStreamError, readGatewayStream, type GatewayStreamResult, type ToolCall } from '../lib';
import { createApp } from '../example-app/app';
import { startMockProvider, type MockProvider } from '../example-app/mock-provider';

// ---------------------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------------------

const enc = new TextEncoder();
const BASE = { id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1, model: 'm' };

/** `data: <json>\n\n` for a chunk, or for `[DONE]` / raw text when given a string. */
const ev = (data: unknown, eol = '\n'): string => `data: ${typeof data === 'string' ? data : JSON.stringify(data)}${eol}${eol}`;
const content = (text: string): Record<string, unknown> => ({ ...BASE, choices: [{ index: 0, delta: { content: text }, finish_reason: null }] });
const finish = (reason: string): Record<string, unknown> => ({ ...BASE, choices: [{ index: 0, delta: {}, finish_reason: reason }] });
const USAGE = { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 };
const gatewayChunk = (credits: number): Record<string, unknown> => ({ ...BASE, choices: [], usage: USAGE, credits_used: credits });

/** A web ReadableStream (as fetch's response.body) that yields the given byte chunks. */
function webStream(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (i < chunks.length) controller.enqueue(chunks[i++]!);
      else controller.close();
    },
  });
}

/** A plain async iterable of the chunks (as a Node IncomingMessage is). */
async function* iterable(chunks: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const c of chunks) yield c;
}

/** Splits bytes at the given offsets. */
function splitAt(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const cut of [...cuts, bytes.length]) {
    out.push(bytes.subarray(prev, cut));
    prev = cut;
  }
  return out;
}

const SAMPLE_TEXT = 'Héllo wörld — 🌍 "quoted"\nnew line';
/** A full gateway stream with multi-byte UTF-8, a comment, a provider usage chunk, the gateway chunk and [DONE]. */
function sample(eol: string): string {
  return (
    `: keep-alive${eol}${eol}` +
    ev({ ...BASE, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] }, eol) +
    ev(content('Héllo wörld'), eol) +
    `: keep-alive${eol}${eol}` +
    ev(content(' — 🌍 "quoted"\nnew line'), eol) +
    ev(finish('stop'), eol) +
    ev({ ...BASE, choices: [], usage: USAGE }, eol) +
    ev(gatewayChunk(1.25), eol) +
    ev('[DONE]', eol)
  );
}
const SAMPLE_RESULT: GatewayStreamResult = {
  id: 'chatcmpl-1',
  text: SAMPLE_TEXT,
  toolCalls: [],
  finishReason: 'stop',
  usage: USAGE,
  creditsUsed: 1.25,
  done: true,
};

// ---------------------------------------------------------------------------------------------------------
// parsing across chunk boundaries
// ---------------------------------------------------------------------------------------------------------

describe('readGatewayStream: an event split across network chunks', () => {
  test.each([
    ['LF', '\n'],
    ['CRLF', '\r\n'],
    ['CR', '\r'],
  ])('%s sample split in two at every byte boundary gives the same result', async (_name, eol) => {
    const bytes = enc.encode(sample(eol));
    for (let cut = 0; cut <= bytes.length; cut++) {
      const result = await readGatewayStream(webStream(splitAt(bytes, [cut])));
      if (JSON.stringify(result) !== JSON.stringify(SAMPLE_RESULT)) {
        // name the failing boundary instead of a bare diff
        expect({ cut, result }).toEqual({ cut, result: SAMPLE_RESULT });
      }
    }
  });

  test.each([
    ['a web ReadableStream', (c: Uint8Array[]) => webStream(c)],
    ['an async iterable', (c: Uint8Array[]) => iterable(c)],
  ])('one byte per chunk, read from %s', async (_name, make) => {
    const bytes = enc.encode(sample('\r\n'));
    const chunks = Array.from({ length: bytes.length }, (_, i) => bytes.subarray(i, i + 1));
    expect(await readGatewayStream(make(chunks))).toEqual(SAMPLE_RESULT);
  });

  test('onText is called once per content delta, with the text so far', async () => {
    const bytes = enc.encode(sample('\n'));
    const calls: Array<[string, string]> = [];
    const chunks: object[] = [];
    await readGatewayStream(webStream(splitAt(bytes, [7, 50, 51, 200])), {
      onText: (delta, text) => calls.push([delta, text]),
      onChunk: (c) => chunks.push(c),
    });
    expect(calls).toEqual([
      ['Héllo wörld', 'Héllo wörld'],
      [' — 🌍 "quoted"\nnew line', SAMPLE_TEXT],
    ]);
    expect(chunks).toHaveLength(6); // [DONE] and comments are not chunks
    expect(chunks[5]).toMatchObject({ credits_used: 1.25 });
  });
});

// ---------------------------------------------------------------------------------------------------------
// table of stream shapes
// ---------------------------------------------------------------------------------------------------------

interface Case {
  name: string;
  raw: string;
  expected: Partial<GatewayStreamResult>;
  /** Also check that these keys are absent from the result. */
  absent?: Array<keyof GatewayStreamResult>;
}

const CASES: Case[] = [
  {
    name: 'comments anywhere: before, between and inside an event',
    raw: `: hello\n\n: keep-alive\ndata: ${JSON.stringify(content('a'))}\n\n:x\n\n${ev(content('b'))}: keep-alive\n\n${ev('[DONE]')}`,
    expected: { text: 'ab', done: true },
  },
  {
    name: 'multi-line data: lines joined with \\n',
    raw: `data: {"id":"x","choices":[{"index":0,\ndata: "delta":{"content":"multi"}}]}\n\n${ev('[DONE]')}`,
    expected: { id: 'x', text: 'multi', done: true },
  },
  {
    name: '"data:" without a space, "event:" and "id:" fields ignored',
    raw: `id: 7\nevent: message\ndata:${JSON.stringify(content('tight'))}\n\ndata:[DONE]\n\n`,
    expected: { text: 'tight', done: true },
  },
  {
    name: 'no [DONE] and no error: resolves with done false',
    raw: ev(content('Hello')) + ev(content(' there')) + ev(finish('length')),
    expected: { text: 'Hello there', finishReason: 'length', done: false },
    absent: ['creditsUsed', 'usage'],
  },
  {
    name: 'a last event without its blank line is incomplete and dropped',
    raw: `${ev(content('kept'))}data: ${JSON.stringify(content(' dropped'))}\n`,
    expected: { text: 'kept', done: false },
  },
  {
    name: 'events after [DONE] are not read',
    raw: ev(content('x')) + ev('[DONE]') + ev(content('after')),
    expected: { text: 'x', done: true },
  },
  {
    name: 'choices other than index 0 are not mixed into the text',
    raw: ev({ ...BASE, choices: [{ index: 1, delta: { content: 'other' } }, { index: 0, delta: { content: 'zero' } }] }) + ev('[DONE]'),
    expected: { text: 'zero', done: true },
  },
  {
    name: 'the gateway chunk: usage (last one wins) and credits_used',
    raw: ev({ ...BASE, choices: [], usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } }) + ev({ ...gatewayChunk(0.004), usage: { ...USAGE, estimated: true } }) + ev('[DONE]'),
    expected: { usage: { ...USAGE, estimated: true }, creditsUsed: 0.004, done: true },
  },
  {
    name: 'an empty body',
    raw: '',
    expected: { text: '', toolCalls: [], finishReason: null, done: false },
  },
];

describe('readGatewayStream: stream shapes', () => {
  test.each(CASES.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const bytes = enc.encode(c.raw);
    // and split in the middle, to be sure nothing depends on one network chunk
    const result = await readGatewayStream(webStream(splitAt(bytes, [Math.floor(bytes.length / 2)])));
    expect(result).toMatchObject(c.expected);
    for (const key of c.absent ?? []) expect(result[key]).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------------------
// tool calls
// ---------------------------------------------------------------------------------------------------------

describe('readGatewayStream: tool calls', () => {
  const tc = (parts: unknown[]): Record<string, unknown> => ({ ...BASE, choices: [{ index: 0, delta: { tool_calls: parts }, finish_reason: null }] });
  const RAW =
    ev(tc([{ index: 0, id: 'call_a', type: 'function', function: { name: 'get_weather', arguments: '' } }])) +
    ev(tc([{ index: 1, id: 'call_b', type: 'function', function: { name: 'get_time', arguments: '{"tz"' } }])) +
    ev(tc([{ index: 0, function: { arguments: '{"loca' } }])) +
    ev(tc([{ index: 1, function: { arguments: ':"UTC"}' } }, { index: 0, function: { arguments: 'tion":"Paris"' } }])) +
    ev(tc([{ index: 0, function: { arguments: '}' } }])) +
    ev(finish('tool_calls')) +
    ev(gatewayChunk(0.5)) +
    ev('[DONE]');
  const EXPECTED: ToolCall[] = [
    { index: 0, id: 'call_a', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Paris"}' } },
    { index: 1, id: 'call_b', type: 'function', function: { name: 'get_time', arguments: '{"tz":"UTC"}' } },
  ];

  test('two interleaved indexes are assembled separately, sorted by index', async () => {
    const snapshots: ToolCall[][] = [];
    const result = await readGatewayStream(webStream([enc.encode(RAW)]), { onToolCalls: (calls) => snapshots.push(calls) });
    expect(result.toolCalls).toEqual(EXPECTED);
    expect(result.text).toBe('');
    expect(result.finishReason).toBe('tool_calls');
    expect(result.creditsUsed).toBe(0.5);
    expect(JSON.parse(result.toolCalls[0]!.function.arguments)).toEqual({ location: 'Paris' });
    // onToolCalls after each tool delta, with copies that show the arguments growing
    expect(snapshots).toHaveLength(5);
    expect(snapshots[2]!.map((c) => c.function.arguments)).toEqual(['{"loca', '{"tz"']);
    expect(snapshots[4]).toEqual(EXPECTED);
  });

  test('the same stream split at every 7th byte', async () => {
    const bytes = enc.encode(RAW);
    const cuts = Array.from({ length: Math.floor(bytes.length / 7) }, (_, i) => (i + 1) * 7);
    expect((await readGatewayStream(iterable(splitAt(bytes, cuts)))).toolCalls).toEqual(EXPECTED);
  });
});

// ---------------------------------------------------------------------------------------------------------
// failures
// ---------------------------------------------------------------------------------------------------------

describe('readGatewayStream: failures', () => {
  const ERROR_EVENT = {
    error: { message: 'The connection to the upstream provider was lost mid-stream.', type: 'upstream_error', code: 'upstream_connection_lost' },
    choices: [{ index: 0, delta: {}, finish_reason: 'error' }],
  };

  test('an error event rejects with GatewayStreamError carrying code, type and the partial text', async () => {
    const raw = ev(content('Partial')) + ': keep-alive\n\n' + ev(content(' answer')) + ev(ERROR_EVENT);
    const texts: string[] = [];
    const err = await readGatewayStream(webStream(splitAt(enc.encode(raw), [30])), { onText: (_d, t) => texts.push(t) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GatewayStreamError);
    expect(err).toBeInstanceOf(Error);
    const e = err as GatewayStreamError;
    expect(e.name).toBe('GatewayStreamError');
    expect(e.message).toBe(ERROR_EVENT.error.message);
    expect(e.code).toBe('upstream_connection_lost');
    expect(e.type).toBe('upstream_error');
    expect(e.partial).toMatchObject({ id: 'chatcmpl-1', text: 'Partial answer', done: false, finishReason: 'error' });
    expect(texts).toEqual(['Partial', 'Partial answer']);
  });

  test('an error event with the provider code, as the only event', async () => {
    const raw = ev({ error: { message: 'overloaded', type: 'server_error', code: 'overloaded' } });
    await expect(readGatewayStream(iterable([enc.encode(raw)]))).rejects.toMatchObject({
      name: 'GatewayStreamError',
      code: 'overloaded',
      type: 'server_error',
      partial: { text: '', done: false },
    });
  });

  test('a chunk that is not JSON rejects with code invalid_stream_chunk', async () => {
    const raw = ev(content('ok')) + 'data: {"choices": [{"delta": {"content": "oops\n\n';
    await expect(readGatewayStream(webStream([enc.encode(raw)]))).rejects.toMatchObject({
      name: 'GatewayStreamError',
      code: 'invalid_stream_chunk',
      partial: { text: 'ok' },
    });
  });

  test('an error of the body itself (e.g. an abort) is rethrown as it is', async () => {
    const abort = new DOMException('The operation was aborted.', 'AbortError');
    let sent = false;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (!sent) {
          sent = true;
          controller.enqueue(enc.encode(ev(content('so far'))));
        } else controller.error(abort);
      },
    });
    const seen: string[] = [];
    await expect(readGatewayStream(body, { onText: (_d, t) => seen.push(t) })).rejects.toBe(abort);
    expect(seen).toEqual(['so far']);
  });

  test('leaving at [DONE] cancels the rest of a web stream', async () => {
    let cancelled = false;
    let pulls = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulls++;
        controller.enqueue(enc.encode(pulls === 1 ? ev(content('x')) + ev('[DONE]') : ': keep-alive\n\n'));
      },
      cancel() {
        cancelled = true;
      },
    });
    expect(await readGatewayStream(body)).toMatchObject({ text: 'x', done: true });
    await new Promise((r) => setImmediate(r));
    expect(cancelled).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------------------
// against the real example gateway
// ---------------------------------------------------------------------------------------------------------

describe('readGatewayStream against the example gateway', () => {
  const KEY = 'reader-key';
  let mock: MockProvider;
  let server: http.Server;
  let url: string;
  let created: ReturnType<typeof createApp>;

  beforeAll(async () => {
    mock = await startMockProvider();
    created = createApp({ upstreamURL: mock.url, apiKeys: { [KEY]: 100 } });
    server = http.createServer(created.app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    created.gateway.close();
    await mock.close();
  });

  test('fetch + readGatewayStream(response.body): text, [DONE], and credits_used equal to GET /v1/credits used', async () => {
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'mock-1', stream: true, messages: [{ role: 'user', content: 'Write a haiku about TCP' }] }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const deltas: string[] = [];
    const result = await readGatewayStream(res.body!, { onText: (delta) => deltas.push(delta) });

    expect(result.done).toBe(true);
    expect(result.finishReason).toBe('stop');
    expect(result.text).toMatch(/^You said: "Write a haiku about TCP"\. Streaming lets a reader/);
    expect(deltas.length).toBeGreaterThan(10);
    expect(deltas.join('')).toBe(result.text);
    expect(result.id).toMatch(/^chatcmpl-mock/);
    expect(result.usage).toMatchObject({ prompt_tokens: expect.any(Number), completion_tokens: deltas.length });
    expect(typeof result.creditsUsed).toBe('number');
    expect(result.creditsUsed).toBeGreaterThan(0);

    const credits = (await (await fetch(`${url}/v1/credits`, { headers: { authorization: `Bearer ${KEY}` } })).json()) as { data: { balance: number; used: number } };
    expect(credits.data.used).toBe(result.creditsUsed);
    expect(credits.data.balance).toBeCloseTo(100 - result.creditsUsed!, 6);
  });
});
