import compression from 'compression';
import { createHash } from 'node:crypto';
import express, { type Express } from 'express';
import { BudgetExhaustedError, bearerToken, generationDraft, InferyError, inferyStream, LimitRefusedError, MemoryCreditStore, type BudgetSpec, type BudgetWindow, type CreditStore, type Endpoint, type FallbackOptions, type InferyStreamMiddleware, type UpstreamConfig, type LimitStore, type Logger, type Observer, type ReserveContext } from '../lib';
import { prometheusObserver } from '../lib/ledgers/metrics/prometheus';
import { mountChatPage } from './chat-page';
import type { KeyLimits } from './config';
import { mountMetrics } from './metrics';
import { PriceList, type Price, type Priced } from './ledger';

/** The largest request body the app accepts (its express.json() limit). */
const BODY_LIMIT = 10 * 1024 * 1024;

/** What a client can lower to make a request fit its balance, by API. */
const LOWER: Record<Endpoint, string> = {
  'chat.completions': 'Lower max_completion_tokens',
  responses: 'Lower max_output_tokens',
  completions: 'Lower max_tokens (or send fewer prompts, n or best_of)',
  embeddings: 'Send a shorter input',
  messages: 'Lower max_tokens',
};

/** The smallest completion cap the app lowers a default cap to before it refuses with 402. */
const MIN_LOWERED_CAP = 16;

/** What the example app needs to run; `server.ts` fills it from the environment. */
export interface AppConfig {
  /** The single upstream (ignored when `upstreams` is given). */
  upstreamURL: string;
  upstreamKey?: string;
  /** Several upstreams with fallback (from `INFERY_CONFIG`); wins over `upstreamURL`. */
  upstreams?: UpstreamConfig[];
  fallback?: FallbackOptions;
  /**
   * Prices over the catalog and the mock's own (credits per 1K tokens by model; `default` prices any model
   * nothing else does). Without one, a model the catalog does not know is refused (400 `model_not_priced`).
   */
  prices?: Record<string, Price>;
  /** Client key → starting credits (for the in-memory ledger). */
  apiKeys: Record<string, number>;
  /**
   * A shared credit store to use instead of the in-memory ledger (`RedisCreditStore`, or SQL…), its accounts
   * already opened; `apiKeys` then only seeds the unused in-memory ledger.
   */
  store?: CreditStore;
  /** Where the per-key limits count (`RedisLimitStore` for several instances). Default: this process's memory. */
  limitStore?: LimitStore;
  /** Open generations per key (`0`: no limit). Default: 32. */
  maxConcurrent?: number;
  /** Requests per minute per key (`0`: no limit). Default: 600. */
  requestsPerMinute?: number;
  /** Tokens per minute per key, input and output (`0`: no limit; `INFERY_TPM`). Default: 0. */
  tokensPerMinute?: number;
  /** Every key's spend cap over time (`INFERY_BUDGET`, e.g. `5/day`). Default: none. */
  budget?: BudgetSpec;
  /** Limits by key over `budget` and `tokensPerMinute` (`INFERY_CONFIG` `keys`). */
  keyLimits?: Record<string, KeyLimits>;
  /** Completion cap when a client sets none. Default: the library's (4096). */
  defaultMaxTokens?: number;
  /** The gateway's timing options (ms); each defaults to the library's. */
  timeouts?: { upstreamTimeout?: number; idleTimeout?: number; maxDuration?: number; writeTimeout?: number };
  logger?: Logger;
  /** When set, `GET /metrics` asks for this bearer token; unset, it is open. */
  metricsToken?: string;
  /** OpenTelemetry's observer (`infery-stream/otel`), told beside the Prometheus one. */
  tracing?: Observer;
  /** Settlements waiting for the shared ledger (the `infery_ledger_queue_depth` gauge). */
  ledgerQueueDepth?: () => number;
}

/**
 * The example backend: compression() and express.json() mounted globally first, as real backends do, then its
 * own /v1 routes, then the gateway.
 */
