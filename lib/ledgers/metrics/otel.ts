import { performance } from 'node:perf_hooks';
import {
  context as contexts,
  createContextKey,
  metrics,
  propagation,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Histogram,
  type MeterProvider,
  type Span,
  type TextMapGetter,
  type Tracer,
  type TracerProvider,
} from '@opentelemetry/api';
import { BoundedLabel } from './bounded-label';
import { contentAttributes } from './otel-content';
import { MAX_CONTENT_CHARS, TRACE_HEADERS, type GenerationSettled, type GenerationStart, type Observer, type UpstreamAttempt, type UpstreamAttemptHooks } from './observer';
import { providerNameOf } from './provider-names';

/**
 * `infery-stream/otel`: the observer hook as OpenTelemetry traces and metrics, in the GenAI semantic conventions
 * (version {@link GEN_AI_SEMCONV_VERSION}, still marked development), with `@opentelemetry/api` only (an
 * optional peer dependency; the host brings the SDK and its exporters).
 */

/** The version of the OpenTelemetry semantic conventions (GenAI, HTTP) the spans and metrics follow. */
export const GEN_AI_SEMCONV_VERSION = '1.41.0';

/** Options of {@link otelObserver}. */
export interface OtelObserverOptions {
  /** Where spans go. Default: the global tracer provider (what the host's SDK registered; a no-op without one). */
  tracerProvider?: TracerProvider;
  /** Where the GenAI metrics go. Default: the global meter provider. */
  meterProvider?: MeterProvider;
  /**
   * `gen_ai.provider.name` by upstream name (`{ azure: 'azure.ai.openai' }`). Default: read from the upstream's
   * host (`api.openai.com` is `openai`, `api.anthropic.com` `anthropic`, `*.openai.azure.com` `azure.ai.openai`,
   * Bedrock, Gemini, Vertex AI, Groq, Mistral, DeepSeek, xAI, Perplexity, Cohere), else its dialect.
   */
  providerNames?: Readonly<Record<string, string>>;
  /**
   * A client span (`POST`, HTTP conventions) for each upstream request, child of the generation's span; the
   * host's own HTTP instrumentation is then kept off that request (no second span for it). `false`: no span of
   * ours, the request runs in the generation's context (a host HTTP instrumentation makes the span). Default: `true`.
   */
  upstreamSpans?: boolean;
  /**
   * Continue the client's own trace when no host span is active: its `traceparent` (and whatever else the host's
   * propagator reads) becomes the generation span's parent, and under a parent-based sampler its sampled flag
   * decides. `false`: such a generation starts a trace of its own. Default: `true`.
   */
  continueClientTrace?: boolean;
  /** Distinct model names kept in metric attributes before the rest are `other` (the client chooses them). Default: `200`. */
  maxModelValues?: number;
  /** Generations traced at once (their spans are open until they settle); past it new ones are not traced. Default: `100_000`. */
  maxOpenSpans?: number;
  /**
   * Opt-in: record the prompt and the answer's text on the generation's span (`gen_ai.input.messages`,
   * `gen_ai.system_instructions`, `gen_ai.output.messages`, JSON strings in the conventions' schemas), each cut to
   * `maxChars` characters of text (default 16,384; `infery.content_truncated` when cut). It is your customers'
   * data: only where your trace backend may hold it. Default: `false` — no text, and the gateway keeps none.
   */
  captureContent?: boolean | { maxChars?: number };
}

/** The OpenTelemetry observer: pass it as `inferyStream({ observer })`, alone or in an array with others. */
export type OtelObserver = Required<Pick<Observer, 'generationStarted' | 'generationSettled' | 'upstreamAttempt'>> & Pick<Observer, 'content'> & {
  /** Generations not traced because `maxOpenSpans` were open. */
  readonly dropped: number;
};

/** `gen_ai.operation.name`, and OpenAI's `openai.api.type`, of each metered route. */
const OPERATIONS: Record<string, { name: string; apiType?: string; dialect: 'openai' | 'anthropic' }> = {
  '/chat/completions': { name: 'chat', apiType: 'chat_completions', dialect: 'openai' },
  '/responses': { name: 'chat', apiType: 'responses', dialect: 'openai' },
  '/completions': { name: 'text_completion', dialect: 'openai' },
  '/embeddings': { name: 'embeddings', dialect: 'openai' },
  '/messages': { name: 'chat', dialect: 'anthropic' },
};

/** Characters of prompt and of answer text kept per span with `captureContent: true`. */
const DEFAULT_CONTENT_CHARS = 16_384;
/** Longest model name, response id or tag put on a span (they come from clients and providers). */
const MAX_ATTRIBUTE = 256;
/** The conventions' bucket boundaries. */
const TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864];
const DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];
const TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

