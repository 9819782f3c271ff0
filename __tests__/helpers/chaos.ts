/**
 * Chaos soak (issue 7, point 8): a misbehaving OpenAI-compatible provider, clients that hang up at random, the
 * gateway between them with the example app's reserve-then-settle ledger, and the invariants that must hold
 * whatever happened. Shared by `__tests__/soak.test.ts` (1,000 requests) and `bench/soak.ts` (`npm run soak`).
 *
 * Everything random comes from a seeded PRNG, per request (the seed and the request's soak id), so a run is
 * reproducible up to the timing of sockets and timers. No jest globals here: the bench compiles this file too.
 * The provider runs on a worker thread (see {@link ChaosProvider}); gateway and clients share the main loop.
 */
import compression from 'compression';
import express from 'express';
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import zlib from 'node:zlib';
import { CreditLedger, priceOf, type Settlement } from '../../example-app/ledger';
import { inferyStream, type InferyStreamMiddleware, type Logger, type Outcome, type Usage, type WorstCase } from '../../lib';

// ---------------------------------------------------------------------------------------------- randomness

/** FNV-1a over the parts: a 32-bit seed for one request's PRNG. */
export function hashSeed(...parts: Array<string | number>): number {
  let h = 0x811c9dc5;
  for (const ch of parts.join('\u0000')) {
    h ^= ch.codePointAt(0)!;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** mulberry32: small, fast, seeded. The soak never uses Math.random. */
export class Prng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** In [0, 1). */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** A whole number in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }

  weighted<T>(table: ReadonlyArray<readonly [T, number]>): T {
    const total = table.reduce((sum, [, w]) => sum + w, 0);
    let at = this.next() * total;
    for (const [value, weight] of table) {
      if ((at -= weight) < 0) return value;
    }
    return table[table.length - 1]![0];
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

// ---------------------------------------------------------------------------------------------- the provider

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

const STREAM_BEHAVIOURS: ReadonlyArray<readonly [Behaviour, number]> = [
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
const MODEL = 'soak-1';
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

// ---------------------------------------------------------------------------------------------- the clients

/** When a client hangs up: never, right away (usually before the headers), after k events, or at a random time. */
export type CancelPlan = 'never' | 'before-headers' | 'after-events' | 'timer';

export interface ClientPlan {
  index: number;
  soakId: string;
  stream: boolean;
  cancel: CancelPlan;
  /** before-headers and timer: ms after the request; after-events: the number of data events. */
  cancelAt: number;
  /** The completion cap the client sets, if any. */
  cap: { field: 'max_tokens' | 'max_completion_tokens'; value: number } | undefined;
  /** Asks for gzip (compression() is in front of the gateway). */
  gzip: boolean;
}

/** What one client saw. */
export interface ClientResult extends ClientPlan {
  status: number | undefined;
  generationId: string | undefined;
  /** The last `credits_used` seen (credits chunk, or the JSON body's). */
  credits: number | undefined;
  /** The usage next to it. */
  usage: Usage | undefined;
  /** Credits chunks seen (a stream must have exactly one, as its second-to-last event). */
  creditsChunks: number;
  /** Index of the last credits chunk among the data events. */
  creditsIndex: number;
  /** Data events received (streams), `[DONE]` included. */
  events: number;
  sawDone: boolean;
  /** The error code of an error chunk or an error body. */
  errorCode: string | undefined;
  /** The client destroyed its socket before the answer ended. */
  cancelled: boolean;
  /** …and had not received the response headers yet. */
  cancelledBeforeHeaders: boolean;
  /** The answer ended normally. */
  ended: boolean;
  /** A socket error or early close the client did not cause. */
  networkError: string | undefined;
  /** Still open after the client's deadline: a hung request. */
  timedOut: boolean;
  /** Something in the answer was not well-formed (a data event that is not JSON, a bad JSON body). */
  malformed: string | undefined;
  /** The answer came gzip-encoded (compression() in front of the gateway). */
  gzipped: boolean;
  /** Epoch ms when the request started, and how long it took. */
  startedAt: number;
  durationMs: number;
}

/** The plan of request `index`, from the seed alone. */
export function planRequest(seed: number, index: number): ClientPlan {
  const rng = new Prng(hashSeed(seed, 'client', index));
  const stream = rng.chance(0.7);
  const cancel = rng.weighted<CancelPlan>([['never', 60], ['before-headers', 10], ['after-events', stream ? 15 : 0], ['timer', stream ? 15 : 30]]);
  const cancelAt = cancel === 'before-headers' ? rng.int(0, 15) : cancel === 'after-events' ? rng.int(0, 8) : cancel === 'timer' ? rng.int(0, 700) : 0;
  const capKind = rng.weighted<'none' | 'max_tokens' | 'max_completion_tokens'>([['none', 40], ['max_tokens', 30], ['max_completion_tokens', 30]]);
  return {
    index,
    soakId: `soak-${seed}-${index}`,
    stream,
    cancel,
    cancelAt,
    cap: capKind === 'none' ? undefined : { field: capKind, value: rng.int(1, 30) },
    gzip: rng.chance(0.25),
  };
}

/** Runs one planned request over a real socket and records what the client saw. Never rejects. */
export function runClient(url: URL, agent: http.Agent, key: string, plan: ClientPlan, timeoutMs: number): Promise<ClientResult> {
  const started = performance.now();
  const body: Record<string, unknown> = {
    model: MODEL,
    stream: plan.stream,
    messages: [{ role: 'user', content: `Soak request ${plan.index}: say something short.` }],
  };
  if (plan.cap) body[plan.cap.field] = plan.cap.value;
  const payload = JSON.stringify(body);
  const result: ClientResult = {
    ...plan, status: undefined, generationId: undefined, credits: undefined, usage: undefined, creditsChunks: 0, creditsIndex: -1, events: 0,
    sawDone: false, errorCode: undefined, cancelled: false, cancelledBeforeHeaders: false, ended: false, networkError: undefined,
    timedOut: false, malformed: undefined, gzipped: false, startedAt: performance.timeOrigin + started, durationMs: 0,
  };
  return new Promise((resolve) => {
    let settled = false;
    let gotResponse = false;
    const timers: NodeJS.Timeout[] = [];
    let gunzip: zlib.Gunzip | undefined;
    const done = (): void => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      gunzip?.destroy();
      result.durationMs = Math.round(performance.now() - started);
      resolve(result);
    };
    const headers: Record<string, string> = {
      authorization: `Bearer ${key}`,
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(payload)),
      'x-soak-id': plan.soakId,
    };
    if (plan.gzip) headers['accept-encoding'] = 'gzip';
    const req = http.request(url, { method: 'POST', agent, headers });
    const cancel = (): void => {
      if (settled || result.ended) return;
      result.cancelled = true;
      result.cancelledBeforeHeaders = !gotResponse;
      req.destroy();
      done();
    };
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (!result.cancelled && !result.ended && !result.timedOut) result.networkError ??= err.code ?? err.message;
      done();
    });
    if (plan.cancel === 'before-headers' || plan.cancel === 'timer') timers.push(setTimeout(cancel, plan.cancelAt));
    timers.push(
      setTimeout(() => {
        if (settled) return;
        result.timedOut = true;
        req.destroy();
        done();
      }, timeoutMs),
    );
    req.on('response', (res: IncomingMessage) => {
      gotResponse = true;
      result.status = res.statusCode;
      const gid = res.headers['x-generation-id'];
      result.generationId = typeof gid === 'string' ? gid : undefined;
      let source: NodeJS.ReadableStream = res;
      if (res.headers['content-encoding'] === 'gzip') {
        result.gzipped = true;
        gunzip = zlib.createGunzip();
        gunzip.on('error', (err) => {
          if (!result.cancelled) result.malformed ??= `gzip: ${err.message}`;
          done();
        });
        source = res.pipe(gunzip);
      }
      source.setEncoding('utf8');
      const isStream = String(res.headers['content-type'] ?? '').startsWith('text/event-stream');
      let buffer = '';
      let text = '';
      const onEvent = (data: string): void => {
        result.events++;
        if (data === '[DONE]') {
          result.sawDone = true;
          return;
        }
        let chunk: Record<string, unknown>;
        try {
          chunk = JSON.parse(data) as Record<string, unknown>;
        } catch {
          result.malformed ??= `event ${result.events} is not JSON: ${data.slice(0, 80)}`;
          return;
        }
        if (chunk.credits_used !== undefined) {
          result.creditsChunks++;
          result.creditsIndex = result.events - 1;
          result.credits = chunk.credits_used as number;
          result.usage = chunk.usage as Usage;
        }
        const error = chunk.error as { code?: unknown } | undefined;
        if (error) result.errorCode = String(error.code);
      };
      if (plan.stream && plan.cancel === 'after-events' && plan.cancelAt === 0) cancel();
      source.on('data', (piece: string) => {
        if (settled) return;
        if (!isStream) {
          text += piece;
          return;
        }
        buffer += piece;
        let cut: number;
        while ((cut = buffer.indexOf('\n\n')) !== -1) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6));
          if (data.length === 0) continue; // a comment (keep-alive)
          onEvent(data.join('\n'));
          if (plan.cancel === 'after-events' && result.events >= plan.cancelAt) {
            cancel();
            return;
          }
        }
      });
      source.on('end', () => {
        if (settled) return;
        result.ended = true;
        if (!isStream) {
          try {
            const json = JSON.parse(text) as Record<string, unknown>;
            if (typeof json.credits_used === 'number') {
              result.credits = json.credits_used;
              result.usage = json.usage as Usage;
            }
            const error = json.error as { code?: unknown } | undefined;
            if (error) result.errorCode = String(error.code);
          } catch {
            result.malformed ??= `body is not JSON: ${text.slice(0, 80)}`;
          }
        } else if (buffer.trim() !== '') result.malformed ??= `stream ended inside an event: ${buffer.slice(0, 80)}`;
        done();
      });
      res.on('error', () => {}); // an aborted answer: 'close' below records it
      res.on('close', () => {
        // a complete answer ends through 'end' (a gzip one once it is inflated); anything else was cut short
        if (settled || res.complete) return;
        if (!result.ended && !result.cancelled && !result.timedOut) result.networkError ??= 'closed before the end';
        done();
      });
    });
    req.end(payload);
  });
}

