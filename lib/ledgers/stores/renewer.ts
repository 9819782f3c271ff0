import type { Logger } from '../../contract/hooks';

/**
 * Calls `renew` every `everyMs` while `active()` says there is something to renew: it moves the expiry of the
 * holds (or leases) this process still owns, so they outlive a long stream but not a dead process. Failures are
 * logged once per outage; the timer never keeps the process alive.
 */
export class Renewer {
  private timer: NodeJS.Timeout | undefined;
  private failing = false;
  private busy = false;

  constructor(
    private readonly everyMs: number,
    private readonly renew: () => Promise<void>,
    private readonly logger: Logger | undefined,
    private readonly what: string,
  ) {}

  /** Makes sure the timer runs (call after taking something to renew). */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.tick(), this.everyMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private async tick(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      await this.renew();
      if (this.failing) this.logger?.info({ what: this.what }, `infery-stream ${this.what} renewals work again`);
      this.failing = false;
    } catch (err) {
      if (!this.failing) this.logger?.warn({ what: this.what, err: err instanceof Error ? err.message : String(err) }, `infery-stream could not renew ${this.what}; retrying`);
      this.failing = true;
    } finally {
      this.busy = false;
    }
  }
}
