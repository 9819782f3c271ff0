import { Worker } from 'node:worker_threads';
import { type Outcome } from '../../../lib';
import { Prng, hashSeed } from './random';

/**
 * The misbehaving OpenAI-compatible provider of the chaos soak, on a worker thread (its code is sent as source:
 * `providerThread` uses nothing but what it is handed). Each request draws a behaviour: normal, slow, error
 * chunk, garbage, stalls, refusals, HTTP errors…
 */

/** What the chaos provider does with one request. */
export type Behaviour =
  | 'normal' // a well-formed answer
  | 'split' // every SSE event (or the JSON body) in 1–7 byte pieces: multi-byte characters and \r\n cut in two
  | 'drop' // the connection destroyed mid-answer
  | 'stall' // stops sending mid-answer, keeps the socket open: the gateway's idleTimeout must end it
  | 'garble' // a chunk (or body) that is not valid JSON
  | 'error-chunk' // `data: {"error":{...}}` mid-stream
  | 'usage-twice' // two usage chunks, the second one lower
  | 'usage-missing' // no usage at all
  | 'no-done' // usage, then the stream ends without [DONE]
  | 'http-500' // 500 before the first byte
  | 'http-429' // 429 before the first byte
  | 'refuse' // the socket destroyed before any response
  | 'slow-headers' // headers after 50–300 ms (well under the gateway's upstreamTimeout)
  | 'no-headers'; // never answers: the gateway's upstreamTimeout must end it

export const STREAM_BEHAVIOURS: ReadonlyArray<readonly [Behaviour, number]> = [
  ['normal', 16],
  ['split', 12],
  ['drop', 8],
  ['stall', 6],
  ['garble', 6],
  ['error-chunk', 6],
  ['usage-twice', 10],
  ['usage-missing', 8],
  ['no-done', 5],
  ['http-500', 4],
  ['http-429', 4],
  ['refuse', 3],
  ['slow-headers', 7],
  ['no-headers', 2],
];

/** A non-streaming answer has no chunks: no error chunk, no second usage, no [DONE]. */
const JSON_BEHAVIOURS = STREAM_BEHAVIOURS.filter(([b]) => b !== 'error-chunk' && b !== 'usage-twice' && b !== 'no-done');

/** The outcome `meter` must see for a request whose client stayed to the end. */
export function expectedOutcome(behaviour: Behaviour, stream = true): Outcome {
  // a non-streaming request that timed out waiting for its answer may have run at the provider: failed (prompt billed)
  if (behaviour === 'no-headers' && !stream) return 'failed';
  switch (behaviour) {
    case 'drop':
    case 'stall':
    case 'garble':
    case 'error-chunk':
      return 'failed';
    case 'http-500':
    case 'http-429':
    case 'refuse':
    case 'no-headers':
      return 'unserved';
    default:
      return 'completed';
  }
}

/** The prompt tokens the provider reports: small enough for any plain prompt's estimate (≥ 16 tokens). */
export const REPORTED_PROMPT_TOKENS = 10;

export const MODEL = 'soak-1';

/** Words of the answer; multi-byte ones so that byte splits cut characters. Each is billed as one token. */
const WORDS = ['Hello', ' wörld', ' 日本語', ' 🙂', ' soak', ' naïve', ' ∑x²', ' été', ' ok', ' Ünïcödé', ' 🚀🚀', ' plain'];

/** What the provider did with one request. Times are epoch milliseconds (comparable across threads). */
export interface ProviderRecord {
  soakId: string | undefined;
  behaviour: Behaviour;
  stream: boolean;
  /** The completion cap the gateway sent (the smaller of max_completion_tokens / max_tokens). */
  cap: number | undefined;
  /** Completion tokens the answer has (content chunks), never above the cap. */
  words: number;
  /** Content chunks sent before the fault (drop, stall, garble, error chunk). */
  faultAfter: number;
  /** The usages it reported, in order. */
  usages: Array<{ prompt_tokens: number; completion_tokens: number }>;
  /** Its response closed before it was written out in full (the gateway aborted, or the provider dropped it). */
  closedEarly: boolean;
  /** Its response finished or closed. */
  closed: boolean;
  /** When the request's headers reached the provider, and when its connection was accepted. */
  arrivedAt: number;
  connectedAt: number;
  /** Requests its connection carried before this one (keep-alive reuse). */
  requestsBefore: number;
  /** ms from the arrival to the response headers (undefined: none were sent). */
  headersAfterMs: number | undefined;
  /**
   * The longest the gateway had to wait for progress it counts: between the headers and the first event and
   * between events of a stream; from the headers to the end of a JSON body (read under one timer).
   */
  maxSilenceMs: number;
}

