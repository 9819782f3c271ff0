import http, { type IncomingHttpHeaders } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import zlib from 'node:zlib';
import request from 'supertest';
import { KEY, startGateway, UPSTREAM_KEY, type TestGateway } from './helpers/gateway';
import { ScriptedProvider, textSteps, type Step } from './helpers/provider';
import { waitFor } from './helpers/sse-client';

/**
 * Nothing of the provider's side leaks (issue 7, point 5): the upstream key is never in a client's answer or a
 * log line, pass-through answers carry only allow-listed headers and no redirect, uploads are framed once, and
 * pass-through SSE is not held back by compression().
 */

let provider: ScriptedProvider;
beforeAll(async () => {
  provider = await new ScriptedProvider().start();
});
afterAll(() => provider.stop());

/** The distinctive middle of the upstream key: found in any text that carries the key or a long part of it. */
const KEY_PART = 'upstream-secret';

/** Everything a log line holds, Error objects (message, code, cause) included. */
function logText(gw: TestGateway): string {
  return JSON.stringify(gw.logs, (_name, value: unknown) =>
    value instanceof Error ? { name: value.name, message: value.message, code: (value as { code?: unknown }).code, cause: value.cause, stack: value.stack } : value,
  );
}

interface RawAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** ms since the request when each chunk of the body arrived. */
  chunks: Array<{ at: number; text: string }>;
}

/** A request over a fresh socket (no keep-alive), the body collected as it arrives, nothing decoded. */
function send(url: string, path: string, opts: { method?: string; headers?: Record<string, string>; body?: string[] } = {}): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const req = http.request(`${url}${path}`, { method: opts.method ?? 'GET', agent: false, headers: { authorization: `Bearer ${KEY}`, ...opts.headers } });
    req.on('error', reject);
    req.on('response', (res) => {
      const parts: Buffer[] = [];
      const chunks: RawAnswer['chunks'] = [];
      res.on('data', (chunk: Buffer) => {
        parts.push(chunk);
        chunks.push({ at: Date.now() - started, text: chunk.toString('utf8') });
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts), chunks }));
      res.on('error', reject);
    });
    if (opts.body) {
      // each part written on its own, a little apart: a chunked upload as a streaming client sends it
      const parts = [...opts.body];
      const next = (): void => {
        const part = parts.shift();
        if (part === undefined) req.end();
        else {
          req.write(part);
          setTimeout(next, 10);
        }
      };
      next();
    } else req.end();
  });
}

