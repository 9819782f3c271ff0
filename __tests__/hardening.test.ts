import zlib from 'node:zlib';
import http from 'node:http';
import { createApp } from '../example-app/app';
import { BASE, contentChunk, ScriptedProvider, textSteps, type Step } from './helpers/provider';
import { KEY, startGateway, UPSTREAM_KEY, withGateway as withGatewayOn, type TestGateway } from './helpers/gateway';
import { jsonEvents, postStream, waitFor } from './helpers/sse-client';
import { zstdSupported } from '../lib/base/content-encoding';

/** zstd where this Node's zlib has it (22.15+, 24), in the same shape as zlib.gzipSync. */
type ZstdZlib = { zstdCompressSync: (b: Buffer | string, o?: { params?: Record<number, number> }) => Buffer; constants: Record<string, number> };
const zstd = zlib as unknown as ZstdZlib;
const zstdCompress = (b: Buffer | string): Buffer => zstd.zstdCompressSync(b, { params: { [zstd.constants.ZSTD_c_contentSizeFlag!]: 0 } });
const withZstd = zstdSupported ? test : test.skip;
if (!zstdSupported) console.log(`skipped: the zstd tests, Node ${process.versions.node}'s zlib has no zstd`);

const chat = { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] };

let provider: ScriptedProvider;
beforeAll(async () => {
  provider = await new ScriptedProvider().start();
});
afterAll(() => provider.stop());

const withGateway = (overrides: Parameters<typeof startGateway>[1], run: (gw: TestGateway) => Promise<void>): Promise<void> =>
  withGatewayOn(provider.url, overrides ?? {}, run);

/** The error chunk's code at the end of a stream. */
const lastError = (events: string[]): string | undefined => (JSON.parse(events.at(-1)!) as { error?: { code: string } }).error?.code;