/** Runs `requests` planned requests at `concurrency` over a keep-alive agent (the caller destroys it). */
export async function runClients(url: URL, agent: http.Agent, key: string, o: { requests: number; concurrency: number; seed: number; timeoutMs: number }): Promise<ClientResult[]> {
  const results: ClientResult[] = new Array(o.requests);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < o.requests) {
      const index = next++;
      results[index] = await runClient(url, agent, key, planRequest(o.seed, index), o.timeoutMs);
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.concurrency, o.requests) }, worker));
  return results;
}

// ---------------------------------------------------------------------------------------------- the gateway

/** What `meter` was called with, and what the ledger did. */
export interface MeterRecord {
  generationId: string;
  soakId: string | undefined;
  outcome: Outcome;
  usage: Usage;
  worstCase: WorstCase;
  model: string;
  providerModel: string;
  errorCode: string | undefined;
  stream: boolean;
  settlement: Settlement;
}

export interface SoakGateway {
  url: string;
  server: http.Server;
  gateway: InferyStreamMiddleware;
  ledger: CreditLedger;
  /** Every generation `reserve` held, in order (no refusal is expected: the balance is large). */
  reserved: Array<{ generationId: string; soakId: string | undefined; milli: number; at: number }>;
  reserveRefusals: number;
  /** meter calls per generation id (a lost call is a missing id, a doubled one a 2). */
  meterCalls: Map<string, number>;
  meters: MeterRecord[];
  /** The gateway's end-of-request log lines per generation id. */
  logLines: Map<string, number>;
  /** Messages logged at warn/error other than the request lines, with counts. */
  logMessages: Map<string, number>;
  connections(): Promise<number>;
  close(): Promise<void>;
}

