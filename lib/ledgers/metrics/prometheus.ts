import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { BoundedLabel } from './bounded-label';
import type { GenerationSettled, GenerationStart, Observer, RequestEnd } from './observer';

/**
 * `infery-stream/prometheus`: the observer hook as Prometheus metrics, with prom-client (the Prometheus client
 * of the Node ecosystem; an optional peer dependency, needed only by this entry point).
 */

/** Options of {@link prometheusObserver}. */
export interface PrometheusObserverOptions {
  /**
   * Where the metrics are registered. Pass prom-client's global `register` to serve them with
   * `collectDefaultMetrics()` and your own. Default: a new `Registry` of its own.
   */
  registry?: Registry;
  /** Prefix of every metric name. Default: `'infery_'`. */
  prefix?: string;
  /** Histogram buckets, in seconds. */
  buckets?: {
    /** Default: `[0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30]`. */
    timeToFirstToken?: number[];
    /** Default: `[0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800]`. */
    streamDuration?: number[];
  };
  /**
   * Read when the metrics are scraped: how many settlements wait in the ledger's local queue (e.g. while its
   * store is unreachable). Default: none (the gauge reads 0).
   */
  ledgerQueueDepth?: () => number;
  /** Distinct `model` (and upstream error `code`) label values kept before the rest are counted as `other`. Default: `200`. */
  maxLabelValues?: number;
}

/** What {@link prometheusObserver} returns. */
export interface PrometheusObserver {
  /** Pass it to `inferyStream({ observer })`. */
  observer: Required<Pick<Observer, 'requestEnded' | 'generationStarted' | 'generationSettled'>>;
  /** The registry the metrics are in: serve `await registry.metrics()` with `registry.contentType`. */
  registry: Registry;
}

const TTFT_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30];
const DURATION_BUCKETS = [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800];
/**
 * Prometheus metrics for the gateway. Metric names (with the default prefix `infery_`):
 *
 * - `infery_requests_total{route,method,status}`: every request the middleware answered; `route` is the route
 *   template (`/chat/completions`, `/models/{id}`) or `unmatched`; `status` 499 when the client left first.
 * - `infery_time_to_first_token_seconds{route,model}` (histogram): generations that produced a token.
 * - `infery_stream_duration_seconds{route,model}` (histogram): streamed generations, admission to settlement.
 * - `infery_tokens_total{model,kind}`: billed tokens, `kind` `prompt` or `completion`.
 * - `infery_credits_total{model}`: credits `meter` returned.
 * - `infery_open_streams` (gauge): streamed generations admitted and not yet settled.
 * - `infery_cancellations_total{route}`: requests whose client went away before the answer was complete.
 * - `infery_upstream_errors_total{code}`: requests that failed because of the upstream (its HTTP error code,
 *   `upstream_timeout`, `upstream_connection_lost`…).
 * - `infery_upstream_attempts_total{upstream,result}`: generations' upstream attempts — `ok` for the one that
 *   served, else the failure's code (a fallback, or the last try): a failing primary shows here before clients notice.
 * - `infery_limit_refusals_total{reason}`: refusals by a per-account limit, `reason` `rate`, `concurrency`,
 *   `tokens` (429), `quota` or `budget` (402).
 * - `infery_ledger_queue_depth` (gauge): what `ledgerQueueDepth()` returns at scrape time.
 *
 * `model` is the model the client asked for and `code` the provider's; both are bounded (see `maxLabelValues`).
 *
 * @example
 * const metrics = prometheusObserver({ ledgerQueueDepth: () => ledger.pendingSettles });
 * app.use(inferyStream({ ...options, observer: metrics.observer }));
 * app.get('/metrics', async (_req, res) => res.type(metrics.registry.contentType).send(await metrics.registry.metrics()));
 */