export function createApp(config: AppConfig): { app: Express; ledger: MemoryCreditStore; store: CreditStore; gateway: InferyStreamMiddleware } {
  const ledger = new MemoryCreditStore(config.apiKeys);
  const prices = new PriceList(config.prices);
  // everything below goes through the CreditStore interface, awaited, so a shared store drops in
  const store: CreditStore = config.store ?? ledger;
  const app = express();
  app.disable('x-powered-by');
  app.use(compression());
  // express.json() reads a body over its limit to the end before it answers 413: refuse a declared
  // Content-Length over the limit at once instead, before any byte of the body is read
  app.use((req, res, next) => {
    if (Number(req.headers['content-length']) <= BODY_LIMIT || req.headers['content-length'] === undefined) return next();
    res.status(413).set('Connection', 'close').json({ error: { message: `The request body is larger than the limit of ${BODY_LIMIT} bytes.`, type: 'invalid_request_error', code: 'request_too_large', param: null } });
  });
  app.use(express.json({ limit: BODY_LIMIT }));

  // Accounts are created and never deleted by the app: a key seen to exist is remembered for a minute, so a
  // request costs the shared store no lookup of its own. A generation's hold checks the account anyway (a key
  // deleted from the store meanwhile gets 401 there); a key not found is looked up every time.
  const known = new Map<string, number>();
  const KNOWN_FOR_MS = 60_000;
  const KNOWN_MAX = 10_000;
  const keyOf = async (req: express.Request): Promise<string | undefined> => {
    const key = bearerToken(req);
    if (key === undefined) return undefined;
    const until = known.get(key);
    if (until !== undefined && until > Date.now()) return key;
    if (!(await store.has(key))) {
      known.delete(key);
      return undefined;
    }
    known.delete(key);
    if (known.size >= KNOWN_MAX) known.delete(known.keys().next().value!);
    known.set(key, Date.now() + KNOWN_FOR_MS);
    return key;
  };
  /** `store.reserve`, with an account that no longer exists answered 401 rather than 500. */
  const hold = async (account: string, id: string, credits: number, limits: ReserveContext<string>['limits'], budget: BudgetWindow | undefined): Promise<boolean> => {
    try {
      return await store.reserve(account, id, credits, limits, budget);
    } catch (err) {
      if (err instanceof InferyError || err instanceof LimitRefusedError || err instanceof BudgetExhaustedError || (await store.has(account))) throw err;
      known.delete(account);
      throw new InferyError(401, 'invalid_api_key', 'Missing or invalid API key. Send it as `Authorization: Bearer <key>` (or `x-api-key: <key>`).');
    }
  };

  mountChatPage(app);

  // Prometheus metrics of the gateway (requests, time to first token, tokens and credits by model, open streams,
  // cancellations, upstream errors, limit refusals, the ledger queue): GET /metrics, outside /v1
  const metrics = prometheusObserver({ ledgerQueueDepth: config.ledgerQueueDepth });
  mountMetrics(app, { registry: metrics.registry, token: config.metricsToken });

  const unauthorized = (res: express.Response): void => {
    res.status(401).json({ error: { message: 'Missing or invalid API key. Send it as `Authorization: Bearer <key>` (or `x-api-key: <key>`).', type: 'invalid_request_error', code: 'invalid_api_key', param: null } });
  };

  /** The caller's available balance, what is held for generations under way, what it used, and `used` by model. */
  app.get('/v1/credits', async (req, res) => {
    const key = await keyOf(req);
    if (!key) return unauthorized(res);
    res.json({ data: await store.balanceOf(key) });
  });

  /** What was recorded for one of the caller's generations; `id` is the `id` of its chunks. */
  app.get('/v1/generation', async (req, res) => {
    const key = await keyOf(req);
    if (!key) return unauthorized(res);
    const id = req.query.id;
    if (typeof id !== 'string' || id === '') {
      res.status(400).json({ error: { message: 'Pass the generation id: GET /v1/generation?id=<id>.', type: 'invalid_request_error', code: 'missing_required_parameter', param: 'id' } });
      return;
    }
    const record = await store.findGeneration(key, id.slice(0, 256));
    if (!record) {
      res.status(404).json({ error: { message: `No generation ${id} for this key.`, type: 'invalid_request_error', code: 'generation_not_found', param: 'id' } });
      return;
    }
    res.json({ data: record });
  });

  /**
   * Holds the worst case of a generation (its id is the hold id). When the client set no cap and the default
   * one does not fit, the cap is lowered to what the balance covers; otherwise a 402 says what it would take.
   */
  const reserve = async ({ account, generationId, endpoint, model, worstCase, maxCompletionTokens, capSource, choices, limits, budget }: ReserveContext<string>) => {
    // a model nothing prices is refused before the call: it is never served for free
    if (!prices.knows(model)) {
      throw new InferyError(400, 'model_not_priced', `The model \`${model}\` has no price on this gateway: the price catalog does not know it and no price is configured for it.`, { param: 'model' });
    }
    const worst = prices.priceOf(model, worstCase);
    /**
     * One hold: true when taken; else what is available — the balance, or what the budget window has left when
     * that is less (a refusal of the budget with a cap the client set is the client's 402 budget_exceeded).
     */
    const tryHold = async (credits: number): Promise<true | number> => {
      try {
        // `limits`: on Redis the rate and the concurrency slot are taken with the hold, in one script
        if (await hold(account, generationId, credits, limits, budget)) return true;
        return (await store.balanceOf(account))?.balance ?? 0;
      } catch (err) {
        if (!(err instanceof BudgetExhaustedError) || capSource !== 'default') throw err;
        const left = err.window.limit - err.spent - err.held;
        if (left <= 0) throw err;
        return Math.min((await store.balanceOf(account))?.balance ?? 0, left);
      }
    };
    const first = await tryHold(worst);
    if (first === true) return { hold: generationId };
    let available = first;
    const completionPrice = prices.completionPer1K(model);
    // a default cap that does not fit is lowered to what the balance (and the budget window) covers: twice at
    // most, as the first lowered hold may learn that the budget leaves less than the balance
    for (let attempt = 0; attempt < 2 && capSource === 'default' && completionPrice > 0; attempt++) {
      const promptOnly = { ...worstCase.classes, output_tokens: 0 };
      const promptCost = prices.priceOf(model, { prompt_tokens: worstCase.prompt_tokens, completion_tokens: 0, classes: promptOnly });
      const affordable = Math.floor(((available - promptCost) * 1000) / (completionPrice * choices));
      const cap = Math.min(maxCompletionTokens, affordable);
      if (cap < MIN_LOWERED_CAP) break;
      const lowered = prices.priceOf(model, { prompt_tokens: worstCase.prompt_tokens, completion_tokens: cap * choices, classes: { ...promptOnly, output_tokens: cap * choices } });
      const next = await tryHold(lowered);
      if (next === true) return { hold: generationId, maxCompletionTokens: cap };
      if (next >= available) break;
      available = next;
    }
    throw new InferyError(
      402,
      'insufficient_quota',
      `This request can cost up to ${worst} credits (${worstCase.prompt_tokens} prompt and ${worstCase.completion_tokens} completion tokens of ${model}); ` +
        `${available} are available. ${LOWER[endpoint]} or top up your balance.`,
    );
  };

  /** The dearer of the model asked for and the model the provider says it used: an alias never bills cheaper. */
  const charge = (event: { model: string; providerModel: string; usage: Priced }): number => {
    const asked = prices.priceOf(event.model, event.usage);
    if (event.providerModel === event.model || !prices.knows(event.providerModel)) return asked;
    return Math.max(asked, prices.priceOf(event.providerModel, event.usage));
  };

  const keyLimitsOf = (account: string): KeyLimits | undefined => (config.keyLimits && Object.hasOwn(config.keyLimits, account) ? config.keyLimits[account] : undefined);

  const gateway = inferyStream<string, express.Request>({
    ...(config.upstreams ? { upstreams: config.upstreams, fallback: config.fallback } : { upstream: { baseURL: config.upstreamURL, apiKey: config.upstreamKey } }),
    authenticate: (req: express.Request) => keyOf(req),
    reserve,
    // Settles the hold: the real charge (nothing for an unserved request). A usage that cannot be priced is
    // charged at the reserved worst case rather than for free.
    meter: async (event) => {
      let credits = 0;
      if (event.outcome !== 'unserved') {
        try {
          credits = charge(event);
        } catch (err) {
          config.logger?.error({ generationId: event.generationId, err: (err as Error).message }, 'could not price a generation; charging its worst case');
          credits = prices.priceOf(event.model, event.worstCase);
        }
      }
      // the charge and the generation's record are written in one step (one script in Redis)
      // (and the concurrency slot taken with the hold given back: `event.limits`)
      const settlement = await store.settle(event.account, event.generationId, event.model, credits, generationDraft(event), event.limits, event.budget);
      if (settlement.budget?.softLimitCrossed) {
        // the soft limit: said once per window, before the hard one refuses
        config.logger?.warn({ generationId: event.generationId, budget: settlement.budget.id, spent: settlement.budget.spent, limit: settlement.budget.limit }, 'a key passed the soft limit of its budget');
      }
      if (settlement.unpaid > 0) {
        // the provider's usage cost more than the hold and the whole balance: the rest was not taken
        config.logger?.warn({ generationId: event.generationId, model: event.model, unpaid: settlement.unpaid, charged: settlement.charged }, 'a generation cost more than its hold and the balance; the rest is recorded as unpaid');
      }
      return settlement.charged;
    },
    // a stored response is shown only to the key that created it: its record (shared on Redis) says whose it is
    ownsResponse: async (account, responseId) => {
      const record = await store.findGeneration(account, responseId);
      // the continuation of a response reads its input and output again: the reservation counts them
      // by the provider's id only: a gateway id (gen-…) names no stored response
      return record?.endpoint === 'responses' && record.provider_id === responseId
        ? { upstream: record.upstream ?? undefined, contextTokens: record.usage.prompt_tokens + record.usage.completion_tokens }
        : false;
    },
    limits: {
      maxConcurrent: config.maxConcurrent ?? 32,
      requestsPerMinute: config.requestsPerMinute ?? 600,
      // a key's own limits (INFERY_CONFIG `keys`) over every key's (INFERY_TPM, INFERY_BUDGET)
      tokensPerMinute: (account) => keyLimitsOf(account)?.tpm ?? config.tokensPerMinute ?? 0,
      budget: (account) => {
        const own = keyLimitsOf(account)?.budget;
        return own === null ? undefined : (own ?? config.budget);
      },
      store: config.limitStore,
    },
    defaultMaxTokens: config.defaultMaxTokens,
    ...config.timeouts,
    logger: config.logger,
    observer: config.tracing ? [metrics.observer, config.tracing] : metrics.observer,
    // traces name the key by a fingerprint, never the key itself
    accountTag: (key) => `key-${createHash('sha256').update(key).digest('hex').slice(0, 12)}`,
  });
  app.use(gateway);
  // Everything else the app answers with an error (a bad body on a page route, say) is JSON without a stack trace.
  app.use((err: unknown, _req: express.Request, res: express.Response, next: express.NextFunction) => {
    if (res.headersSent) return next(err);
    // the library's errors (a ledger that cannot be reached: 503 ledger_unavailable) keep their code and headers
    if (err instanceof InferyError) {
      res.status(err.status).set(err.headers ?? {}).json(err.toJSON());
      return;
    }
    const e = err as { status?: unknown; statusCode?: unknown; expose?: unknown; message?: unknown };
    const status = typeof e.status === 'number' ? e.status : typeof e.statusCode === 'number' ? e.statusCode : 500;
    const client = status >= 400 && status < 500;
    res.status(status).json({
      error: {
        message: client && e.expose !== false ? String(e.message).slice(0, 200) : 'The server failed to handle this request.',
        type: client ? 'invalid_request_error' : 'server_error',
        code: client ? 'invalid_request' : 'internal_error',
        param: null,
      },
    });
  });
  return { app, ledger, store, gateway };
}

/** Parses `INFERY_API_KEYS`: comma-separated `key` or `key:credits` (default 1000 credits). */
export function parseApiKeys(value: string): Record<string, number> {
  // no prototype: a key named "__proto__" is a key like any other
  const keys = Object.create(null) as Record<string, number>;
  for (const entry of value.split(',').map((s) => s.trim()).filter(Boolean)) {
    const colon = entry.lastIndexOf(':');
    const key = (colon === -1 ? entry : entry.slice(0, colon)).trim();
    const amount = colon === -1 ? '1000' : entry.slice(colon + 1).trim();
    const credits = Number(amount);
    if (key === '' || !/^\S+$/.test(key)) throw new Error(`INFERY_API_KEYS: bad key in "${entry}"`);
    if (amount === '' || !Number.isFinite(credits) || credits < 0) {
      throw new Error(`INFERY_API_KEYS: "${entry}" needs a non-negative number of credits after the colon`);
    }
    keys[key] = credits;
  }
  if (Object.keys(keys).length === 0) throw new Error('INFERY_API_KEYS is set but names no key');
  return keys;
}
