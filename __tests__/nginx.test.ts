import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { startExampleApp, stopAllApps, type AppProcess } from './helpers/app-process';
import { freePort, noticeOnce, withOutputOnFailure } from './helpers/local-process';
import { describeNginx, startNginx, stopAllNginx, type NginxHandle } from './helpers/nginx';

// deploy/nginx.conf — the configuration the README shows — run by Debian's nginx in front of two example-app
// processes (in-memory ledgers), both streaming from a provider in this process.

const KEY = 'key-nginx';
const PACE_MS = 300;

/** What the provider saw of one request: which instance sent it, when it wrote each chunk, when it was closed. */
interface ProviderCall {
  instance: string;
  prompt: string;
  /** performance.now() when each content chunk was written. */
  sentAt: number[];
  /** performance.now() when the connection closed before the answer was complete. */
  closedEarlyAt?: number;
}

const BASE = { id: 'chatcmpl-nginx', object: 'chat.completion.chunk', created: 1_700_000_000, model: 'mock-1' };
const content = (text: string): string => `data: ${JSON.stringify({ ...BASE, choices: [{ index: 0, delta: { content: text }, finish_reason: null }] })}\n\n`;
const finish = `data: ${JSON.stringify({ ...BASE, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`;
const usage = `data: ${JSON.stringify({ ...BASE, choices: [], usage: { prompt_tokens: 5, completion_tokens: 4, total_tokens: 9 } })}\n\n`;

/**
 * An OpenAI-compatible provider whose answer depends on the prompt: `paced` writes 4 content chunks PACE_MS
 * apart, `hang` writes one and then nothing (until it is closed), anything else answers at once. Each gateway
 * instance calls it with its own upstream key, so the provider knows which instance a request went through.
 */
async function startProvider(): Promise<{ url: string; calls: ProviderCall[]; close(): Promise<void> }> {
  const calls: ProviderCall[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const later = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      const t = setTimeout(() => {
        timers.delete(t);
        resolve();
      }, ms);
      timers.add(t);
    });
  const server = http.createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += String(chunk);
    const messages = (JSON.parse(body || '{}') as { messages?: Array<{ content?: string }> }).messages ?? [];
    const call: ProviderCall = { instance: String(req.headers.authorization).replace('Bearer upstream-', ''), prompt: messages.at(-1)?.content ?? '', sentAt: [] };
    calls.push(call);
    res.on('close', () => {
      if (!res.writableFinished) call.closedEarlyAt = performance.now();
    });
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.flushHeaders();
    const send = (text: string): void => {
      res.write(content(text));
      call.sentAt.push(performance.now());
    };
    if (call.prompt === 'hang') {
      send('waiting');
      return; // until the gateway closes the connection
    }
    const chunks = call.prompt === 'paced' ? ['one', ' two', ' three', ' four'] : ['quick', ' answer'];
    for (const [i, text] of chunks.entries()) {
      if (i > 0 && call.prompt === 'paced') await later(PACE_MS);
      if (res.destroyed) return;
      send(text);
    }
    res.end(`${finish}${usage}data: [DONE]\n\n`);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    calls,
    close: async () => {
      for (const t of timers) clearTimeout(t);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** One SSE event as the client received it. */
interface Arrival {
  at: number;
  data: string;
}

interface StreamResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  events: Arrival[];
}

/**
 * POSTs a streaming chat request to `url` on a fresh connection and records when each `data:` event arrives.
 * `hangUpAfter(n)`: the client destroys its socket once it has `n` content events, resolving with the time.
 */
function streamChat(url: string, prompt: string, opts: { requestId?: string; hangUpAfter?: number } = {}): Promise<StreamResult & { hungUpAt?: number }> {
  const body = JSON.stringify({ model: 'mock-1', stream: true, messages: [{ role: 'user', content: prompt }] });
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) };
    if (opts.requestId) headers['x-request-id'] = opts.requestId;
    const req = http.request(`${url}/v1/chat/completions`, { method: 'POST', agent: false, headers });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`no complete answer to ${prompt} within 15 s`));
    }, 15_000);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.on('response', (res) => {
      const events: Arrival[] = [];
      let buffered = '';
      res.setEncoding('utf8');
      res.on('data', (text: string) => {
        const at = performance.now();
        buffered += text;
        let end: number;
        while ((end = buffered.indexOf('\n\n')) !== -1) {
          const event = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          const data = event
            .split('\n')
            .filter((line) => line.startsWith('data: '))
            .map((line) => line.slice(6))
            .join('\n');
          if (data) events.push({ at, data });
        }
        if (opts.hangUpAfter !== undefined && events.filter((e) => contentOf(e) !== undefined).length >= opts.hangUpAfter) {
          const hungUpAt = performance.now();
          req.destroy(); // the client's socket to nginx is gone, mid-stream
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, events, hungUpAt });
        }
      });
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, events });
      });
    });
    req.end(body);
  });
}

