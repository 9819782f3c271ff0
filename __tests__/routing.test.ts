import http from 'node:http';
import { bearerToken, inferyStream, InferyOptionsError } from '../lib';
import { ScriptedProvider } from './helpers/provider';
import { KEY, startGateway, UPSTREAM_KEY, type TestGateway } from './helpers/gateway';

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/**
 * Sends `path` byte for byte (no URL normalising, unlike supertest/fetch) to the gateway on 127.0.0.1.
 * `partial` declares a longer body than it sends and never ends the request: only an answer that does not
 * wait for the body arrives. Bounded by a 3 s socket timeout.
 */
function raw(base: string, method: string, path: string, o: { auth?: string; body?: string; partial?: boolean } = {}): Promise<RawResponse> {
  const headers: Record<string, string> = {};
  if (o.auth !== undefined) headers.authorization = o.auth;
  if (o.body !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(o.body) + (o.partial ? 1000 : 0));
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: Number(new URL(base).port), path, method, headers, agent: false, timeout: 3000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text });
        req.destroy();
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer to ${method} ${path} within 3 s`)));
    req.on('error', reject);
    if (o.body !== undefined) req.write(o.body);
    if (!o.partial) req.end();
  });
}

const CHAT_BODY = JSON.stringify({ model: 'test-model', messages: [{ role: 'user', content: 'hi' }] });
const openAIError = (code: string) => ({ error: { message: expect.any(String), type: 'invalid_request_error', code, param: null } });
const requestLines = (gw: TestGateway, from: number) => gw.logs.slice(from).filter((l) => l.msg === 'infery-stream request');

/** Paths under /v1 that are not canonical: each is refused with 400 invalid_path, never normalised. */
const NOT_CANONICAL: Array<[string, string]> = [
  ['POST', '/v1//chat/completions'],
  ['POST', '/v1/chat//completions'],
  ['POST', '/v1/chat/./completions'],
  ['POST', '/v1/x/../chat/completions'],
  ['POST', '/v1/%63hat/completions'],
  ['POST', '/v1/chat%2Fcompletions'],
  ['POST', '/v1/chat%2fcompletions'],
  ['POST', '/v1/chat/completions/.'],
  ['POST', '/v1/chat/completions/'],
  ['POST', '/v1/chat%5Ccompletions'],
  ['POST', '/v1/chat\\completions'],
  ['POST', '/v1/chat/completions;x'],
  ['POST', '/v1/chat/%2e%2e/completions'],
  ['POST', '/v1/chat/completions%00'],
  ['GET', '/v1/../admin'],
  ['GET', '/v1/%2e%2e/admin'],
  ['GET', '/v1/..%2fadmin'],
  ['GET', '/v1/models/../../admin/keys'],
  ['GET', '/v1/..\\admin'],
  ['GET', '/v1/models/%252e%252e'],
  ['GET', '/v1/models/%zz'],
  ['GET', '/v1/models/%4'],
  ['GET', '/v1/models/%C0%AE%C0%AE'],
  ['GET', '/v1/'],
];

/** Canonical paths under /v1 that the default allow-list does not serve: [method, path, status, Allow]. */
const NOT_SERVED: Array<[string, string, number, string | undefined]> = [
  ['POST', '/v1/Chat/Completions', 404, undefined],
  ['POST', '/v1/moderations', 404, undefined],
  ['POST', '/v1/audio/speech', 404, undefined],
  ['GET', '/v1/responses', 405, 'POST'],
  ['DELETE', '/v1/responses/resp_1', 405, 'GET, HEAD'],
  ['POST', '/v1/images/generations', 404, undefined],
  ['GET', '/v1/files', 404, undefined],
  ['GET', '/v1/models/a/b', 404, undefined],
  ['DELETE', '/v1/models/x', 405, 'GET, HEAD'],
  ['POST', '/v1/models', 405, 'GET, HEAD'],
  ['GET', '/v1/chat/completions', 405, 'POST'],
];

let provider: ScriptedProvider;
beforeAll(async () => {
  provider = await new ScriptedProvider().start();
  provider.reply = () => ({ json: { object: 'list', data: [] } });
});
afterAll(() => provider.stop());

describe.each([false, true])('routing (host ran express.json() and compression(): %s)', (json) => {
  let gw: TestGateway;
  let authCalls = 0;
  beforeAll(async () => {
    const authenticate = (req: http.IncomingMessage) => (authCalls++, bearerToken(req) === KEY ? { id: 'acct-1' } : null);
    gw = await startGateway(provider.url, { authenticate }, { json, compression: true });
  });
  afterAll(() => gw.close());

  test.each(NOT_CANONICAL)('refuses %s %s with 400 invalid_path before authenticate, logged once', async (method, path) => {
    const [seen, auths, metered, logged] = [provider.requests.length, authCalls, gw.meterCalls.length, gw.logs.length];
    // No key (with a malformed JSON body: the host's body parser fails first when it runs), a wrong key, a valid key.
    const body = method === 'POST' ? CHAT_BODY : undefined;
    const attempts = [{ body: body && '{"model":' }, { auth: 'Bearer wrong', body }, { auth: `Bearer ${KEY}`, body }];
    for (const attempt of attempts) {
      const res = await raw(gw.url, method, path, attempt);
      expect(res.status).toBe(400);
      expect(JSON.parse(res.text)).toEqual(openAIError('invalid_path'));
      expect(res.headers['x-request-id']).toEqual(expect.any(String));
    }
    expect(authCalls).toBe(auths);
    expect(provider.requests.length).toBe(seen);
    expect(gw.meterCalls.length).toBe(metered);
    const lines = requestLines(gw, logged);
    expect(lines).toHaveLength(attempts.length);
    for (const line of lines) expect(line).toMatchObject({ status: 400, errorCode: 'invalid_path', path });
  });

  if (!json) {
    test('refuses /v1//chat/completions before reading the body (answers a request whose body never ends)', async () => {
      const res = await raw(gw.url, 'POST', '/v1//chat/completions', { body: '{"model":"m",', partial: true });
      expect(res.status).toBe(400);
      expect(JSON.parse(res.text)).toEqual(openAIError('invalid_path'));
      expect(res.headers.connection).toBe('close'); // the rest of the body is not waited for
    });
  }

  test.each(NOT_SERVED)('answers %s %s with %d in OpenAI shape; nothing upstream, nothing metered', async (method, path, status, allow) => {
    const [seen, metered, logged] = [provider.requests.length, gw.meterCalls.length, gw.logs.length];
    const res = await raw(gw.url, method, path, { auth: `Bearer ${KEY}`, body: method === 'POST' ? CHAT_BODY : undefined });
    expect(res.status).toBe(status);
    expect(JSON.parse(res.text)).toEqual(openAIError(status === 404 ? 'unknown_route' : 'method_not_allowed'));
    expect(res.headers.allow).toBe(allow);
    expect(res.headers['x-request-id']).toEqual(expect.any(String));
    expect(provider.requests.length).toBe(seen);
    expect(gw.meterCalls.length).toBe(metered);
    expect(requestLines(gw, logged)).toEqual([expect.objectContaining({ status, path })]);
  });

  test.each([
    ['/v1/models', '/v1/models'],
    ['/v1/models?limit=2', '/v1/models?limit=2'],
    ['/v1/models/gpt-4o', '/v1/models/gpt-4o'],
    ['/v1/models/ft%3Agpt-4o-mini%3Aorg%3Ax', '/v1/models/ft%3Agpt-4o-mini%3Aorg%3Ax'],
  ])('forwards GET %s (default allow-list); the provider sees exactly %s with the gateway key', async (path, upstreamPath) => {
    const seen = provider.requests.length;
    const res = await raw(gw.url, 'GET', path, { auth: `Bearer ${KEY}` });
    expect(res.status).toBe(200);
    expect(provider.requests.length).toBe(seen + 1);
    expect(provider.last).toMatchObject({ method: 'GET', path: upstreamPath });
    expect(provider.last.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
  });

  test('HEAD is answered wherever GET is: HEAD /v1/models is forwarded as HEAD', async () => {
    const seen = provider.requests.length;
    const res = await raw(gw.url, 'HEAD', '/v1/models', { auth: `Bearer ${KEY}` });
    expect(res.status).toBe(200);
    expect(provider.requests.length).toBe(seen + 1);
    expect(provider.last).toMatchObject({ method: 'HEAD', path: '/v1/models' });
  });

  test('GET /health, after the gateway, is left to the host app', async () => {
    const res = await raw(gw.url, 'GET', '/health');
    expect(res).toMatchObject({ status: 200, text: 'ok' });
  });

  test.each(['/v1x/chat/completions', '/V1/chat/completions', '/v1.json'])('POST %s is outside the base path: Express answers, not the gateway', async (path) => {
    const res = await raw(gw.url, 'POST', path, { auth: `Bearer ${KEY}`, body: CHAT_BODY });
    expect(res.status).toBe(404);
    expect(res.headers['content-type']).not.toMatch(/json/);
    expect(res.headers['x-request-id']).toBeUndefined();
    expect(res.text).not.toContain('"error"');
  });
});

describe('the passThrough allow-list', () => {
  test('listing a route adds it and replaces the default: POST /v1/moderations forwarded, GET /v1/models/{id} no longer', async () => {
    const gw = await startGateway(provider.url, { passThrough: ['GET /models', 'POST /moderations'] });
    try {
      const seen = provider.requests.length;
      const res = await raw(gw.url, 'POST', '/v1/moderations', { auth: `Bearer ${KEY}`, body: '{"model":"e","input":"hi"}' });
      expect(res.status).toBe(200);
      expect(provider.last).toMatchObject({ method: 'POST', path: '/v1/moderations', json: { model: 'e', input: 'hi' } });
      const gone = await raw(gw.url, 'GET', '/v1/models/gpt-4o', { auth: `Bearer ${KEY}` });
      expect(gone.status).toBe(404);
      expect(JSON.parse(gone.text)).toEqual(openAIError('unknown_route'));
      expect(provider.requests.length).toBe(seen + 1);
      expect(gw.meterCalls).toHaveLength(0);
    } finally {
      await gw.close();
    }
  });

  test('passThrough: false forwards nothing: GET /v1/models is 404 unknown_route', async () => {
    const gw = await startGateway(provider.url, { passThrough: false });
    try {
      const seen = provider.requests.length;
      const res = await raw(gw.url, 'GET', '/v1/models', { auth: `Bearer ${KEY}` });
      expect(res.status).toBe(404);
      expect(JSON.parse(res.text)).toEqual(openAIError('unknown_route'));
      expect(provider.requests.length).toBe(seen);
    } finally {
      await gw.close();
    }
  });

  test.each<[string, unknown, RegExp]>([
    ['an unknown method', ['FETCH /models'], /unknown method FETCH/],
    ['a path without "/"', ['GET models'], /must start with "\/".*relative to basePath/],
    ['a path that repeats the base path', ['GET /v1/models'], /relative to it \("GET \/models"\)/],
    ['the gateway\'s own route', ['POST /chat/completions'], /served \(and metered\) by the gateway/],
    ['a metered API', ['POST /responses'], /served \(and metered\) by the gateway/],
    ['embeddings', ['POST /embeddings'], /served \(and metered\) by the gateway/],
    ['a ".." segment', ['GET /models/../x'], /"\.\." is not a plain path segment/],
    ['a percent-encoded segment', ['GET /models/%2e'], /"%2e" is not a plain path segment/],
    ['a string', 'yes', /must be a list of routes/],
    ['a non-string entry', [42], /must be a list of routes/],
  ])('throws InferyOptionsError at creation for %s', (_what, passThrough, message) => {
    const create = () => inferyStream({ upstream: { baseURL: 'http://127.0.0.1:1/v1' }, authenticate: () => ({}), passThrough: passThrough as string[] });
    expect(create).toThrow(InferyOptionsError);
    expect(create).toThrow(/^infery-stream: `passThrough`/);
    expect(create).toThrow(message);
  });

  test('startGateway rejects with the same error (nothing starts listening)', async () => {
    await expect(startGateway(provider.url, { passThrough: ['GET /v1/models'] })).rejects.toThrow(InferyOptionsError);
  });
});

test('nothing forwarded resolved outside the upstream base path: every path the provider saw is canonical under /v1/', () => {
  expect(provider.requests.length).toBeGreaterThanOrEqual(9);
  for (const { path } of provider.requests) {
    expect(path).toMatch(/^\/v1\//);
    expect(path.split('?')[0]).not.toMatch(/\/\/|\/\.{1,2}(\/|$)|\/$|\\|%(2e|2f|5c|25)/i);
  }
});
