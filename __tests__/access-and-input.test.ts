import request from 'supertest';
import { InferyError } from '../lib';
import { ScriptedProvider, textSteps } from './helpers/provider';
import { KEY, startGateway, UPSTREAM_KEY, type TestGateway } from './helpers/gateway';
import { postStream } from './helpers/sse-client';

const chat = { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] };

let provider: ScriptedProvider;
beforeAll(async () => {
  provider = await new ScriptedProvider().start();
  provider.reply = () => ({ steps: textSteps(['ok']) });
});
afterAll(() => provider.stop());

/** `withJson` overrides code/param where express.json() answered first (it turns an empty body into {}). */
type Case = { name: string; send: (gw: string) => request.Test; status: number; code: string; param?: string; withJson?: { code: string; param?: string } };
const auth = `Bearer ${KEY}`;
const post = (url: string) => request(url).post('/v1/chat/completions');
const cases: Case[] = [
  { name: 'malformed JSON', send: (u) => post(u).set('Authorization', auth).set('Content-Type', 'application/json').send('{"model": "x",'), status: 400, code: 'invalid_json' },
  { name: 'an empty body', send: (u) => post(u).set('Authorization', auth).set('Content-Type', 'application/json').send(''), status: 400, code: 'invalid_body', withJson: { code: 'missing_required_parameter', param: 'model' } },
  { name: 'a JSON array', send: (u) => post(u).set('Authorization', auth).send([1, 2]), status: 400, code: 'invalid_body' },
  { name: 'no model', send: (u) => post(u).set('Authorization', auth).send({ messages: chat.messages }), status: 400, code: 'missing_required_parameter', param: 'model' },
  { name: 'an empty model', send: (u) => post(u).set('Authorization', auth).send({ model: ' ', messages: chat.messages }), status: 400, code: 'missing_required_parameter', param: 'model' },
  { name: 'no messages', send: (u) => post(u).set('Authorization', auth).send({ model: 'm' }), status: 400, code: 'missing_required_parameter', param: 'messages' },
  { name: 'messages not an array', send: (u) => post(u).set('Authorization', auth).send({ model: 'm', messages: 'hi' }), status: 400, code: 'missing_required_parameter', param: 'messages' },
  { name: 'stream not a boolean', send: (u) => post(u).set('Authorization', auth).send({ ...chat, stream: 'yes' }), status: 400, code: 'invalid_type', param: 'stream' },
  { name: 'a body nested 150 levels deep', send: (u) => post(u).set('Authorization', auth).set('Content-Type', 'application/json').send(`{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":${'['.repeat(150)}${']'.repeat(150)}}`), status: 400, code: 'invalid_json' },
  { name: 'max_tokens not a whole number', send: (u) => post(u).set('Authorization', auth).send({ ...chat, max_tokens: 1.5 }), status: 400, code: 'invalid_value', param: 'max_tokens' },
  { name: 'a body over the limit', send: (u) => post(u).set('Authorization', auth).send({ ...chat, pad: 'x'.repeat(2048) }), status: 413, code: 'request_too_large' },
  { name: 'no key', send: (u) => post(u).send(chat), status: 401, code: 'invalid_api_key' },
  { name: 'an unknown key', send: (u) => post(u).set('Authorization', 'Bearer nope').send(chat), status: 401, code: 'invalid_api_key' },
  { name: 'a GET', send: (u) => request(u).get('/v1/chat/completions').set('Authorization', auth), status: 405, code: 'method_not_allowed' },
];

describe.each([false, true])('bad input and access (host ran express.json(): %s)', (json) => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway(provider.url, { bodyLimit: 1024 }, { json });
  });
  afterAll(() => gw.close());

  test.each(cases)('$name → $status $code, in OpenAI shape, nothing upstream', async ({ send, status, withJson, ...expected }) => {
    const { code, param } = json && withJson ? withJson : expected;
    const seen = provider.requests.length;
    const res = await send(gw.url);
    expect(res.status).toBe(status);
    expect(res.body).toEqual({ error: { message: expect.any(String), type: expect.any(String), code, param: param ?? null } });
    expect(res.body.error.message.length).toBeGreaterThan(10);
    expect(provider.requests.length).toBe(seen);
    expect(gw.meterCalls).toHaveLength(0);
  });
});

