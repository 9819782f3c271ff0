import compression from 'compression';
import express5 from 'express';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { bearerToken, inferyStream, type InferyStreamMiddleware, type MeterEvent, type Options } from '../../lib';

export const KEY = 'client-key-1';
export const UPSTREAM_KEY = 'sk-upstream-secret-0123456789';

export interface Account {
  id: string;
}

/**
 * The Express the host apps of the tests are built with: Express 5, or Express 4 (the `express4` dev
 * dependency) when `INFERY_TEST_EXPRESS=4` — `npm run test:express4` runs the HTTP suites that way.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const express: typeof express5 = process.env.INFERY_TEST_EXPRESS === '4' ? (require('express4') as typeof express5) : express5;
export const EXPRESS_VERSION: string = process.env.INFERY_TEST_EXPRESS === '4' ? '4' : '5';

export interface TestGateway {
  url: string;
  meterCalls: Array<MeterEvent<Account>>;
  logs: Array<Record<string, unknown>>;
  gateway: InferyStreamMiddleware;
  close(): Promise<void>;
}

/**
 * Builds a host app the way a backend would (optionally with express.json() and compression() first), mounts
 * the gateway and listens on 127.0.0.1. Client key `KEY` maps to account `acct-1`; `meter` records every call
 * and returns total_tokens as credits unless overridden.
 */
export async function startGateway(
  upstreamURL: string,
  overrides: Partial<Options<Account>> = {},
  host: { json?: boolean; compression?: boolean } = {},
): Promise<TestGateway> {
  const meterCalls: Array<MeterEvent<Account>> = [];
  const logs: Array<Record<string, unknown>> = [];
  const record = (level: string) => (obj: object, msg?: string) => logs.push({ level, msg, ...obj });
  const app = express();
  if (host.compression) app.use(compression());
  if (host.json) app.use(express.json({ limit: '20mb' }));
  const gateway = inferyStream<Account>({
    upstream: { baseURL: upstreamURL, apiKey: UPSTREAM_KEY },
    authenticate: (req) => (bearerToken(req) === KEY ? { id: 'acct-1' } : null),
    meter: (event) => {
      meterCalls.push(event);
      return event.usage.total_tokens;
    },
    heartbeatInterval: 0,
    logger: { info: record('info'), warn: record('warn'), error: record('error'), debug: record('debug') },
    ...overrides,
  });
  app.use(gateway);
  app.get('/health', (_req, res) => void res.send('ok'));
  const server = http.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    meterCalls,
    logs,
    gateway,
    close: async () => {
      gateway.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Asserts that nothing was billed: every `meter` call (one per request that reached the upstream call) settled
 * an `unserved` request with zero usage, so its hold is released and nothing is charged.
 */
export function expectNothingBilled(calls: ReadonlyArray<MeterEvent<Account>>, expectedCalls?: number): void {
  if (expectedCalls !== undefined) expect(calls).toHaveLength(expectedCalls);
  for (const call of calls) {
    expect(call).toMatchObject({ outcome: 'unserved', usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 } });
  }
}

/** Starts a gateway on `upstreamURL`, runs `run` with it, and always closes it. */
export async function withGateway(upstreamURL: string, overrides: Partial<Options<Account>>, run: (gw: TestGateway) => Promise<void>): Promise<void> {
  const gw = await startGateway(upstreamURL, overrides);
  try {
    await run(gw);
  } finally {
    await gw.close();
  }
}
