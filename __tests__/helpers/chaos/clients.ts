import http, { type IncomingMessage } from 'node:http';
import { performance } from 'node:perf_hooks';
import zlib from 'node:zlib';
import { type Usage } from '../../../lib';
import { MODEL } from './provider';
import { Prng, hashSeed } from './random';

/** The soak's clients: each request's plan (stream or not, when to hang up), sent over raw sockets and read back. */

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

