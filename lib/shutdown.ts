import { InferyError } from './errors';

/** Options of {@link InFlight.drain} and the middleware's `shutdown()`. */
export interface ShutdownOptions {
  /** Milliseconds open generations may take to finish on their own; then they are ended. Default: `10_000`. */
  deadlineMs?: number;
}

/**
 * The generations under way, for graceful shutdown. Each registers a `stop` that ends it with an error (an
 * error chunk for a stream) and meters it; it unregisters once it has been metered.
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

  add(key: object, stop: (err: InferyError) => void): void {
    this.entries.set(key, stop);
  }

  delete(key: object): void {
    this.entries.delete(key);
    if (this.entries.size === 0) for (const resolve of this.idle) resolve();
  }

  /**
   * Stops taking new generations, waits for the open ones up to the deadline, then ends the rest with a
   * `shutting_down` error and waits until they are metered.
   */
  async drain(options: ShutdownOptions = {}): Promise<void> {
    const deadlineMs = options.deadlineMs ?? 10_000;
    if (typeof deadlineMs !== 'number' || !Number.isFinite(deadlineMs) || deadlineMs < 0) {
      throw new TypeError(`infery-stream: shutdown deadlineMs must be a non-negative number, got ${String(deadlineMs)}`);
    }
    this.isDraining = true;
    if (await this.whenIdle(deadlineMs)) return;
    const err = new InferyError(503, 'shutting_down', 'The gateway is shutting down; this generation was ended before it finished.', {
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
