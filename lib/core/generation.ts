import type { IncomingMessage } from 'node:http';
import { AsyncLocalStorage } from 'node:async_hooks';
import { performance } from 'node:perf_hooks';
import type { Ticket } from './admission';
import type { InferyError } from '../base/errors';
import type { Outcome, Usage } from '../contract/hooks';
import type { MeteredApi } from './metered-api';
import type { ResolvedOptions } from '../options/resolved';
import { TRACE_HEADERS, type GenerationStart } from '../ledgers/metrics/observer';
import { ContentCapture } from './content-capture';
import { settle } from './settlement';
import { CompletionTally, describeRawUsage, estimatedUsage, mergeUsage, parseUsage, providerCounts } from './usage';
import { classesOf } from './usage-classes';

const ZERO_USAGE: Usage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };

/**
 * One generation from admission to settlement: its ids, what the provider reported, what was produced, and the
 * single place where it is settled (metered, hold released, slot given back, logged). `finish()` does that work
 * exactly once, whatever path calls it first.
 */
export class Generation<Account> {
  /** The provider's id once a chunk or body carried one. */
  providerId: string | undefined;
  /** The `object` of the provider's chunks, for the events the gateway adds. */
  object: string;
  created: number = Math.floor(Date.now() / 1000);
  /** The model name the provider reported (falls back to the requested one). */
  providerModel: string;
  finishReason: string | null = null;
  /** The provider's usage, when it sent a valid one (merged so a later one never lowers it). */
  providerUsage: Usage | undefined;
  /** The provider's last usage as it sent it, counts only (`MeterEvent.providerUsage`). */
  providerRawUsage: Record<string, unknown> | undefined;
  /** The upstream that served it (its name; `default` for the single `upstream` option). */
  upstream: string | undefined;
  /** That upstream's key: redacted from everything its answer carries to the client. */
  upstreamKey: string | undefined;
  /** The upstreams tried before it, and why each failed. */
  failedUpstreams: Array<{ upstream: string; code: string; status: number }> = [];
  ttftMs: number | null = null;
  /**
   * Server-side web searches the answer shows (the Responses API's `web_search_call` items), for a provider whose
   * usage does not count them: `UsageClasses.web_searches` is the greater of this and the provider's count.
   */
  webSearchCalls = 0;
  readonly tally: CompletionTally;
  /** What observers were told when it started (and are told again, with the outcome, when it settles). */
  readonly started: GenerationStart;
  /** The answer's visible text, kept only when an observer asked for content (`Observer.content`). */
  readonly content: ContentCapture | undefined;

  private readonly startedAt = performance.now();
  /**
   * Runs a function in the request's async context as it was at admission (the host's active span, its
   * AsyncLocalStorage stores): settlement is reached from upstream socket events, whose context is the upstream
   * request's (an observer may have run it in a context of its own), and `meter` belongs to the request.
   */
  private readonly inRequestContext = AsyncLocalStorage.snapshot();
  private readonly finishedChoices = new Set<number>();
  private outputDone = false;
  private finishing: Promise<number | undefined> | undefined;
  private meteredUsage: Usage | undefined;
  private warnedUsage = false;
  private worstCaseBilled = false;

  constructor(
    private readonly opts: ResolvedOptions<Account>,
    private readonly req: IncomingMessage,
    readonly ticket: Ticket<Account>,
    readonly model: string,
    readonly stream: boolean,
    readonly reqId: string,
    readonly api: Pick<MeteredApi, 'endpoint' | 'path' | 'usage' | 'object' | 'storedContextTokens'>,
  ) {
    this.providerModel = model;
    this.object = api.object;
    this.tally = new CompletionTally(opts.countTexts, model);
    this.started = {
      route: api.path,
      generationId: ticket.generationId,
      model,
      stream,
      ...(ticket.maxCompletionTokens > 0 ? { maxTokens: ticket.maxCompletionTokens } : {}),
      choices: ticket.choices,
      accountTag: opts.accountTag(ticket.account),
      traceHeader: (name) => traceHeader(req, name),
    };
    const wanted = opts.observer?.content;
    this.content = wanted ? new ContentCapture(wanted.maxChars, ticket.choices) : undefined;
    opts.observer?.generationStarted(this.started);
  }

