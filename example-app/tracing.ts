import type { Observer } from '../lib';

/**
 * OpenTelemetry for the example app: on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
 * is set. The OpenTelemetry Node SDK exports traces and metrics over OTLP/HTTP and reads the standard variables
 * itself: `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default, or `http/json`; per signal
 * `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `_METRICS_PROTOCOL`), `OTEL_SERVICE_NAME` (default here:
 * `infery-stream-example`), `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, `OTEL_RESOURCE_ATTRIBUTES`,
 * `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_PROPAGATORS`, `OTEL_SDK_DISABLED`; and the GenAI
 * instrumentations' `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` (`true`: prompts and answers on the
 * spans, each cut to 16,384 characters; default `false`). The HTTP
 * instrumentation makes the span of every request the app serves (the parent of the generation's span, from the
 * client's `traceparent`); the gateway's `otelObserver` makes the generation's span and its upstream requests'.
 *
 * This module is the first one `server.ts` imports: the HTTP instrumentation must patch `node:http` before
 * anything else loads it. Without the variables it loads nothing (the SDK is never required).
 */

/** The tracing of the running app. */
export interface Tracing {
  /** The gateway's observer (`infery-stream/otel`). */
  observer: Observer;
  /** Where spans go (the traces endpoint), for the start-up banner. */
  endpoint: string;
  protocol: string;
  serviceName: string;
  /** Whether prompts and answers are recorded on the spans. */
  captureContent: boolean;
  /** Exports what is buffered and stops the SDK (at shutdown). */
  shutdown(): Promise<void>;
}

const PROTOCOLS = new Set(['http/protobuf', 'http/json']);
/** `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`'s values (the span-only ones of newer instrumentations too). */
const CAPTURE_VALUES = new Map([
  ['', false],
  ['false', false],
  ['no_content', false],
  ['true', true],
  ['span_only', true],
  ['span_and_event', true],
]);

/** Starts the SDK when the environment asks for it; throws a clear error for a bad setting. */
export function startTracing(env: NodeJS.ProcessEnv = process.env): Tracing | undefined {
  const base = env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  const traces = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim();
  if (!base && !traces) return undefined;
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return undefined;
  for (const [name, value] of [['OTEL_EXPORTER_OTLP_ENDPOINT', base], ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', traces]] as const) {
    if (!value) continue;
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      throw new Error(`${name} must be an http(s) URL, got ${JSON.stringify(value)}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`${name} must be an http(s) URL (OTLP/HTTP), got ${JSON.stringify(value)}`);
  }
  for (const name of ['OTEL_EXPORTER_OTLP_PROTOCOL', 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', 'OTEL_EXPORTER_OTLP_METRICS_PROTOCOL']) {
    const value = env[name]?.trim();
    if (value && !PROTOCOLS.has(value)) throw new Error(`${name} must be http/protobuf or http/json (OTLP/HTTP), got ${JSON.stringify(value)}`);
  }
  const captureSetting = env.OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT?.trim().toLowerCase() ?? '';
  if (!CAPTURE_VALUES.has(captureSetting)) {
    throw new Error(`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT must be true or false, got ${JSON.stringify(env.OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT)}`);
  }
  const captureContent = CAPTURE_VALUES.get(captureSetting)!;
  const protocol = env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL?.trim() || env.OTEL_EXPORTER_OTLP_PROTOCOL?.trim() || 'http/protobuf';
  const serviceName = env.OTEL_SERVICE_NAME?.trim() || 'infery-stream-example';
  // the SDK reads OTEL_SERVICE_NAME itself; the example's default goes through the same variable
  env.OTEL_SERVICE_NAME = serviceName;

  /* eslint-disable @typescript-eslint/no-require-imports */
  const { NodeSDK } = require('@opentelemetry/sdk-node') as typeof import('@opentelemetry/sdk-node');
  const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http') as typeof import('@opentelemetry/instrumentation-http');
  const { otelObserver } = require('../lib/ledgers/metrics/otel') as typeof import('../lib/ledgers/metrics/otel');
  /* eslint-enable @typescript-eslint/no-require-imports */
  const sdk = new NodeSDK({
    instrumentations: [
      new HttpInstrumentation({
        // the built-in mock provider runs in this process: its side of each request is traced too, so the trace
        // shows the provider continuing it (the path of a real provider's own tracing)
        ignoreIncomingRequestHook: (req) => req.url === '/health' || req.url === '/metrics' || (req.url?.startsWith('/assets/') ?? false),
      }),
    ],
  });
  sdk.start();
  return {
    observer: otelObserver({ captureContent }),
    captureContent,
    endpoint: traces || `${base!.replace(/\/$/, '')}/v1/traces`,
    protocol,
    serviceName,
    shutdown: () => sdk.shutdown(),
  };
}

/** The app's tracing, started when this module is first loaded, or why it could not start. */
export const tracing: { value?: Tracing; error?: Error } = (() => {
  try {
    return { value: startTracing() };
  } catch (err) {
    return { error: err instanceof Error ? err : new Error(String(err)) };
  }
})();
