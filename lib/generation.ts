import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { InferyError } from './errors';
import { callMeter } from './metering';
import type { ResolvedOptions } from './options';
import { logRequestEnd } from './request-log';
import { CompletionTally, defaultCountTokens, estimatedUsage, estimatePromptTokens, type TokenCounter, type Usage } from './usage';

/** How a generation ended. */
export type Outcome = 'completed' | 'cancelled' | 'failed';

/**
 * One chat generation from the moment it goes upstream: its ids, timings, usage and the single place where it
 * is metered and logged. `finish()` runs its work exactly once, whatever path calls it first.
 */
export class Generation<Account> {
  /** The provider's id once a chunk or body carried one. */
  id: string | undefined;
  object = 'chat.completion.chunk';
  created: number = Math.floor(Date.now() / 1000);
  /** The model name the provider reported (falls back to the requested one). */
  providerModel: string;
  finishReason: string | null = null;
  providerUsage: Usage | undefined;
  ttftMs: number | null = null;
  readonly tally: CompletionTally;

  private readonly startedAt = performance.now();
  private readonly count: TokenCounter;
  private finishing: Promise<number | undefined> | undefined;
  private meteredUsage: Usage | undefined;

  constructor(
    private readonly opts: ResolvedOptions<Account>,
    private readonly req: IncomingMessage,
    private readonly account: Account,
    private readonly body: Record<string, unknown>,
    readonly model: string,
    readonly stream: boolean,
    readonly reqId: string,
  ) {
    this.providerModel = model;
    this.count = opts.countTokens ?? defaultCountTokens;
    this.tally = new CompletionTally(this.count, model);
  }

  /** The id clients see; a gateway id when the provider never sent one. */
  get generationId(): string {
    this.id ??= `gen-${randomUUID()}`;
    return this.id;
  }

  get finished(): boolean {
    return this.finishing !== undefined;
  }

  /** Records the time to first token once. */
  markFirstToken(): void {
    if (this.ttftMs === null) this.ttftMs = Math.round(performance.now() - this.startedAt);
  }

  /**
   * The provider's usage when it sent one (zero included), else the tokenizer's count of what was produced.
   * Fixed once the generation is finishing, so the credits chunk shows exactly what was metered.
   */
  usage(): Usage {
    if (this.meteredUsage) return this.meteredUsage;
    if (this.providerUsage) return this.providerUsage;
    return estimatedUsage(estimatePromptTokens(this.body, this.count, this.model), this.tally.tokens());
  }

  /**
   * Meters and logs the generation, once. Later calls return the first call's promise. Resolves to the
   * credits `meter` returned, or `undefined` when it threw, timed out or returned something invalid.
   */
  finish(outcome: Outcome, error?: InferyError): Promise<number | undefined> {
    this.finishing ??= this.run(outcome, error).finally(() => this.settle());
    return this.finishing;
  }

  private settle: () => void = () => {};
  /** Resolves once the generation has been metered and logged, whatever the outcome. */
  readonly settled: Promise<void> = new Promise((resolve) => {
    this.settle = resolve;
  });

  private async run(outcome: Outcome, error: InferyError | undefined): Promise<number | undefined> {
    const usage = this.usage();
    this.meteredUsage = usage;
    const durationMs = Math.round(performance.now() - this.startedAt);
    const result = await callMeter(
      this.opts.meter,
      {
        account: this.account,
        generationId: this.generationId,
        model: this.model,
        usage,
        cancelled: outcome === 'cancelled',
        error,
        stream: this.stream,
        finishReason: this.finishReason,
        timings: { ttftMs: this.ttftMs, durationMs },
        req: this.req,
      },
      this.opts.meterTimeout,
    );
    if (result.credits === undefined) {
      const err = result.error instanceof Error ? { name: result.error.name, message: result.error.message } : undefined;
      this.opts.logger?.error(
        { reqId: this.reqId, generationId: this.generationId, failure: result.failure, err },
        `infery-stream meter ${result.failure === 'timeout' ? 'timed out' : result.failure === 'invalid' ? 'returned an invalid value' : 'threw'}`,
      );
    }
    logRequestEnd(this.opts.logger, {
      reqId: this.reqId,
      path: '/chat/completions',
      // The status line already went out as 200 for streams; 499 is the usual mark of a client that left.
      status: outcome === 'cancelled' ? 499 : 200,
      durationMs,
      generationId: this.generationId,
      model: this.model,
      stream: this.stream,
      ttftMs: this.ttftMs,
      usage,
      credits: result.credits ?? null,
      cancelled: outcome === 'cancelled',
      outcome,
      errorCode: error?.code,
    });
    return result.credits;
  }
}
