// first: OpenTelemetry's HTTP instrumentation patches node:http before anything else loads it (when OTEL_* ask for it)
import { tracing } from './tracing';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import type { UpstreamConfig } from '../lib';
import { createApp, parseApiKeys } from './app';
import { startMockProvider, type MockProvider } from './mock-provider';
import type { PostgresState } from './postgres';
import { connectRedisState, safeRedisURL, type RedisState } from './redis';
import { loadConfig, MOCK_BASE_URL, parseBudget } from './config';

/**
 * Runs the example gateway. Environment:
 * - PORT (default 3000)
 * - INFERY_UPSTREAM_URL: an OpenAI-compatible base URL; unset, a built-in mock provider starts in-process and
 *   serves both dialects (the OpenAI routes, and the Messages API at /v1/messages)
 * - INFERY_UPSTREAM_KEY: the key sent upstream
 * - INFERY_CONFIG: a JSON file with several upstreams (fallback, prices): `{"upstreams":[{"name","baseURL",
 *   "apiKey","models"},…]}`; wins over INFERY_UPSTREAM_URL/KEY. `"apiKey": "$NAME"` reads the variable NAME,
 *   `"baseURL": "mock"` is the built-in mock provider
 * - INFERY_API_KEYS: accepted client keys, `key` or `key:credits`, comma-separated; unset, one demo key
 * - INFERY_REDIS_URL: keep balances, holds, generation records and limits in this Redis (shared by every
 *   instance using it); unset, in this process's memory. Keys missing in Redis are created with their credits,
 *   existing ones are never reset. Unreachable at start: exit 1.
 * - INFERY_DATABASE_URL: keep balances, holds and generation records in this PostgreSQL (the ledger of record,
 *   shared by every instance using it; with INFERY_REDIS_URL too, Redis keeps only the limits). The schema's
 *   migrations are applied at start; keys missing are created with their credits, existing ones never reset.
 *   Unreachable at start: one line and exit 1; lost while running: new requests 503 ledger_unavailable, open
 *   streams' settlements queued and retried until written.
 * - INFERY_METRICS_TOKEN: when set, GET /metrics (Prometheus text) asks for it as a bearer token; unset, open
 * - INFERY_HOLD_TTL_MS: how long a hold or concurrency slot outlives its instance on Redis (default 120000)
 * - INFERY_MAX_CONCURRENT: open generations per key (default 32; 0 disables)
 * - INFERY_RPM: requests per minute per key (default 600; 0 disables)
 * - INFERY_TPM: tokens per minute per key, input and output (default 0: none)
 * - INFERY_BUDGET: every key's spend cap, `<credits>/<day|week|month>` (UTC windows), e.g. `5/day`; unset, none.
 *   INFERY_CONFIG's `"keys": {"<key>": {"budget": "5/day", "tpm": 10000}}` sets them per key (`"budget": null`: none)
 * - INFERY_UPSTREAM_TIMEOUT_MS, INFERY_IDLE_TIMEOUT_MS, INFERY_MAX_DURATION_MS, INFERY_WRITE_TIMEOUT_MS: the gateway's
 *   upstreamTimeout, idleTimeout, maxDuration and writeTimeout (defaults: the library's)
 * - OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT): when set, OpenTelemetry traces and the
 *   GenAI metrics go there over OTLP/HTTP (the Node SDK; OTEL_EXPORTER_OTLP_PROTOCOL http/protobuf or http/json,
 *   OTEL_SERVICE_NAME default infery-stream-example, OTEL_TRACES_SAMPLER and the other standard OTEL_* variables;
 *   OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true records prompts and answers on the spans)
 * - LOG_LEVEL: pino level (default info)
 * - SHUTDOWN_DEADLINE_MS: how long open streams may run on after SIGTERM/SIGINT (default 10000)
 */
/** A whole number ≥ 0 from the environment, or `fallback` when unset. */
function wholeEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 0) throw new Error(`${name} must be a whole number ≥ 0 (0 disables the limit), got ${JSON.stringify(raw)}`);
  return value;
}

