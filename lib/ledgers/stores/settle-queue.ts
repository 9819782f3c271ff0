import type { BudgetWindow, Logger } from '../../contract/hooks';
import type { GenerationDraft, Settlement } from './credit-store';
import { LedgerUnavailableError } from './ledger-unavailable';

/** A settlement a shared store has not written yet: what its retry writes. */
export interface PendingSettle {
  account: string;
  holdId: string;
  /** The model, cut to {@link MAX_MODEL_CHARS}. */
  model: string;
  /** Thousandths of a credit. */
  cost: number;
  record: GenerationDraft | undefined;
  /** The budget window the charge counts in. */
  budget?: BudgetWindow;
}

/** The longest model name a shared store keeps. */
export const MAX_MODEL_CHARS = 256;

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

/**
 * A shared store's settlement: written by `write`, or — the store unreachable ({@link LedgerUnavailableError}) —
 * queued (the generation ran: its settlement waits here until the store is back, the hold, still renewed, keeping
 * the credits meanwhile; a full queue logs it as lost and the hold then expires) and answered `pending` with at
 * most the hold as the charge (what will be taken is at least min(cost, hold), and more only if the balance had
 * more; the record, written later, has the final charge). `live` holds the holds this process renews.
 */
export async function settleOrQueue<T extends { holdId: string; cost: number }>(
  item: T,
  write: (item: T) => Promise<Settlement | 'unknown'>,
  live: Map<string, { milli: number }>,
  queue: SettleQueue<T>,
): Promise<Settlement> {
  try {
    const answer = await write(item);
    if (answer === 'unknown') throw new Error('unknown key');
    return answer;
  } catch (err) {
    if (!(err instanceof LedgerUnavailableError)) {
      live.delete(item.holdId);
      throw err;
    }
    const held = live.get(item.holdId)?.milli;
    if (!queue.push(item)) live.delete(item.holdId);
    const told = held === undefined ? item.cost : Math.min(item.cost, held);
    return { charged: told / 1000, unpaid: 0, pending: true };
  }
}

/**
 * One retry of a queued settlement: written (`done`), the store still unreachable (`retry`), or refused for good
 * (`rejected`, logged: an account that no longer exists, or an error `refused` says the store will never accept).
 * Any other error is thrown (the queue logs it and retries).
 */
export async function attemptSettle<T extends { holdId: string }>(
  item: T,
  write: (item: T) => Promise<Settlement | 'unknown'>,
  logger: Logger | undefined,
  refused: (err: unknown) => boolean,
): Promise<AttemptResult> {
  try {
    if ((await write(item)) !== 'unknown') return 'done';
    logger?.error({ generationId: item.holdId }, 'infery-stream queued settlement for an account that no longer exists');
    return 'rejected';
  } catch (err) {
    if (err instanceof LedgerUnavailableError) return 'retry';
    if (!refused(err)) throw err;
    logger?.error({ generationId: item.holdId, err: err instanceof Error ? err.message : String(err) }, 'infery-stream queued settlement refused by the ledger');
    return 'rejected';
  }
}