describe('no endless streams', () => {
  test('SSE comments are not upstream activity: a provider that only sends comments hits the idle timeout', async () => {
    const comments: Step[] = Array.from({ length: 40 }, () => [{ raw: ': still here\n\n' }, { wait: 100 }] as Step[]).flat();
    provider.reply = () => ({ steps: [{ data: contentChunk('a') }, ...comments] });
    await withGateway({ idleTimeout: 400 }, async (gw) => {
      const result = await postStream(gw.url, chat);
      expect(lastError(result.events)).toBe('upstream_timeout');
      expect(result.times.at(-1)!).toBeLessThan(3000); // the comments went on for 4 s
      await waitFor(() => gw.meterCalls.length === 1, 2000, 'meter');
      expect(gw.meterCalls[0]!.outcome).toBe('failed');
      await waitFor(() => provider.last.closedEarlyAt !== undefined, 2000, 'the upstream to be aborted');
    });
  });

  test('a provider that streams forever is ended at maxDuration with an error chunk, metered once', async () => {
    const forever: Step[] = Array.from({ length: 200 }, (_, i) => [{ data: contentChunk(` w${i}`) }, { wait: 50 }] as Step[]).flat();
    provider.reply = () => ({ steps: forever });
    await withGateway({ maxDuration: 500 }, async (gw) => {
      const result = await postStream(gw.url, chat);
      expect(lastError(result.events)).toBe('max_duration_exceeded');
      expect(result.events.length).toBeGreaterThan(3);
      await waitFor(() => gw.meterCalls.length === 1, 2000, 'meter');
      expect(gw.meterCalls[0]).toMatchObject({ outcome: 'failed', error: expect.objectContaining({ code: 'max_duration_exceeded' }) });
      await waitFor(() => provider.last.closedEarlyAt !== undefined, 2000, 'the upstream to be aborted');
    });
  });

  test('a client that accepts no data for writeTimeout while the gateway has some is treated as gone', async () => {
    const big = 'x'.repeat(256 * 1024);
    const flood: Step[] = Array.from({ length: 160 }, () => ({ data: contentChunk(big) })); // ~40 MiB, more than the socket buffers hold
    provider.reply = () => ({ steps: [...flood, ...textSteps([])] });
    await withGateway({ writeTimeout: 400 }, async (gw) => {
      const port = Number(new URL(gw.url).port);
      const body = JSON.stringify(chat);
      // a client that never reads: it cannot even notice the close until it reads, so the test watches the gateway
      const req = http.request({ host: '127.0.0.1', port, path: '/v1/chat/completions', method: 'POST', agent: false, headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => res.pause());
      req.on('error', () => undefined);
      req.end(body);
      try {
        await waitFor(() => gw.logs.some((l) => l.msg === 'infery-stream client stopped reading; treated as gone'), 8000, 'the gateway to drop the client');
      } finally {
        req.destroy();
      }
      await waitFor(() => gw.meterCalls.length === 1, 3000, 'meter');
      expect(gw.meterCalls[0]).toMatchObject({ outcome: 'cancelled' });
      // (the provider wrote everything into its socket buffers already, so it cannot tell an early close apart)
      expect(gw.logs.some((l) => l.msg === 'infery-stream client disconnected; upstream request aborted')).toBe(true);
      expect(gw.gateway.inFlight).toBe(0);
    });
  });
});

describe('bounded upstream events', () => {
  test.each([
    ['one data line', (n: number): Step[] => [{ raw: `data: {"id":"x","choices":[{"index":0,"delta":{"content":"${'y'.repeat(n)}"}}]}\n\n` }]],
    ['a never-ending event trickled in pieces', (n: number): Step[] => [{ raw: 'data: {"a":"' }, ...Array.from({ length: 8 }, () => ({ raw: 'z'.repeat(n / 4) }))]],
    ['many data lines of one event', (n: number): Step[] => Array.from({ length: 8 }, () => ({ raw: `data: ${'q'.repeat(n / 4)}\n` }))],
  ])('an upstream event over maxEventBytes (%s) ends the stream with upstream_event_too_large, metered once', async (_name, steps) => {
    provider.reply = () => ({ steps: [{ data: contentChunk('before') }, ...steps(1024 * 1024), { hang: true }] });
    await withGateway({ maxEventBytes: 512 * 1024 }, async (gw) => {
      const result = await postStream(gw.url, chat);
      expect(jsonEvents(result)[0]).toMatchObject({ id: BASE.id });
      expect(lastError(result.events)).toBe('upstream_event_too_large');
      await waitFor(() => gw.meterCalls.length === 1, 2000, 'meter');
      expect(gw.meterCalls[0]!.outcome).toBe('failed');
      await waitFor(() => provider.last.closedEarlyAt !== undefined, 2000, 'the upstream to be aborted');
    });
  });

  test('events split across reads, with CRLF line endings, are not mistaken for one big event', async () => {
    const words = Array.from({ length: 60 }, (_, i) => ` word${i}`);
    const crlf = words.map((w) => ({ raw: `data: ${JSON.stringify(contentChunk(w))}\r\n\r\n` }));
    provider.reply = () => ({ steps: [...crlf, ...textSteps([]).slice(1)] });
    await withGateway({ maxEventBytes: 200 }, async (gw) => {
      const result = await postStream(gw.url, chat);
      expect(result.events.at(-1)).toBe('[DONE]');
      expect(jsonEvents(result).filter((c) => Array.isArray(c.choices) && (c.choices as unknown[]).length > 0).length).toBe(61);
    });
  });
});

describe('nothing in the request path can end the process', () => {
  const throwing = (): never => {
    throw new Error('logger down');
  };

  test('a logger whose every method throws: streams, refusals and pass-through still answer', async () => {
    provider.reply = (req) => (req.method === 'GET' ? { json: { object: 'list', data: [] } } : { steps: textSteps(['Hello']) });
    await withGateway({ logger: { info: throwing, warn: throwing, error: throwing, debug: throwing } }, async (gw) => {
      const result = await postStream(gw.url, chat);
      expect(result.events.at(-1)).toBe('[DONE]');
      expect(jsonEvents(result).at(-1)).toHaveProperty('credits_used');
      const models = await fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${KEY}` } });
      expect(models.status).toBe(200);
      const refused = await fetch(`${gw.url}/v1/nope`, { headers: { authorization: `Bearer ${KEY}` } });
      expect(refused.status).toBe(404);
    });
  });

  test.each<[string, (text: string) => number]>([
    ['throws', () => { throw new Error('tokenizer down'); }],
    ['returns NaN', () => NaN],
    ['returns a negative number', () => -3],
  ])('a countTokens that %s is contained: the request is served and estimated at a token per 3 bytes', async (_name, countTokens) => {
    provider.reply = () => ({ steps: [...textSteps(['Hello', ' world'], { usage: false, done: false }), { data: '[DONE]' }] });
    await withGateway({ countTokens }, async (gw) => {
      const result = await postStream(gw.url, chat);
      expect(result.events.at(-1)).toBe('[DONE]');
      expect(gw.meterCalls[0]!.usage).toMatchObject({ completion_tokens: Math.ceil('Hello world'.length / 3), estimated: true });
      expect(gw.logs.filter((l) => String(l.msg).includes('countTokens failed'))).toHaveLength(1);
    });
  });

  test.each([false, true])('a body nested 20,000 levels deep is a 400 invalid_json, never a 500 (host ran express.json(): %s)', async (json) => {
    const gw = await startGateway(provider.url, {}, { json });
    try {
      const deep = `{"model":"m","messages":[{"role":"user","content":${'['.repeat(20_000)}${']'.repeat(20_000)}}]}`;
      const res = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body: deep });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('invalid_json');
    } finally {
      await gw.close();
    }
  });

  test('tool_calls nested 4,100 deep from the provider, then a bad chunk: an error chunk, metered once, the process lives', async () => {
    const deep = `${'['.repeat(4100)}${']'.repeat(4100)}`;
    provider.reply = () => ({
      steps: [
        { raw: `data: {"id":"x","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{}"},"extra":${deep}}]}}]}\n\n` },
        { raw: 'data: {not json\n\n' },
      ],
    });
    await withGateway({}, async (gw) => {
      const result = await postStream(gw.url, chat);
      expect(lastError(result.events)).toBe('upstream_invalid_response');
      await waitFor(() => gw.meterCalls.length === 1, 2000, 'meter');
      expect(gw.meterCalls[0]!.outcome).toBe('failed');
    });
  });
});

describe('a provider that ignores stream: true, or compresses', () => {
  const completion = {
    id: 'chatcmpl-json9', object: 'chat.completion', created: 1_700_000_001, model: 'test-model',
    choices: [{ index: 0, message: { role: 'assistant', content: 'Hello there', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'f', arguments: '{"a":1}' } }] }, finish_reason: 'tool_calls' }],
    usage: { prompt_tokens: 9, completion_tokens: 4, total_tokens: 13 },
  };

  test('a 200 JSON completion to a streaming request is relayed as a proper stream', async () => {
    provider.reply = () => ({ json: completion });
    await withGateway({}, async (gw) => {
      const result = await postStream(gw.url, chat);
      expect(result.headers['content-type']).toMatch(/^text\/event-stream/);
      const chunks = jsonEvents(result);
      expect(result.events.at(-1)).toBe('[DONE]');
      expect(chunks[0]).toMatchObject({ id: 'chatcmpl-json9', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { role: 'assistant', content: 'Hello there', tool_calls: [{ index: 0, id: 'call_1', function: { name: 'f', arguments: '{"a":1}' } }] }, finish_reason: null }] });
      expect(chunks[1]).toMatchObject({ choices: [{ index: 0, delta: {}, finish_reason: 'tool_calls' }] });
      expect(chunks[2]).toMatchObject({ choices: [], usage: completion.usage });
      expect(chunks[3]).toMatchObject({ id: 'chatcmpl-json9', choices: [], usage: completion.usage, credits_used: 13 });
      expect(gw.meterCalls).toHaveLength(1);
      expect(gw.meterCalls[0]).toMatchObject({ outcome: 'completed', usage: completion.usage });
    });
  });

  /** A provider that answers every request with `body` as given (bytes), for compressed answers. */
  async function rawProvider(reply: () => { headers: Record<string, string>; body: Buffer }): Promise<{ url: string; close: () => Promise<void> }> {
    const server = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        const { headers, body } = reply();
        res.writeHead(200, headers);
        res.end(body);
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return {
      url: `http://127.0.0.1:${(server.address() as { port: number }).port}/v1`,
      close: () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))),
    };
  }
  const sse = textSteps(['Hello', ' world'])
    .map((step) => `data: ${typeof (step as { data: unknown }).data === 'string' ? (step as { data: string }).data : JSON.stringify((step as { data: unknown }).data)}\n\n`)
    .join('');

  const encoders: Array<[string, (b: Buffer) => Buffer]> = [
    ['gzip', (b) => zlib.gzipSync(b)],
    ['deflate', (b) => zlib.deflateSync(b)],
    ['br', (b) => zlib.brotliCompressSync(b)],
    ...(zstdSupported ? [['zstd', zstdCompress] as [string, (b: Buffer) => Buffer]] : []),
  ];
  test.each(encoders)('a %s-compressed stream is decoded as it arrives', async (encoding, compress) => {
    const raw = await rawProvider(() => ({ headers: { 'content-type': 'text/event-stream', 'content-encoding': encoding }, body: compress(Buffer.from(sse)) }));
    const gw = await startGateway(raw.url);
    try {
      const result = await postStream(gw.url, chat);
      expect(result.events.at(-1)).toBe('[DONE]');
      expect(jsonEvents(result).at(-1)).toMatchObject({ credits_used: 14 });
    } finally {
      await gw.close();
      await raw.close();
    }
  });

  test('a gzip-compressed JSON answer is decoded; corrupt data and an unknown encoding are 502s', async () => {
    let reply = { headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' }, body: zlib.gzipSync(JSON.stringify(completion)) };
    const raw = await rawProvider(() => reply);
    const gw = await startGateway(raw.url);
    const post = (body: object) => fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    try {
      const ok = await post({ ...chat, stream: false });
      expect(ok.status).toBe(200);
      expect(((await ok.json()) as { credits_used: number }).credits_used).toBe(13);
      reply = { headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' }, body: Buffer.from('not gzip at all') };
      const corrupt = await post({ ...chat, stream: false });
      expect(corrupt.status).toBe(502);
      reply = { headers: { 'content-type': 'text/event-stream', 'content-encoding': 'zstd-ish' }, body: Buffer.from('xx') };
      const unknown = await post(chat);
      expect(unknown.status).toBe(502);
      expect(((await unknown.json()) as { error: { code: string } }).error.code).toBe('upstream_invalid_response');
    } finally {
      await gw.close();
      await raw.close();
    }
  });
});

