import type { ServerResponse } from 'node:http';
import { InferyError, sendError } from '../../base/errors';
import type { Logger } from '../../contract/hooks';
import { carriesKey, keyHeaders, redact } from './upstream-headers';
import { modelNotFound } from './upstream-pool';
import type { ResolvedUpstream } from './upstreams';

/** One model in `GET /models`, as OpenAI lists them. */
export interface ModelEntry {
  id: string;
  object: 'model';
  created: number;
  owned_by: string;
}

const CACHE_MS = 60_000;
const FAILED_RETRY_MS = 10_000;
const FETCH_TIMEOUT_MS = 5_000;
const MAX_LIST_BYTES = 2 * 1024 * 1024;
const MAX_MODELS = 5_000;

/**
 * What the gateway serves when it fronts several upstreams, for `GET /models` and `GET /models/{id}`: each
 * upstream's exact model names and aliases, and for an upstream that serves a pattern (`gpt-*`, `*`), the models
 * its own `GET /models` lists that the pattern admits (fetched with its key, at most every minute, bounded in
 * size and time; a failure only leaves them out, logged). An upstream's key never reaches the client.
 */
export class ModelCatalog {
  private cached: { at: number; list: Promise<ModelEntry[]> } | undefined;
  /** When a list that failed in part is built again (sooner than the cache's minute). */
  private retryAt = Infinity;

  constructor(
    private readonly upstreams: readonly ResolvedUpstream[],
    private readonly logger: Logger | undefined,
  ) {}

  /** Answers `GET /models` (no `id`) or `GET /models/{id}`. */
  async answer(res: ServerResponse, id: string | undefined): Promise<void> {
    const list = await this.list();
    let body: unknown;
    if (id === undefined) body = { object: 'list', data: list };
    else {
      const upstream = this.upstreams.find((u) => u.serves(id));
      if (!upstream) {
        sendError(res, modelNotFound(id));
        return;
      }
      body = list.find((m) => m.id === id) ?? { id, object: 'model', created: 0, owned_by: upstream.name };
    }
    if (res.destroyed || res.headersSent) return;
    const text = JSON.stringify(body);
    res.statusCode = 200;
    res.setHeader('Content-Type', 'application/json; charset=utf-8');
    res.setHeader('Content-Length', Buffer.byteLength(text));
    res.end(res.req?.method === 'HEAD' ? undefined : text);
  }

  /** The models served, each once, in upstream order. */
  list(): Promise<ModelEntry[]> {
    const now = Date.now();
    if (!this.cached || now - this.cached.at > CACHE_MS || now >= this.retryAt) {
      this.retryAt = Infinity;
      this.cached = { at: now, list: this.build() };
    }
    return this.cached.list;
  }

  private async build(): Promise<ModelEntry[]> {
    const keys = this.upstreams.flatMap((u) => (u.apiKey ? [u.apiKey] : []));
    // an id that carries an upstream key (a provider echoing it, or key-shaped) is never listed
    const seen = new Set<string>();
    const out: ModelEntry[] = [];
    const add = (id: string, owner: string): void => {
      if (seen.has(id) || out.length >= MAX_MODELS) return;
      if (keys.some((key) => carriesKey(id, key)) || redact(id, undefined) !== id) return;
      seen.add(id);
      out.push({ id, object: 'model', created: 0, owned_by: owner });
    };
    const fetched = await Promise.all(this.upstreams.map((u) => (u.hasWildcards ? this.fetchIds(u) : Promise.resolve([]))));
    this.upstreams.forEach((upstream, i) => {
      for (const id of upstream.listed) add(id, upstream.name);
      for (const id of fetched[i]!) if (upstream.serves(id)) add(id, upstream.name);
    });
    return out;
  }

  /** The ids an upstream's own `GET /models` lists; [] when it cannot be read. */
  private async fetchIds(upstream: ResolvedUpstream): Promise<string[]> {
    const url = new URL(upstream.baseURL.href);
    url.pathname = `${url.pathname.replace(/\/$/, '')}/models`;
    try {
      const res = await fetch(url, {
        headers: { ...upstream.headers, ...keyHeaders(upstream), accept: 'application/json' },
        signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
        redirect: 'error',
      });
      if (!res.ok || !res.body) throw new InferyError(502, 'upstream_error', `answered ${res.status}`);
      const text = await readBounded(res.body, MAX_LIST_BYTES);
      const json = JSON.parse(text) as { data?: unknown };
      if (!Array.isArray(json.data)) return [];
      return (json.data as Array<{ id?: unknown } | null>).flatMap((m) => (typeof m?.id === 'string' && m.id.length <= 256 ? [m.id] : [])).slice(0, MAX_MODELS);
    } catch (err) {
      const message = err instanceof Error ? redact(err.message, upstream.apiKey).slice(0, 200) : 'unknown';
      this.logger?.warn({ upstream: upstream.name, err: message }, 'infery-stream could not list an upstream\'s models');
      // tried again after FAILED_RETRY_MS, not on every request: a down upstream must not cost each client a time-out
      this.retryAt = Math.min(this.retryAt, Date.now() + FAILED_RETRY_MS);
      return [];
    }
  }
}

async function readBounded(body: ReadableStream<Uint8Array>, limit: number): Promise<string> {
  const reader = body.getReader();
  const parts: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      throw new RangeError(`the model list is larger than ${limit} bytes`);
    }
    parts.push(value);
  }
  return Buffer.concat(parts).toString('utf8');
}