async function main(): Promise<void> {
  if (tracing.error) throw tracing.error;
  // asynchronous writes: a line per request costs no write(2) on the request path; lines that pile up while one
  // write is under way go out together, at most 16 MiB of them (a stdout nobody reads drops lines rather than
  // growing memory: said once on stderr). What is still buffered at exit is written synchronously then.
  const destination = pino.destination({ dest: 1, sync: false, maxLength: 16 * 1024 * 1024 });
  destination.once('drop', () => process.stderr.write('infery-stream example: stdout is not being read; log lines are dropped\n'));
  process.on('exit', () => {
    try {
      destination.flushSync();
    } catch {
      // stdout already gone: nothing left to write to
    }
  });
  const logger = pino({ level: process.env.LOG_LEVEL ?? 'info' }, destination);
  let mock: MockProvider | undefined;
  const configFile = process.env.INFERY_CONFIG?.trim();
  const fileConfig = configFile ? loadConfig(configFile) : undefined;
  let upstreamURL = process.env.INFERY_UPSTREAM_URL;
  if (fileConfig) {
    if (upstreamURL) logger.warn({ config: configFile }, 'INFERY_CONFIG is set: INFERY_UPSTREAM_URL and INFERY_UPSTREAM_KEY are ignored');
    // "baseURL": "mock" is the built-in mock provider
    if (fileConfig.upstreams.some((u) => u.baseURL === MOCK_BASE_URL)) {
      mock = await startMockProvider();
      for (const u of fileConfig.upstreams) if (u.baseURL === MOCK_BASE_URL) u.baseURL = mock.url;
    }
    upstreamURL = fileConfig.upstreams[0]!.baseURL;
  } else if (!upstreamURL) {
    mock = await startMockProvider();
    upstreamURL = mock.url;
  }
  // the built-in mock speaks both dialects: the OpenAI routes and the Messages API (`POST /v1/messages`)
  const mockUpstreams: UpstreamConfig[] | undefined =
    mock && !fileConfig ? [{ name: 'mock', baseURL: mock.url }, { name: 'mock-messages', baseURL: mock.url, api: 'anthropic' }] : undefined;
  const demoKey = `demo-${randomBytes(9).toString('base64url')}`;
  const apiKeys = process.env.INFERY_API_KEYS ? parseApiKeys(process.env.INFERY_API_KEYS) : { [demoKey]: 1000 };
  const ms = (name: string): number | undefined => {
    const value = wholeEnv(name, 0);
    if (process.env[name] !== undefined && process.env[name]!.trim() !== '' && value === 0) throw new Error(`${name} must be a positive number of milliseconds`);
    return value === 0 ? undefined : value;
  };
  const timeouts = {
    upstreamTimeout: ms('INFERY_UPSTREAM_TIMEOUT_MS'),
    idleTimeout: ms('INFERY_IDLE_TIMEOUT_MS'),
    maxDuration: ms('INFERY_MAX_DURATION_MS'),
    writeTimeout: ms('INFERY_WRITE_TIMEOUT_MS'),
  };
  const maxConcurrent = wholeEnv('INFERY_MAX_CONCURRENT', 32);
  const requestsPerMinute = wholeEnv('INFERY_RPM', 600);
  const tokensPerMinute = wholeEnv('INFERY_TPM', 0);
  const budgetText = process.env.INFERY_BUDGET?.trim();
  const budget = budgetText ? parseBudget(budgetText, 'INFERY_BUDGET') : undefined;
  let shared: RedisState | undefined;
  let ledger: PostgresState | undefined;
  const redisURL = process.env.INFERY_REDIS_URL?.trim();
  const databaseURL = process.env.INFERY_DATABASE_URL?.trim();
  const holdTtlMs = wholeEnv('INFERY_HOLD_TTL_MS', 120_000);
  if (holdTtlMs < 1_000) throw new Error('INFERY_HOLD_TTL_MS must be at least 1000');
  // PostgreSQL is the ledger of record when set; Redis then keeps the limits (and is the ledger only without it)
  // loaded only when used: an app without INFERY_DATABASE_URL never loads the PostgreSQL driver
  const postgres = databaseURL ? (require('./postgres') as typeof import('./postgres')) : undefined;
  if (databaseURL && postgres) ledger = await postgres.connectPostgresState(databaseURL, apiKeys, { holdTtlMs, logger });
  if (redisURL) {
    try {
      shared = await connectRedisState(redisURL, ledger ? {} : apiKeys, { holdTtlMs, logger, limitsOnly: ledger !== undefined });
    } catch (err) {
      await ledger?.close(1_000);
      throw err;
    }
  }
  const { app, gateway } = createApp({
    store: ledger?.store ?? shared?.store,
    limitStore: shared?.limitStore,
    metricsToken: process.env.INFERY_METRICS_TOKEN || undefined,
    ledgerQueueDepth: () => (ledger ?? shared)?.store.pendingSettles ?? 0,
    upstreamURL,
    upstreamKey: process.env.INFERY_UPSTREAM_KEY || undefined,
    upstreams: fileConfig?.upstreams ?? mockUpstreams,
    fallback: fileConfig?.fallback,
    prices: fileConfig?.prices,
    apiKeys,
    maxConcurrent,
    requestsPerMinute,
    tokensPerMinute,
    budget,
    keyLimits: fileConfig?.keys,
    timeouts,
    logger,
    tracing: tracing.value?.observer,
  });

  const port = process.env.PORT === undefined || process.env.PORT === '' ? 3000 : Number(process.env.PORT);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`PORT must be a port number, got ${process.env.PORT}`);
  // Header and request-body deadlines are checked every second, not at Node's default 30 s granularity.
  const server = http.createServer({ connectionsCheckingInterval: 1_000 }, app);
  server.listen(port, () => {
    const { port: actual } = server.address() as AddressInfo;
    const key = Object.keys(apiKeys)[0]!;
    const lines = [
      `infery-stream example gateway listening on http://localhost:${actual}`,
      `  chat page: http://localhost:${actual}/?key=${encodeURIComponent(Object.keys(apiKeys)[0]!)}`,
      fileConfig
        ? `  upstreams (${configFile}): ${fileConfig.upstreams.map((u) => `${u.name} ${u.baseURL === mock?.url ? '(built-in mock)' : u.baseURL}`).join(', ')}`
        : `  upstream: ${mock ? `built-in mock provider (${mock.url})` : upstreamURL}`,
      `  ledger: ${databaseURL && postgres ? `PostgreSQL ${postgres.safeDatabaseURL(databaseURL)}${redisURL ? `, limits on Redis ${safeRedisURL(redisURL)}` : ''}` : redisURL ? `Redis ${safeRedisURL(redisURL)}` : 'in memory (set INFERY_DATABASE_URL or INFERY_REDIS_URL to share it between instances)'}`,
      tracing.value
        ? `  tracing: OpenTelemetry to ${tracing.value.endpoint} (${tracing.value.protocol}), service ${tracing.value.serviceName}${tracing.value.captureContent ? ', prompts and answers recorded' : ''}`
        : '  tracing: off (set OTEL_EXPORTER_OTLP_ENDPOINT to export OpenTelemetry traces and metrics)',
      process.env.INFERY_API_KEYS ? `  client keys: ${Object.keys(apiKeys).length} from INFERY_API_KEYS` : `  demo key: ${demoKey} (1000 credits)`,
      '',
      `  curl -N http://localhost:${actual}/v1/chat/completions -H "Authorization: Bearer ${key}" -H "Content-Type: application/json" \\`,
      `    -d '{"model":"mock-1","stream":true,"messages":[{"role":"user","content":"Hello"}]}'`,
      ...(mockUpstreams
        ? [
            `  curl -N http://localhost:${actual}/v1/messages -H "x-api-key: ${key}" -H "Content-Type: application/json" \\`,
            `    -d '{"model":"claude-mock-1","max_tokens":256,"stream":true,"messages":[{"role":"user","content":"Hello"}]}'`,
          ]
        : []),
      `  curl http://localhost:${actual}/v1/credits -H "Authorization: Bearer ${key}"`,
      `  curl http://localhost:${actual}/metrics${process.env.INFERY_METRICS_TOKEN ? ' -H "Authorization: Bearer $INFERY_METRICS_TOKEN"' : ''}`,
      '',
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  });
  // A client must send its headers within 10 s and its whole request within 30 s; the response has no time
  // limit (a long stream is not cut: the gateway's own idle, write and duration limits end bad ones).
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.on('error', (err: NodeJS.ErrnoException) => {
    const why = err.code === 'EADDRINUSE' ? `port ${port} is already in use; set PORT to another one` : err.message;
    process.stderr.write(`infery-stream example: cannot listen: ${why}\n`);
    process.exit(1);
  });

  // Graceful shutdown: stop accepting, let open streams finish up to the deadline, then end them with an
  // error chunk; every one is metered. A second signal exits at once.
  const deadlineMs = process.env.SHUTDOWN_DEADLINE_MS ? Number(process.env.SHUTDOWN_DEADLINE_MS) : 10_000;
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) process.exit(1);
    stopping = true;
    logger.info({ signal, inFlight: gateway.inFlight, deadlineMs }, 'shutting down: draining open streams');
    server.close();
    server.closeIdleConnections();
    gateway
      .shutdown({ deadlineMs })
      .then(async () => {
        gateway.close();
        server.closeAllConnections();
        if (ledger) {
          const pending = await ledger.close(deadlineMs);
          if (pending > 0) logger.error({ pending }, 'settlements still pending at shutdown: not written to PostgreSQL (each logged above)');
        }
        if (shared) {
          const pending = await shared.close(deadlineMs);
          if (pending > 0) logger.error({ pending }, 'settlements still pending at shutdown: not written to Redis (each logged above)');
        }
        await mock?.close();
        // the last spans and metrics go out before the process ends (bounded: an unreachable collector does not hold the exit)
        if (tracing.value) {
          await Promise.race([tracing.value.shutdown().catch((err: unknown) => logger.warn({ err: String(err) }, 'OpenTelemetry shutdown failed')), new Promise((resolve) => setTimeout(resolve, 5_000).unref())]);
        }
        logger.info('shut down');
        process.exit(0);
      })
      .catch((err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      });
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
}

main().catch((err: unknown) => {
  process.stderr.write(`infery-stream example: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
