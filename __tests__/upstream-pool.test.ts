import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { InferyError } from '../lib/base/errors';
import { readText } from '../lib/base/request-body';
import { UpstreamAttemptsError, UpstreamPool, type PoolCall, type PoolSettings } from '../lib/services/upstream/upstream-pool';
import { compileGlob, parseFallback, parseUpstreams, type FallbackOptions, type UpstreamConfig } from '../lib/services/upstream/upstreams';

const fail = (message: string): never => {
  throw new TypeError(message);
};

/** A request one test provider received. */
interface Seen {
  /** The request target as the provider read it (path and query). */
  url: string;
  headers: http.IncomingHttpHeaders;
  model: string;
  /** Resolves when the gateway side closed the connection before the provider answered in full. */
  closedEarly: Promise<void>;
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A local OpenAI-shaped provider whose answer each test sets. */
class Provider {
  readonly seen: Seen[] = [];
  handler: Handler = (_req, res) => void res.end('{}');
  private readonly server = http.createServer((req, res) => void this.handle(req, res));
  url = '';

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1`;
    return this;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const text = await readText(req, 1024 * 1024).catch(() => '{}');
    const closedEarly = new Promise<void>((resolve) => res.once('close', () => (res.writableFinished ? undefined : resolve())));
    this.seen.push({ url: req.url ?? '', headers: req.headers, model: String((JSON.parse(text) as { model?: unknown }).model), closedEarly });
    this.handler(req, res);
  }
}

const json = (status: number, body: unknown): Handler => (_req, res) => {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
};
const hang: Handler = () => {};
const ok = json(200, { id: 'chatcmpl-1', object: 'chat.completion', choices: [] });

async function refusedURL(): Promise<string> {
  const closed = http.createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  return `http://127.0.0.1:${port}/v1`;
}

async function waitFor(check: () => boolean, what: string, ms = 3000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Stands in for the client's request: the pool reads only its headers (for `forwardHeaders`). */
const clientReq = { headers: { 'openai-beta': 'assistants=v2', authorization: 'Bearer client-key', cookie: 'session=1' } } as unknown as IncomingMessage;
const chatBody = (providerModel: string): string => JSON.stringify({ model: providerModel, messages: [{ role: 'user', content: 'hi' }] });

const providers = Array.from({ length: 3 }, () => new Provider());
const [a, b, c] = providers as [Provider, Provider, Provider];
let refused: string;
const pools: UpstreamPool[] = [];
const logLines: object[] = [];

beforeAll(async () => {
  await Promise.all(providers.map((p) => p.start()));
  refused = await refusedURL();
});
afterAll(async () => {
  for (const pool of pools) pool.close();
  await Promise.all(providers.map((p) => p.stop()));
});
beforeEach(() => {
  for (const p of providers) {
    p.seen.length = 0;
    p.handler = ok;
  }
  logLines.length = 0;
});

function pool(configs: UpstreamConfig[], settings: Omit<Partial<PoolSettings>, 'fallback'> & { fallback?: FallbackOptions } = {}): UpstreamPool {
  const created = new UpstreamPool(parseUpstreams(configs, fail), {
    forwardHeaders: new Set(['openai-beta']),
    upstreamTimeout: 2_000,
    logger: { warn: (obj) => void logLines.push(obj) },
    ...settings,
    fallback: parseFallback(settings.fallback, fail),
  });
  pools.push(created);
  return created;
}

/** The rejection of a call, which must be an UpstreamAttemptsError. */
async function rejectionOf(call: PoolCall): Promise<UpstreamAttemptsError> {
  const err = await call.response.then(
    () => {
      throw new Error('expected the call to fail');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UpstreamAttemptsError);
  expect(err).toBeInstanceOf(InferyError);
  return err as UpstreamAttemptsError;
}

describe('which upstreams serve a model', () => {
  const upstreams = (): UpstreamPool =>
    pool([
      { name: 'openai', baseURL: 'https://api.openai.com/v1', models: ['gpt-*', 'o3', 'text-embedding-3-small'], aliases: { fast: 'gpt-4o-mini' } },
      { name: 'groq', baseURL: 'https://api.groq.com/openai/v1', models: ['llama-*-instant', 'mixtral'], aliases: { fast: 'llama-3.1-8b-instant', 'gpt-4o': 'llama-3.3-70b' } },
      { name: 'anything', baseURL: 'http://127.0.0.1:9/v1' },
    ]);

  test('candidates come in list order, each with the name its provider knows the model by', () => {
    const p = upstreams();
    const names = (model: string): string[] => p.candidates(model).map(({ upstream, providerModel }) => `${upstream.name}:${providerModel}`);
    expect(names('gpt-4o')).toEqual(['openai:gpt-4o', 'groq:llama-3.3-70b', 'anything:gpt-4o']);
    expect(names('fast')).toEqual(['openai:gpt-4o-mini', 'groq:llama-3.1-8b-instant', 'anything:fast']);
    expect(names('llama-3.1-8b-instant')).toEqual(['groq:llama-3.1-8b-instant', 'anything:llama-3.1-8b-instant']);
    expect(names('o3')).toEqual(['openai:o3', 'anything:o3']);
    expect(names('o3-mini')).toEqual(['anything:o3-mini']);
  });

  test('patterns match the whole name, case-sensitively, with only `*` special', () => {
    const match = (pattern: string, name: string): boolean => compileGlob(pattern)(name);
    expect(match('gpt-*', 'gpt-4o')).toBe(true);
    expect(match('gpt-*', 'gpt-')).toBe(true);
    expect(match('gpt-*', 'my-gpt-4o')).toBe(false);
    expect(match('gpt-*', 'GPT-4o')).toBe(false);
    expect(match('*-mini', 'gpt-4o-mini')).toBe(true);
    expect(match('*-mini', 'gpt-4o-mini-2024')).toBe(false);
    expect(match('a*b*c', 'abc')).toBe(true);
    expect(match('a*b*c', 'a-c-b')).toBe(false);
    expect(match('ab*ba', 'aba')).toBe(false); // prefix and suffix may not overlap
    expect(match('*', '')).toBe(true);
    expect(match('**', 'x')).toBe(true);
    expect(match('gpt-4.1', 'gpt-4x1')).toBe(false);
    expect(match('(a+)+$', '(a+)+$')).toBe(true);
    expect(match('(a+)+$', 'aaaa')).toBe(false);
    expect(match('m?', 'mx')).toBe(false);
  });

  test('a pathological pattern against a long name answers at once', () => {
    const pathological = compileGlob('*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b');
    const long = 'a'.repeat(10_000);
    const started = Date.now();
    for (let i = 0; i < 100; i++) {
      expect(pathological(long)).toBe(false);
      expect(pathological(`${long}b`)).toBe(true);
    }
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  test('GET /models lists exact names and aliases once each, in order; wildcards are reported', () => {
    const p = upstreams();
    expect(p.listModels()).toEqual(['o3', 'text-embedding-3-small', 'fast', 'mixtral', 'gpt-4o']);
    expect(p.hasWildcards()).toBe(true);
    const exact = pool([{ name: 'one', baseURL: 'http://x/v1', models: ['m1'], aliases: { m2: 'provider-m2' } }]);
    expect(exact.listModels()).toEqual(['m1', 'm2']);
    expect(exact.hasWildcards()).toBe(false);
    expect(exact.candidates('m3')).toEqual([]);
  });

  test('keys() lists every upstream key once', () => {
    const p = pool([
      { name: 'a', baseURL: 'http://x/v1', apiKey: 'key-one' },
      { name: 'b', baseURL: 'http://x/v1' },
      { name: 'c', baseURL: 'http://x/v1', apiKey: 'key-one' },
      { name: 'd', baseURL: 'http://x/v1', apiKey: 'key-two' },
    ]);
    expect(p.keys()).toEqual(['key-one', 'key-two']);
  });

  test('no upstream serving the model is 404 model_not_found, and nothing is sent', async () => {
    const p = pool([{ name: 'a', baseURL: a.url, models: ['gpt-*'] }]);
    const err = await rejectionOf(p.open('/chat/completions', 'claude-3', chatBody, clientReq, true));
    expect(err.toJSON()).toEqual({
      error: { message: 'The model `claude-3` is not served by this gateway.', type: 'invalid_request_error', code: 'model_not_found', param: 'model' },
    });
    expect(err.status).toBe(404);
    expect(err.failures).toEqual([]);
    expect(a.seen).toHaveLength(0);
  });
});

describe('where a request goes', () => {
  test('below the base URL\'s path, with or without its trailing slash; a query string on it (Azure\'s api-version) stays last', async () => {
    const origin = a.url.replace(/\/v1$/, '');
    for (const [baseURL, target] of [
      [`${origin}/v1`, '/v1/chat/completions'],
      [`${origin}/openai/deployments/gpt/`, '/openai/deployments/gpt/chat/completions'],
      [`${origin}/openai?api-version=2024-10-21`, '/openai/chat/completions?api-version=2024-10-21'],
      [origin, '/chat/completions'],
    ] as const) {
      a.seen.length = 0;
      const accepted = await pool([{ name: 'only', baseURL }]).open('/chat/completions', 'm', chatBody, clientReq, false).response;
      await readText(accepted.res, 1024);
      expect(a.seen.map((s) => s.url)).toEqual([target]);
    }
  });
});

describe('fallback before the first byte', () => {
  test('a first upstream answering 503 → the second serves, with the provider name of its alias', async () => {
    a.handler = json(503, { error: { message: 'overloaded', type: 'server_error' } });
    const p = pool([
      { name: 'first', baseURL: a.url },
      { name: 'second', baseURL: b.url, models: ['other'], aliases: { fast: 'second-fast-model' } },
    ]);
    const accepted = await p.open('/chat/completions', 'fast', chatBody, clientReq, false).response;
    expect(accepted.upstream.name).toBe('second');
    expect(accepted.providerModel).toBe('second-fast-model');
    expect(accepted.failures).toEqual([{ upstream: 'first', code: 'upstream_error', status: 503 }]);
    expect(accepted.res.statusCode).toBe(200);
    expect(JSON.parse(await readText(accepted.res, 1024))).toMatchObject({ id: 'chatcmpl-1' });
    expect(a.seen.map((s) => s.model)).toEqual(['fast']);
    expect(b.seen.map((s) => s.model)).toEqual(['second-fast-model']);
    expect(logLines).toEqual([{ upstream: 'first', code: 'upstream_error', status: 503, attempt: 1 }]);
  });

  test('a first upstream refusing the connection → the second serves', async () => {
    const p = pool([
      { name: 'down', baseURL: refused },
      { name: 'up', baseURL: b.url },
    ]);
    const accepted = await p.open('/chat/completions', 'gpt-4o', chatBody, clientReq, true).response;
    expect(accepted.upstream.name).toBe('up');
    expect(accepted.failures).toEqual([{ upstream: 'down', code: 'upstream_unreachable', status: 502 }]);
    accepted.res.resume();
    expect(b.seen).toHaveLength(1);
  });

  test('a first upstream sending no headers within upstreamTimeout → the second serves, and the first sees its request closed', async () => {
    a.handler = hang;
    const p = pool([{ name: 'slow', baseURL: a.url }, { name: 'quick', baseURL: b.url }], { upstreamTimeout: 200 });
    const started = Date.now();
    const accepted = await p.open('/chat/completions', 'gpt-4o', chatBody, clientReq, true).response;
    accepted.res.resume();
    expect(accepted.upstream.name).toBe('quick');
    expect(accepted.failures).toEqual([{ upstream: 'slow', code: 'upstream_timeout', status: 504 }]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(150);
    await a.seen[0]!.closedEarly;
  });

  test('a 400 is not retried: the caller gets it, in OpenAI shape', async () => {
    a.handler = json(400, { error: { message: 'Invalid value for temperature', type: 'invalid_request_error', code: 'invalid_value', param: 'temperature' } });
    const p = pool([{ name: 'first', baseURL: a.url }, { name: 'second', baseURL: b.url }]);
    const err = await rejectionOf(p.open('/chat/completions', 'gpt-4o', chatBody, clientReq, true));
    expect(err.status).toBe(400);
    expect(err.toJSON().error).toEqual({ message: 'Upstream provider error (400): Invalid value for temperature', type: 'invalid_request_error', code: 'invalid_value', param: 'temperature' });
    expect(err.failures).toEqual([{ upstream: 'first', code: 'invalid_value', status: 400 }]);
    expect(b.seen).toHaveLength(0);
  });

  test('a 429 is retried, but not when `fallback.on` leaves 429 out', async () => {
    a.handler = json(429, { error: { message: 'Rate limit reached', type: 'requests', code: 'rate_limit_exceeded' } });
    const retrying = pool([{ name: 'first', baseURL: a.url }, { name: 'second', baseURL: b.url }]);
    const accepted = await retrying.open('/chat/completions', 'gpt-4o', chatBody, clientReq, true).response;
    accepted.res.resume();
    expect(accepted.upstream.name).toBe('second');
    expect(accepted.failures).toEqual([{ upstream: 'first', code: 'rate_limit_exceeded', status: 429 }]);

    b.seen.length = 0;
    const strict = pool([{ name: 'first', baseURL: a.url }, { name: 'second', baseURL: b.url }], { fallback: { on: ['connection', 'timeout', '5xx'] } });
    const err = await rejectionOf(strict.open('/chat/completions', 'gpt-4o', chatBody, clientReq, true));
    expect(err.status).toBe(429);
    expect(err.code).toBe('rate_limit_exceeded');
    expect(b.seen).toHaveLength(0);
  });

  test('a 5xx is not retried when `fallback.on` leaves 5xx out', async () => {
    a.handler = json(500, { error: { message: 'boom' } });
    const p = pool([{ name: 'first', baseURL: a.url }, { name: 'second', baseURL: b.url }], { fallback: { on: ['connection'] } });
    const err = await rejectionOf(p.open('/chat/completions', 'gpt-4o', chatBody, clientReq, true));
    expect(err.status).toBe(500);
    expect(b.seen).toHaveLength(0);
  });

  test('every upstream failing: the last failure reaches the caller, with all of them', async () => {
    a.handler = json(503, {});
    b.handler = json(502, { error: { message: 'bad gateway', code: 'bad_gateway' } });
    const p = pool([{ name: 'a', baseURL: a.url }, { name: 'down', baseURL: refused }, { name: 'b', baseURL: b.url }]);
    const err = await rejectionOf(p.open('/chat/completions', 'gpt-4o', chatBody, clientReq, true));
    expect(err.status).toBe(502);
    expect(err.code).toBe('bad_gateway');
    expect(err.failures).toEqual([
      { upstream: 'a', code: 'upstream_error', status: 503 },
      { upstream: 'down', code: 'upstream_unreachable', status: 502 },
      { upstream: 'b', code: 'bad_gateway', status: 502 },
    ]);
    expect(logLines.map((line) => (line as { attempt: number }).attempt)).toEqual([1, 2, 3]);
  });

  test('maxAttempts bounds the upstreams tried: three answering 503, maxAttempts 2 → two tried', async () => {
    for (const p of providers) p.handler = json(503, {});
    const p = pool(
      [{ name: 'a', baseURL: a.url }, { name: 'b', baseURL: b.url }, { name: 'c', baseURL: c.url }],
      { fallback: { maxAttempts: 2 } },
    );
    const err = await rejectionOf(p.open('/chat/completions', 'gpt-4o', chatBody, clientReq, true));
    expect(err.status).toBe(503);
    expect(err.failures.map((f) => f.upstream)).toEqual(['a', 'b']);
    expect([a.seen.length, b.seen.length, c.seen.length]).toEqual([1, 1, 0]);
  });

  test('the deadline bounds all attempts: what is left of it shortens the next attempt, then no more are tried', async () => {
    a.handler = (req, res) => void setTimeout(() => json(503, {})(req, res), 200);
    b.handler = hang;
    const p = pool(
      [{ name: 'a', baseURL: a.url }, { name: 'b', baseURL: b.url }, { name: 'c', baseURL: c.url }],
      { upstreamTimeout: 10_000, fallback: { deadline: 500 } },
    );
    const started = Date.now();
    const err = await rejectionOf(p.open('/chat/completions', 'gpt-4o', chatBody, clientReq, true));
    const took = Date.now() - started;
    expect(err.status).toBe(504);
    expect(err.code).toBe('upstream_timeout');
    expect(err.failures).toEqual([
      { upstream: 'a', code: 'upstream_error', status: 503 },
      { upstream: 'b', code: 'upstream_timeout', status: 504 },
    ]);
    expect(took).toBeGreaterThanOrEqual(450);
    expect(took).toBeLessThan(5_000);
    expect(c.seen).toHaveLength(0);
    await b.seen[0]!.closedEarly;
  });

  test('an error answer whose body stalls is given up on at the deadline, keeping its status', async () => {
    a.handler = (_req, res) => {
      res.writeHead(503, { 'content-type': 'application/json' });
      res.write('{"error":');
    };
    const p = pool([{ name: 'a', baseURL: a.url }, { name: 'b', baseURL: b.url }], { fallback: { deadline: 300 } });
    const err = await rejectionOf(p.open('/chat/completions', 'gpt-4o', chatBody, clientReq, true));
    expect(err.status).toBe(503);
    expect(err.failures).toEqual([{ upstream: 'a', code: 'upstream_error', status: 503 }]);
    expect(b.seen).toHaveLength(0);
  });

  test('a failed answer with a huge body is read no further than 64 KiB before the next upstream serves', async () => {
    let written = 0;
    a.handler = (_req, res) => {
      res.writeHead(503, { 'content-type': 'text/html' });
      const chunk = Buffer.alloc(64 * 1024, 'x');
      const pump = (): void => {
        while (written < 64 * 1024 * 1024 && !res.destroyed) {
          written += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    };
    const p = pool([{ name: 'a', baseURL: a.url }, { name: 'b', baseURL: b.url }]);
    const accepted = await p.open('/chat/completions', 'gpt-4o', chatBody, clientReq, true).response;
    accepted.res.resume();
    expect(accepted.upstream.name).toBe('b');
    expect(accepted.failures).toEqual([{ upstream: 'a', code: 'upstream_error', status: 503 }]);
    await a.seen[0]!.closedEarly;
    expect(written).toBeLessThan(16 * 1024 * 1024);
  });

  test('a 2xx is accepted as it is: its body failing later is the caller\'s, never retried', async () => {
    a.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"choices":[]}\n\n', () => setTimeout(() => res.destroy(), 50));
    };
    const p = pool([{ name: 'a', baseURL: a.url }, { name: 'b', baseURL: b.url }]);
    const accepted = await p.open('/chat/completions', 'gpt-4o', chatBody, clientReq, true).response;
    expect(accepted.upstream.name).toBe('a');
    expect(accepted.failures).toEqual([]);
    await expect(readText(accepted.res, 1024 * 1024)).rejects.toThrow();
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(b.seen).toHaveLength(0);
  });
});

describe('abort', () => {
  test('abort() during an attempt stops everything: the upstream sees its request closed, no other is tried', async () => {
    a.handler = hang;
    const p = pool([{ name: 'a', baseURL: a.url }, { name: 'b', baseURL: b.url }]);
    const call = p.open('/chat/completions', 'gpt-4o', chatBody, clientReq, true);
    const rejected = rejectionOf(call);
    await waitFor(() => a.seen.length === 1, 'the first upstream to receive the request');
    call.abort();
    const err = await rejected;
    expect(err.status).toBe(499);
    expect(err.code).toBe('client_closed_request');
    await a.seen[0]!.closedEarly;
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(b.seen).toHaveLength(0);
  });

  test('abort() while a failed answer is being read stops before the next upstream', async () => {
    a.handler = (_req, res) => {
      res.writeHead(503, { 'content-type': 'application/json' });
      res.write('{"error":');
    };
    const p = pool([{ name: 'a', baseURL: a.url }, { name: 'b', baseURL: b.url }]);
    const call = p.open('/chat/completions', 'gpt-4o', chatBody, clientReq, true);
    const rejected = rejectionOf(call);
    await waitFor(() => a.seen.length === 1, 'the first upstream to receive the request');
    await new Promise((resolve) => setTimeout(resolve, 50));
    call.abort();
    expect((await rejected).code).toBe('client_closed_request');
    await a.seen[0]!.closedEarly;
    expect(b.seen).toHaveLength(0);
  });

  test('abort() after an answer was accepted closes that answer\'s connection', async () => {
    a.handler = (_req, res) => void res.writeHead(200, { 'content-type': 'text/event-stream' }).write(': open\n\n');
    const p = pool([{ name: 'a', baseURL: a.url }]);
    const call = p.open('/chat/completions', 'gpt-4o', chatBody, clientReq, true);
    const accepted = await call.response;
    accepted.res.resume();
    call.abort();
    await a.seen[0]!.closedEarly;
  });
});

describe('keys', () => {
  const keyA = 'key-alpha-A1b2C3d4E5f6G7h8I9j0';
  const keyB = 'key-bravo-Z9y8X7w6V5u4T3s2R1q0';

  test('each upstream receives its own key only, and never the client\'s credentials', async () => {
    a.handler = json(503, {});
    const p = pool([
      { name: 'a', baseURL: a.url, apiKey: keyA, headers: { 'X-Org': 'org-a' } },
      { name: 'b', baseURL: b.url, apiKey: keyB },
    ]);
    const accepted = await p.open('/chat/completions', 'gpt-4o', chatBody, clientReq, true).response;
    accepted.res.resume();
    const [seenA, seenB] = [a.seen[0]!, b.seen[0]!];
    expect(seenA.headers.authorization).toBe(`Bearer ${keyA}`);
    expect(seenB.headers.authorization).toBe(`Bearer ${keyB}`);
    expect(seenA.headers['x-org']).toBe('org-a');
    expect(seenB.headers['x-org']).toBeUndefined();
    expect(seenA.headers['openai-beta']).toBe('assistants=v2');
    expect(JSON.stringify(seenA.headers)).not.toContain(keyB);
    expect(JSON.stringify(seenB.headers)).not.toContain(keyA);
    for (const seen of [seenA, seenB]) {
      expect(JSON.stringify(seen.headers)).not.toContain('client-key');
      expect(seen.headers.cookie).toBeUndefined();
    }
  });

  test('an upstream echoing its key in its error reaches neither the error nor the log lines', async () => {
    const echo = (): Handler => (req, res) => {
      const key = String(req.headers.authorization).replace('Bearer ', '');
      const secret = key.replace(/^key-[a-z]+-/, '');
      json(503, { error: { message: `Key ${key} (…${secret}) is over quota`, type: `type ${key}`, code: `code_${secret}`, param: key } })(req, res);
    };
    a.handler = echo();
    b.handler = echo();
    const p = pool([{ name: 'a', baseURL: a.url, apiKey: keyA }, { name: 'b', baseURL: b.url, apiKey: keyB }]);
    const err = await rejectionOf(p.open('/chat/completions', 'gpt-4o', chatBody, clientReq, true));
    expect(err.status).toBe(503);
    const visible = JSON.stringify([err.toJSON(), err.message, err.code, err.failures, logLines]);
    expect(visible).toContain('[redacted]');
    for (const secret of [keyA, keyB, keyA.slice(10), keyB.slice(10)]) expect(visible).not.toContain(secret);
  });
});

describe('options are validated with messages that say how to fix them', () => {
  const ok = { name: 'a', baseURL: 'https://api.example.com/v1' };
  test.each<[string, unknown, RegExp]>([
    ['not a list', { name: 'a' }, /`upstreams` must be a list of upstreams/],
    ['an empty list', [], /needs at least one upstream/],
    ['an entry that is not an object', ['https://x/v1'], /`upstreams\[0\]` must be an object/],
    ['no name', [{ baseURL: 'https://x/v1' }], /`upstreams\[0\]\.name` is required/],
    ['an empty name', [{ ...ok, name: '' }], /`upstreams\[0\]\.name` is required/],
    ['a name with a space', [{ ...ok, name: 'my upstream' }], /no whitespace/],
    ['a name used twice', [ok, { ...ok }], /`upstreams\[1\]\.name` "a" is used twice/],
    ['no baseURL', [{ name: 'a' }], /`upstreams\[0\]\.baseURL` is required/],
    ['an invalid baseURL', [{ ...ok, baseURL: 'not a url' }], /not a valid URL/],
    ['a non-http baseURL', [{ ...ok, baseURL: 'ftp://x/v1' }], /must be http: or https:/],
    ['an empty apiKey (unset env var)', [{ ...ok, apiKey: '' }], /`upstreams\[0\]\.apiKey` must be a non-empty string.*environment variable/],
    ['a numeric apiKey', [{ ...ok, apiKey: 42 }], /`upstreams\[0\]\.apiKey` must be a non-empty string/],
    ['headers as a list', [{ ...ok, headers: ['x'] }], /`upstreams\[0\]\.headers` must be an object/],
    ['a header that is not a string', [{ ...ok, headers: { 'x-a': 1 } }], /`upstreams\[0\]\.headers\.x-a` must be a string/],
    ['the key in headers', [{ ...ok, headers: { Authorization: 'Bearer x' } }], /with `upstreams\[0\]\.apiKey`, not/],
    ['a header name with a space', [{ ...ok, headers: { 'x a': 'v' } }], /not a valid HTTP header name/],
    ['a header value with a newline', [{ ...ok, headers: { 'x-a': 'v\r\nx-b: w' } }], /invalid characters/],
    ['models not a list', [{ ...ok, models: 'gpt-*' }], /`upstreams\[0\]\.models` must be a non-empty list/],
    ['an empty models list', [{ ...ok, models: [] }], /leave it out to serve every model/],
    ['an empty model name', [{ ...ok, models: ['gpt-*', ''] }], /`upstreams\[0\]\.models` must be a non-empty list/],
    ['aliases as a list', [{ ...ok, aliases: ['fast'] }], /`upstreams\[0\]\.aliases` must be an object/],
    ['an alias to a number', [{ ...ok, aliases: { fast: 4 } }], /`upstreams\[0\]\.aliases\.fast` must be the provider's model name/],
    ['an empty alias target', [{ ...ok, aliases: { fast: '' } }], /`upstreams\[0\]\.aliases\.fast`/],
    ['a misspelled key', [{ ...ok, baseUrl: 'https://x/v1' }], /unknown key `upstreams\[0\]\.baseUrl`; did you mean `baseURL`\?/],
    ['a misspelled key in the second entry', [ok, { name: 'b', baseURL: 'https://x/v1', model: ['x'] }], /unknown key `upstreams\[1\]\.model`; did you mean `models`\?/],
  ])('upstreams: %s', (_name, value, message) => {
    expect(() => parseUpstreams(value, fail)).toThrow(message);
  });

  test.each<[string, unknown, RegExp]>([
    ['not an object', 3, /`fallback` must be an object/],
    ['`on` not a list', { on: '5xx' }, /`fallback\.on` must be a list of "connection", "timeout", "429", "5xx"/],
    ['`on` with a number', { on: [503] }, /may hold only .* got 503 \(write "5xx" as a string\)/],
    ['`on` with an unknown trigger', { on: ['4xx'] }, /may hold only "connection", "timeout", "429", "5xx", got "4xx"/],
    ['a zero maxAttempts', { maxAttempts: 0 }, /`fallback\.maxAttempts` must be a whole number from 1 to 100/],
    ['a fractional maxAttempts', { maxAttempts: 1.5 }, /`fallback\.maxAttempts` must be a whole number/],
    ['a negative deadline', { deadline: -1 }, /`fallback\.deadline` must be a positive number of milliseconds/],
    ['an infinite deadline', { deadline: Infinity }, /`fallback\.deadline` must be a positive number/],
    ['a misspelled key', { maxAttempt: 2 }, /unknown key `fallback\.maxAttempt`; did you mean `maxAttempts`\?/],
  ])('fallback: %s', (_name, value, message) => {
    expect(() => parseFallback(value, fail)).toThrow(message);
  });

  test('defaults, and what a valid entry resolves to', () => {
    expect(parseFallback(undefined, fail)).toEqual({ on: ['connection', 'timeout', '429', '5xx'], maxAttempts: 3, deadline: 120_000 });
    expect(parseFallback({ on: ['5xx', 'connection', '5xx'], maxAttempts: 1 }, fail)).toEqual({ on: ['connection', '5xx'], maxAttempts: 1, deadline: 120_000 });
    const input = [{ ...ok, apiKey: 'k', headers: { 'X-Org': 'o' }, aliases: { fast: 'm' } }];
    const before = JSON.stringify(input);
    const [upstream] = parseUpstreams(input, fail);
    expect(JSON.stringify(input)).toBe(before);
    expect(upstream!.baseURL.href).toBe('https://api.example.com/v1');
    expect(upstream!.headers).toEqual({ 'x-org': 'o' });
    expect(upstream!.serves('anything')).toBe(true); // models defaults to ["*"]
    expect(upstream!.providerModel('fast')).toBe('m');
    expect(upstream!.providerModel('gpt-4o')).toBe('gpt-4o');
  });

  test('an alias named like an Object.prototype member is just a name', () => {
    const [upstream] = parseUpstreams([{ ...ok, models: ['x'], aliases: JSON.parse('{"__proto__":"p","constructor":"c"}') as Record<string, string> }], fail);
    expect(upstream!.serves('toString')).toBe(false);
    expect(upstream!.serves('constructor')).toBe(true);
    expect(upstream!.providerModel('__proto__')).toBe('p');
    expect(upstream!.providerModel('toString')).toBe('toString');
  });
});
