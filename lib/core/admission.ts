import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { InferyError } from '../base/errors';
import type { WorstCase, LimitRefusal } from '../contract/hooks';
import { isHoldWithCap } from '../ledgers/billing/reservation';
import type { MeteredApi } from './metered-api';
import type { ResolvedOptions } from '../options/resolved';

/**
 * Admission: what every route passes before anything goes upstream, in this order — `authenticate` (401), the
 * per-minute limit (429), `preflight` (402), and for generations the concurrency limit (429) and `reserve`
 * (402). The canonical-path and route checks come before it, in the middleware.
 */

/** A concurrency slot; `release()` gives it back once, whatever calls it later. */
export interface Lease {
  release(): Promise<void>;
}

/** What a generation carries from admission to settlement. */
export interface Ticket<Account> {
  account: Account;
  /** Gateway-unique: the `X-Generation-Id` header, `MeterEvent.generationId`, the log line. */
  generationId: string;
  /** What `reserve` returned as the hold. */
  reservation: unknown;
  worstCase: WorstCase;
  /** The prompt's estimated tokens (billed when the provider sends no usage). */
  promptTokens: number;
  /** The completion cap per choice sent upstream. */
  maxCompletionTokens: number;
  choices: number;
  /** The body to send upstream (the cap applied). */
  upstreamBody: Record<string, unknown>;
  lease: Lease | undefined;
}

const NO_LEASE: Lease = { release: () => Promise.resolve() };

/** The limit behind each refusal admission raised (the two 429s share a code; metrics tell them apart). */
const refusals = new WeakMap<InferyError, LimitRefusal>();

/**
 * The per-account limit behind an admission error: `rate`, `concurrency` or `quota`; a hook's own 429
 * `rate_limit_exceeded` counts as `rate` and its 402 `insufficient_quota` as `quota`. Only for errors raised
 * before anything went upstream (a provider's 429 is an upstream error, not a refusal).
 */
export function limitRefusalOf(error: InferyError): LimitRefusal | undefined {
  const tagged = refusals.get(error);
  if (tagged) return tagged;
  if (error.status === 429 && error.code === 'rate_limit_exceeded') return 'rate';
  if (error.status === 402 && error.code === 'insufficient_quota') return 'quota';
  return undefined;
}

/** The caller's account after `authenticate`; throws 401 when there is none. */
export async function authenticateOrThrow<Account>(opts: ResolvedOptions<Account>, req: IncomingMessage): Promise<Account> {
  const account = await opts.authenticate(req);
  if (account === null || account === undefined) {
    throw new InferyError(401, 'invalid_api_key', 'Missing or invalid API key. Send it as `Authorization: Bearer <key>`.');
  }
  return account;
}

function rateLimited(limit: 'rate' | 'concurrency', message: string, retryAfterMs: number): InferyError {
  const error = new InferyError(429, 'rate_limit_exceeded', message, { type: 'requests' });
  refusals.set(error, limit);
  const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
  error.headers = { 'Retry-After': String(seconds), 'retry-after-ms': String(Math.max(1, Math.round(retryAfterMs))) };
  return error;
}

/** Counts the request against the account's per-minute budget; 429 with `Retry-After` past it. */
export async function checkRequestRate<Account>(opts: ResolvedOptions<Account>, account: Account): Promise<void> {
  const limits = opts.limits;
  if (!limits || limits.requestsPerMinute === 0) return;
  const waitMs = await limits.store.hit(limits.key(account), limits.requestsPerMinute);
  if (typeof waitMs === 'number' && waitMs > 0) {
    throw rateLimited(
      'rate',
      `Rate limit reached: ${limits.requestsPerMinute} requests per minute for this key. Try again in ${Math.ceil(waitMs / 1000)} s.`,
      waitMs,
    );
  }
}

/** Runs the pre-flight hook; `false` becomes 402 insufficient_quota. */
export async function runPreflight<Account>(
  opts: ResolvedOptions<Account>,
  account: Account,
  req: IncomingMessage,
  path: string,
  body: Record<string, unknown> | undefined,
): Promise<void> {
  if (!opts.preflight) return;
  const allowed = await opts.preflight({ account, req, path, body });
  if (allowed === false) {
    throw new InferyError(402, 'insufficient_quota', 'You have no credits left for this request. Top up your balance and try again.');
  }
}