  /** The gateway-unique id (`X-Generation-Id`). */
  get generationId(): string {
    return this.ticket.generationId;
  }

  /** The `id` clients see on the chunks the gateway adds: the provider's, else the gateway's. */
  get chunkId(): string {
    return this.providerId ?? this.ticket.generationId;
  }

  get finished(): boolean {
    return this.finishing !== undefined;
  }

  /** Records the time to first token once. */
  markFirstToken(): void {
    if (this.ttftMs === null) this.ttftMs = Math.round(performance.now() - this.startedAt);
  }

  /** Notes that choice `index` sent its `finish_reason`. */
  markChoiceFinished(index: unknown, reason: string): void {
    this.finishReason = reason;
    const i = typeof index === 'number' ? index : 0;
    // only the choices asked for count (and a provider cannot grow this set without bound)
    if (Number.isInteger(i) && i >= 0 && i < this.ticket.choices) this.finishedChoices.add(i);
  }

  /** Notes that the whole generation finished (an API with one final event, the Responses API's). */
  markAllFinished(reason: string): void {
    this.finishReason = reason;
    for (let i = 0; i < this.ticket.choices; i++) this.finishedChoices.add(i);
  }

  /**
   * Notes that the client has been sent the whole answer, though the provider's final event (with the usage) is
   * still to come (the Responses API's `*.done` events): a client that leaves now is not a cancellation.
   */
  markOutputDone(): void {
    this.outputDone = true;
  }

  /** True once every choice asked for (`n`) sent its `finish_reason` (or the output was done): the provider finished generating. */
  get generationFinished(): boolean {
    return this.outputDone || this.finishedChoices.size >= this.ticket.choices;
  }

  /**
   * Takes a `usage` the provider sent. One that cannot be billed (bad counts, no `completion_tokens`) is
   * ignored with a warning, so the estimate is billed instead; a later valid one never lowers an earlier one.
   */
  recordUsage(raw: unknown): void {
    const usage = parseUsage(raw, this.api.usage);
    if (usage === undefined) return;
    this.providerRawUsage = providerCounts(raw);
    if (usage === 'invalid') {
      if (!this.warnedUsage) {
        this.warnedUsage = true;
        this.opts.logger?.warn(
          { reqId: this.reqId, generationId: this.generationId, usage: describeRawUsage(raw) },
          'infery-stream ignored an unusable provider usage; the estimate is billed',
        );
      }
      return;
    }
    this.providerUsage = mergeUsage(this.providerUsage, usage);
  }

  /** The usage that was settled (what the credits chunk and the JSON answer show). Only meaningful once finishing. */
  usage(): Usage {
    return this.meteredUsage ?? { ...ZERO_USAGE };
  }

  /**
   * The provider's valid usage when it sent one, else the tokenizer's count of the prompt and of what was
   * produced, neither above the reserved worst case. A generation that did not complete (cancelled, failed) may
   * hold only a provisional usage — the Messages API's `message_start` says 1 output token, its final count comes
   * in the `message_delta` a cut stream never gets — so its output is the greater of the provider's count and the
   * tokenizer's count of what was produced: leaving before the final count never makes an answer cheaper.
   */
  private async measure(outcome: Outcome): Promise<Usage> {
    const worst = this.ticket.worstCase;
    if (this.worstCaseBilled) return estimatedUsage(worst.prompt_tokens, worst.completion_tokens);
    if (this.providerUsage && outcome !== 'completed' && this.tally.produced > 0) {
      const usage = await this.plausible(this.providerUsage);
      const produced = Math.min(worst.completion_tokens, await this.tally.tokens());
      if (produced <= usage.completion_tokens) return usage;
      return { ...usage, completion_tokens: produced, total_tokens: usage.prompt_tokens + produced, estimated: true };
    }
    if (this.providerUsage) return this.plausible(this.providerUsage);
    return estimatedUsage(Math.min(worst.prompt_tokens, await this.ticket.promptTokens()), Math.min(worst.completion_tokens, await this.tally.tokens()));
  }

  /** What was generated cannot be known but was generated in full (an answer too large to read): bill the worst case. */
  billWorstCase(): void {
    this.worstCaseBilled = true;
  }

