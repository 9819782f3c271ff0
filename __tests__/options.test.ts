import express from 'express';
import request from 'supertest';
import { inferyStream, InferyOptionsError, type Options } from '../lib';

const valid: Options = { upstream: { baseURL: 'http://127.0.0.1:9/v1', apiKey: 'sk-x' }, authenticate: () => ({}) };

describe('options are validated when the middleware is created', () => {
  test.each<[string, unknown, RegExp]>([
    ['no options', undefined, /needs options/],
    ['a request instead of options (app.use(inferyStream))', { socket: {}, method: 'GET' }, /app\.use\(inferyStream\(\{/],
    ['no upstream', { authenticate: () => ({}) }, /`upstream` is required/],
    ['no upstream.baseURL', { upstream: {}, authenticate: () => ({}) }, /`upstream.baseURL` is required/],
    ['an invalid baseURL', { upstream: { baseURL: 'not a url' }, authenticate: () => ({}) }, /not a valid URL/],
    ['a non-http baseURL', { upstream: { baseURL: 'ftp://x/v1' }, authenticate: () => ({}) }, /http: or https:/],
    ['an empty apiKey (unset env var)', { upstream: { baseURL: 'http://x/v1', apiKey: '' }, authenticate: () => ({}) }, /environment variable/],
    ['no authenticate', { upstream: { baseURL: 'http://x/v1' } }, /`authenticate` must be a function and is required/],
    ['a misspelled option', { ...valid, metter: () => 1 }, /unknown option `metter`; did you mean `meter`\?/],
    ['a negative timeout', { ...valid, idleTimeout: -1 }, /`idleTimeout` must be a positive number of milliseconds/],
    ['a string body limit', { ...valid, bodyLimit: '10mb' }, /`bodyLimit` must be a positive number of bytes/],
    ['forwarding authorization', { ...valid, forwardHeaders: ['Authorization'] }, /cannot include "authorization"/],
    ['the key in upstream.headers', { ...valid, upstream: { baseURL: 'http://x/v1', headers: { Authorization: 'Bearer x' } } }, /upstream.apiKey/],
    ['a bad basePath', { ...valid, basePath: 'v1' }, /`basePath` must be a path/],
    ['a logger that is not a logger', { ...valid, logger: console.log }, /pino logger/],
    ['a meter that is not a function', { ...valid, meter: 3 }, /`meter` must be a function/],
    ['a wrongly cased option', { ...valid, basepath: '/v2' }, /did you mean `basePath`\?/],
    ['a zero defaultMaxTokens', { ...valid, defaultMaxTokens: 0 }, /`defaultMaxTokens` must be a positive whole number/],
    ['a fractional defaultMaxTokens', { ...valid, defaultMaxTokens: 1.5 }, /`defaultMaxTokens` must be a positive whole number/],
    ['a string defaultMaxTokens', { ...valid, defaultMaxTokens: '4096' }, /`defaultMaxTokens` must be a positive whole number/],
    ['a negative usageGraceTimeout', { ...valid, usageGraceTimeout: -1 }, /`usageGraceTimeout` must be a non-negative number of milliseconds/],
    ['a reserve that is not a function', { ...valid, reserve: 3 }, /`reserve` must be a function/],
    ['a misspelled reserve', { ...valid, reserv: () => true }, /did you mean `reserve`\?/],
    ['passThrough as a route string', { ...valid, passThrough: 'GET /models' }, /`passThrough` must be a list of routes/],
  ])('%s throws a message that says how to fix it', (_name, options, message) => {
    expect(() => inferyStream(options as Options)).toThrow(InferyOptionsError);
    expect(() => inferyStream(options as Options)).toThrow(message);
  });

  test('does not mutate the caller\'s options', () => {
    const options = { ...valid, upstream: { ...valid.upstream!, headers: { 'X-Org': 'a' } } };
    const before = JSON.stringify(options);
    inferyStream(options).close();
    expect(JSON.stringify(options)).toBe(before);
  });

  test('app.use(inferyStream) without calling it fails with a clear message', async () => {
    const app = express();
    app.use(inferyStream as never);
    app.use((err: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => void res.status(500).send(err.message));
    const res = await request(app).get('/v1/models');
    expect(res.text).toMatch(/use app\.use\(inferyStream\(\{ \.\.\. \}\)\)/);
  });

  test('leaves every other route to the host app, and serves a custom basePath', async () => {
    const app = express();
    const gateway = inferyStream({ ...valid, basePath: '/api/llm/' });
    app.use(gateway);
    app.get('/v1/models', (_req, res) => void res.send('host route'));
    try {
      expect((await request(app).get('/v1/models')).text).toBe('host route');
      const res = await request(app).post('/api/llm/chat/completions').send({});
      expect(res.status).toBe(400);
      expect(res.body.error.param).toBe('model');
    } finally {
      gateway.close();
    }
  });

  test('hooks are typed with the framework request that authenticate declares: req.user without casts', () => {
    type Req = express.Request & { user?: { id: string; plan: 'free' | 'pro' } };
    const gateway = inferyStream({
      ...valid,
      authenticate: (req: Req) => req.user ?? null,
      preflight: ({ req, account }) => req.user?.id === account.id,
      reserve: ({ req }) => (req.user?.plan === 'pro' ? 'hold' : false),
      meter: ({ req, account }) => (req.user?.plan === 'pro' && account.id ? 1 : 0),
    });
    gateway.close();
  });
});