describe('bad framing gets a quick, clear answer', () => {
  /** Sends headers (and `body` if given) over a raw socket; resolves with the status and how long it took. */
  function rawPost(url: string, headers: Record<string, string>, body?: Buffer): Promise<{ status: number; ms: number; text: string; connection?: string }> {
    const started = Date.now();
    return new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: Number(new URL(url).port), path: '/v1/chat/completions', method: 'POST', agent: false, headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', ...headers } }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          resolve({ status: res.statusCode ?? 0, ms: Date.now() - started, text, connection: res.headers.connection });
          req.destroy();
        });
      });
      req.on('error', (err) => ((err as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(err)));
      req.setTimeout(5000, () => req.destroy(new Error('no answer within 5 s')));
      if (body) req.write(body);
      req.flushHeaders();
    });
  }

  // (a host that runs express.json() first answers such a request itself, after reading the whole body: the
  // example app puts a Content-Length guard before its parser; see the next test)
  test('a Content-Length over the limit is a 413 at once, without reading the body', async () => {
    const gw = await startGateway(provider.url, { bodyLimit: 1024 * 1024 });
    try {
      const res = await rawPost(gw.url, { 'content-length': String(500 * 1024 * 1024) });
      expect(res.status).toBe(413);
      expect(JSON.parse(res.text).error.code).toBe('request_too_large');
      expect(res.connection).toBe('close');
    } finally {
      await gw.close();
    }
  });

  test('the example app (express.json() first, behind a Content-Length guard) answers 413 at once too', async () => {
    const example = createApp({ upstreamURL: provider.url, apiKeys: { k: 10 } });
    const server = http.createServer(example.app);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const res = await rawPost(`http://127.0.0.1:${(server.address() as { port: number }).port}`, { 'content-length': String(500 * 1024 * 1024) });
      expect(res.status).toBe(413);
      expect(JSON.parse(res.text).error.code).toBe('request_too_large');
      expect(res.connection).toBe('close');
    } finally {
      example.gateway.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  test('a gzip-compressed request body is decoded; a corrupt one is a 400 and an unknown encoding a 415, in OpenAI shape', async () => {
    provider.reply = () => ({ steps: textSteps(['ok']) });
    await withGateway({}, async (gw) => {
      const gz = zlib.gzipSync(JSON.stringify(chat));
      const ok = await rawPost(gw.url, { 'content-encoding': 'gzip', 'content-length': String(gz.length) }, gz);
      expect(ok.status).toBe(200);
      const bad = Buffer.from('this is not gzip');
      const corrupt = await rawPost(gw.url, { 'content-encoding': 'gzip', 'content-length': String(bad.length) }, bad);
      expect(corrupt.status).toBe(400);
      expect(JSON.parse(corrupt.text).error).toMatchObject({ code: 'invalid_body', type: 'invalid_request_error' });
      const unknown = await rawPost(gw.url, { 'content-encoding': 'zstd-ish', 'content-length': String(bad.length) }, bad);
      expect(unknown.status).toBe(415);
      expect(JSON.parse(unknown.text).error.code).toBe('unsupported_encoding');
    });
  });

  test('behind express.json(): a body that is not valid gzip is an OpenAI-shaped 400, an unknown encoding a 415 (not HTML)', async () => {
    const gw = await startGateway(provider.url, {}, { json: true });
    try {
      const bad = Buffer.from('this is not gzip');
      const corrupt = await rawPost(gw.url, { 'content-encoding': 'gzip', 'content-length': String(bad.length) }, bad);
      expect(corrupt.status).toBe(400);
      expect(JSON.parse(corrupt.text).error).toMatchObject({ code: 'invalid_body', type: 'invalid_request_error' });
      expect(corrupt.text).not.toContain('at ');
      const unknown = await rawPost(gw.url, { 'content-encoding': 'compress', 'content-length': String(bad.length) }, bad);
      expect(unknown.status).toBe(415);
      expect(JSON.parse(unknown.text).error.code).toBe('unsupported_encoding');
    } finally {
      await gw.close();
    }
  });

  withZstd('a zstd request body is decoded as express.json() decodes it, with the same limit; a frame that asks for a window past 8 MiB or is corrupt is a 400', async () => {
    provider.reply = () => ({ steps: textSteps(['ok']) });
    await withGateway({ bodyLimit: 64 * 1024 }, async (gw) => {
      const body = zstdCompress(JSON.stringify(chat));
      const ok = await rawPost(gw.url, { 'content-encoding': 'zstd', 'content-length': String(body.length) }, body);
      expect(ok.status).toBe(200);
      expect(ok.text).toContain('data: [DONE]');
      const bomb = zstdCompress(JSON.stringify({ ...chat, pad: 'x'.repeat(8 * 1024 * 1024) }));
      expect(bomb.length).toBeLessThan(4096);
      const big = await rawPost(gw.url, { 'content-encoding': 'zstd', 'content-length': String(bomb.length) }, bomb);
      expect(big.status).toBe(413);
      expect(JSON.parse(big.text).error.code).toBe('request_too_large');
      // the frame header's window descriptor rewritten to 2^27 bytes (128 MiB), which the decoder would allocate
      const wide = Buffer.from(body);
      expect(wide[4]).toBe(0); // no single-segment flag: byte 5 is the window descriptor
      wide[5] = 17 << 3;
      const refused = await rawPost(gw.url, { 'content-encoding': 'zstd', 'content-length': String(wide.length) }, wide);
      expect(refused.status).toBe(400);
      expect(JSON.parse(refused.text).error.code).toBe('invalid_body');
      const corrupt = await rawPost(gw.url, { 'content-encoding': 'zstd', 'content-length': '16' }, Buffer.from('this is not zstd'));
      expect(corrupt.status).toBe(400);
      const unknown = await rawPost(gw.url, { 'content-encoding': 'compress', 'content-length': '2' }, Buffer.from('??'));
      expect(unknown.status).toBe(415);
      expect(JSON.parse(unknown.text).error.message).toContain('gzip, deflate, br, zstd or none');
    });
  });

  test('a compressed body that inflates past bodyLimit is a 413', async () => {
    await withGateway({ bodyLimit: 64 * 1024 }, async (gw) => {
      const bomb = zlib.gzipSync(JSON.stringify({ ...chat, pad: 'x'.repeat(4 * 1024 * 1024) }));
      const res = await rawPost(gw.url, { 'content-encoding': 'gzip', 'content-length': String(bomb.length) }, bomb);
      expect(res.status).toBe(413);
    });
  });
});