describe('the upstream key never reaches a client or a log line', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway(provider.url, {}, { compression: true });
  });
  afterAll(() => gw.close());
  beforeEach(() => gw.logs.splice(0));

  const echoingKey = {
    status: 401,
    json: {
      error: {
        message: `Incorrect API key provided: ${UPSTREAM_KEY}. Also tried sk-proj-abcdefghijklmnop.`,
        type: `invalid_request_error for ${UPSTREAM_KEY}`,
        code: UPSTREAM_KEY,
        param: `key=${UPSTREAM_KEY}`,
      },
    },
  };

  test.each([false, true])('a provider 401 on chat completions (stream: %s) whose message, type, code and param echo the key', async (stream) => {
    provider.reply = () => echoingKey;
    const res = await request(gw.url)
      .post('/v1/chat/completions')
      .set('Authorization', `Bearer ${KEY}`)
      .send({ model: 'test-model', stream, messages: [{ role: 'user', content: 'hi' }] });
    expect(res.status).toBe(401);
    expect(res.text).not.toContain(KEY_PART);
    expect(res.text).not.toContain('sk-proj-');
    expect(res.body).toEqual({
      error: {
        message: 'Upstream provider error (401): Incorrect API key provided: [redacted]. Also tried [redacted].',
        type: 'invalid_request_error for [redacted]',
        code: '[redacted]',
        param: 'key=[redacted]',
      },
    });
    expect(gw.logs.some((line) => line.msg === 'infery-stream request')).toBe(true);
    expect(logText(gw)).not.toContain(KEY_PART);
  });

  const big = 'x'.repeat(70 * 1024);
  test.each<[string, { json: unknown; headers?: Record<string, string> }, (body: string) => void]>([
    ['an OpenAI-shaped 401, chunked', echoingKey, (body) => expect(JSON.parse(body).error.code).toBe('[redacted]')],
    [
      'the same with a Content-Length of its own',
      { ...echoingKey, headers: { 'content-length': String(Buffer.byteLength(JSON.stringify(echoingKey.json))) } },
      (body) => expect(JSON.parse(body).error.param).toBe('key=[redacted]'),
    ],
    [
      'a body past 64 KiB, cut off in the middle of the key',
      // `{"message":"` is 12 bytes; the cut falls 7 bytes into the key ("sk-upst"), too short for the sk- pattern
      { json: { message: `${'y'.repeat(64 * 1024 - 12 - 7)}${UPSTREAM_KEY}${big}` } },
      (body) => {
        expect(Buffer.byteLength(body)).toBeLessThanOrEqual(64 * 1024);
        expect(body.endsWith('y')).toBe(true);
        expect(body).not.toContain('sk-upst');
      },
    ],
  ])('a non-2xx pass-through answer (%s) is redacted and sent with a correct Content-Length', async (_name, reply, check) => {
    provider.reply = () => ({ status: 401, ...reply });
    const res = await send(gw.url, '/v1/models');
    expect(res.status).toBe(401);
    const body = res.body.toString('utf8');
    expect(body).not.toContain(KEY_PART);
    expect(Number(res.headers['content-length'])).toBe(res.body.length);
    expect(res.headers['content-type']).toBe('application/json');
    check(body);
    expect(logText(gw)).not.toContain(KEY_PART);
  });

  const key = UPSTREAM_KEY;
  test.each<[string, string[], string]>([
    ['split in two', ['data: {"note":"', `${key.slice(0, 9)}`, `${key.slice(9)}"}\n\n`], 'data: {"note":"[redacted]"}\n\n'],
    ['split in three, one byte at a time at the edges', ['x', key.slice(0, 1), key.slice(1, -1), `${key.slice(-1)}y\n\n`], 'x[redacted]y\n\n'],
    ['twice, at the very end of the body', [`${key}${key.slice(0, 5)}`, key.slice(5)], '[redacted][redacted]'],
    ['a key prefix that never completes is passed on as it is', ['a sk-upstream-sec', 'ret!\n\n', 'sk-up'], 'a sk-upstream-secret!\n\nsk-up'],
  ])('a 2xx pass-through body carrying the key across chunk boundaries (%s) is redacted', async (_name, parts, expected) => {
    provider.reply = () => ({ steps: parts.flatMap((raw): Step[] => [{ raw }, { wait: 30 }]) });
    const res = await send(gw.url, '/v1/models');
    expect(res.status).toBe(200);
    expect(res.body.toString('utf8')).toBe(expected);
    expect(res.headers['content-length']).toBeUndefined();
  });

  test.each([
    { framing: 'a small Content-Length: read whole, sent with its exact length', declareLength: true },
    { framing: 'chunked: streamed, no Content-Length', declareLength: false },
  ])('a 2xx JSON pass-through body with the key ($framing) is redacted', async ({ declareLength }) => {
    const json = { object: 'list', data: [{ id: 'm1', owned_by: `key ${UPSTREAM_KEY}` }], filler: 'z'.repeat(1000) };
    const headers: Record<string, string> = declareLength ? { 'content-length': String(Buffer.byteLength(JSON.stringify(json))) } : {};
    provider.reply = () => ({ json, headers });
    const res = await send(gw.url, '/v1/models');
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body.toString('utf8')).data[0].owned_by).toBe('key [redacted]');
    if (declareLength) expect(Number(res.headers['content-length'])).toBe(res.body.length);
    else expect(res.headers['content-length']).toBeUndefined();
  });

  test('a large 2xx body is not read whole: it streams through as it comes, every key replaced', async () => {
    const filler = 'q'.repeat(100 * 1024);
    const parts = [filler, key.slice(0, 20), key.slice(20), filler, key, filler];
    provider.reply = () => ({ steps: parts.flatMap((raw): Step[] => [{ raw }, { wait: 60 }]) });
    const res = await send(gw.url, '/v1/models');
    expect(res.body.toString('utf8')).toBe(`${filler}[redacted]${filler}[redacted]${filler}`);
    // the provider takes ~360 ms: the first bytes reach the client long before the last
    expect(res.chunks.at(-1)!.at - res.chunks[0]!.at).toBeGreaterThan(200);
  });

  const keyed = (fill: number): string => JSON.stringify({ error: { message: `bad key ${UPSTREAM_KEY}` }, filler: 'f'.repeat(fill) });
  test.each([
    { name: 'a gzip 403', status: 403, encoding: 'gzip', body: zlib.gzipSync(keyed(1000)), expectStatus: 403, code: undefined },
    { name: 'a br 200, past 64 KiB (streamed)', status: 200, encoding: 'br', body: zlib.brotliCompressSync(keyed(100 * 1024)), expectStatus: 200, code: undefined },
    { name: 'a 200 in an unknown encoding', status: 200, encoding: 'compress', body: Buffer.from('??'), expectStatus: 502, code: 'upstream_invalid_response' },
    { name: 'a 404 in an unknown encoding', status: 404, encoding: 'compress', body: Buffer.from('??'), expectStatus: 404, code: 'upstream_error' },
  ])('$name, sent although the gateway asked for identity, is decoded and redacted (or refused)', async ({ status, encoding, body, expectStatus, code }) => {
    let acceptEncoding: string | undefined;
    const server = http.createServer((req, res) => {
      acceptEncoding = req.headers['accept-encoding'];
      res.writeHead(status, { 'content-type': 'application/json', 'content-encoding': encoding, 'content-length': body.length });
      res.end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const encGw = await startGateway(`http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`);
    try {
      const res = await send(encGw.url, '/v1/models', { headers: { 'accept-encoding': 'gzip, br' } });
      expect(acceptEncoding).toBe('identity');
      expect(res.status).toBe(expectStatus);
      expect(res.headers['content-encoding']).toBeUndefined();
      const text = res.body.toString('utf8');
      expect(text).not.toContain(KEY_PART);
      if (code) expect(JSON.parse(text).error).toMatchObject({ code, type: 'upstream_error', param: null });
      else expect(JSON.parse(text).error).toEqual({ message: 'bad key [redacted]' });
      if (status !== 200) expect(Number(res.headers['content-length'])).toBe(res.body.length);
    } finally {
      await encGw.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  test('a provider that dies mid-body: the client gets a cut body, never a complete-looking one; logged once', async () => {
    provider.reply = () => ({ steps: [{ data: { n: 1 } }, { wait: 30 }, { destroy: true }] });
    await expect(send(gw.url, '/v1/models')).rejects.toThrow();
    await waitFor(() => gw.logs.some((line) => line.msg === 'infery-stream request'), 2000, 'the log line');
    const lines = gw.logs.filter((line) => line.msg === 'infery-stream request');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ status: 502, errorCode: 'upstream_connection_lost' });
  });

  test('a client that leaves a pass-through stream: the upstream request is closed at once', async () => {
    provider.reply = () => ({ steps: [{ data: { n: 1 } }, { hang: true }] });
    const port = Number(new URL(gw.url).port);
    const leftAt = await new Promise<number>((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/v1/models', agent: false, headers: { authorization: `Bearer ${KEY}` } }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve(Date.now());
        });
      });
      req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
    });
    const seen = provider.last;
    await waitFor(() => seen.closedEarlyAt !== undefined, 2000, 'the provider to see the close');
    expect(seen.closedEarlyAt! - leftAt).toBeLessThan(250);
    await waitFor(() => gw.logs.some((line) => line.msg === 'infery-stream request'), 2000, 'the log line');
    expect(gw.logs.find((line) => line.msg === 'infery-stream request')).toMatchObject({ status: 499 });
  });
});

