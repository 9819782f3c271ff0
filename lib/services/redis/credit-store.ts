import type { BudgetWindow, Logger, ReserveLimits } from '../../contract/hooks';
import { BudgetExhaustedError } from '../../ledgers/stores/budget';
import { LimitRefusedError } from '../../ledgers/stores/limit-store';
import { accountKeys, limitKeys, tagOf, type AccountKeys } from './keys';
import { checkCredits, toMilli, toMilliUp, type Balance, type CreditStore, type GenerationDraft, type GenerationRecord, type Settlement } from '../../ledgers/stores/credit-store';
import { Renewer } from '../../ledgers/stores/renewer';
import { isScriptError, LedgerUnavailableError, ScriptRunner, type RedisClient } from './runner';
import { ADMIT, BALANCE, OPEN, RENEW_HOLDS, RENEW_LEASES, RESERVE, SETTLE, TAKE_LIMITS } from './scripts';
import { attemptSettle, MAX_MODEL_CHARS, SettleQueue, settleOrQueue, type AttemptResult, type PendingSettle } from '../../ledgers/stores/settle-queue';

/** Options of {@link RedisCreditStore}. */
export interface RedisCreditStoreOptions {
  /** Prefix of every key. Default: `infery:`. */
  prefix?: string;
  /**
   * How long a hold lives without renewal (ms). The instance that holds it renews it every third of this while
   * the generation runs; when the instance dies, the hold expires and its credits return to the balance. Default:
   * 120,000.
   */
  holdTtlMs?: number;
  /** The longest a Redis call may take before the ledger counts as unreachable (ms). Default: 2,000. */
  commandTimeoutMs?: number;
  /** How long a settled hold id is remembered, so a retried settle never charges twice (s). Default: 7 days. */
  settledTtlSeconds?: number;
  /** How long a generation record is kept (s). Default: 30 days. */
  recordTtlSeconds?: number;
  /** How many generation records each account keeps in its recent list. Default: 10,000. */
  recordsPerAccount?: number;
  /** How many settlements may wait in this process while Redis is unreachable. Default: 10,000. */
  maxPendingSettles?: number;
  /** Where the store logs queued, retried and lost settlements (pino-compatible). */
  logger?: Logger;
}

/** A Redis settlement not yet written: with the concurrency slot taken with the hold, given back with it. */
interface RedisPendingSettle extends PendingSettle {
  slot: Slot | undefined;
}

/** A concurrency slot a hold took: its leases key, and whether it shares the account's hash slot (one script). */
interface Slot {
  leases: string;
  id: string;
  withAccount: boolean;
}

/**
 * A {@link CreditStore} in Redis, shared by every gateway instance that uses the same Redis and prefix. Each
 * operation is one Lua script, so it is atomic across instances: `balance + held + used` equals the starting
 * credits and `balance ≥ 0` at every moment. Holds expire unless their instance renews them; settling is
 * idempotent by hold id and writes the generation record in the same step. Account ids (API keys, say) only
 * reach Redis as a SHA-256 tag.
 *
 * When Redis cannot be reached, `has`, `reserve` and `balanceOf` throw {@link LedgerUnavailableError} (503
 * `ledger_unavailable`: the gateway fails closed), while `settle` — a generation that already ran — queues the
 * settlement in this process and answers it as `pending`; the queue is retried until Redis is back. Call
 * {@link RedisCreditStore.drain} at shutdown.
 */
export class RedisCreditStore implements CreditStore {
  private readonly runner: ScriptRunner;
  private readonly prefix: string;
  private readonly holdTtlMs: number;
  private readonly settledTtl: number;
  private readonly recordTtl: number;
  private readonly recordsPerAccount: number;
  private readonly logger: Logger | undefined;
  /** Holds this process owns, by hold id, with the slot each took: renewed until settled. */
  private readonly live = new Map<string, { account: string; milli: number; slot?: Slot }>();
  private readonly renewer: Renewer;
  private readonly queue: SettleQueue<RedisPendingSettle>;
  private readonly onReady = (): void => this.queue.kick();