describe('token counting cost', () => {
  test('when the provider sends usage, no completion text is tokenised; without it, the text is counted once at settlement', async () => {
    const counted: string[] = [];
    const countTokens = (text: string): number => (counted.push(text), text.length);
    provider.reply = () => ({ steps: textSteps(['alpha', ' beta', ' gamma']) });
    await withGateway({ countTokens }, async (gw) => {
      await postStream(gw.url, chat);
      expect(counted.some((t) => t.includes('alpha') || t.includes('gamma'))).toBe(false);
      provider.reply = () => ({ steps: textSteps(['alpha', ' beta', ' gamma'], { usage: false }) });
      counted.length = 0;
      await postStream(gw.url, chat);
      await waitFor(() => gw.meterCalls.length === 2, 2000, 'meter');
      expect(counted.filter((t) => t.includes('alpha'))).toEqual(['alpha beta gamma']);
      expect(gw.meterCalls[1]!.usage).toMatchObject({ completion_tokens: 'alpha beta gamma'.length, estimated: true });
    });
  });
});

describe('hostile shapes from a provider or a client never crash or hang the gateway', () => {
  test('a gzip-compressed stream that the client leaves mid-way: cancelled and metered, the process lives, the next request is served', async () => {
    const server = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'content-encoding': 'gzip' });
        const gzip = zlib.createGzip();
        gzip.pipe(res);
        let i = 0;
        const timer = setInterval(() => {
          if (i++ === 20) {
            clearInterval(timer);
            gzip.end('data: [DONE]\n\n');
            return;
          }
          gzip.write(`data: ${JSON.stringify(contentChunk(` w${i}`))}\n\n`);
          gzip.flush();
        }, 30);
        res.on('close', () => clearInterval(timer));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const gw = await startGateway(`http://127.0.0.1:${(server.address() as { port: number }).port}/v1`);
    try {
      await postStream(gw.url, chat, { onEvent: (_d, i) => (i === 2 ? 'abort' : undefined) });
      await waitFor(() => gw.meterCalls.length === 1, 3000, 'meter');
      expect(gw.meterCalls[0]!.outcome).toBe('cancelled');
      await new Promise((r) => setTimeout(r, 100)); // a late 'error' on the decoder would surface here
      const next = await postStream(gw.url, chat);
      expect(next.status).toBe(200);
    } finally {
      await gw.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  const deep = (n: number): string => `${'['.repeat(n)}${']'.repeat(n)}`;

  test('a deeply nested chunk split over two data: lines is relayed without re-serialising it', async () => {
    provider.reply = () => ({ steps: [{ raw: `data: {"id":"x","choices":[{"index":0,"delta":{"content":"a"}}],\ndata: "extra":${deep(20_000)}}\n\n` }, ...textSteps([]).slice(1)] });
    await withGateway({}, async (gw) => {
      const result = await postStream(gw.url, chat);
      expect(result.events.at(-1)).toBe('[DONE]');
      expect(result.events[0]!.startsWith('{"id":"x"')).toBe(true);
    });
  });

  test('a provider usage with a deeply nested or string extra field: counts kept, the rest dropped', async () => {
    provider.reply = () => ({ steps: [...textSteps(['a'], { usage: false, done: false }), { raw: `data: {"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"note":"${'n'.repeat(10)}","deep":${deep(20_000)},"cost":0.5,"completion_tokens_details":{"reasoning_tokens":0,"x":"y"}}}\n\n` }, { data: '[DONE]' }] });
    await withGateway({}, async (gw) => {
      const result = await postStream(gw.url, chat);
      expect(result.events.at(-1)).toBe('[DONE]');
      expect(jsonEvents(result).at(-1)!.usage).toEqual({ prompt_tokens: 3, completion_tokens: 1, total_tokens: 4, cost: 0.5, completion_tokens_details: { reasoning_tokens: 0 } });
    });
  });

  test('a non-streaming answer nested 20,000 deep is a 502, answered at once (not a hang)', async () => {
    provider.reply = () => ({ steps: [{ raw: `{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"a"},"finish_reason":"stop"}],"deep":${deep(20_000)}}` }], headers: { 'content-type': 'application/json' } });
    await withGateway({}, async (gw) => {
      for (const stream of [false, true]) {
        const res = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ ...chat, stream }), signal: AbortSignal.timeout(5000) });
        expect(res.status).toBe(502);
        expect(((await res.json()) as { error: { code: string } }).error.code).toBe('upstream_invalid_response');
      }
    });
  });

  test('a wide body: 50,000 values are estimated and served; 200,000 (or a 200,000-key object) are a 400 invalid_json, never a 500', async () => {
    provider.reply = () => ({ steps: textSteps(['ok']) });
    await withGateway({}, async (gw) => {
      const served = await postStream(gw.url, { ...chat, documents: Array.from({ length: 50_000 }, () => 1) });
      expect(served.status).toBe(200);
      expect(served.events.at(-1)).toBe('[DONE]');
      const wideObject: Record<string, number> = {};
      for (let i = 0; i < 200_000; i++) wideObject[`k${i}`] = 1;
      for (const documents of [Array.from({ length: 200_000 }, () => 1), wideObject]) {
        const refused = await postStream(gw.url, { ...chat, documents });
        expect(refused.status).toBe(400);
        expect(JSON.parse(refused.raw).error.code).toBe('invalid_json');
      }
    });
  });
});

