import http from 'node:http';
import request from 'supertest';
import { refusedURL, ScriptedProvider } from './helpers/provider';
import { KEY, startGateway, UPSTREAM_KEY, type TestGateway } from './helpers/gateway';

let provider: ScriptedProvider;
beforeAll(async () => {
  provider = await new ScriptedProvider().start();
});
afterAll(() => provider.stop());

describe.each([false, true])('pass-through of other /v1 routes (host ran express.json(): %s)', (json) => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway(provider.url, { passThrough: ['GET /models', 'GET /models/{id}', 'POST /moderations'] }, { json, compression: true });
  });
  afterAll(() => gw.close());

  test('GET /v1/models is proxied with the gateway key in place of the client key', async () => {
    provider.reply = () => ({ json: { object: 'list', data: [{ id: 'm1', object: 'model' }] } });
    const res = await request(gw.url).get('/v1/models?limit=5').set('Authorization', `Bearer ${KEY}`).set('Cookie', 'sid=1').set('X-Internal', 'x');
    expect(res.status).toBe(200);
    expect(res.body.data[0].id).toBe('m1');
    expect(provider.last.path).toBe('/v1/models?limit=5');
    expect(provider.last.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
    expect(provider.last.headers.cookie).toBeUndefined();
    expect(provider.last.headers['x-internal']).toBeUndefined();
    expect(res.headers['x-request-id']).toBeDefined();
  });

  test('POST /v1/moderations, once added to the allow-list, reaches the upstream with its body intact', async () => {
    provider.reply = () => ({ json: { object: 'list', data: [{ embedding: [0.1] }] } });
    const res = await request(gw.url).post('/v1/moderations').set('Authorization', `Bearer ${KEY}`).send({ model: 'e', input: 'hello' });
    expect(res.status).toBe(200);
    expect(provider.last.json).toEqual({ model: 'e', input: 'hello' });
    expect(provider.last.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
  });

  test('needs a valid key: 401 in OpenAI shape, nothing proxied', async () => {
    const seen = provider.requests.length;
    const res = await request(gw.url).get('/v1/models').set('Authorization', 'Bearer wrong');
    expect(res.status).toBe(401);
    expect(res.body.error.code).toBe('invalid_api_key');
    expect(provider.requests.length).toBe(seen);
  });

  test('upstream errors keep their status; a Set-Cookie from the provider is not passed on', async () => {
    provider.reply = () => ({ status: 404, json: { error: { message: 'no such model', type: 'invalid_request_error', code: 'model_not_found' } }, headers: { 'set-cookie': '__cf_bm=x' } });
    const res = await request(gw.url).get('/v1/models/nope').set('Authorization', `Bearer ${KEY}`);
    expect(res.status).toBe(404);
    expect(res.body.error.code).toBe('model_not_found');
    expect(res.headers['set-cookie']).toBeUndefined();
  });
});

test('an unreachable upstream is a 502 in OpenAI shape on pass-through routes too', async () => {
  const gw = await startGateway(await refusedURL());
  try {
    const res = await request(gw.url).get('/v1/models').set('Authorization', `Bearer ${KEY}`);
    expect(res.status).toBe(502);
    expect(res.body).toEqual({ error: { message: expect.stringContaining('Could not reach'), type: 'upstream_error', code: 'upstream_unreachable', param: null } });
  } finally {
    await gw.close();
  }
});

test('passThrough: false forwards nothing: GET /v1/models is 404 unknown_route, nothing upstream', async () => {
  const gw = await startGateway(provider.url, { passThrough: false });
  try {
    const seen = provider.requests.length;
    const res = await request(gw.url).get('/v1/models').set('Authorization', `Bearer ${KEY}`);
    expect(res.status).toBe(404);
    expect(res.body.error.code).toBe('unknown_route');
    expect(provider.requests.length).toBe(seen);
  } finally {
    await gw.close();
  }
});

test.each([
  ['Content-Length', { 'content-type': 'application/json', 'content-length': '2' }],
  ['chunked', { 'content-type': 'application/json', 'transfer-encoding': 'chunked' }],
])('a GET with a body (%s) is refused with 400 invalid_body, never forwarded (no request smuggled upstream)', async (_name, headers) => {
  const gw = await startGateway(provider.url);
  try {
    const seen = provider.requests.length;
    const port = Number(new URL(gw.url).port);
    const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path: '/v1/models', method: 'GET', agent: false, headers: { authorization: `Bearer ${KEY}`, ...headers } }, (r) => {
        let body = '';
        r.setEncoding('utf8');
        r.on('data', (c: string) => (body += c));
        r.on('end', () => resolve({ status: r.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end('{}');
    });
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body).error.code).toBe('invalid_body');
    expect(provider.requests.length).toBe(seen);
  } finally {
    await gw.close();
  }
});