/**
 * The context key `@opentelemetry/core`'s `suppressTracing` sets (context keys are `Symbol.for` their
 * description): instrumentations create no span under it. The API package does not export the helper.
 */
const SUPPRESS_TRACING = createContextKey('OpenTelemetry SDK Context Key SUPPRESS_TRACING');

/** Reads the incoming request's trace-context headers (only those: see `TRACE_HEADERS`). */
const HEADER_GETTER: TextMapGetter<GenerationStart> = {
  keys: () => [...TRACE_HEADERS],
  get: (start, key) => start.traceHeader(key),
};

const cut = (text: string): string => (text.length > MAX_ATTRIBUTE ? text.slice(0, MAX_ATTRIBUTE) : text);
/** Epoch milliseconds on the clock the SDK uses for spans (`performance.timeOrigin + performance.now()`). */
const now = (): number => performance.timeOrigin + performance.now();

/** One generation being traced, from `generationStarted` to `generationSettled`. */
interface Traced {
  span: Span;
  /** The generation span's context: the parent of its upstream requests. */
  context: Context;
  startedAt: number;
  operation: string;
  /** `gen_ai.provider.name`: the route's dialect until an upstream is tried. */
  provider: string;
  server?: { address: string; port: number };
  /** The request whose answer is being relayed: its span ends with the generation. */
  accepted?: Span;
  /** The attempt that failed last, for the next attempt's fallback event. */
  lastFailure?: { upstream: string; code: string };
}

/**
 * The OpenTelemetry observer. Per generation: one span `"{gen_ai.operation.name} {gen_ai.request.model}"`
 * (kind CLIENT), a child of the incoming request's context — the host's active span (its HTTP instrumentation),
 * else the request's `traceparent` (W3C; any propagator the host registered) — with the GenAI attributes
 * (`gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.request.max_tokens`,
 * `gen_ai.request.stream`, `gen_ai.response.model`, `gen_ai.response.id`, `gen_ai.response.finish_reasons`,
 * `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`, `gen_ai.usage.cache_read.input_tokens`,
 * `gen_ai.usage.cache_creation.input_tokens`, `gen_ai.usage.reasoning.output_tokens`,
 * `gen_ai.response.time_to_first_chunk`, `server.address`, `server.port`, `error.type`) and the gateway's
 * (`infery.generation_id`, `infery.credits`, `infery.outcome`, `infery.upstream`, `infery.failed_upstreams`,
 * `infery.ttft_ms`, `infery.account_tag`); events `infery.first_token`, `infery.fallback`, `infery.cancelled`;
 * status error for `failed` and `unserved`. Each upstream request is a child span `POST` (HTTP conventions) and
 * carries its `traceparent`. Metrics: `gen_ai.client.token.usage`, `gen_ai.server.request.duration`,
 * `gen_ai.server.time_to_first_token`. Never a key; prompt and answer text only with `captureContent`; nothing
 * per chunk beyond, with it, keeping the answer's text.
 */