  /**
   * A provider usage of zero for a part that plainly was not zero (text was produced, or the prompt was not
   * empty) is not believed: that count becomes the estimate, and a warning is logged.
   */
  private async plausible(usage: Usage): Promise<Usage> {
    const worst = this.ticket.worstCase;
    const produced = usage.completion_tokens === 0 && this.tally.produced > 0 ? Math.min(worst.completion_tokens, await this.tally.tokens()) : 0;
    const prompt = usage.prompt_tokens === 0 ? Math.min(worst.prompt_tokens, await this.ticket.promptTokens()) : 0;
    if (produced === 0 && prompt === 0) return usage;
    this.opts.logger?.warn(
      { reqId: this.reqId, generationId: this.generationId, usage: describeRawUsage(usage) },
      'infery-stream provider usage reports zero tokens for what was sent or produced; the estimate is billed for it',
    );
    const fixed = { ...usage, prompt_tokens: usage.prompt_tokens || prompt, completion_tokens: usage.completion_tokens || produced, estimated: true as const };
    fixed.total_tokens = fixed.prompt_tokens + fixed.completion_tokens;
    return fixed;
  }

  /**
   * Settles the generation, once. Later calls return the first call's promise. Resolves to the credits `meter`
   * returned, or `undefined` when it threw, timed out or returned something invalid.
   */
  finish(outcome: Outcome, error?: InferyError): Promise<number | undefined> {
    if (!this.finishing) {
      const durationMs = Math.round(performance.now() - this.startedAt);
      this.finishing = this.inRequestContext(() => this.settleAs(outcome, error, durationMs)).finally(() => this.settleDone());
    }
    return this.finishing;
  }

  private async settleAs(outcome: Outcome, error: InferyError | undefined, durationMs: number): Promise<number | undefined> {
    let usage: Usage;
    try {
      usage = outcome === 'unserved' ? { ...ZERO_USAGE } : await this.measure(outcome);
    } catch {
      // counting is contained already; this is the last line of defence: bill the worst case, never nothing
      const worst = this.ticket.worstCase;
      usage = estimatedUsage(worst.prompt_tokens, worst.completion_tokens);
    }
    this.meteredUsage = usage;
    // the meter sees every priced class; the client's answer keeps the usage in its API's own shape
    const classes = classesOf(usage, this.ticket.worstCase.classes, outcome === 'unserved' ? 0 : this.webSearchCalls);
    const contextTokens = this.api.storedContextTokens?.(usage);
    if (contextTokens !== undefined && this.providerId !== undefined) {
      // the provider stored what was generated: the account may read it back and continue it; nobody else may
      const key = this.opts.accountKey(this.ticket.account);
      if (key !== undefined) this.opts.responseOwners.record(key, this.providerId, this.upstream, contextTokens);
    }
    return settle(this.opts, {
      started: this.started,
      content: this.content && { request: this.ticket.upstreamBody, output: this.content.output(), truncated: this.content.truncated },
      ticket: this.ticket,
      req: this.req,
      reqId: this.reqId,
      path: this.api.path,
      endpoint: this.api.endpoint,
      providerId: this.providerId,
      providerUsage: this.providerRawUsage,
      upstream: this.upstream,
      failedUpstreams: this.failedUpstreams,
      model: this.model,
      providerModel: this.providerModel,
      outcome,
      usage: { ...usage, classes },
      error,
      stream: this.stream,
      finishReason: this.finishReason,
      ttftMs: this.ttftMs,
      durationMs,
    });
  }

  private settleDone: () => void = () => {};
  /** Resolves once the generation has been settled and logged, whatever the outcome. */
  readonly settled: Promise<void> = new Promise((resolve) => {
    this.settleDone = resolve;
  });
}

/** A trace-context header of `req` (one of `TRACE_HEADERS`), repeated values joined; undefined for any other. */
function traceHeader(req: IncomingMessage, name: string): string | undefined {
  if (typeof name !== 'string') return undefined;
  const lower = name.toLowerCase();
  if (!TRACE_HEADERS.has(lower)) return undefined;
  const value = req.headers[lower];
  return Array.isArray(value) ? value.join(',') : value;
}