function contentOf(event: Arrival): string | undefined {
  if (event.data === '[DONE]') return undefined;
  const chunk = JSON.parse(event.data) as { choices?: Array<{ delta?: { content?: string } }> };
  return chunk.choices?.[0]?.delta?.content;
}

/** Polls `check` every 5 ms until it returns a value, for at most `timeoutMs`. */
async function until<T>(what: string, check: () => T | undefined | Promise<T | undefined>, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/**
 * A raw HTTP/1.1 exchange on a fresh socket: writes `request` and ends the client's side (so nginx need not
 * linger for a body that will not come), resolves with everything read until the close.
 */
function rawExchange(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let text = '';
    socket.setTimeout(10_000, () => socket.destroy(new Error('no answer within 10 s')));
    socket.on('connect', () => socket.end(request));
    socket.on('data', (data) => (text += data.toString('utf8')));
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
  });
}

describeNginx('deploy/nginx.conf in front of two gateway instances', () => {
  let provider: Awaited<ReturnType<typeof startProvider>>;
  let a: AppProcess;
  let b: AppProcess;
  let nginx: NginxHandle;
  const logs = () => [a, b, nginx];

  beforeAll(async () => {
    provider = await startProvider();
    const env = (instance: string): Record<string, string> => ({
      INFERY_UPSTREAM_URL: provider.url,
      INFERY_UPSTREAM_KEY: `upstream-${instance}`,
      INFERY_API_KEYS: `${KEY}:100000`,
      INFERY_MAX_CONCURRENT: '0',
      INFERY_RPM: '0',
      LOG_LEVEL: 'info',
    });
    [a, b] = await Promise.all([startExampleApp(env('a')), startExampleApp(env('b'))]);
    nginx = await startNginx([a.port, b.port]);
  }, 60_000);

  afterAll(async () => {
    await stopAllNginx();
    await stopAllApps();
    await provider?.close();
  }, 30_000);

  it('streams content chunks one by one: each reaches the client before the provider sends the next', () =>
    withOutputOnFailure(logs(), async () => {
      const before = provider.calls.length;
      const result = await streamChat(nginx.url, 'paced');
      expect(result.status).toBe(200);
      expect(result.headers['content-type']).toMatch(/^text\/event-stream/);
      const call = provider.calls.slice(before).find((c) => c.prompt === 'paced')!;

      const contents = result.events.filter((e) => contentOf(e) !== undefined);
      expect(contents.map(contentOf)).toEqual(['one', ' two', ' three', ' four']);
      expect(call.sentAt).toHaveLength(4);
      const lead: number[] = [];
      for (let i = 0; i < 3; i++) {
        // chunk i was in the client's hands before the provider wrote chunk i+1 (PACE_MS later)
        expect(contents[i]!.at).toBeLessThan(call.sentAt[i + 1]!);
        lead.push(Math.round(call.sentAt[i + 1]! - contents[i]!.at));
      }
      const delays = contents.map((e, i) => Math.round((e.at - call.sentAt[i]!) * 10) / 10);
      noticeOnce(`nginx stream: provider-to-client delay per chunk ${delays.join(', ')} ms (chunks ${PACE_MS} ms apart; arrived ${lead.join(', ')} ms before the next was sent)`);

      // the stream ends with the gateway's usage chunk (credits_used), then [DONE]
      const last = result.events.at(-1)!;
      const gatewayUsage = JSON.parse(result.events.at(-2)!.data) as { usage?: unknown; credits_used?: unknown; id?: string };
      expect(last.data).toBe('[DONE]');
      expect(gatewayUsage.usage).toBeDefined();
      expect(typeof gatewayUsage.credits_used).toBe('number');
      expect(gatewayUsage.credits_used).toBeGreaterThan(0);
      expect(gatewayUsage.id).toBe(BASE.id);
    }),
  20_000);

  it('a client that hangs up at nginx aborts the provider well within a second (the figure is logged)', () =>
    withOutputOnFailure(logs(), async () => {
      const latencies: number[] = [];
      for (let round = 0; round < 6; round++) {
        const before = provider.calls.length;
        const result = await streamChat(nginx.url, 'hang', { hangUpAfter: 1 });
        expect(result.status).toBe(200);
        const call = await until('the provider to see the request', () => provider.calls.slice(before).find((c) => c.prompt === 'hang'));
        const closedAt = await until('the provider to see its request closed', () => call.closedEarlyAt, 5_000);
        latencies.push(closedAt - result.hungUpAt!);
      }
      const shown = latencies.map((ms) => ms.toFixed(1)).join(', ');
      noticeOnce(`nginx hang-up → provider request closed: ${shown} ms (max ${Math.max(...latencies).toFixed(1)} ms)`);
      // The target is 250 ms; a loaded CI machine gets a generous bound, the figure above goes in the benchmark note.
      for (const ms of latencies) expect(ms).toBeLessThan(1_000);

      // both instances metered the cancelled generations: nothing stays held
      for (const app of [a, b]) {
        await until(`held credits to return to 0 on ${app.url}`, async () => {
          const res = await fetch(`${app.url}/v1/credits`, { headers: { authorization: `Bearer ${KEY}` } });
          const { data } = (await res.json()) as { data: { held: number } };
          return data.held === 0 ? true : undefined;
        });
      }
    }),
  30_000);

  it('spreads requests over both instances, and carries X-Request-Id through', () =>
    withOutputOnFailure(logs(), async () => {
      const before = provider.calls.length;
      for (let i = 0; i < 20; i++) {
        const result = await streamChat(nginx.url, `spread ${i}`, { requestId: `spread-${i}` });
        expect(result.status).toBe(200);
        expect(result.headers['x-request-id']).toBe(`spread-${i}`); // the client's id, echoed by the instance
        expect(result.events.at(-1)!.data).toBe('[DONE]');
      }
      const served = provider.calls.slice(before).reduce<Record<string, number>>((count, call) => ({ ...count, [call.instance]: (count[call.instance] ?? 0) + 1 }), {});
      expect(Object.keys(served).sort()).toEqual(['a', 'b']);
      expect(served.a! + served.b!).toBe(20);
      expect(served.a).toBeGreaterThanOrEqual(5);
      expect(served.b).toBeGreaterThanOrEqual(5);

      // no X-Request-Id from the client: nginx's own $request_id reaches the instance and comes back
      const anonymous = await streamChat(nginx.url, 'no id');
      expect(anonymous.headers['x-request-id']).toMatch(/^[0-9a-f]{32}$/);
      const logged = `"reqId":"${anonymous.headers['x-request-id']}"`;
      await until('the instance to log the request with that id', () => ((a.stdout + b.stdout).includes(logged) ? true : undefined));
    }),
  30_000);

  it('refuses a body over 10 MiB itself, in the OpenAI error shape', () =>
    withOutputOnFailure(logs(), async () => {
      const before = provider.calls.length;
      const answer = await rawExchange(
        nginx.port,
        `POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${KEY}\r\nContent-Type: application/json\r\nContent-Length: ${11 * 1024 * 1024}\r\nConnection: close\r\n\r\n{`,
      );
      expect(answer).toMatch(/^HTTP\/1\.1 413 /);
      expect(answer).toMatch(/content-type: application\/json/i);
      expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toEqual({ error: expect.objectContaining({ code: 'request_too_large', type: 'invalid_request_error' }) });
      expect(provider.calls.length).toBe(before);
    }),
  20_000);
});