export function prometheusObserver(options: PrometheusObserverOptions = {}): PrometheusObserver {
  const registry = options.registry ?? new Registry();
  const prefix = options.prefix ?? 'infery_';
  if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$|^$/.test(prefix)) throw new TypeError(`infery-stream/prometheus: \`prefix\` must be a metric name prefix such as "infery_", got ${JSON.stringify(prefix)}.`);
  const limit = options.maxLabelValues ?? 200;
  if (!Number.isSafeInteger(limit) || limit < 1) throw new TypeError(`infery-stream/prometheus: \`maxLabelValues\` must be a positive whole number, got ${String(limit)}.`);
  const ledgerQueueDepth = options.ledgerQueueDepth;
  if (ledgerQueueDepth !== undefined && typeof ledgerQueueDepth !== 'function') throw new TypeError('infery-stream/prometheus: `ledgerQueueDepth` must be a function returning a number.');
  const registers = [registry];
  const models = new BoundedLabel(limit);
  const codes = new BoundedLabel(limit);

  const requests = new Counter({
    name: `${prefix}requests_total`,
    help: 'Requests the gateway answered, by route template, method and status (499: the client left first).',
    labelNames: ['route', 'method', 'status'] as const,
    registers,
  });
  const ttft = new Histogram({
    name: `${prefix}time_to_first_token_seconds`,
    help: 'Seconds from the request to the first content token of a generation.',
    labelNames: ['route', 'model'] as const,
    buckets: options.buckets?.timeToFirstToken ?? TTFT_BUCKETS,
    registers,
  });
  const streamDuration = new Histogram({
    name: `${prefix}stream_duration_seconds`,
    help: 'Seconds a streamed generation took, from admission to settlement.',
    labelNames: ['route', 'model'] as const,
    buckets: options.buckets?.streamDuration ?? DURATION_BUCKETS,
    registers,
  });
  const tokens = new Counter({
    name: `${prefix}tokens_total`,
    help: 'Tokens billed, by requested model and kind (prompt or completion).',
    labelNames: ['model', 'kind'] as const,
    registers,
  });
  const credits = new Counter({
    name: `${prefix}credits_total`,
    help: 'Credits charged (what meter returned), by requested model.',
    labelNames: ['model'] as const,
    registers,
  });
  const openStreams = new Gauge({
    name: `${prefix}open_streams`,
    help: 'Streamed generations admitted and not yet settled.',
    registers,
  });
  const cancellations = new Counter({
    name: `${prefix}cancellations_total`,
    help: 'Requests whose client went away before the answer was complete.',
    labelNames: ['route'] as const,
    registers,
  });
  const upstreamErrors = new Counter({
    name: `${prefix}upstream_errors_total`,
    help: 'Requests that failed because of the upstream provider, by error code.',
    labelNames: ['code'] as const,
    registers,
  });
  const attempts = new Counter({
    name: `${prefix}upstream_attempts_total`,
    help: 'Upstream attempts of generations, by upstream and result (ok, or the failure\'s code when the gateway fell back or gave up).',
    labelNames: ['upstream', 'result'] as const,
    registers,
  });
  const refusals = new Counter({
    name: `${prefix}limit_refusals_total`,
    help: 'Requests refused by a per-account limit: rate, concurrency or tokens per minute (429), quota or budget (402).',
    labelNames: ['reason'] as const,
    registers,
  });
  let lastDepth = 0;
  new Gauge({
    name: `${prefix}ledger_queue_depth`,
    help: 'Settlements waiting in the ledger\'s local queue to be written to its store.',
    registers,
    collect() {
      if (ledgerQueueDepth) {
        try {
          const depth = ledgerQueueDepth();
          // a callback that throws or returns nonsense keeps the last good value rather than failing the scrape
          if (typeof depth === 'number' && Number.isFinite(depth)) lastDepth = depth;
        } catch {
          // kept: the scrape must not fail because of the host's callback
        }
      }
      this.set(lastDepth);
    },
  });

  const observer: PrometheusObserver['observer'] = {
    requestEnded(end: RequestEnd) {
      requests.inc({ route: end.route, method: end.method, status: String(end.status) });
      if (end.cancelled) cancellations.inc({ route: end.route });
      if (end.errorSource === 'upstream' && end.errorCode !== undefined) upstreamErrors.inc({ code: codes.value(end.errorCode) });
      if (end.limit !== undefined) refusals.inc({ reason: end.limit });
    },
    generationStarted(start: GenerationStart) {
      if (start.stream) openStreams.inc();
    },
    generationSettled(settled: GenerationSettled) {
      if (settled.stream) openStreams.dec();
      const model = models.value(settled.model);
      const { ttftMs, durationMs } = settled.timings;
      if (ttftMs !== null) ttft.observe({ route: settled.route, model }, ttftMs / 1000);
      if (settled.stream) streamDuration.observe({ route: settled.route, model }, durationMs / 1000);
      if (settled.usage.prompt_tokens > 0) tokens.inc({ model, kind: 'prompt' }, settled.usage.prompt_tokens);
      if (settled.usage.completion_tokens > 0) tokens.inc({ model, kind: 'completion' }, settled.usage.completion_tokens);
      if (settled.credits !== null && settled.credits > 0) credits.inc({ model }, settled.credits);
      // which upstream served, and which failed first (fallback): the upstream names are the host's, a bounded set
      for (const failed of settled.failedUpstreams ?? []) attempts.inc({ upstream: failed.upstream, result: codes.value(failed.code) });
      if (settled.upstream !== undefined) attempts.inc({ upstream: settled.upstream, result: 'ok' });
    },
  };
  return { observer, registry };
}