export function otelObserver(options: OtelObserverOptions = {}): OtelObserver {
  const tracer: Tracer = (options.tracerProvider ?? trace.getTracerProvider()).getTracer('infery-stream', '0.1.0');
  const meter = (options.meterProvider ?? metrics.getMeterProvider()).getMeter('infery-stream', '0.1.0');
  const upstreamSpans = options.upstreamSpans ?? true;
  const continueClientTrace = options.continueClientTrace ?? true;
  const maxOpen = options.maxOpenSpans ?? 100_000;
  const maxModels = options.maxModelValues ?? 200;
  for (const [name, value] of [['maxOpenSpans', maxOpen], ['maxModelValues', maxModels]] as const) {
    if (!Number.isSafeInteger(value) || value < 1) throw new TypeError(`otelObserver: \`${name}\` must be a whole number ≥ 1, got ${String(value)}.`);
  }
  const capture = options.captureContent;
  const contentChars = capture === true ? DEFAULT_CONTENT_CHARS : typeof capture === 'object' && capture !== null ? (capture.maxChars ?? DEFAULT_CONTENT_CHARS) : 0;
  if (capture !== undefined && capture !== false && (!Number.isSafeInteger(contentChars) || contentChars < 1 || contentChars > MAX_CONTENT_CHARS)) {
    throw new TypeError(`otelObserver: \`captureContent.maxChars\` must be a whole number from 1 to ${MAX_CONTENT_CHARS}, got ${String(contentChars)}.`);
  }
  const providerNames = new Map(Object.entries(options.providerNames ?? {}));
  for (const [name, value] of providerNames) {
    if (typeof value !== 'string' || value === '') throw new TypeError(`otelObserver: \`providerNames.${name}\` must be a non-empty string.`);
  }
  const models = new BoundedLabel(maxModels, MAX_ATTRIBUTE);
  // an upstream's error code is the provider's text: bounded the same way in metrics
  const errorTypes = new BoundedLabel(maxModels);
  const tokenUsage: Histogram = meter.createHistogram('gen_ai.client.token.usage', {
    description: 'Number of input and output tokens used.',
    unit: '{token}',
    advice: { explicitBucketBoundaries: TOKEN_BUCKETS },
  });
  const requestDuration: Histogram = meter.createHistogram('gen_ai.server.request.duration', {
    description: 'Generative AI server request duration such as time-to-last byte or last output token.',
    unit: 's',
    advice: { explicitBucketBoundaries: DURATION_BUCKETS },
  });
  const timeToFirstToken: Histogram = meter.createHistogram('gen_ai.server.time_to_first_token', {
    description: 'Time to generate first token for successful responses.',
    unit: 's',
    advice: { explicitBucketBoundaries: TTFT_BUCKETS },
  });

  const open = new Map<string, Traced>();
  let dropped = 0;

  const generationStarted = (start: GenerationStart): void => {
    if (open.size >= maxOpen) {
      dropped++;
      return;
    }
    const active = contexts.active();
    // the host's span (its HTTP instrumentation made it from the same headers), else the client's own context
    const parent = trace.getSpan(active) !== undefined || !continueClientTrace ? active : propagation.extract(active, start, HEADER_GETTER);
    const operation = OPERATIONS[start.route] ?? { name: start.route.replace(/^\//, '').replace(/\//g, '.'), dialect: 'openai' as const };
    const model = cut(start.model);
    const attributes: Attributes = {
      'gen_ai.operation.name': operation.name,
      'gen_ai.provider.name': operation.dialect,
      'gen_ai.request.model': model,
      'infery.generation_id': start.generationId,
    };
    if (operation.apiType) attributes['openai.api.type'] = operation.apiType;
    if (start.maxTokens !== undefined) attributes['gen_ai.request.max_tokens'] = start.maxTokens;
    if (start.choices !== 1) attributes['gen_ai.request.choice.count'] = start.choices;
    if (start.stream) attributes['gen_ai.request.stream'] = true;
    if (start.accountTag !== undefined) attributes['infery.account_tag'] = cut(start.accountTag);
    const startedAt = now();
    const span = tracer.startSpan(`${operation.name} ${model}`, { kind: SpanKind.CLIENT, startTime: startedAt, attributes }, parent);
    open.set(start.generationId, { span, context: trace.setSpan(parent, span), startedAt, operation: operation.name, provider: operation.dialect });
  };

  const upstreamAttempt = (attempt: UpstreamAttempt): UpstreamAttemptHooks | void => {
    const traced = open.get(attempt.generationId);
    if (!traced) return;
    const provider = providerNames.get(attempt.upstream) ?? providerNameOf(attempt.url.host, attempt.api);
    traced.provider = provider;
    traced.server = { address: attempt.url.host, port: attempt.url.port };
    traced.span.setAttributes({ 'gen_ai.provider.name': provider, 'server.address': attempt.url.host, 'server.port': attempt.url.port });
    if (attempt.attempt > 1) {
      const failed = traced.lastFailure;
      traced.span.addEvent('infery.fallback', {
        'infery.upstream': attempt.upstream,
        'infery.attempt': attempt.attempt,
        ...(failed ? { 'infery.failed_upstream': failed.upstream, 'error.type': failed.code } : {}),
      });
    }
    let span: Span | undefined;
    let context = traced.context;
    if (upstreamSpans) {
      const host = attempt.url.host.includes(':') ? `[${attempt.url.host}]` : attempt.url.host;
      span = tracer.startSpan(
        attempt.method,
        {
          kind: SpanKind.CLIENT,
          attributes: {
            'http.request.method': attempt.method,
            'server.address': attempt.url.host,
            'server.port': attempt.url.port,
            'url.full': `${attempt.url.scheme}://${host}:${attempt.url.port}${attempt.url.path}`,
            'gen_ai.provider.name': provider,
            'infery.upstream': attempt.upstream,
            'infery.attempt': attempt.attempt,
          },
        },
        traced.context,
      );
      context = trace.setSpan(traced.context, span);
    }
    const headers: Record<string, string> = {};
    propagation.inject(context, headers);
    // our span stands for the request: the host's HTTP instrumentation would add a second one
    const runIn = span ? context.setValue(SUPPRESS_TRACING, true) : context;
    return {
      headers,
      run: (send) => contexts.with(runIn, send),
      ended: (end) => {
        if (!end.accepted) traced.lastFailure = { upstream: attempt.upstream, code: end.code ?? String(end.status ?? 'error') };
        if (!span) return;
        if (end.status !== undefined) span.setAttribute('http.response.status_code', end.status);
        if (end.accepted) {
          traced.accepted = span;
          return;
        }
        if (end.code !== 'client_closed_request') {
          span.setAttribute('error.type', end.status !== undefined ? String(end.status) : (end.code ?? '_OTHER'));
          span.setStatus({ code: SpanStatusCode.ERROR, message: end.code });
        }
        span.end();
      },
    };
  };

  const generationSettled = (settled: GenerationSettled): void => {
    const traced = open.get(settled.generationId);
    if (!traced) return;
    open.delete(settled.generationId);
    const { span } = traced;
    const usage = settled.usage;
    const classes = usage.classes;
    const served = settled.outcome !== 'unserved';
    const inputTokens = classes?.input_tokens ?? usage.prompt_tokens;
    const outputTokens = classes?.output_tokens ?? usage.completion_tokens;
    const attributes: Attributes = { 'infery.outcome': settled.outcome };
    if (served) {
      attributes['gen_ai.response.model'] = cut(settled.providerModel);
      attributes['gen_ai.usage.input_tokens'] = inputTokens;
      attributes['gen_ai.usage.output_tokens'] = outputTokens;
      if (classes) {
        attributes['gen_ai.usage.cache_read.input_tokens'] = classes.cache_read_tokens;
        attributes['gen_ai.usage.cache_creation.input_tokens'] = classes.cache_write_tokens;
        if (classes.output_reasoning_tokens > 0) attributes['gen_ai.usage.reasoning.output_tokens'] = classes.output_reasoning_tokens;
      }
      if (usage.estimated) attributes['infery.usage_estimated'] = true;
    }
    if (settled.providerId !== undefined) attributes['gen_ai.response.id'] = cut(settled.providerId);
    if (settled.finishReason !== null) attributes['gen_ai.response.finish_reasons'] = [cut(settled.finishReason)];
    if (settled.credits !== null) attributes['infery.credits'] = settled.credits;
    if (settled.upstream !== undefined) attributes['infery.upstream'] = settled.upstream;
    if (settled.failedUpstreams && settled.failedUpstreams.length > 0) attributes['infery.failed_upstreams'] = settled.failedUpstreams.map((f) => f.upstream);
    const endedAt = now();
    const ttft = settled.timings.ttftMs;
    if (ttft !== null) {
      attributes['infery.ttft_ms'] = ttft;
      if (settled.stream) attributes['gen_ai.response.time_to_first_chunk'] = ttft / 1000;
      // `ttftMs` is whole milliseconds: never after the span's end (a fast answer rounds up past it)
      span.addEvent('infery.first_token', { 'infery.ttft_ms': ttft }, Math.min(traced.startedAt + ttft, endedAt));
    }
    const failed = settled.outcome === 'failed' || settled.outcome === 'unserved';
    const errorType = failed ? cut(settled.errorCode ?? '_OTHER') : undefined;
    if (errorType !== undefined) {
      attributes['error.type'] = errorType;
      span.setStatus({ code: SpanStatusCode.ERROR, message: errorType });
    }
    if (settled.content && contentChars > 0) Object.assign(attributes, contentAttributes(settled.route, settled.content.request, settled.content.output, settled.finishReason, settled.content.truncated, contentChars));
    span.setAttributes(attributes);
    if (settled.outcome === 'cancelled') span.addEvent('infery.cancelled', { 'gen_ai.usage.output_tokens': outputTokens }, endedAt);
    traced.accepted?.end(endedAt);
    span.end(endedAt);

    // the GenAI metrics: model names bounded (a client chooses them)
    const metricAttributes: Attributes = {
      'gen_ai.operation.name': traced.operation,
      'gen_ai.provider.name': traced.provider,
      'gen_ai.request.model': models.value(settled.model),
    };
    if (served) metricAttributes['gen_ai.response.model'] = models.value(settled.providerModel);
    if (traced.server) {
      metricAttributes['server.address'] = traced.server.address;
      metricAttributes['server.port'] = traced.server.port;
    }
    if (served) {
      tokenUsage.record(inputTokens, { ...metricAttributes, 'gen_ai.token.type': 'input' });
      if (traced.operation !== 'embeddings') tokenUsage.record(outputTokens, { ...metricAttributes, 'gen_ai.token.type': 'output' });
    }
    requestDuration.record(settled.timings.durationMs / 1000, errorType === undefined ? metricAttributes : { ...metricAttributes, 'error.type': errorTypes.value(errorType) });
    if (ttft !== null && !failed) timeToFirstToken.record(ttft / 1000, metricAttributes);
  };

  return {
    generationStarted,
    generationSettled,
    upstreamAttempt,
    ...(contentChars > 0 ? { content: { maxChars: contentChars } } : {}),
    get dropped() {
      return dropped;
    },
  };
}