describe('a provider that echoes the upstream key in its answer', () => {
  const secret = UPSTREAM_KEY.replace(/^sk-/, '');
  test('in chunk content and ids (streaming), and in a JSON answer: redacted before it reaches the client or a log', async () => {
    provider.reply = (req) =>
      req.json?.stream
        ? { steps: [{ data: { ...BASE, id: UPSTREAM_KEY, choices: [{ index: 0, delta: { content: `key ${UPSTREAM_KEY} and ${secret}` }, finish_reason: null }] } }, ...textSteps([]).slice(1)] }
        : { json: { id: UPSTREAM_KEY, choices: [{ index: 0, message: { role: 'assistant', content: `the key is ${UPSTREAM_KEY}` }, finish_reason: 'stop' }], usage: { prompt_tokens: 1, completion_tokens: 1 } } };
    await withGateway({}, async (gw) => {
      const streamed = await postStream(gw.url, chat);
      const json = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ ...chat, stream: false }) });
      const text = await json.text();
      for (const body of [streamed.raw, text, JSON.stringify(gw.logs), JSON.stringify(gw.meterCalls.map(({ req: _req, ...e }) => e))]) {
        expect(body).not.toContain(UPSTREAM_KEY);
        expect(body).not.toContain(secret);
      }
      expect(streamed.raw).toContain('[redacted]');
    });
  });

  test('a 401 that echoes the key without its sk- prefix is redacted too', async () => {
    provider.reply = () => ({ status: 401, json: { error: { message: `bad key ${secret}`, type: 'auth', code: secret, param: secret } } });
    await withGateway({}, async (gw) => {
      const res = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body: JSON.stringify(chat) });
      const text = await res.text();
      expect(res.status).toBe(401);
      expect(text).not.toContain(secret);
      expect(JSON.stringify(gw.logs)).not.toContain(secret);
    });
  });
});