describe('pass-through answers carry only allow-listed provider headers', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway(provider.url, {}, { compression: true });
  });
  afterAll(() => gw.close());

  const providerHeaders = {
    'x-internal-secret': 'hunter2',
    'x-upstream-backend': '10.0.0.7:8443',
    via: '1.1 internal-lb',
    'www-authenticate': 'Bearer realm="internal"',
    server: 'secret-backend/1.2',
    'set-cookie': '__cf_bm=abc; path=/',
    'openai-organization': 'org-secret',
    'openai-project': 'proj_secret',
    'proxy-authenticate': 'Basic realm="lb"',
    'keep-alive': 'timeout=999',
    'x-request-id': 'req_provider_1',
    'x-ratelimit-remaining-requests': '99',
    'x-ratelimit-reset-tokens': '6ms',
    'openai-processing-ms': '12',
    'openai-version': '2020-10-01',
    'retry-after-ms': '250',
  };
  const dropped = ['x-internal-secret', 'x-upstream-backend', 'via', 'www-authenticate', 'server', 'set-cookie', 'openai-organization', 'openai-project', 'proxy-authenticate', 'keep-alive'];

  test.each([
    ['a 200 JSON answer', { json: { object: 'list', data: [] }, headers: providerHeaders }],
    ['a 404 JSON answer', { status: 404, json: { error: { message: 'no' } }, headers: providerHeaders }],
    ['a 200 SSE answer', { steps: textSteps(['a']), headers: providerHeaders }],
  ])('%s: internal, hop-by-hop and identity headers are dropped; request id, rate-limit and timing kept', async (_name, reply) => {
    provider.reply = () => reply;
    const res = await send(gw.url, '/v1/models', { headers: { 'x-request-id': 'req-client-1' } });
    for (const name of dropped) expect(res.headers[name]).toBeUndefined();
    expect(JSON.stringify(res.headers)).not.toMatch(/hunter2|10\.0\.0\.7|internal|secret|timeout=999/);
    expect(res.headers.connection).toBe('close'); // the gateway's own, for this no-keep-alive client
    expect(res.headers['x-request-id']).toBe('req-client-1'); // the gateway's, not the provider's
    expect(res.headers['x-ratelimit-remaining-requests']).toBe('99');
    expect(res.headers['x-ratelimit-reset-tokens']).toBe('6ms');
    expect(res.headers['openai-processing-ms']).toBe('12');
    expect(res.headers['openai-version']).toBe('2020-10-01');
    expect(res.headers['retry-after-ms']).toBe('250');
  });

  test.each([301, 302, 303, 307, 308])('an upstream redirect (%i) is not forwarded: 502 upstream_invalid_response, no Location', async (status) => {
    provider.reply = () => ({ status, json: {}, headers: { location: 'http://169.254.169.254/latest/meta-data/' } });
    const res = await send(gw.url, '/v1/models');
    expect(res.status).toBe(502);
    expect(res.headers.location).toBeUndefined();
    expect(JSON.parse(res.body.toString('utf8'))).toEqual({
      error: { message: expect.stringContaining(`redirect (${status})`), type: 'upstream_error', code: 'upstream_invalid_response', param: null },
    });
  });
});

