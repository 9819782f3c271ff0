import type { ServerResponse } from 'node:http';
import { InferyError } from '../base/errors';

/** Options of {@link InFlight.drain} and the middleware's `shutdown()`. */
export interface ShutdownOptions {
  /** Milliseconds open requests may take to finish on their own; then they are ended. Default: `10_000`. */
  deadlineMs?: number;
}

/** The 503 a request gets while the gateway drains. */
export function shuttingDown(): InferyError {
  return new InferyError(503, 'shutting_down', 'The gateway is shutting down; retry on another instance.', { type: 'server_error' });
}

/** Resolves once the response was written out in full (`finish`) or its connection closed. */
export function responseDone(res: ServerResponse): Promise<void> {
  if (res.writableFinished || res.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('finish', done);
      res.off('close', done);
      resolve();
    };
    res.once('finish', done);
    res.once('close', done);
  });
}

/**
 * The requests under way (generations and pass-through requests), for graceful shutdown. Each registers a
 * `stop` that ends it (a 503 before the first byte, an error chunk mid-stream) and a `done` promise; it leaves
 * the set only when `done` resolves — for a generation, once it is settled *and* its response was written out,
 * so a stream finishing during the drain still gets its credits chunk and `[DONE]`.
 */
export class InFlight {
  private readonly entries = new Map<object, (err: InferyError) => void>();
  private readonly idle = new Set<() => void>();
  private isDraining = false;

  /** True once `drain()` was called: new requests are refused with 503. */
  get draining(): boolean {
    return this.isDraining;
  }

  get size(): number {
    return this.entries.size;
  }

  add(key: object, stop: (err: InferyError) => void, done: Promise<unknown>): void {
    this.entries.set(key, stop);
    const remove = (): void => this.delete(key);
    done.then(remove, remove);
  }

  private delete(key: object): void {
    this.entries.delete(key);
    if (this.entries.size === 0) for (const resolve of [...this.idle]) resolve();
  }

  /**
   * Stops taking new requests, waits for the open ones up to the deadline, then ends the rest with a
   * `shutting_down` error and waits until they are settled and written.
   */
  async drain(options: ShutdownOptions = {}): Promise<void> {
    const deadlineMs = options.deadlineMs ?? 10_000;
    if (typeof deadlineMs !== 'number' || !Number.isFinite(deadlineMs) || deadlineMs < 0) {
      throw new TypeError(`infery-stream: shutdown deadlineMs must be a non-negative number, got ${String(deadlineMs)}`);
    }
    this.isDraining = true;
    if (await this.whenIdle(deadlineMs)) return;
    const err = new InferyError(503, 'shutting_down', 'The gateway is shutting down; this request was ended before it finished.', {
      type: 'server_error',
    });
    for (const stop of [...this.entries.values()]) stop(err);
    // metering may take up to the meter timeout; do not hang forever on a meter that never settles
    await this.whenIdle(30_000);
  }

  private whenIdle(ms: number): Promise<boolean> {
    if (this.entries.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.idle.delete(done);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.idle.delete(done);
        resolve(false);
      }, ms);
      this.idle.add(done);
    });
  }
}