  constructor(redis: RedisClient, options: RedisCreditStoreOptions = {}) {
    const number = (name: keyof RedisCreditStoreOptions, fallback: number, min: number): number => {
      const value = options[name] ?? fallback;
      if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) throw new RangeError(`RedisCreditStore: ${name} must be a whole number ≥ ${min}, got ${String(value)}`);
      return value;
    };
    if (!redis || typeof (redis as { evalsha?: unknown }).evalsha !== 'function') throw new TypeError('RedisCreditStore needs an ioredis client (new Redis(url))');
    this.prefix = options.prefix ?? 'infery:';
    if (typeof this.prefix !== 'string') throw new TypeError('RedisCreditStore: prefix must be a string');
    this.holdTtlMs = number('holdTtlMs', 120_000, 1_000);
    this.settledTtl = number('settledTtlSeconds', 7 * 86_400, 60);
    this.recordTtl = number('recordTtlSeconds', 30 * 86_400, 60);
    this.recordsPerAccount = number('recordsPerAccount', 10_000, 1);
    this.logger = options.logger;
    this.runner = new ScriptRunner(redis, number('commandTimeoutMs', 2_000, 10));
    this.renewer = new Renewer(Math.max(250, Math.floor(this.holdTtlMs / 3)), () => this.renewHolds(), this.logger, 'Redis credit holds');
    this.queue = new SettleQueue<RedisPendingSettle>((item) => this.attempt(item), {
      max: number('maxPendingSettles', 10_000, 1),
      retryMs: 250,
      maxRetryMs: 5_000,
      logger: this.logger,
      // the account as its Redis tag (its keys are `<prefix>{a:<tag>}…`), never the id itself: it may be an API key
      describe: (item) => ({ generationId: item.holdId, account: tagOf(item.account), model: item.model, credits: item.cost / 1000 }),
    });
    redis.on('ready', this.onReady);
  }

  /** Settlements waiting in this process for Redis to come back. */
  get pendingSettles(): number {
    return this.queue.depth;
  }

  /** Creates `account` with `credits` unless it exists; resolves whether it was created (an existing one is never reset). */
  async open(account: string, credits: number): Promise<boolean> {
    checkCredits('start an account with', credits);
    const keys = accountKeys(this.prefix, account);
    return (await this.runner.run(OPEN, [keys.account], [String(toMilli(credits))])) === 1;
  }

  async has(account: string): Promise<boolean> {
    const keys = accountKeys(this.prefix, account);
    return (await this.runner.call(() => this.runner.redis.exists(keys.account))) === 1;
  }

  /**
   * Holds `credits` under `holdId`. With `limits` (`ReserveContext.limits`, from a `RedisLimitStore` created with
   * `takenByReserve: true`) it also counts the request against the per-minute rate and takes a concurrency slot,
   * in the same script when the limit key is the account (the default `limits.key`: one round trip for the whole
   * admission), else in one script just before; a refused limit throws {@link LimitRefusedError} (the gateway's
   * 429) and nothing is held. The slot is given back by {@link settle} with the same `limits`.
   */
  async reserve(account: string, holdId: string, credits: number, limits?: ReserveLimits, budget?: BudgetWindow): Promise<boolean> {
    checkCredits('hold', credits);
    const keys = accountKeys(this.prefix, account);
    const milli = toMilliUp(credits);
    if (limits) return this.admit(account, keys, holdId, milli, limits, budget);
    const answer = await this.runner.run(RESERVE, [keys.account, keys.holds, keys.expiry, keys.settled(holdId), keys.budget], [holdId, String(milli), String(this.holdTtlMs), ...budgetArgs(budget)]);
    if (answer === -1) throw new Error('unknown key');
    if (answer === -2) throw new Error(`hold ${holdId} exists already`);
    if (Array.isArray(answer)) throw budgetRefusal(budget!, answer[1], answer[2], milli, answer[3]);
    if (answer !== 1) return false;
    this.held(holdId, account, milli, undefined);
    return true;
  }

  /**
   * Releases the hold and charges `credits`, keeping `record`, in one script; with `limits` (those `reserve` took)
   * the concurrency slot is given back in the same script. Idempotent by hold id.
   */
  async settle(account: string, holdId: string, model: string, credits: number, record?: GenerationDraft, limits?: ReserveLimits, budget?: BudgetWindow): Promise<Settlement> {
    checkCredits('charge', credits);
    const slot = limits?.taken && limits.maxConcurrent > 0 ? this.slotOf(account, limits) : undefined;
    const item: RedisPendingSettle = { account, holdId, model: model.slice(0, MAX_MODEL_CHARS), cost: toMilliUp(credits), record, slot, budget };
    return settleOrQueue(item, (pending) => this.write(pending), this.live, this.queue);
  }

  /** The rate, the slot and the hold: one script when the limit key is the account, else the limits' script first. */
  private async admit(account: string, keys: AccountKeys, holdId: string, milli: number, limits: ReserveLimits, budget: BudgetWindow | undefined): Promise<boolean> {
    const slot = this.slotOf(account, { ...limits, slot: holdId });
    const { bucket } = limitKeys(this.prefix, limits.key);
    const rate = String(limits.rateCounted ? 0 : limits.requestsPerMinute);
    const max = String(limits.maxConcurrent);
    const refuse = (code: number, value: number): never => {
      if (code === -3) throw new LimitRefusedError('rate', value);
      throw new LimitRefusedError('concurrency', 1_000);
    };
    if (slot.withAccount) {
      const [code, value, spent, held, agesOut] = (await this.runner.run(ADMIT, [keys.account, keys.holds, keys.expiry, keys.settled(holdId), bucket, slot.leases, keys.budget], [holdId, String(milli), String(this.holdTtlMs), rate, max, ...budgetArgs(budget)])) as [number, number, number?, number?, number?];
      if (code === -1) throw new Error('unknown key');
      if (code === -2) throw new Error(`hold ${holdId} exists already`);
      if (code !== -3 && value === 1) limits.rateCounted = true;
      if (code === -5) throw budgetRefusal(budget!, spent!, held!, milli, agesOut);
      // what the rate has left, for the x-ratelimit-*-requests headers
      if (code === 1 && spent !== undefined && spent >= 0) limits.rateState = { waitMs: 0, remaining: spent, resetMs: held ?? 0 };
      if (code === -3 || code === -4) refuse(code, value);
      if (code !== 1) return false;
      limits.taken = true;
      this.held(holdId, account, milli, limits.maxConcurrent > 0 ? slot : undefined);
      return true;
    }
    // the limit key groups accounts: its keys are in another hash slot, so its script goes first
    const [code, value] = (await this.runner.run(TAKE_LIMITS, [bucket, slot.leases], [rate, max, holdId, String(this.holdTtlMs)])) as [number, number];
    if (code !== -3 && value === 1) limits.rateCounted = true;
    if (code !== 1) refuse(code, value);
    const giveBack = async (): Promise<void> => {
      if (limits.maxConcurrent > 0) await this.runner.call(() => this.runner.redis.zrem(slot.leases, holdId));
    };
    let answer: unknown;
    try {
      answer = await this.runner.run(RESERVE, [keys.account, keys.holds, keys.expiry, keys.settled(holdId), keys.budget], [holdId, String(milli), String(this.holdTtlMs), ...budgetArgs(budget)]);
    } catch (err) {
      await giveBack().catch(() => undefined); // unreachable: the slot's lease, not renewed, expires by itself
      throw err;
    }
    if (answer !== 1) {
      await giveBack();
      if (Array.isArray(answer)) throw budgetRefusal(budget!, answer[1], answer[2], milli, answer[3]);
      if (answer === -1) throw new Error('unknown key');
      if (answer === -2) throw new Error(`hold ${holdId} exists already`);
      return false;
    }
    limits.taken = true;
    this.held(holdId, account, milli, limits.maxConcurrent > 0 ? slot : undefined);
    return true;
  }

  /** The slot `limits` names for `account`'s generation. */
  private slotOf(account: string, limits: ReserveLimits): Slot {
    return { leases: limitKeys(this.prefix, limits.key).leases, id: limits.slot, withAccount: tagOf(limits.key) === tagOf(account) };
  }

  private held(holdId: string, account: string, milli: number, slot: Slot | undefined): void {
    this.live.set(holdId, { account, milli, slot });
    this.renewer.start();
  }

  async balanceOf(account: string): Promise<Balance | undefined> {
    const keys = accountKeys(this.prefix, account);
    const answer = (await this.runner.run(BALANCE, [keys.account, keys.holds, keys.expiry, keys.models], [])) as [string, string, string, string[]] | null;
    if (!answer) return undefined;
    const [start, used, held, models] = answer;
    const byModel: Record<string, number> = Object.create(null) as Record<string, number>;
    for (let i = 0; i + 1 < models.length; i += 2) byModel[models[i]!] = Number(models[i + 1]) / 1000;
    return {
      balance: (Number(start) - Number(used) - Number(held)) / 1000,
      held: Number(held) / 1000,
      used: Number(used) / 1000,
      by_model: byModel,
    };
  }

  async findGeneration(account: string, id: string): Promise<GenerationRecord | undefined> {
    const keys = accountKeys(this.prefix, account);
    const direct = await this.readRecord(keys, id);
    if (direct) return direct;
    const latest = await this.runner.call(() => this.runner.redis.get(keys.providerId(id)));
    return latest === null ? undefined : this.readRecord(keys, latest);
  }

  /** The account's most recent generation records, newest first (at most `limit`, ≤ 1,000). */
  async listGenerations(account: string, limit = 100): Promise<GenerationRecord[]> {
    const keys = accountKeys(this.prefix, account);
    const ids = await this.runner.call(() => this.runner.redis.zrevrange(keys.generations, 0, Math.max(0, Math.min(1000, limit) - 1)));
    const records = await Promise.all(ids.map((id) => this.readRecord(keys, id)));
    return records.filter((r): r is GenerationRecord => r !== undefined);
  }

  /**
   * Tries to write the settlements still queued within `deadlineMs`, stops renewing holds, and resolves to the
   * number still pending (each logged at error level with its generation id and amount).
   */
  async drain(deadlineMs = 5_000): Promise<number> {
    const left = await this.queue.drain(deadlineMs);
    return left.length;
  }

  /** Stops timers and listeners (does not close the Redis client, which the host owns). */
  close(): void {
    this.renewer.stop();
    this.queue.close();
    this.runner.redis.off('ready', this.onReady);
  }

  private async readRecord(keys: AccountKeys, id: string): Promise<GenerationRecord | undefined> {
    const fields = await this.runner.call(() => this.runner.redis.hmget(keys.generation(id), 'record', 'charged', 'unpaid'));
    const [json, charged, unpaid] = fields;
    if (!json) return undefined;
    const draft = JSON.parse(json) as GenerationDraft;
    return { ...draft, credits_used: Number(charged) / 1000, unpaid: Number(unpaid) / 1000 };
  }

  /** One settle script call: the settlement, or 'unknown' for an account that does not exist. */
  private async write(item: RedisPendingSettle): Promise<Settlement | 'unknown'> {
    const keys = accountKeys(this.prefix, item.account);
    const generationId = item.record?.id ?? item.holdId;
    const answer = await this.runner.run(
      SETTLE,
      [
        keys.account,
        keys.holds,
        keys.expiry,
        keys.settled(item.holdId),
        keys.models,
        keys.generation(generationId),
        keys.providerId(item.record?.provider_id ?? ''),
        keys.generations,
        // a slot of the account's own hash slot is given back by the script; another one just after it
        item.slot?.withAccount ? item.slot.leases : keys.account,
        keys.budget,
      ],
      [
        item.holdId,
        String(item.cost),
        item.model,
        String(this.settledTtl),
        item.record ? JSON.stringify(item.record) : '',
        item.record?.provider_id ?? '',
        String(this.recordTtl),
        String(this.recordsPerAccount),
        generationId,
        item.slot?.withAccount ? item.slot.id : '',
        ...(item.budget
          ? [item.budget.id, String(item.budget.startsAt), String(Math.round(item.budget.soft * 1000)), String(item.budget.resetsAt), String(item.budget.rolling?.sliceMs ?? 0), String(item.budget.rolling?.spanMs ?? 0)]
          : ['', '0', '0', '0', '0', '0']),
      ],
    );
    if (item.slot && !item.slot.withAccount) {
      const { leases, id } = item.slot;
      await this.runner.call(() => this.runner.redis.zrem(leases, id)).catch(() => undefined); // else it expires unrenewed
    }
    this.live.delete(item.holdId);
    if (answer === 'unknown') return 'unknown';
    const [charged, unpaid, spent, crossed] = String(answer).split(',').map(Number) as [number, number, number?, number?];
    const settlement: Settlement = { charged: charged / 1000, unpaid: unpaid / 1000 };
    if (item.budget && spent !== undefined) settlement.budget = { id: item.budget.id, spent: spent / 1000, limit: item.budget.limit, softLimitCrossed: crossed === 1 };
    return settlement;
  }

  private attempt(item: RedisPendingSettle): Promise<AttemptResult> {
    return attemptSettle(item, (pending) => this.write(pending), this.logger, isScriptError);
  }


  private async renewHolds(): Promise<void> {
    if (this.live.size === 0 || !this.runner.ready) return;
    const byAccount = new Map<string, string[]>();
    for (const [holdId, { account }] of this.live) {
      const list = byAccount.get(account);
      if (list) list.push(holdId);
      else byAccount.set(account, [holdId]);
    }
    for (const [account, ids] of byAccount) {
      const keys = accountKeys(this.prefix, account);
      for (let i = 0; i < ids.length; i += 500) {
        await this.runner.run(RENEW_HOLDS, [keys.holds, keys.expiry], [String(this.holdTtlMs), ...ids.slice(i, i + 500)]);
      }
    }
    // the concurrency slots taken with holds live as long as their holds
    const slots = new Map<string, string[]>();
    for (const { slot } of this.live.values()) {
      if (!slot) continue;
      const list = slots.get(slot.leases);
      if (list) list.push(slot.id);
      else slots.set(slot.leases, [slot.id]);
    }
    for (const [leases, ids] of slots) {
      for (let i = 0; i < ids.length; i += 500) await this.runner.run(RENEW_LEASES, [leases], [String(this.holdTtlMs), ...ids.slice(i, i + 500)]);
    }
  }
}

/** A budget window's script arguments: its id, limit in thousandths, and rolling slice and span ms ('' and zeros for none). */
function budgetArgs(budget: BudgetWindow | undefined): [string, string, string, string] {
  return budget ? [budget.id, String(Math.round(budget.limit * 1000)), String(budget.rolling?.sliceMs ?? 0), String(budget.rolling?.spanMs ?? 0)] : ['', '0', '0', '0'];
}

/** The error a budget window's refusal throws (the gateway's 402 `budget_exceeded`); a rolling one says when its oldest spend ages out. */
function budgetRefusal(budget: BudgetWindow, spentMilli: unknown, heldMilli: unknown, milli: number, agesOutAt: unknown): BudgetExhaustedError {
  const ages = Number(agesOutAt);
  return new BudgetExhaustedError(budget, Number(spentMilli) / 1000, Number(heldMilli) / 1000, milli / 1000, budget.rolling && ages > 0 ? ages : undefined);
}
