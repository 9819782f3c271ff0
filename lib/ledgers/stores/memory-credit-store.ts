import { checkCredits, toMilli, toMilliUp, type Balance, type CreditStore, type GenerationDraft, type GenerationRecord, type Settlement } from './credit-store';
import type { BudgetWindow, ReserveLimits } from '../../contract/hooks';
import { MemoryBudgets } from './budget';
import { MemoryGenerationLog } from './memory-generations';

interface Account {
  start: number;
  used: number;
  held: number;
  byModel: Map<string, number>;
}

/** Options of {@link MemoryCreditStore}. */
export interface MemoryCreditStoreOptions {
  /** How many settlements are remembered for idempotency (oldest forgotten first). Default: 100,000. */
  rememberSettlements?: number;
  /** How many generation records are kept (oldest forgotten first). Default: 10,000. */
  records?: number;
}

/**
 * The in-memory {@link CreditStore}: one process's ledger with reserve-then-settle. Amounts are integers in
 * thousandths of a credit, so `balance + held + used` equals the starting credits exactly at every moment, `used`
 * equals the sum of `by_model`, and `balance` never goes below zero: a hold is only granted from what is
 * available, and a settlement never takes more than the hold plus what is available. Holds live as long as the
 * process; several instances need a shared store (`RedisCreditStore` from `infery-stream/redis`).
 */
export class MemoryCreditStore implements CreditStore {
  private readonly accounts = new Map<string, Account>();
  private readonly holds = new Map<string, { account: string; milli: number }>();
  /** Recent settlements by hold id, so a retried settle returns the first result instead of charging again. */
  private readonly settled = new Map<string, Settlement>();
  private readonly generations: MemoryGenerationLog;
  private readonly rememberSettlements: number;
  private readonly budgets = new MemoryBudgets();

  /** `startingCredits`: account → credits. */
  constructor(startingCredits: Record<string, number> = {}, options: MemoryCreditStoreOptions = {}) {
    this.rememberSettlements = options.rememberSettlements ?? 100_000;
    this.generations = new MemoryGenerationLog(options.records ?? 10_000);
    for (const [account, credits] of Object.entries(startingCredits)) this.open(account, credits);
  }

  /** Creates `account` with `credits` unless it exists; returns whether it was created (an existing one is never reset). */
  open(account: string, credits: number): boolean {
    checkCredits('start an account with', credits);
    if (this.accounts.has(account)) return false;
    this.accounts.set(account, { start: toMilli(credits), used: 0, held: 0, byModel: new Map() });
    return true;
  }

  has(account: string): boolean {
    return this.accounts.has(account);
  }

  /**
   * Holds `credits`; `false` when the balance does not cover them. With a `budget` window, throws
   * `BudgetExhaustedError` when the window's spend, every hold in flight and this one would pass its limit.
   */
  reserve(account: string, holdId: string, credits: number, _limits?: ReserveLimits, budget?: BudgetWindow): boolean {
    const acct = this.accounts.get(account);
    if (!acct) throw new Error('unknown key');
    checkCredits('hold', credits);
    if (this.holds.has(holdId) || this.settled.has(holdId)) throw new Error(`hold ${holdId} exists already`);
    const milli = toMilliUp(credits);
    if (milli > acct.start - acct.used - acct.held) return false;
    if (budget) this.budgets.check(account, budget, acct.held, milli);
    acct.held += milli;
    this.holds.set(holdId, { account, milli });
    return true;
  }

  /** Settles the hold (see {@link CreditStore.settle}); with the `budget` window of its reserve, adds the charge to its spend. */
  settle(account: string, holdId: string, model: string, credits: number, record?: GenerationDraft, _limits?: ReserveLimits, budget?: BudgetWindow): Settlement {
    const done = this.settled.get(holdId);
    if (done) return done;
    const acct = this.accounts.get(account);
    if (!acct) throw new Error('unknown key');
    checkCredits('charge', credits);
    const hold = this.holds.get(holdId);
    if (hold && hold.account !== account) throw new Error(`hold ${holdId} belongs to another key`);
    const held = hold?.milli ?? 0;
    this.holds.delete(holdId);
    acct.held -= held;
    const cost = toMilliUp(credits);
    const charge = Math.min(cost, acct.start - acct.used - acct.held);
    acct.used += charge;
    if (charge > 0) acct.byModel.set(model, (acct.byModel.get(model) ?? 0) + charge);
    const result: Settlement = { charged: charge / 1000, unpaid: (cost - charge) / 1000 };
    if (budget) result.budget = this.budgets.charge(account, budget, charge);
    this.settled.set(holdId, result);
    if (this.settled.size > this.rememberSettlements) {
      const oldest = this.settled.keys().next().value;
      if (oldest !== undefined) this.settled.delete(oldest);
    }
    if (record) this.generations.record(account, record, result);
    return result;
  }

  balanceOf(account: string): Balance | undefined {
    const acct = this.accounts.get(account);
    if (!acct) return undefined;
    const byModel: Record<string, number> = Object.create(null) as Record<string, number>;
    for (const [model, milli] of acct.byModel) byModel[model] = milli / 1000;
    return {
      balance: (acct.start - acct.used - acct.held) / 1000,
      held: acct.held / 1000,
      used: acct.used / 1000,
      by_model: byModel,
    };
  }

  findGeneration(account: string, id: string): GenerationRecord | undefined {
    return this.generations.find(account, id);
  }
}