describeNginx('deploy/nginx.conf when instances are down', () => {
  let provider: Awaited<ReturnType<typeof startProvider>>;
  let app: AppProcess;

  beforeAll(async () => {
    provider = await startProvider();
    app = await startExampleApp({ INFERY_UPSTREAM_URL: provider.url, INFERY_UPSTREAM_KEY: 'upstream-a', INFERY_API_KEYS: `${KEY}:100000`, INFERY_RPM: '0', LOG_LEVEL: 'warn' });
  }, 60_000);

  afterAll(async () => {
    await stopAllNginx();
    await stopAllApps();
    await provider?.close();
  }, 30_000);

  it('sends a request whose instance refuses the connection to the other one (every request answered)', async () => {
    const dead = await freePort(); // nothing listens there
    const nginx = await startNginx([dead, app.port]);
    await withOutputOnFailure([app, nginx], async () => {
      for (let i = 0; i < 6; i++) {
        const result = await streamChat(nginx.url, `failover ${i}`);
        expect(result.status).toBe(200);
        expect(result.events.at(-1)!.data).toBe('[DONE]');
      }
    });
  }, 30_000);

  it('answers 502 gateway_unreachable in the OpenAI error shape when no instance can be reached', async () => {
    const nginx = await startNginx([await freePort(), await freePort()]);
    await withOutputOnFailure([nginx], async () => {
      const res = await fetch(`${nginx.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'mock-1', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
      });
      expect(res.status).toBe(502);
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
      expect(res.headers.get('retry-after')).toBe('1');
      expect(await res.json()).toEqual({ error: expect.objectContaining({ code: 'gateway_unreachable', type: 'server_error' }) });
    });
  }, 30_000);
});