export interface ChaosProviderOptions {
  seed: number;
  /** Largest pause between chunks, ms. Default 12. */
  maxGapMs?: number;
}

/** What the provider's thread is started with. */
interface ProviderConfig {
  seed: number;
  maxGapMs: number;
  promptTokens: number;
  model: string;
  words: readonly string[];
  streamBehaviours: ReadonlyArray<readonly [Behaviour, number]>;
  jsonBehaviours: ReadonlyArray<readonly [Behaviour, number]>;
}

type ToProvider = { type: 'records' } | { type: 'status' } | { type: 'stop' };

type FromProvider =
  | { type: 'ready'; url: string }
  | { type: 'records'; records: ProviderRecord[] }
  | { type: 'status'; open: number; connections: number }
  | { type: 'stopped' };

/**
 * An OpenAI-compatible provider on 127.0.0.1 (`POST /v1/chat/completions`, streaming and not) that picks a
 * {@link Behaviour} per request from a PRNG seeded with the seed and the request's `x-soak-id` header (the soak
 * gateway forwards it). It honours `max_tokens` / `max_completion_tokens` and reports
 * {@link REPORTED_PROMPT_TOKENS} prompt tokens.
 *
 * It runs in a worker thread, on its own event loop, as a real provider would: since libuv 1.45 (Node 20) a
 * server accepts one connection per event-loop iteration, so a provider sharing the gateway's busy loop lets
 * new upstream connections queue for a second and more — 504s that are the harness's, not the gateway's.
 */
export class ChaosProvider {
  url = '';
  private worker: Worker | undefined;
  private readonly waiting = new Map<FromProvider['type'], Array<{ resolve: (m: FromProvider) => void; reject: (e: Error) => void }>>();
  private failure: Error | undefined;

  constructor(private readonly opts: ChaosProviderOptions) {}

  async start(): Promise<this> {
    const config: ProviderConfig = {
      seed: this.opts.seed,
      maxGapMs: this.opts.maxGapMs ?? 12,
      promptTokens: REPORTED_PROMPT_TOKENS,
      model: MODEL,
      words: WORDS,
      streamBehaviours: STREAM_BEHAVIOURS,
      jsonBehaviours: JSON_BEHAVIOURS,
    };
    // The thread runs this module's own functions, as source (the same under ts-jest and in dist/).
    const source = [`const hashSeed = ${hashSeed.toString()};`, `const Prng = ${Prng.toString()};`, `(${providerThread.toString()})(hashSeed, Prng);`].join('\n');
    const worker = new Worker(source, { eval: true, workerData: config });
    this.worker = worker;
    worker.on('message', (m: FromProvider) => this.waiting.get(m.type)?.shift()?.resolve(m));
    const fail = (err: Error): void => {
      this.failure ??= err;
      for (const queue of this.waiting.values()) for (const w of queue.splice(0)) w.reject(err);
    };
    worker.on('error', (err) => fail(new Error(`the chaos provider thread failed: ${err.stack ?? err.message}`)));
    worker.on('exit', (code) => fail(new Error(`the chaos provider thread exited (${code})`)));
    const ready = await this.reply('ready');
    this.url = ready.url;
    return this;
  }

  /** What the provider did with every request so far. */
  async records(): Promise<ProviderRecord[]> {
    return (await this.ask({ type: 'records' }, 'records')).records;
  }

  /** Responses not yet finished or closed (a stalled one the gateway never aborted stays open), and connections. */
  async status(): Promise<{ open: number; connections: number }> {
    const { open, connections } = await this.ask({ type: 'status' }, 'status');
    return { open, connections };
  }

  async stop(): Promise<void> {
    const worker = this.worker;
    if (!worker) return;
    try {
      if (!this.failure) await this.ask({ type: 'stop' }, 'stopped');
    } finally {
      this.worker = undefined;
      await worker.terminate();
    }
  }

  private ask<T extends FromProvider['type']>(message: ToProvider, reply: T): Promise<Extract<FromProvider, { type: T }>> {
    const answer = this.reply(reply);
    this.worker?.postMessage(message);
    return answer;
  }

  private reply<T extends FromProvider['type']>(type: T): Promise<Extract<FromProvider, { type: T }>> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      let queue = this.waiting.get(type);
      if (!queue) this.waiting.set(type, (queue = []));
      queue.push({ resolve: resolve as (m: FromProvider) => void, reject });
    });
  }
}

/**
 * The provider's thread. Runs from its source text in a worker, so it uses nothing from this module but the
 * PRNG it is handed, and `require`s what it needs.
 */