export const SOAK_KEY = 'soak';

export interface SoakGatewayOptions {
  upstreamURL: string;
  startingCredits: number;
  seed: number;
  idleTimeout: number;
  usageGraceTimeout: number;
  upstreamTimeout: number;
}

/**
 * The example app's billing wired to the library directly (createApp takes no timeouts): compression() and
 * express.json() first, the in-memory {@link CreditLedger}, `reserve` holding the priced worst case and `meter`
 * settling the dearer of the requested and reported model's price (nothing for `unserved`), as
 * example-app/app.ts does. `meter` sometimes waits a little, so settlements interleave.
 */
export async function startSoakGateway(o: SoakGatewayOptions): Promise<SoakGateway> {
  const ledger = new CreditLedger({ [SOAK_KEY]: o.startingCredits });
  const reserved: SoakGateway['reserved'] = [];
  const meterCalls = new Map<string, number>();
  const meters: MeterRecord[] = [];
  const logLines = new Map<string, number>();
  const logMessages = new Map<string, number>();
  let reserveRefusals = 0;
  const soakIdOf = (headers: IncomingHttpHeaders): string | undefined => (typeof headers['x-soak-id'] === 'string' ? headers['x-soak-id'] : undefined);
  const log = (level: string) => (obj: object, msg?: string): void => {
    const line = obj as { generationId?: unknown };
    if (msg === 'infery-stream request') {
      if (typeof line.generationId === 'string') logLines.set(line.generationId, (logLines.get(line.generationId) ?? 0) + 1);
      return;
    }
    if (level === 'warn' || level === 'error') logMessages.set(`${level}: ${msg}`, (logMessages.get(`${level}: ${msg}`) ?? 0) + 1);
  };
  const logger: Logger = { info: log('info'), warn: log('warn'), error: log('error'), debug: () => {} };

  const gateway = inferyStream<string>({
    upstream: { baseURL: o.upstreamURL, apiKey: 'sk-soak-upstream' },
    authenticate: (req) => (req.headers.authorization === `Bearer ${SOAK_KEY}` ? SOAK_KEY : null),
    reserve: ({ account, generationId, model, worstCase, req }) => {
      const worst = priceOf(model, worstCase);
      if (!ledger.reserve(account, generationId, worst)) {
        reserveRefusals++;
        return false;
      }
      reserved.push({ generationId, soakId: soakIdOf(req.headers), milli: Math.round(worst * 1000), at: performance.timeOrigin + performance.now() });
      return { hold: generationId };
    },
    meter: async (event) => {
      meterCalls.set(event.generationId, (meterCalls.get(event.generationId) ?? 0) + 1);
      const soakId = soakIdOf(event.req.headers);
      const rng = new Prng(hashSeed(o.seed, 'meter', soakId ?? event.generationId));
      if (rng.chance(0.2)) await sleep(rng.int(0, 15));
      let credits = 0;
      if (event.outcome !== 'unserved') {
        try {
          credits = Math.max(priceOf(event.model, event.usage), priceOf(event.providerModel, event.usage));
        } catch {
          credits = priceOf(event.model, event.worstCase);
        }
      }
      const settlement = ledger.settle(event.account, event.generationId, event.model, credits);
      meters.push({
        generationId: event.generationId, soakId, outcome: event.outcome, usage: event.usage, worstCase: event.worstCase, model: event.model,
        providerModel: event.providerModel, errorCode: event.error?.code, stream: event.stream, settlement,
      });
      return settlement.charged;
    },
    idleTimeout: o.idleTimeout,
    usageGraceTimeout: o.usageGraceTimeout,
    upstreamTimeout: o.upstreamTimeout,
    forwardHeaders: ['x-soak-id'],
    logger,
  });
  const app = express();
  app.disable('x-powered-by');
  app.use(compression());
  app.use(express.json({ limit: '10mb' }));
  app.use(gateway);
  const server = http.createServer(app);
  // Never closes an idle keep-alive socket during a run (a reuse race would look like a gateway fault).
  server.keepAliveTimeout = 120_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    server,
    gateway,
    ledger,
    reserved,
    get reserveRefusals() {
      return reserveRefusals;
    },
    meterCalls,
    meters,
    logLines,
    logMessages,
    connections: () => new Promise((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n)))),
    close: async () => {
      gateway.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// ---------------------------------------------------------------------------------------------- the soak

/** The invariants, by name; each violation says which one it breaks. */
export type Check =
  | 'meter-once' // every admitted generation has exactly one meter call
  | 'reserve-meter' // every reserve is matched by one meter call with its generation id, and nothing else is metered
  | 'ledger' // balance + held + used = start, held = 0 at rest, used = the sum of the charges, nothing unpaid
  | 'credits-seen' // a client that saw credits saw what was settled for its generation, with the same usage
  | 'outcome' // a client that stayed to the end got the answer its provider behaviour calls for, metered so
  | 'usage' // metered usage: the provider's (the larger of two), or marked as an estimate; never above the worst case
  | 'log-line' // one end-of-request log line per generation; no hook failure logged
  | 'in-flight' // gateway.inFlight back to 0
  | 'sockets' // no client socket left open on the gateway, no upstream response left open on the provider
  | 'handles' // active handles and timers back to the baseline after teardown
  | 'crash' // no unhandledRejection / uncaughtException
  | 'hung' // every client request ended within its deadline
  | 'coverage'; // the chaos happened: every behaviour and every kind of cancel and outcome occurred

export interface Violation {
  check: Check;
  detail: string;
}

export interface SoakOptions {
  requests: number;
  concurrency: number;
  seed: number;
  startingCredits?: number;
  idleTimeout?: number;
  usageGraceTimeout?: number;
  upstreamTimeout?: number;
  /** A client request still open after this is a hung request. Default 20 s. */
  clientTimeoutMs?: number;
  /** The process whose `unhandledRejection` / `uncaughtException` to watch (in jest: the host's). */
  watchProcess?: NodeJS.Process;
  /** Require every behaviour, cancel kind and outcome to have occurred (off for tiny runs). Default true. */
  requireCoverage?: boolean;
  /** Runs before each RSS reading (the bench passes `global.gc` when exposed). */
  gc?: () => void;
}

export interface SoakFigures {
  requests: number;
  concurrency: number;
  seed: number;
  durationMs: number;
  /** What the clients saw. */
  clients: Record<string, number>;
  /** What the provider did. */
  behaviours: Record<string, number>;
  admitted: number;
  meterCalls: number;
  meterByOutcome: Record<string, number>;
  ledger: { start: number; balance: number; held: number; used: number; charged: number };
  rssBeforeMiB: number;
  rssAfterMiB: number;
  heapBeforeMiB: number;
  heapAfterMiB: number;
  /** Stalls of the gateway's event loop over 50 ms. */
  loopStalls: number;
  /** Answers that came gzip-encoded. */
  gzipAnswers: number;
  eventLoopDelayMs: { p99: number; max: number };
  resourcesBaseline: Record<string, number>;
  resourcesAfter: Record<string, number>;
  logMessages: Record<string, number>;
  /** Timeouts explained by the provider's own slowness plus a stall of the gateway's event loop: expected, not violations. */
  timingTolerated: string[];
}

export interface SoakReport {
  figures: SoakFigures;
  violations: Violation[];
}

export function resourceCounts(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) counts[r] = (counts[r] ?? 0) + 1;
  return counts;
}

