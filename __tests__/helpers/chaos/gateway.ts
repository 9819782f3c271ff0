import compression from 'compression';
import express from 'express';
import type { AddressInfo } from 'node:net';
import http, { type IncomingHttpHeaders } from 'node:http';
import { performance } from 'node:perf_hooks';
import { CreditLedger, PriceList, type Settlement } from '../../../example-app/ledger';
import { inferyStream, type InferyStreamMiddleware, type Logger, type Outcome, type Usage, type WorstCase } from '../../../lib';
import { Prng, hashSeed, sleep } from './random';

/** The gateway of the soak: the example app's reserve-then-settle ledger behind compression() and express.json(). */

/** What `meter` was called with, and what the ledger did. */
export interface MeterRecord {
  generationId: string;
  soakId: string | undefined;
  outcome: Outcome;
  usage: Usage;
  worstCase: WorstCase;
  model: string;
  providerModel: string;
  errorCode: string | undefined;
  stream: boolean;
  settlement: Settlement;
}

export interface SoakGateway {
  url: string;
  server: http.Server;
  gateway: InferyStreamMiddleware;
  ledger: CreditLedger;
  /** Every generation `reserve` held, in order (no refusal is expected: the balance is large). */
  reserved: Array<{ generationId: string; soakId: string | undefined; milli: number; at: number }>;
  reserveRefusals: number;
  /** meter calls per generation id (a lost call is a missing id, a doubled one a 2). */
  meterCalls: Map<string, number>;
  meters: MeterRecord[];
  /** The gateway's end-of-request log lines per generation id. */
  logLines: Map<string, number>;
  /** Messages logged at warn/error other than the request lines, with counts. */
  logMessages: Map<string, number>;
  connections(): Promise<number>;
  close(): Promise<void>;
}

export const SOAK_KEY = 'soak';

export interface SoakGatewayOptions {
  upstreamURL: string;
  startingCredits: number;
  seed: number;
  idleTimeout: number;
  usageGraceTimeout: number;
  upstreamTimeout: number;
}

/**
 * The example app's billing wired to the library directly (createApp takes no timeouts): compression() and
 * express.json() first, the in-memory {@link CreditLedger}, `reserve` holding the priced worst case and `meter`
 * settling the dearer of the requested and reported model's price (nothing for `unserved`), as
 * example-app/app.ts does. `meter` sometimes waits a little, so settlements interleave.
 */
export async function startSoakGateway(o: SoakGatewayOptions): Promise<SoakGateway> {
  // the chaos provider's model is no real one: priced by a `default`, as INFERY_CONFIG can give
  const prices = new PriceList({ default: { prompt: 10, completion: 30 } });
  const priceOf: PriceList['priceOf'] = (model, usage) => prices.priceOf(model, usage);
  const ledger = new CreditLedger({ [SOAK_KEY]: o.startingCredits });
  const reserved: SoakGateway['reserved'] = [];
  const meterCalls = new Map<string, number>();
  const meters: MeterRecord[] = [];
  const logLines = new Map<string, number>();
  const logMessages = new Map<string, number>();
  let reserveRefusals = 0;
  const soakIdOf = (headers: IncomingHttpHeaders): string | undefined => (typeof headers['x-soak-id'] === 'string' ? headers['x-soak-id'] : undefined);
  const log = (level: string) => (obj: object, msg?: string): void => {
    const line = obj as { generationId?: unknown };
    if (msg === 'infery-stream request') {
      if (typeof line.generationId === 'string') logLines.set(line.generationId, (logLines.get(line.generationId) ?? 0) + 1);
      return;
    }
    if (level === 'warn' || level === 'error') logMessages.set(`${level}: ${msg}`, (logMessages.get(`${level}: ${msg}`) ?? 0) + 1);
  };
  const logger: Logger = { info: log('info'), warn: log('warn'), error: log('error'), debug: () => {} };

  const gateway = inferyStream<string>({
    upstream: { baseURL: o.upstreamURL, apiKey: 'sk-soak-upstream' },
    authenticate: (req) => (req.headers.authorization === `Bearer ${SOAK_KEY}` ? SOAK_KEY : null),
    reserve: ({ account, generationId, model, worstCase, req }) => {
      const worst = priceOf(model, worstCase);
      if (!ledger.reserve(account, generationId, worst)) {
        reserveRefusals++;
        return false;
      }
      reserved.push({ generationId, soakId: soakIdOf(req.headers), milli: Math.round(worst * 1000), at: performance.timeOrigin + performance.now() });
      return { hold: generationId };
    },
    meter: async (event) => {
      meterCalls.set(event.generationId, (meterCalls.get(event.generationId) ?? 0) + 1);
      const soakId = soakIdOf(event.req.headers);
      const rng = new Prng(hashSeed(o.seed, 'meter', soakId ?? event.generationId));
      if (rng.chance(0.2)) await sleep(rng.int(0, 15));
      let credits = 0;
      if (event.outcome !== 'unserved') {
        try {
          credits = Math.max(priceOf(event.model, event.usage), priceOf(event.providerModel, event.usage));
        } catch {
          credits = priceOf(event.model, event.worstCase);
        }
      }
      const settlement = ledger.settle(event.account, event.generationId, event.model, credits);
      meters.push({
        generationId: event.generationId, soakId, outcome: event.outcome, usage: event.usage, worstCase: event.worstCase, model: event.model,
        providerModel: event.providerModel, errorCode: event.error?.code, stream: event.stream, settlement,
      });
      return settlement.charged;
    },
    idleTimeout: o.idleTimeout,
    usageGraceTimeout: o.usageGraceTimeout,
    upstreamTimeout: o.upstreamTimeout,
    forwardHeaders: ['x-soak-id'],
    logger,
  });
  const app = express();
  app.disable('x-powered-by');
  app.use(compression());
  app.use(express.json({ limit: '10mb' }));
  app.use(gateway);
  const server = http.createServer(app);
  // Never closes an idle keep-alive socket during a run (a reuse race would look like a gateway fault).
  server.keepAliveTimeout = 120_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    server,
    gateway,
    ledger,
    reserved,
    get reserveRefusals() {
      return reserveRefusals;
    },
    meterCalls,
    meters,
    logLines,
    logMessages,
    connections: () => new Promise((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n)))),
    close: async () => {
      gateway.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}


export const milli = (credits: number): number => Math.round(credits * 1000);