/** Takes one of the account's concurrency slots; 429 when they are all in use. */
async function acquireSlot<Account>(opts: ResolvedOptions<Account>, account: Account): Promise<Lease> {
  const limits = opts.limits;
  if (!limits || limits.maxConcurrent === 0) return NO_LEASE;
  const key = limits.key(account);
  if (!(await limits.store.acquire(key, limits.maxConcurrent))) {
    throw rateLimited('concurrency', `Too many concurrent requests: ${limits.maxConcurrent} are already in progress for this key. Retry when one has finished.`, 1000);
  }
  let released: Promise<void> | undefined;
  return {
    release: () => {
      released ??= Promise.resolve()
        .then(() => limits.store.release(key))
        .catch((err: unknown) => {
          opts.logger?.error({ err: err instanceof Error ? { name: err.name, message: err.message } : String(err) }, 'infery-stream limit store release failed');
        });
      return released;
    },
  };
}

/**
 * Admits a generation: takes a concurrency slot, computes the worst case (prompt bound plus completion cap
 * times `n`, the cap defaulting to `defaultMaxTokens`) and hands it to `reserve`. Returns the ticket the
 * generation is settled with; on any refusal the slot is given back and nothing is held.
 */
export async function admitGeneration<Account>(
  opts: ResolvedOptions<Account>,
  account: Account,
  req: IncomingMessage,
  res: ServerResponse,
  api: MeteredApi,
  body: Record<string, unknown>,
  model: string,
  contextTokens = 0,
): Promise<Ticket<Account>> {
  const path = api.path;
  const cap = api.cap(body, opts.defaultMaxTokens);
  const count = opts.countTokens;
  const counted = await api.estimate(body, (text) => count(text, model));
  // a continuation: what the provider reads again of the stored response, known exactly from its usage
  const estimate = { tokens: counted.tokens + contextTokens, bound: counted.bound + contextTokens };
  const lease = await acquireSlot(opts, account);
  try {
    const generationId = `gen-${randomUUID()}`;
    const prompt = estimate.bound;
    const worstCase = (perChoice: number): WorstCase => ({
      prompt_tokens: prompt,
      completion_tokens: perChoice * cap.choices,
      total_tokens: prompt + perChoice * cap.choices,
    });
    let perChoice = cap.perChoice;
    let reservation: unknown;
    if (opts.reserve) {
      const result = await opts.reserve({
        account,
        generationId,
        path,
        endpoint: api.endpoint,
        model,
        body,
        worstCase: worstCase(perChoice),
        maxCompletionTokens: perChoice,
        capSource: cap.source,
        choices: cap.choices,
        req,
      });
      if (result === false) {
        throw new InferyError(402, 'insufficient_quota', 'Your balance does not cover the most this request can cost. Lower `max_completion_tokens` or top up your balance.');
      }
      if (isHoldWithCap(result)) {
        reservation = result.hold;
        const lowered = result.maxCompletionTokens;
        if (lowered !== undefined) {
          // A hold now exists, so nothing may throw before the ticket is returned: a bad value is logged and clamped.
          const valid = typeof lowered === 'number' && Number.isFinite(lowered);
          if (!valid || lowered < 1 || lowered > perChoice || !Number.isInteger(lowered)) {
            opts.logger?.error({ generationId, maxCompletionTokens: String(lowered), cap: perChoice }, 'infery-stream reserve returned an invalid maxCompletionTokens; clamped');
          }
          if (valid) perChoice = Math.min(perChoice, Math.max(1, Math.floor(lowered)));
        }
      } else if (result !== true) reservation = result;
    }
    res.setHeader('X-Generation-Id', generationId);
    return {
      account,
      generationId,
      reservation,
      worstCase: worstCase(perChoice),
      promptTokens: estimate.tokens,
      maxCompletionTokens: perChoice,
      choices: cap.choices,
      upstreamBody: api.withCap(body, cap, perChoice),
      lease,
    };
  } catch (err) {
    await lease.release();
    throw err;
  }
}
