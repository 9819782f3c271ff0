import type { Logger } from '../../contract/hooks';

/** What happened to one attempt: written, try again later (the ledger unreachable), or refused for good. */
export type AttemptResult = 'done' | 'retry' | 'rejected';

/** Options of {@link SettleQueue}. */
export interface SettleQueueOptions<T> {
  /** The most settlements that may wait; past it a settlement is logged as lost, at error level, in full. */
  max: number;
  /** First retry delay (ms); doubles up to `maxRetryMs`. */
  retryMs: number;
  maxRetryMs: number;
  logger: Logger | undefined;
  /** The fields logged for an item (ids and amounts, never a key). */
  describe(item: T): Record<string, unknown>;
}

/**
 * Settlements that could not be written because the ledger was unreachable, kept in order in this process and
 * retried until they are written. Bounded, logged when an item waits, is written, is refused or is lost; never
 * dropped silently. One attempt at a time, so retries keep their order and never hammer a recovering Redis.
 */
export class SettleQueue<T> {
  private readonly items: T[] = [];
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private delay: number;
  private closed = false;

  constructor(
    private readonly attempt: (item: T) => Promise<AttemptResult>,
    private readonly opts: SettleQueueOptions<T>,
  ) {
    this.delay = opts.retryMs;
  }

  /** How many settlements wait. */
  get depth(): number {
    return this.items.length;
  }

  /** Queues `item`; false (and logged as lost) when the queue is full. */
  push(item: T): boolean {
    if (this.items.length >= this.opts.max) {
      this.opts.logger?.error({ ...this.opts.describe(item), pending: this.items.length }, 'infery-stream ledger queue full: a settlement is LOST (charge it by hand)');
      return false;
    }
    this.items.push(item);
    this.opts.logger?.warn({ ...this.opts.describe(item), pending: this.items.length }, 'infery-stream ledger unreachable: settlement queued, retried until written');
    this.schedule();
    return true;
  }

  /** Tries the queue now (the connection came back). */
  kick(): void {
    this.delay = this.opts.retryMs;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    void this.run();
  }

  /**
   * Tries to write everything within `deadlineMs`; resolves to what still waits (logged at error level, each
   * item in full, so an operator can settle it by hand).
   */
  async drain(deadlineMs: number): Promise<T[]> {
    const until = Date.now() + deadlineMs;
    while (this.items.length > 0 && Date.now() < until) {
      await this.run();
      if (this.items.length === 0) break;
      await new Promise((resolve) => setTimeout(resolve, Math.min(250, Math.max(0, until - Date.now()))));
    }
    const left = [...this.items];
    for (const item of left) this.opts.logger?.error({ ...this.opts.describe(item) }, 'infery-stream settlement still pending at shutdown: not written to the ledger');
    return left;
  }

  /** Stops retrying (what waits stays readable through `drain`). */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(): void {
    if (this.timer || this.running || this.closed || this.items.length === 0) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.run();
    }, this.delay);
    this.timer.unref();
  }

  private async run(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.items.length > 0) {
        const item = this.items[0]!;
        let result: AttemptResult;
        try {
          result = await this.attempt(item);
        } catch (err) {
          this.opts.logger?.error({ ...this.opts.describe(item), err: err instanceof Error ? err.message : String(err) }, 'infery-stream queued settlement failed');
          result = 'retry';
        }
        if (result === 'retry') {
          this.delay = Math.min(this.opts.maxRetryMs, this.delay * 2);
          break;
        }
        this.items.shift();
        this.delay = this.opts.retryMs;
        if (result === 'done') this.opts.logger?.info({ ...this.opts.describe(item), pending: this.items.length }, 'infery-stream queued settlement written');
        else this.opts.logger?.error({ ...this.opts.describe(item) }, 'infery-stream queued settlement refused by the ledger (charge it by hand)');
      }
    } finally {
      this.running = false;
      this.schedule();
    }
  }
}