function excess(now: Record<string, number>, baseline: Record<string, number>): Record<string, number> {
  const over: Record<string, number> = {};
  for (const [type, n] of Object.entries(now)) if (n > (baseline[type] ?? 0)) over[type] = n - (baseline[type] ?? 0);
  return over;
}

/** Records stalls of this event loop over 50 ms, as [from, to] in epoch ms. */
function watchStalls(): { stalls: Array<[number, number]>; stop(): void } {
  const stalls: Array<[number, number]> = [];
  let last = Date.now();
  const timer = setInterval(() => {
    const now = Date.now();
    if (now - last > 70) stalls.push([last, now]);
    last = now;
  }, 20);
  return { stalls, stop: () => clearInterval(timer) };
}

/** The longest stall (ms) that overlaps [from, to]. */
function longestStall(stalls: ReadonlyArray<readonly [number, number]>, from: number, to: number): number {
  let longest = 0;
  for (const [a, b] of stalls) if (a < to && b > from) longest = Math.max(longest, b - a);
  return longest;
}

async function until(check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

const mib = (bytes: number): number => Math.round((bytes / (1024 * 1024)) * 10) / 10;
const milli = (credits: number): number => Math.round(credits * 1000);
const countBy = <T>(items: readonly T[], key: (item: T) => string): Record<string, number> => {
  const out: Record<string, number> = {};
  for (const item of items) out[key(item)] = (out[key(item)] ?? 0) + 1;
  return out;
};

/** How a client's request ended, for the figures. */
function clientCategory(r: ClientResult): string {
  if (r.timedOut) return 'hung';
  if (r.cancelled) return r.cancelledBeforeHeaders ? 'cancelled before headers' : 'cancelled mid-answer';
  if (r.networkError) return `network error (${r.networkError})`;
  if (r.status !== 200) return `HTTP ${r.status}`;
  if (!r.stream) return 'JSON 200';
  if (r.sawDone) return 'stream [DONE]';
  if (r.errorCode) return `stream error chunk (${r.errorCode})`;
  return 'stream cut short';
}

/** The error code a client that stayed sees when the provider fails mid-answer. */
const FAILED_CODE: Partial<Record<Behaviour, { stream: string; json: string }>> = {
  drop: { stream: 'upstream_connection_lost', json: 'upstream_connection_lost' },
  stall: { stream: 'upstream_timeout', json: 'upstream_connection_lost' },
  garble: { stream: 'upstream_invalid_response', json: 'upstream_invalid_response' },
  'error-chunk': { stream: 'overloaded', json: 'overloaded' },
  'no-headers': { stream: 'upstream_timeout', json: 'upstream_timeout' },
};
const UNSERVED_STATUS: Partial<Record<Behaviour, number>> = { 'http-500': 500, 'http-429': 429, refuse: 502, 'no-headers': 504 };

const sameUsage = (a: Usage | undefined, b: Usage): boolean =>
  a !== undefined && a.prompt_tokens === b.prompt_tokens && a.completion_tokens === b.completion_tokens && a.total_tokens === b.total_tokens && a.estimated === b.estimated;
const showUsage = (u: Usage | undefined): string => (u ? `${u.prompt_tokens}+${u.completion_tokens}=${u.total_tokens}${u.estimated ? ' (estimated)' : ''}` : 'none');

/**
 * Starts the chaos provider and the soak gateway, runs the clients, waits for the gateway to come to rest,
 * checks every invariant, tears everything down and checks the handles. Never throws for a violation: they
 * are returned (at most 20 listed per check, then a count).
 */
export async function runSoak(o: SoakOptions): Promise<SoakReport> {
  const idleTimeout = o.idleTimeout ?? 300;
  const startingCredits = o.startingCredits ?? 100_000;
  const watched = o.watchProcess ?? process;
  const violations: Violation[] = [];
  const perCheck = new Map<Check, number>();
  const violate = (check: Check, detail: string): void => {
    const n = (perCheck.get(check) ?? 0) + 1;
    perCheck.set(check, n);
    if (n <= 20) violations.push({ check, detail });
  };

  const crashes: string[] = [];
  const onRejection = (reason: unknown): void => void crashes.push(`unhandledRejection: ${reason instanceof Error ? reason.stack : String(reason)}`);
  const onException = (err: Error): void => void crashes.push(`uncaughtException: ${err.stack ?? String(err)}`);

  const resourcesBaseline = resourceCounts();
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  o.gc?.();
  const rssBefore = process.memoryUsage().rss;
  const heapBefore = process.memoryUsage().heapUsed;
  let rssAfter = rssBefore;
  let heapAfter = heapBefore;
  let results: ClientResult[] = [];
  let records: ProviderRecord[] = [];
  let timingTolerated: string[] = [];
  let durationMs = 0;
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.concurrency });
  const stallWatch = watchStalls();
  const provider = new ChaosProvider({ seed: o.seed });
  let gw: SoakGateway | undefined;
  watched.on('unhandledRejection', onRejection);
  watched.on('uncaughtException', onException);
  try {
    await provider.start();
    gw = await startSoakGateway({
      upstreamURL: provider.url,
      startingCredits,
      seed: o.seed,
      idleTimeout,
      usageGraceTimeout: o.usageGraceTimeout ?? 300,
      upstreamTimeout: o.upstreamTimeout ?? 1000,
    });
    const gateway = gw;
    loopDelay.enable();
    const started = performance.now();
    results = await runClients(new URL(`${gateway.url}/v1/chat/completions`), agent, SOAK_KEY, {
      requests: o.requests,
      concurrency: o.concurrency,
      seed: o.seed,
      timeoutMs: o.clientTimeoutMs ?? 20_000,
    });
    // at rest: every generation settled and written (a cancelled one may still be settling)
    if (!(await until(() => gateway.gateway.inFlight === 0, 10_000))) violate('in-flight', `gateway.inFlight is ${gateway.gateway.inFlight} 10 s after the last client finished`);
    durationMs = Math.round(performance.now() - started);
    loopDelay.disable();
    stallWatch.stop();
    o.gc?.();
    rssAfter = process.memoryUsage().rss;
    heapAfter = process.memoryUsage().heapUsed;

    records = await provider.records();
    timingTolerated = checkInvariants(o, gateway, records, stallWatch.stalls, results, startingCredits, violate);
    // a few are a busy machine; many would be the gateway timing out answers that came in time
    if (timingTolerated.length > Math.max(5, o.requests * 0.02)) violate('outcome', `${timingTolerated.length} timeouts put down to event-loop stalls: too many to be the machine`);

    // sockets: the clients' keep-alive agent is the test's own; once it is gone the gateway holds no client socket
    agent.destroy();
    if (!(await until(async () => (await gateway.connections()) === 0, 5_000))) {
      violate('sockets', `the gateway still has ${await gateway.connections()} client connections after the client agent was destroyed`);
    }
    // every upstream response ended or aborted: a stall the gateway never cut would still be open here
    if (!(await until(async () => (await provider.status()).open === 0, 2 * idleTimeout + 1_000))) {
      violate('sockets', `${(await provider.status()).open} upstream responses are still open on the provider`);
    }
  } finally {
    stallWatch.stop();
    loopDelay.disable();
    agent.destroy();
    await gw?.close();
    await provider.stop();
  }
  // handles and timers back to the baseline taken before anything started (timers still running settle first)
  const back = await until(() => Object.keys(excess(resourceCounts(), resourcesBaseline)).length === 0, 5_000);
  const resourcesAfter = resourceCounts();
  if (!back) violate('handles', `active resources above the baseline after teardown: ${JSON.stringify(excess(resourcesAfter, resourcesBaseline))}`);
  // a late rejection from a settling generation would land now
  await sleep(50);
  watched.off('unhandledRejection', onRejection);
  watched.off('uncaughtException', onException);
  for (const c of crashes) violate('crash', c);

  for (const [check, n] of perCheck) if (n > 20) violations.push({ check, detail: `… and ${n - 20} more` });
  const balance = gw.ledger.balanceOf(SOAK_KEY)!;
  const p99 = loopDelay.percentile(99) / 1e6;
  return {
    violations,
    figures: {
      requests: o.requests,
      concurrency: o.concurrency,
      seed: o.seed,
      durationMs,
      clients: countBy(results, clientCategory),
      behaviours: countBy(records, (r) => `${r.behaviour}${r.stream ? '' : ' (json)'}`),
      admitted: gw.reserved.length,
      meterCalls: [...gw.meterCalls.values()].reduce((a, b) => a + b, 0),
      meterByOutcome: countBy(gw.meters, (m) => m.outcome),
      ledger: {
        start: startingCredits,
        balance: balance.balance,
        held: balance.held,
        used: balance.used,
        charged: gw.meters.reduce((sum, m) => sum + milli(m.settlement.charged), 0) / 1000,
      },
      rssBeforeMiB: mib(rssBefore),
      rssAfterMiB: mib(rssAfter),
      heapBeforeMiB: mib(heapBefore),
      heapAfterMiB: mib(heapAfter),
      loopStalls: stallWatch.stalls.length,
      gzipAnswers: results.filter((r) => r.gzipped).length,
      eventLoopDelayMs: { p99: Math.round(p99 * 10) / 10, max: Math.round((loopDelay.max / 1e6) * 10) / 10 },
      resourcesBaseline,
      resourcesAfter,
      logMessages: Object.fromEntries(gw.logMessages),
      timingTolerated,
    },
  };
}