function providerThread(hashSeedFn: typeof hashSeed, PrngClass: typeof Prng): void {
  type Res = import('node:http').ServerResponse;
  const { parentPort, workerData } = require('node:worker_threads') as typeof import('node:worker_threads');
  const http = require('node:http') as typeof import('node:http');
  const { performance } = require('node:perf_hooks') as typeof import('node:perf_hooks');
  const cfg = workerData as ProviderConfig;
  const port = parentPort!;
  const now = (): number => performance.timeOrigin + performance.now();
  const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
  const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
  const records: ProviderRecord[] = [];
  const sockets = new WeakMap<object, { at: number; requests: number }>();
  let open = 0;
  let anonymous = 0;

  /** Writes and waits until the bytes were handed to the kernel (so a drop that follows comes after them). */
  const write = (res: Res, data: string | Buffer): Promise<void> =>
    new Promise((resolve) => {
      if (res.destroyed) return resolve();
      res.write(data, () => resolve());
    });

  /** Writes `data` in 1–7 byte pieces, each its own HTTP chunk (so its own 'data' event at the gateway). */
  const writeInPieces = async (res: Res, data: Buffer, rng: Prng, closed: () => boolean): Promise<void> => {
    for (let at = 0; at < data.length; ) {
      const n = rng.int(1, 7);
      res.write(data.subarray(at, at + n));
      at += n;
      if (rng.chance(0.03)) await tick();
      if (closed()) return;
    }
  };

  const handle = async (req: import('node:http').IncomingMessage, res: Res): Promise<void> => {
    open++;
    let closed = false;
    const arrived = now();
    const conn = sockets.get(req.socket);
    const record: ProviderRecord = {
      soakId: undefined, behaviour: 'normal', stream: false, cap: undefined, words: 0, faultAfter: 0, usages: [], closedEarly: false, closed: false,
      arrivedAt: arrived, connectedAt: conn?.at ?? arrived, requestsBefore: conn ? conn.requests++ : 0, headersAfterMs: undefined, maxSilenceMs: 0,
    };
    let progressAt = 0;
    const progress = (): void => {
      const t = now();
      record.maxSilenceMs = Math.max(record.maxSilenceMs, Math.round(t - progressAt));
      progressAt = t;
    };
    res.once('close', () => {
      closed = true;
      record.closed = true;
      record.closedEarly = !res.writableFinished;
      open--;
    });
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    if (req.method !== 'POST' || req.url !== '/v1/chat/completions') {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"message":"not found"}}');
      return;
    }
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
    const soakId = typeof req.headers['x-soak-id'] === 'string' ? req.headers['x-soak-id'] : undefined;
    const rng = new PrngClass(hashSeedFn(cfg.seed, 'provider', soakId ?? `anonymous-${++anonymous}`));
    const stream = body.stream === true;
    const caps = [body.max_completion_tokens, body.max_tokens].filter((v): v is number => typeof v === 'number');
    const cap = caps.length ? Math.min(...caps) : undefined;
    const words = Math.max(1, Math.min(cap ?? Infinity, rng.int(1, 24)));
    const behaviour = rng.weighted(stream ? cfg.streamBehaviours : cfg.jsonBehaviours);
    Object.assign(record, { soakId, behaviour, stream, cap, words, faultAfter: rng.int(0, words - 1) });
    records.push(record);
    const gap = (): Promise<void> | undefined => (rng.chance(0.5) ? sleep(rng.int(0, cfg.maxGapMs)) : undefined);

    if (behaviour === 'refuse') {
      req.socket.destroy();
      return;
    }
    if (behaviour === 'no-headers') return; // the gateway's upstreamTimeout ends it
    if (behaviour === 'slow-headers') await sleep(rng.int(50, 300));
    if (closed) return;
    record.headersAfterMs = Math.round(now() - arrived);
    progressAt = now();
    if (behaviour === 'http-500' || behaviour === 'http-429') {
      const status = behaviour === 'http-500' ? 500 : 429;
      const json = JSON.stringify({ error: { message: status === 500 ? 'The server had an error.' : 'Rate limit reached.', type: status === 500 ? 'server_error' : 'requests', code: null } });
      res.writeHead(status, { 'content-type': 'application/json', ...(status === 429 ? { 'retry-after': '1' } : {}) }).end(json);
      return;
    }

    const id = `chatcmpl-${soakId ?? 'x'}`;
    const base = { id, object: 'chat.completion.chunk', created: 1_700_000_000, model: `${cfg.model}-0613` };
    const text: string[] = [];
    for (let i = 0; i < words; i++) text.push(rng.pick(cfg.words));
    const finishReason = cap !== undefined && words >= cap ? 'length' : 'stop';
    const usage = { prompt_tokens: cfg.promptTokens, completion_tokens: words, total_tokens: cfg.promptTokens + words };

    if (!stream) {
      const answer: Record<string, unknown> = {
        id, object: 'chat.completion', created: base.created, model: base.model,
        choices: [{ index: 0, message: { role: 'assistant', content: text.join('') }, finish_reason: finishReason }],
      };
      // past compression()'s 1 KiB threshold, so clients that accept gzip get it
      if (rng.chance(0.4)) answer.system_fingerprint = `fp_${'soak'.repeat(300)}`;
      if (behaviour !== 'usage-missing') {
        answer.usage = usage;
        record.usages.push(usage);
      }
      const json = Buffer.from(JSON.stringify(answer), 'utf8');
      await gap();
      if (closed) return;
      if (behaviour === 'split') {
        res.writeHead(200, { 'content-type': 'application/json' });
        await writeInPieces(res, json, rng, () => closed);
        if (!closed) res.end(progress);
        return;
      }
      if (behaviour === 'garble') {
        const bad = json.subarray(0, Math.max(1, json.length - rng.int(1, 20)));
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(bad.length) }).end(bad);
        return;
      }
      if (behaviour === 'drop' || behaviour === 'stall') {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(json.length) });
        await write(res, json.subarray(0, rng.int(1, json.length - 1)));
        if (behaviour === 'drop' && !closed) res.destroy();
        return; // stall: the gateway's idleTimeout ends it
      }
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(json.length) }).end(json, progress);
      return;
    }

    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const eol = behaviour === 'split' && rng.chance(0.5) ? '\r\n' : '\n';
    const send = async (payload: unknown): Promise<void> => {
      const event = Buffer.from(`data: ${typeof payload === 'string' ? payload : JSON.stringify(payload)}${eol}${eol}`, 'utf8');
      if (behaviour === 'split') await writeInPieces(res, event, rng, () => closed);
      else await write(res, event);
      progress();
    };
    await send({ ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] });
    for (let i = 0; i < words; i++) {
      if (closed) return;
      if (i === record.faultAfter) {
        if (behaviour === 'drop') {
          res.destroy();
          return;
        }
        if (behaviour === 'stall') return; // keeps the socket open; only the gateway can end it
        if (behaviour === 'garble') {
          await write(res, `data: {"id":"${id}","choices":[{"index":0,"delta":{"content":"garb\n\n`);
        } else if (behaviour === 'error-chunk') {
          await write(res, `data: ${JSON.stringify({ error: { message: 'The model is overloaded.', type: 'server_error', code: 'overloaded' } })}\n\n`);
          if (!closed) res.end();
          return;
        }
      }
      await gap();
      if (closed) return;
      await send({ ...base, choices: [{ index: 0, delta: { content: text[i] }, finish_reason: null }] });
    }
    if (closed) return;
    await send({ ...base, choices: [{ index: 0, delta: {}, finish_reason: finishReason }] });
    if (behaviour !== 'usage-missing') {
      await gap();
      if (closed) return;
      await send({ ...base, choices: [], usage });
      record.usages.push(usage);
      if (behaviour === 'usage-twice') {
        const lowerCompletion = Math.floor(words / 2);
        const lower = { prompt_tokens: cfg.promptTokens - 3, completion_tokens: lowerCompletion, total_tokens: cfg.promptTokens - 3 + lowerCompletion };
        await send({ ...base, choices: [], usage: lower });
        record.usages.push(lower);
      }
    }
    if (closed) return;
    if (behaviour !== 'no-done') await send('[DONE]');
    if (!closed) res.end();
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      // a provider bug, not the gateway's: make it loud and end the response
      console.error('chaos provider failed', err);
      res.destroy();
    });
  });
  server.on('connection', (socket) => sockets.set(socket, { at: now(), requests: 0 }));
  // Never closes an idle keep-alive socket during a run (a reuse race would look like a gateway fault).
  server.keepAliveTimeout = 120_000;
  port.on('message', (m: ToProvider) => {
    if (m.type === 'records') port.postMessage({ type: 'records', records } satisfies FromProvider);
    else if (m.type === 'status') server.getConnections((_err, connections) => port.postMessage({ type: 'status', open, connections } satisfies FromProvider));
    else if (m.type === 'stop') {
      server.closeAllConnections();
      server.close(() => port.postMessage({ type: 'stopped' } satisfies FromProvider));
    }
  });
  server.listen(0, '127.0.0.1', () => {
    const address = server.address() as import('node:net').AddressInfo;
    port.postMessage({ type: 'ready', url: `http://127.0.0.1:${address.port}/v1` } satisfies FromProvider);
  });
}

