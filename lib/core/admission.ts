import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { InferyError } from '../base/errors';
import type { BudgetWindow, WorstCase, LimitRefusal, ReserveLimits } from '../contract/hooks';
import { isHoldWithCap } from '../ledgers/billing/reservation';
import { BudgetExhaustedError, budgetWindow, checkBudgetSpec } from '../ledgers/stores/budget';
import { LimitRefusedError, type LimitStore, type RateState } from '../ledgers/stores/limit-store';
import type { MeteredApi } from './metered-api';
import type { ResolvedOptions } from '../options/resolved';
import { rateHeaders, rateStateOf, setHeaders } from './rate-headers';
import { worstClasses } from './usage-classes';

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
  /** The prompt's estimated tokens (billed when the provider sends no usage), counted when first asked. */
  promptTokens: () => Promise<number>;
  /** The completion cap per choice sent upstream. */
  maxCompletionTokens: number;
  choices: number;
  /** The body to send upstream (the cap applied). */
  upstreamBody: Record<string, unknown>;
  lease: Lease | undefined;
  /** The limits `reserve` took with the hold (its settlement releases the slot): `MeterEvent.limits`. */
  limits?: ReserveLimits;
  /** The tokens taken from the account's tokens-per-minute bucket at admission, settled with the real count. */
  tokens?: TokensTaken;
  /** The budget window the generation was admitted in (`ReserveContext.budget`, `MeterEvent.budget`). */
  budget?: BudgetWindow;
  /**
   * A limit refused the request after the hold was taken (a `reserve` that was handed the limits and did not take
   * them): the generation is settled unserved and the client gets this 429.
   */
  refused?: InferyError;
}