/** Every invariant that can be checked once the gateway is at rest. */
function checkInvariants(
  o: SoakOptions,
  gw: SoakGateway,
  records: readonly ProviderRecord[],
  stalls: ReadonlyArray<readonly [number, number]>,
  results: ClientResult[],
  startingCredits: number,
  violate: (check: Check, detail: string) => void,
): string[] {
  const idleTimeout = o.idleTimeout ?? 300;
  const upstreamTimeout = o.upstreamTimeout ?? 1000;
  const tolerated: string[] = [];
  // --- meter: exactly once per admitted generation, and only for admitted ones
  const reservedIds = new Set<string>();
  for (const r of gw.reserved) {
    if (reservedIds.has(r.generationId)) violate('reserve-meter', `reserve was called twice for ${r.generationId}`);
    reservedIds.add(r.generationId);
  }
  for (const id of reservedIds) {
    const calls = gw.meterCalls.get(id) ?? 0;
    if (calls === 0) violate('meter-once', `lost meter call: ${id} (${gw.reserved.find((r) => r.generationId === id)?.soakId}) was reserved and never metered`);
    else if (calls > 1) violate('meter-once', `doubled meter call: ${id} metered ${calls} times`);
  }
  for (const [id, calls] of gw.meterCalls) if (!reservedIds.has(id)) violate('reserve-meter', `${id} metered ${calls}× without a reservation`);
  if (gw.reserveRefusals > 0) violate('reserve-meter', `reserve refused ${gw.reserveRefusals} requests (the balance should cover them all)`);
  const meterOf = new Map<string, MeterRecord>();
  for (const m of gw.meters) if (!meterOf.has(m.generationId)) meterOf.set(m.generationId, m);
  const generationOfSoak = new Map<string, string>();
  for (const r of gw.reserved) {
    if (r.soakId === undefined) continue;
    if (generationOfSoak.has(r.soakId)) violate('reserve-meter', `client request ${r.soakId} was admitted twice`);
    generationOfSoak.set(r.soakId, r.generationId);
  }

  // --- the ledger adds up (thousandths)
  const balance = gw.ledger.balanceOf(SOAK_KEY)!;
  const [b, h, u] = [milli(balance.balance), milli(balance.held), milli(balance.used)];
  if (b + h + u !== milli(startingCredits)) violate('ledger', `balance ${balance.balance} + held ${balance.held} + used ${balance.used} ≠ start ${startingCredits}`);
  if (h !== 0) violate('ledger', `${balance.held} credits still held with nothing in flight`);
  const charged = gw.meters.reduce((sum, m) => sum + milli(m.settlement.charged), 0);
  if (u !== charged) violate('ledger', `used ${balance.used} ≠ the sum of the settled charges ${charged / 1000}`);
  for (const m of gw.meters) {
    if (m.settlement.unpaid !== 0) violate('ledger', `${m.generationId} left ${m.settlement.unpaid} unpaid`);
    if (m.outcome === 'unserved' && m.settlement.charged !== 0) violate('ledger', `unserved ${m.generationId} was charged ${m.settlement.charged}`);
  }

  // --- metered usage
  for (const m of gw.meters) {
    if (m.usage.prompt_tokens > m.worstCase.prompt_tokens || m.usage.completion_tokens > m.worstCase.completion_tokens) {
      violate('usage', `${m.generationId} metered ${showUsage(m.usage)}, above its worst case ${m.worstCase.prompt_tokens}+${m.worstCase.completion_tokens}`);
    }
  }
  for (const p of records) {
    if (p.cap !== undefined && p.words > p.cap) violate('usage', `the provider produced ${p.words} tokens over the cap ${p.cap} for ${p.soakId}`);
  }

  // --- one log line per generation; no hook failure
  for (const id of reservedIds) {
    const lines = gw.logLines.get(id) ?? 0;
    if (lines !== 1) violate('log-line', `${id} has ${lines} end-of-request log lines`);
  }
  for (const [msg, n] of gw.logMessages) {
    if (/meter (threw|timed out|returned)|hook or handler threw/.test(msg)) violate('log-line', `${n}× "${msg}"`);
  }

  // --- what each client saw
  const providerOf = new Map<string, ProviderRecord>();
  for (const p of records) {
    if (p.soakId === undefined) continue;
    if (providerOf.has(p.soakId)) violate('outcome', `the provider saw ${p.soakId} twice (a retried upstream call)`);
    providerOf.set(p.soakId, p);
  }
  for (const r of results) {
    const where = `${r.soakId} (${r.stream ? 'stream' : 'json'}, cancel ${r.cancel}${r.cancel === 'never' ? '' : ` @${r.cancelAt}`})`;
    if (r.timedOut) violate('hung', `${where} was still open after ${o.clientTimeoutMs ?? 20_000} ms`);
    if (r.malformed) violate('outcome', `${where}: ${r.malformed}`);
    const genId = generationOfSoak.get(r.soakId);
    if (r.generationId !== undefined && !reservedIds.has(r.generationId)) violate('reserve-meter', `${where} got X-Generation-Id ${r.generationId}, which was never reserved`);
    if (r.generationId !== undefined && genId !== undefined && r.generationId !== genId) violate('reserve-meter', `${where} got ${r.generationId}, reserved as ${genId}`);
    const m = genId === undefined ? undefined : meterOf.get(genId);

    if (r.credits !== undefined) {
      if (!m) violate('credits-seen', `${where} saw credits_used ${r.credits} for a generation that was never metered`);
      else {
        if (r.credits !== m.settlement.charged) violate('credits-seen', `${where} saw credits_used ${r.credits}; ${m.settlement.charged} were settled`);
        if (!sameUsage(r.usage, m.usage)) violate('credits-seen', `${where} saw usage ${showUsage(r.usage)} next to its credits; ${showUsage(m.usage)} was metered`);
      }
    }
    if (r.stream && r.creditsChunks > 1) violate('credits-seen', `${where} saw ${r.creditsChunks} credits chunks`);

    if (r.cancelled || r.timedOut) continue;
    // the client stayed to the end: its answer and its settlement follow from what the provider did
    const p = providerOf.get(r.soakId);
    if (r.networkError) {
      violate('outcome', `${where}: ${r.networkError} (provider: ${p?.behaviour ?? 'never called'})`);
      continue;
    }
    if (!genId || !m) {
      violate('outcome', `${where} answered ${r.status} ${r.errorCode ?? ''} without being admitted and metered`);
      continue;
    }
    if (r.generationId === undefined) violate('outcome', `${where} answered ${r.status} without an X-Generation-Id header`);
    if (!p) {
      violate('outcome', `${where} was admitted (${m.outcome}) but never reached the provider`);
      continue;
    }
    const want = expectedOutcome(p.behaviour, r.stream);
    const seen = `answered ${r.status}${r.sawDone ? ' [DONE]' : ''}${r.errorCode ? ` ${r.errorCode}` : ''}, metered ${m.outcome}${m.errorCode ? ` (${m.errorCode})` : ''}`;
    if (m.outcome !== want) {
      // An idle timeout is right when the provider was that silent, or when the gateway's own event loop stalled
      // long enough (a busy machine): after a stall, timers run before the data that waited is read. Counted in
      // the figures, not a violation.
      const stalled = longestStall(stalls, r.startedAt, r.startedAt + r.durationMs);
      if (m.outcome === 'failed' && p.maxSilenceMs + stalled >= idleTimeout - 30 && m.errorCode === (r.stream ? 'upstream_timeout' : 'upstream_connection_lost')) {
        tolerated.push(`${where}, provider ${p.behaviour} silent for ${p.maxSilenceMs} ms, event loop stalled ${stalled} ms: ${seen}`);
        continue;
      }
      // likewise the upstreamTimeout, for headers that came late because of the provider plus a stall
      if ((m.outcome === 'unserved' || (m.outcome === 'failed' && !r.stream)) && m.errorCode === 'upstream_timeout' && (p.headersAfterMs ?? upstreamTimeout) + stalled >= upstreamTimeout - 30) {
        tolerated.push(`${where}, provider ${p.behaviour} sent headers after ${p.headersAfterMs} ms, event loop stalled ${stalled} ms: ${seen}`);
        continue;
      }
      const reservedAt = gw.reserved.find((x) => x.generationId === genId)?.at ?? NaN;
      violate('outcome', `${where}, provider ${p.behaviour} (reached the provider ${Math.round(p.arrivedAt - reservedAt)} ms after reserve, connection accepted ${Math.round(p.connectedAt - reservedAt)} ms after reserve with ${p.requestsBefore} requests before, headers after ${p.headersAfterMs} ms; client took ${r.durationMs} ms): ${seen}; expected ${want}`);
      continue;
    }
    if (want === 'completed') {
      const ok = r.status === 200 && r.credits !== undefined && (!r.stream || (r.sawDone && r.creditsChunks === 1 && r.creditsIndex === r.events - 2 && r.errorCode === undefined));
      if (!ok) violate('outcome', `${where}, provider ${p.behaviour}: ${seen}, ${r.creditsChunks} credits chunks at ${r.creditsIndex} of ${r.events} events`);
      const reported = p.usages.reduce((best, x) => ({ prompt_tokens: Math.max(best.prompt_tokens, x.prompt_tokens), completion_tokens: Math.max(best.completion_tokens, x.completion_tokens) }), { prompt_tokens: 0, completion_tokens: 0 });
      if (p.usages.length === 0) {
        if (m.usage.estimated !== true) violate('usage', `${where}: the provider sent no usage, yet ${showUsage(m.usage)} was metered as the provider's`);
      } else if (m.usage.estimated || m.usage.prompt_tokens !== reported.prompt_tokens || m.usage.completion_tokens !== reported.completion_tokens) {
        violate('usage', `${where}, provider ${p.behaviour} reported ${p.usages.map((x) => `${x.prompt_tokens}+${x.completion_tokens}`).join(' then ')}; ${showUsage(m.usage)} was metered`);
      }
    } else if (want === 'failed') {
      const code = FAILED_CODE[p.behaviour]?.[r.stream ? 'stream' : 'json'];
      const failedStatus = p.behaviour === 'no-headers' ? 504 : 502;
      const ok = r.stream ? r.status === 200 && !r.sawDone && r.creditsChunks === 0 && r.errorCode === code : r.status === failedStatus && r.errorCode === code;
      if (!ok) violate('outcome', `${where}, provider ${p.behaviour}: ${seen}; expected ${r.stream ? 'an error chunk' : '502'} ${code}`);
    } else {
      const status = UNSERVED_STATUS[p.behaviour];
      if (r.status !== status || r.credits !== undefined) violate('outcome', `${where}, provider ${p.behaviour}: ${seen}; expected HTTP ${status}`);
      if (m.settlement.charged !== 0 || m.usage.total_tokens !== 0) violate('outcome', `${where}: unserved but metered ${showUsage(m.usage)} for ${m.settlement.charged}`);
    }
  }

  // --- the chaos happened
  if (o.requireCoverage ?? true) {
    const behaviours = new Set(records.map((p) => p.behaviour));
    for (const [b] of STREAM_BEHAVIOURS) if (!behaviours.has(b)) violate('coverage', `no request met provider behaviour "${b}"`);
    const cancels = new Set<string>(results.filter((r) => r.cancelled).map((r) => (r.cancelledBeforeHeaders ? 'before headers' : 'mid-answer')));
    for (const c of ['before headers', 'mid-answer'] as const) if (!cancels.has(c)) violate('coverage', `no client cancelled ${c}`);
    const outcomes = new Set(gw.meters.map((m) => m.outcome));
    for (const out of ['completed', 'cancelled', 'failed', 'unserved'] as const) if (!outcomes.has(out)) violate('coverage', `no generation ended ${out}`);
    if (!results.some((r) => r.gzipped)) violate('coverage', 'no answer came gzip-encoded');
  }
  return tolerated;
}