describe('pre-flight and hooks', () => {
  test('a pre-flight check that refuses answers 402 insufficient_quota before any upstream call', async () => {
    const gw = await startGateway(provider.url, { preflight: () => false });
    try {
      const seen = provider.requests.length;
      const res = await post(gw.url).set('Authorization', auth).send(chat);
      expect(res.status).toBe(402);
      expect(res.body.error).toMatchObject({ code: 'insufficient_quota', type: 'insufficient_quota' });
      expect(provider.requests.length).toBe(seen);
    } finally {
      await gw.close();
    }
  });

  test('pre-flight sees the account and the parsed body, and may throw an InferyError of its own', async () => {
    const seen: unknown[] = [];
    const gw = await startGateway(provider.url, {
      preflight: ({ account, body, path }) => {
        seen.push({ account, model: body?.model, path });
        throw new InferyError(403, 'model_not_allowed', 'Your plan does not include this model.', { param: 'model' });
      },
    });
    try {
      const res = await post(gw.url).set('Authorization', auth).send(chat);
      expect(res.status).toBe(403);
      expect(res.body).toEqual({ error: { message: 'Your plan does not include this model.', type: 'invalid_request_error', code: 'model_not_allowed', param: 'model' } });
      expect(seen).toEqual([{ account: { id: 'acct-1' }, model: 'test-model', path: '/chat/completions' }]);
    } finally {
      await gw.close();
    }
  });

  test('an authenticate hook that throws is a 500 without its message or stack, and is logged', async () => {
    const gw = await startGateway(provider.url, {
      authenticate: () => {
        throw new Error('db password=hunter2 unreachable');
      },
    });
    try {
      const res = await post(gw.url).set('Authorization', auth).send(chat);
      expect(res.status).toBe(500);
      expect(res.body.error.code).toBe('internal_error');
      expect(res.text).not.toContain('hunter2');
      expect(gw.logs.some((l) => l.msg === 'infery-stream hook or handler threw')).toBe(true);
    } finally {
      await gw.close();
    }
  });
});

describe('what goes upstream', () => {
  test('the client key, cookies and other headers never reach the upstream; the gateway adds its own key', async () => {
    const gw = await startGateway(provider.url, { forwardHeaders: ['openai-beta', 'x-trace'] });
    try {
      await postStream(gw.url, chat, {
        headers: { cookie: 'session=abc', 'x-api-key': 'client', 'x-secret-internal': 'yes', 'openai-beta': 'assistants=v2', 'x-trace': 't1', 'x-forwarded-for': '10.0.0.1' },
      });
      const h = provider.last.headers;
      expect(h.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
      expect(h.cookie).toBeUndefined();
      expect(h['x-api-key']).toBeUndefined();
      expect(h['x-secret-internal']).toBeUndefined();
      expect(h['x-forwarded-for']).toBeUndefined();
      expect(h['openai-beta']).toBe('assistants=v2');
      expect(h['x-trace']).toBe('t1');
      expect(JSON.stringify(h)).not.toContain(KEY);
    } finally {
      await gw.close();
    }
  });

  test('the logs carry no key and no prompt text', async () => {
    const gw = await startGateway(provider.url);
    try {
      await postStream(gw.url, { ...chat, messages: [{ role: 'user', content: 'my secret prompt' }] });
      const text = JSON.stringify(gw.logs);
      expect(text).not.toContain(UPSTREAM_KEY);
      expect(text).not.toContain(KEY);
      expect(text).not.toContain('secret prompt');
      const line = gw.logs.find((l) => l.msg === 'infery-stream request')!;
      expect(line).toMatchObject({ providerId: 'chatcmpl-test123', generationId: expect.stringMatching(/^gen-/), model: 'test-model', status: 200, stream: true, cancelled: false, credits: 13 });
      expect(line).toHaveProperty('ttftMs');
      expect(line).toHaveProperty('durationMs');
      expect(line).toHaveProperty('usage');
      expect(line).toHaveProperty('reqId');
    } finally {
      await gw.close();
    }
  });
});