test('a pass-through request the provider never answers is a 504 upstream_timeout at upstreamTimeout', async () => {
  provider.reply = () => ({ delay: Infinity });
  await withGateway({ upstreamTimeout: 300 }, async (gw) => {
    const res = await fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${KEY}` }, signal: AbortSignal.timeout(5000) });
    expect(res.status).toBe(504);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('upstream_timeout');
  });
});

test('example app: a bad body outside /v1 is a JSON 400 without a stack trace, not an HTML page', async () => {
  const example = createApp({ upstreamURL: provider.url, apiKeys: { k: 10 } });
  const server = http.createServer(example.app);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const res = await fetch(`http://127.0.0.1:${(server.address() as { port: number }).port}/`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"broken":' });
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toMatch(/json/);
    const text = await res.text();
    expect(text).not.toMatch(/\bat .*\(/);
    expect(JSON.parse(text).error.type).toBe('invalid_request_error');
  } finally {
    example.gateway.close();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
});

test('a streamed pass-through body that echoes the key without its sk- prefix, split across writes, is scrubbed', async () => {
  const secret = UPSTREAM_KEY.replace(/^sk-/, '');
  provider.reply = () => ({ headers: { 'content-type': 'text/event-stream' }, steps: [{ raw: `data: {"a":"${secret.slice(0, 9)}` }, { wait: 20 }, { raw: `${secret.slice(9)}"}\n\n` }, { raw: `data: {"b":"${UPSTREAM_KEY}"}\n\n` }] });
  await withGateway({}, async (gw) => {
    const res = await fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${KEY}` } });
    const text = await res.text();
    expect(text).not.toContain(secret);
    expect(text).toContain('[redacted]');
  });
});