/** The figures as text, for the test log and the bench. */
export function formatReport(report: SoakReport): string {
  const f = report.figures;
  const table = (title: string, counts: Record<string, number>): string => {
    const rows = Object.entries(counts).sort((a, b) => b[1] - a[1]);
    const width = Math.max(0, ...rows.map(([k]) => k.length));
    return `${title}\n${rows.map(([k, n]) => `    ${k.padEnd(width)}  ${String(n).padStart(6)}`).join('\n')}`;
  };
  const lines = [
    `chaos soak: ${f.requests} requests at concurrency ${f.concurrency}, seed ${f.seed}, in ${(f.durationMs / 1000).toFixed(1)} s`,
    table('  clients saw', f.clients),
    table('  the provider did', f.behaviours),
    `  admitted (reserve) ${f.admitted}, meter calls ${f.meterCalls}`,
    table('  metered outcomes', f.meterByOutcome),
    `  ledger: start ${f.ledger.start} = balance ${f.ledger.balance} + held ${f.ledger.held} + used ${f.ledger.used}; settled charges ${f.ledger.charged}`,
    `  RSS ${f.rssBeforeMiB} → ${f.rssAfterMiB} MiB, heap ${f.heapBeforeMiB} → ${f.heapAfterMiB} MiB (the run's records included); event-loop delay p99 ${f.eventLoopDelayMs.p99} ms, max ${f.eventLoopDelayMs.max} ms, ${f.loopStalls} stalls over 50 ms`,
    `  gzip-encoded answers: ${f.gzipAnswers}`,
    `  active resources: baseline ${JSON.stringify(f.resourcesBaseline)}, after ${JSON.stringify(f.resourcesAfter)}`,
    `  timeouts explained by the provider's slowness + event-loop stalls (not violations): ${f.timingTolerated.length}${f.timingTolerated.slice(0, 5).map((t) => `\n    ${t}`).join('')}`,
    Object.keys(f.logMessages).length ? table('  gateway warnings/errors logged', f.logMessages) : '  gateway warnings/errors logged: none',
    report.violations.length === 0 ? '  violations: none' : `  violations:\n${report.violations.map((v) => `    [${v.check}] ${v.detail}`).join('\n')}`,
  ];
  return lines.join('\n');
}