/** What a provider received, read off the socket before any HTTP parser could reject or normalise it. */
interface RawRequest {
  head: string;
  headers: Record<string, string>;
  body: string;
}

/**
 * A provider that records each request's raw head and (de-chunked) body and answers 200 `{}`; both
 * `Transfer-Encoding` and `Content-Length` would be seen here as sent, where Node's parser would refuse them.
 */
async function startRawProvider(): Promise<{ url: string; seen: RawRequest[]; stop(): Promise<void> }> {
  const seen: RawRequest[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    let buffer = Buffer.alloc(0);
    socket.on('data', (data: Buffer) => {
      buffer = Buffer.concat([buffer, data]);
      const end = buffer.indexOf('\r\n\r\n');
      if (end === -1) return;
      const head = buffer.subarray(0, end).toString('latin1');
      const headers: Record<string, string> = {};
      for (const line of head.split('\r\n').slice(1)) {
        const colon = line.indexOf(':');
        const name = line.slice(0, colon).trim().toLowerCase();
        headers[name] = headers[name] === undefined ? line.slice(colon + 1).trim() : `${headers[name]}, ${line.slice(colon + 1).trim()}`;
      }
      const rest = buffer.subarray(end + 4).toString('latin1');
      let body: string | undefined;
      if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
        if (!rest.endsWith('0\r\n\r\n')) return;
        body = '';
        let at = 0;
        for (;;) {
          const lineEnd = rest.indexOf('\r\n', at);
          const size = parseInt(rest.slice(at, lineEnd), 16);
          if (!size) break;
          body += rest.slice(lineEnd + 2, lineEnd + 2 + size);
          at = lineEnd + 2 + size + 2;
        }
      } else {
        const length = Number(headers['content-length'] ?? 0);
        if (Buffer.byteLength(rest, 'latin1') < length) return;
        body = rest.slice(0, length);
      }
      seen.push({ head, headers, body });
      socket.end('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    seen,
    stop: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('pass-through uploads are framed once', () => {
  let raw: Awaited<ReturnType<typeof startRawProvider>>;
  beforeAll(async () => {
    raw = await startRawProvider();
  });
  afterAll(() => raw.stop());

  const json = ['{"purpose":"batch",', '"file":"', 'abc"}'];
  const bytes = ['line one\n', 'line two\n', 'line three\n'];
  test.each([
    { json: false, type: 'application/json', parts: json },
    { json: true, type: 'application/json', parts: json },
    { json: false, type: 'application/octet-stream', parts: bytes },
    { json: true, type: 'application/octet-stream', parts: bytes },
  ])('a chunked $type upload (host ran express.json(): $json) reaches the provider with exactly one of Transfer-Encoding and Content-Length', async (host) => {
    const gw = await startGateway(raw.url, { passThrough: ['GET /models', 'POST /files'] }, { json: host.json, compression: true });
    try {
      const seen = raw.seen.length;
      const res = await send(gw.url, '/v1/files', { method: 'POST', headers: { 'content-type': host.type, 'transfer-encoding': 'chunked' }, body: host.parts });
      expect(res.status).toBe(200);
      expect(raw.seen).toHaveLength(seen + 1);
      const got = raw.seen.at(-1)!;
      const framing = ['transfer-encoding', 'content-length'].filter((name) => got.headers[name] !== undefined);
      expect(framing).toHaveLength(1);
      if (got.headers['content-length'] !== undefined) expect(Number(got.headers['content-length'])).toBe(Buffer.byteLength(got.body, 'latin1'));
      const sent = host.parts.join('');
      if (host.type === 'application/json') expect(JSON.parse(got.body)).toEqual(JSON.parse(sent));
      else expect(got.body).toBe(sent);
      expect(got.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
    } finally {
      await gw.close();
    }
  });

  test('a client sending Expect: 100-continue gets the same header policy (its own key and cookies never go upstream)', async () => {
    const gw = await startGateway(raw.url, { passThrough: ['GET /models', 'POST /files'] });
    try {
      const port = Number(new URL(gw.url).port);
      const status = await new Promise<number>((resolve, reject) => {
        const req = http.request({
          host: '127.0.0.1',
          port,
          path: '/v1/files',
          method: 'POST',
          agent: false,
          headers: { authorization: `Bearer ${KEY}`, cookie: 'sid=secret', expect: '100-continue', 'content-type': 'application/json', 'content-length': '2' },
        });
        req.on('continue', () => req.end('{}'));
        req.on('response', (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
      });
      expect(status).toBe(200);
      const got = raw.seen.at(-1)!;
      expect(got.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
      expect(got.headers.cookie).toBeUndefined();
      expect(got.headers.expect).toBeUndefined();
      expect(got.body).toBe('{}');
    } finally {
      await gw.close();
    }
  });
});

describe('pass-through SSE streams unbuffered through compression()', () => {
  test.each([
    { apiKey: UPSTREAM_KEY, json: false },
    { apiKey: UPSTREAM_KEY, json: true },
    { apiKey: undefined, json: false },
  ])('upstream key configured: $apiKey, express.json: $json → events one by one, not compressed', async ({ apiKey, json }) => {
    const gw = await startGateway(provider.url, { upstream: { baseURL: provider.url, apiKey } }, { json, compression: true });
    try {
      provider.reply = () => ({ steps: textSteps(['one', 'two', 'three', 'four'], { gap: 150 }) });
      const res = await send(gw.url, '/v1/models', { headers: { 'accept-encoding': 'gzip, deflate, br' } });
      expect(res.status).toBe(200);
      expect(res.headers['content-encoding']).toBeUndefined();
      expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
      expect(res.headers['cache-control']).toBe('no-cache, no-transform');
      expect(res.headers['x-accel-buffering']).toBe('no');
      const firstAt = res.chunks.find((c) => c.text.includes('"one"'))!.at;
      const lastAt = res.chunks.find((c) => c.text.includes('"four"'))!.at;
      // ~150 ms then ~600 ms: a buffering compression() would deliver them together at the end
      expect(lastAt - firstAt).toBeGreaterThan(300);
      expect(res.body.toString('utf8')).toContain('data: [DONE]');
    } finally {
      await gw.close();
    }
  });
});