/** What a generation took of its account's tokens per minute: given back or taken more at settlement. */
export interface TokensTaken {
  key: string;
  perMinute: number;
  taken: number;
  counted: 'input' | 'output' | 'total';
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
    throw new InferyError(401, 'invalid_api_key', 'Missing or invalid API key. Send it as `Authorization: Bearer <key>` (or `x-api-key: <key>`).');
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

function rateError(requestsPerMinute: number, waitMs: number, state?: RateState): InferyError {
  const error = rateLimited('rate', `Rate limit reached: ${requestsPerMinute} requests per minute for this key. Try again in ${Math.ceil(waitMs / 1000)} s.`, waitMs);
  if (state) error.headers = { ...error.headers, ...rateHeaders('requests', requestsPerMinute, state) };
  return error;
}

function tokensError(taken: TokensTaken, state: RateState): InferyError {
  const which = taken.counted === 'total' ? '' : ` ${taken.counted}`;
  const error = new InferyError(429, 'rate_limit_exceeded', `Rate limit reached: ${taken.perMinute}${which} tokens per minute for this key. Try again in ${Math.ceil(state.waitMs / 1000)} s.`, { type: 'tokens' });
  refusals.set(error, 'tokens');
  error.headers = {
    'Retry-After': String(Math.max(1, Math.ceil(state.waitMs / 1000))),
    'retry-after-ms': String(Math.max(1, Math.round(state.waitMs))),
    ...rateHeaders('tokens', taken.perMinute, state),
  };
  return error;
}

/** The 402 of a budget window a hold would pass: `Retry-After` to the reset, the reset in ISO 8601 UTC. */
function budgetError(refusal: BudgetExhaustedError): InferyError {
  const { window } = refusal;
  // a rolling window resets in part: when its oldest spend ages out
  const reset = new Date(refusal.resetsAt).toISOString();
  const error = new InferyError(
    402,
    'budget_exceeded',
    `This key's budget of ${window.limit} credits for ${window.rolling ? `the last ${window.rolling.spanMs / 3_600_000} hours` : window.id.replace(':', ' ')} is used up: ${refusal.spent} spent and ${refusal.held} held for generations under way, and this request can cost up to ${refusal.credits}. It resets at ${reset}.`,
    { type: 'insufficient_quota' },
  );
  refusals.set(error, 'budget');
  error.headers = { 'Retry-After': String(Math.max(1, Math.ceil((refusal.resetsAt - Date.now()) / 1000))) };
  return error;
}

function concurrencyError(maxConcurrent: number): InferyError {
  return rateLimited('concurrency', `Too many concurrent requests: ${maxConcurrent} are already in progress for this key. Retry when one has finished.`, 1000);
}

/** Whether generations hand their limits to `reserve`, which takes them with the hold (`LimitStore.takenByReserve`). */
function limitsGoToReserve<Account>(opts: ResolvedOptions<Account>): boolean {
  const limits = opts.limits;
  return limits !== undefined && limits.store.takenByReserve === true && opts.reserve !== undefined && (limits.requestsPerMinute > 0 || limits.maxConcurrent > 0);
}

/**
 * Counts the request against the account's per-minute budget; 429 with `Retry-After` past it. A generation whose
 * limits `reserve` takes (`forGeneration`) is counted there instead, in the same step as its hold.
 */
export async function checkRequestRate<Account>(opts: ResolvedOptions<Account>, account: Account, forGeneration = false, res?: ServerResponse): Promise<'counted' | 'deferred'> {
  const limits = opts.limits;
  if (!limits || limits.requestsPerMinute === 0) return 'counted';
  if (forGeneration && limitsGoToReserve(opts)) return 'deferred';
  const refused = await countRequest(limits.store, limits.key(account), limits.requestsPerMinute, res);
  if (refused) throw refused;
  return 'counted';
}

/**
 * Counts one request of `key` against `perMinute`: the 429 when the store refuses it, else undefined, with the
 * `x-ratelimit-*-requests` headers set on `res` when the store says what is left (OpenAI's, which the SDKs read).
 */
async function countRequest(store: LimitStore, key: string, perMinute: number, res: ServerResponse | undefined): Promise<InferyError | undefined> {
  const answer = await store.hit(key, perMinute);
  const state = rateStateOf(answer);
  const waitMs = state ? state.waitMs : answer;
  if (typeof waitMs === 'number' && waitMs > 0) return rateError(perMinute, waitMs, state);
  if (state) setHeaders(res, rateHeaders('requests', perMinute, state));
  return undefined;
}

/** Failures of admission after `reserve` counted the request against the rate (or the rate refused it). */
const rateSettled = new WeakSet<object>();

/**
 * A generation whose rate was left to `reserve` (`checkRequestRate` answered `deferred`) and that failed before
 * `reserve` counted it — a bad body, an unknown model, a preflight refusal — is counted now, so such requests
 * use up the per-minute budget like any other. Never throws.
 */
export async function countDeferredRate<Account>(opts: ResolvedOptions<Account>, account: Account, failure: unknown): Promise<void> {
  const limits = opts.limits;
  if (!limits || (typeof failure === 'object' && failure !== null && rateSettled.has(failure))) return;
  try {
    await limits.store.hit(limits.key(account), limits.requestsPerMinute);
  } catch {
    // the request is refused already; a store that cannot be reached counts nothing
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
  if (!(await limits.store.acquire(key, limits.maxConcurrent))) throw concurrencyError(limits.maxConcurrent);
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
  const counted = await api.estimate(body, (texts) => opts.countTexts(texts, model));
  // a continuation: what the provider reads again of the stored response, known exactly from its usage
  const estimate = { tokens: async () => (await counted.tokens()) + contextTokens, bound: counted.bound + contextTokens };
  const generationId = `gen-${randomUUID()}`;
  // the rate and the slot taken with the hold by `reserve` (one round trip on Redis), or here, before it
  const limits = limitsGoToReserve(opts) ? reserveLimits(opts.limits!, account, generationId) : undefined;
  let lease = limits ? NO_LEASE : await acquireSlot(opts, account);
  let tokens: TokensTaken | undefined;
  try {
    const prompt = estimate.bound;
    const budget = budgetFor(opts, account);
    // tokens per minute: the worst case is taken now (check before), the real count settled after
    tokens = await takeTokens(opts, account, res, prompt, cap.perChoice * cap.choices);
    const extras = api.worstExtras?.(body);
    const worstCase = (perChoice: number): WorstCase => ({
      prompt_tokens: prompt,
      completion_tokens: perChoice * cap.choices,
      total_tokens: prompt + perChoice * cap.choices,
      classes: worstClasses(prompt, perChoice * cap.choices, extras),
    });
    let perChoice = cap.perChoice;
    let reservation: unknown;
    if (opts.reserve) {
      const result = await callReserve(opts, limits, {
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
        limits,
        budget,
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
    // a hold now exists: nothing may throw; limits `reserve` was handed and did not take are taken now
    let refused: InferyError | undefined;
    if (limits && !limits.taken) ({ lease, refused } = await takeLimitsAfterHold(opts, account, limits, res));
    res.setHeader('X-Generation-Id', generationId);
    // the rate the store counted with the hold: what is left, for the x-ratelimit-*-requests headers
    if (limits?.rateState && limits.requestsPerMinute > 0) setHeaders(res, rateHeaders('requests', limits.requestsPerMinute, limits.rateState));
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
      limits: limits?.taken ? limits : undefined,
      tokens,
      budget,
      refused,
    };
  } catch (err) {
    if (limits && typeof err === 'object' && err !== null && (limits.rateCounted || (err instanceof InferyError && refusals.get(err) === 'rate'))) rateSettled.add(err);
    await lease.release();
    // refused after its tokens were taken: they go back
    if (tokens) await settleTokens(opts, tokens, 0);
    throw err;
  }
}

/** The account's current budget window, when `limits.budget` gives it one (a bad one is the host's error: 500). */
function budgetFor<Account>(opts: ResolvedOptions<Account>, account: Account): BudgetWindow | undefined {
  const spec = opts.limits?.budget?.(account);
  if (spec === undefined || spec === null) return undefined;
  try {
    checkBudgetSpec(spec, 'limits.budget(account)');
  } catch (err) {
    throw new InferyError(500, 'invalid_budget', `The gateway's budget configuration is invalid: ${(err as Error).message}.`, { type: 'server_error' });
  }
  return budgetWindow(spec);
}

/** The tokens of a worst case (or a usage) that count against the account's tokens per minute. */
function countedTokens(counted: TokensTaken['counted'], input: number, output: number): number {
  return counted === 'input' ? input : counted === 'output' ? output : input + output;
}

/**
 * Takes the worst case's tokens from the account's tokens-per-minute bucket, setting the `x-ratelimit-*-tokens`
 * headers; 429 with `Retry-After` when the bucket is empty. Undefined when the account has no such limit.
 */
async function takeTokens<Account>(opts: ResolvedOptions<Account>, account: Account, res: ServerResponse, input: number, output: number): Promise<TokensTaken | undefined> {
  const limits = opts.limits;
  if (!limits) return undefined;
  const perMinute = limits.tokensPerMinute(account);
  if (perMinute === 0 || perMinute === undefined) return undefined;
  if (typeof perMinute !== 'number' || !Number.isSafeInteger(perMinute) || perMinute < 0) {
    throw new InferyError(500, 'invalid_limits', `The gateway's limits.tokensPerMinute gave ${String(perMinute)} for this key: it must be a whole number ≥ 0.`, { type: 'server_error' });
  }
  const taken: TokensTaken = { key: limits.key(account), perMinute, taken: countedTokens(limits.tokensCounted, input, output), counted: limits.tokensCounted };
  const state = await limits.store.takeTokens!(taken.key, taken.taken, perMinute);
  if (state.waitMs > 0) throw tokensError(taken, state);
  setHeaders(res, rateHeaders('tokens', perMinute, state));
  return taken;
}

/**
 * Settles a generation's tokens per minute with the real count: what the worst case took beyond it goes back
 * (or what it used beyond the worst case is taken). Never throws: a store that cannot be reached is logged.
 */
export async function settleTokens<Account>(opts: ResolvedOptions<Account>, taken: TokensTaken, input: number, output = 0): Promise<void> {
  const delta = taken.taken - countedTokens(taken.counted, input, output);
  if (delta === 0) return;
  try {
    await opts.limits!.store.returnTokens!(taken.key, delta, taken.perMinute);
  } catch (err) {
    opts.logger?.error({ err: err instanceof Error ? { name: err.name, message: err.message } : String(err) }, 'infery-stream limit store could not settle tokens per minute');
  }
}

function reserveLimits<Account>(limits: NonNullable<ResolvedOptions<Account>['limits']>, account: Account, generationId: string): ReserveLimits {
  return { key: limits.key(account), requestsPerMinute: limits.requestsPerMinute, maxConcurrent: limits.maxConcurrent, slot: generationId, rateCounted: false, taken: false };
}

/** `reserve`, with a limit its store refused (`LimitRefusedError`) turned into the gateway's own 429. */
async function callReserve<Account>(opts: ResolvedOptions<Account>, limits: ReserveLimits | undefined, ctx: Parameters<NonNullable<ResolvedOptions<Account>['reserve']>>[0]) {
  try {
    return await opts.reserve!(ctx);
  } catch (err) {
    if (err instanceof BudgetExhaustedError) throw budgetError(err);
    if (!(limits && err instanceof LimitRefusedError)) throw err;
    throw err.limit === 'rate' ? rateError(limits.requestsPerMinute, Math.max(1, err.retryAfterMs)) : concurrencyError(limits.maxConcurrent);
  }
}

const warnedUntaken = new WeakSet<object>();

/**
 * The limits a `reserve` was handed and did not take (its store ignores them): counted and taken here, after the
 * hold, so they hold all the same; a refusal is returned, for the generation to be settled unserved. Logged once.
 */
async function takeLimitsAfterHold<Account>(opts: ResolvedOptions<Account>, account: Account, limits: ReserveLimits, res: ServerResponse): Promise<{ lease: Lease; refused?: InferyError }> {
  if (!warnedUntaken.has(opts)) {
    warnedUntaken.add(opts);
    opts.logger?.error({}, 'infery-stream reserve did not take the limits it was handed (ReserveContext.limits): they are taken separately, after the hold; pass them to the store\'s reserve');
  }
  try {
    if (limits.requestsPerMinute > 0 && !limits.rateCounted) {
      const refused = await countRequest(opts.limits!.store, limits.key, limits.requestsPerMinute, res);
      if (refused) return { lease: NO_LEASE, refused };
    }
    return { lease: await acquireSlot(opts, account) };
  } catch (err) {
    return { lease: NO_LEASE, refused: err instanceof InferyError ? err : new InferyError(503, 'ledger_unavailable', 'The limit store could not be reached.', { type: 'server_error' }) };
  }
}
