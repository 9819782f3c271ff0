import type { BudgetWindow, Logger, ReserveLimits } from '../../contract/hooks';
import { BudgetExhaustedError } from '../../ledgers/stores/budget';
import { checkCredits, toMilli, toMilliUp, type Balance, type CreditStore, type GenerationDraft, type GenerationRecord, type Settlement } from '../../ledgers/stores/credit-store';
import { LedgerUnavailableError } from '../../ledgers/stores/ledger-unavailable';
import { Renewer } from '../../ledgers/stores/renewer';
import { attemptSettle, MAX_MODEL_CHARS, SettleQueue, settleOrQueue, type AttemptResult, type PendingSettle } from '../../ledgers/stores/settle-queue';
import { MIGRATIONS } from './schema';

/**
 * What the store needs of a PostgreSQL client: `query` (a `pg.Pool`, the usual one; node-postgres ≥ 8). Every
 * operation is one statement — a call of one of the schema's functions, which runs as one transaction with the
 * account's row locked — so a pool of connections serves many instances without a lost update.
 */
export interface PgQueryable {
  query(text: string, values?: unknown[]): Promise<{ rows: Array<Record<string, unknown>>; rowCount?: number | null }>;
  connect?(): Promise<{ query: PgQueryable['query']; release(err?: Error | boolean): void }>;
}

/** Options of {@link PostgresCreditStore}. */
export interface PostgresCreditStoreOptions {
  /** The schema the tables live in (created by `migrate()`). Default: `infery`. */
  schema?: string;
  /**
   * How long a hold lives without renewal (ms). This process renews its holds every third of it while their
   * generations run; an instance killed mid-stream leaves holds that expire after it. Default: 120,000.
   */
  holdTtlMs?: number;
  /** How many settlements may wait in this process while PostgreSQL is unreachable. Default: 10,000. */
  maxPendingSettles?: number;
  /** Where the store logs queued, retried and lost settlements (pino-compatible). */
  logger?: Logger;
}


/**
 * SQLSTATE classes and codes that mean the server cannot be used right now (connection exceptions, shutting
 * down, too many connections, a read-only standby): unavailable, not a bug. Everything else with a SQLSTATE is
 * the statement's own error.
 */
function isUnavailable(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) {
    return code.startsWith('08') || code.startsWith('57P') || code === '53300' || code === '25006' || code === '40001' || code === '40P01' || code === '55P03';
  }
  // no SQLSTATE: the driver's own (ECONNREFUSED, ETIMEDOUT, "Connection terminated", a pool that timed out)
  return true;
}

/** A quoted SQL identifier (the schema name). */
function ident(name: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(name)) throw new TypeError(`PostgresCreditStore: schema must be a plain identifier (letters, digits, _), got ${JSON.stringify(name)}`);
  return `"${name}"`;
}

/**
 * The credit ledger in PostgreSQL (`infery-stream/postgres`): the same contract as the memory and Redis stores
 * — open an account (never reset), balance, reserve a hold with an expiry, settle idempotently by generation id
 * (a retried settle never charges twice), release expired holds, generation records by id and by account (paged,
 * newest first) — with every operation one transaction that locks the account's row, amounts in exact integers
 * (thousandths of a credit) and records in `numeric`. The schema (`migrate()`) is documented in the README for
 * hosts that join it with their own tables.
 *
 * PostgreSQL unreachable: `has`, `reserve` and `balanceOf` throw {@link LedgerUnavailableError} (503
 * `ledger_unavailable`: the gateway fails closed); `settle` — a generation that already ran — queues the
 * settlement in this process (bounded) and answers it `pending`, with at most its hold as the charge; the queue is
 * retried until written. A settlement that is answered otherwise was committed before the answer.
 */
export class PostgresCreditStore implements CreditStore {
  private readonly s: string;
  private readonly holdTtlMs: number;
  private readonly logger: Logger | undefined;
  /** Holds this process owns, by hold id: renewed until settled. */
  private readonly live = new Map<string, { account: string; milli: number }>();
  private readonly renewer: Renewer;
  private readonly queue: SettleQueue<PendingSettle>;

  constructor(
    private readonly db: PgQueryable,
    options: PostgresCreditStoreOptions = {},
  ) {
    if (!db || typeof db.query !== 'function') throw new TypeError('PostgresCreditStore needs a PostgreSQL client with query() (new pg.Pool({ connectionString }))');
    const whole = (name: keyof PostgresCreditStoreOptions, fallback: number, min: number): number => {
      const value = options[name] ?? fallback;
      if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) throw new RangeError(`PostgresCreditStore: ${name} must be a whole number ≥ ${min}, got ${String(value)}`);
      return value;
    };
    this.s = ident(options.schema ?? 'infery');
    this.holdTtlMs = whole('holdTtlMs', 120_000, 1_000);
    this.logger = options.logger;
    this.renewer = new Renewer(Math.max(250, Math.floor(this.holdTtlMs / 3)), () => this.renewHolds(), this.logger, 'PostgreSQL credit holds');
    this.queue = new SettleQueue<PendingSettle>((item) => this.attempt(item), {
      max: whole('maxPendingSettles', 10_000, 1),
      retryMs: 250,
      maxRetryMs: 5_000,
      logger: this.logger,
      describe: (item) => ({ generationId: item.holdId, model: item.model, credits: item.cost / 1000 }),
    });
  }

  /**
   * Creates the schema and applies the migrations not applied yet, in order, each in one transaction (a session
   * advisory lock keeps two instances starting at once from applying the same one). Resolves the versions applied.
   */
  async migrate(): Promise<number[]> {
    const client = this.db.connect ? await this.db.connect() : undefined;
    const q = client ?? this.db;
    const applied: number[] = [];
    try {
      await q.query(`SELECT pg_advisory_lock(hashtext('infery-stream migrate ' || $1))`, [this.s]);
      try {
        await q.query(`CREATE SCHEMA IF NOT EXISTS ${this.s}`);
        await q.query(`CREATE TABLE IF NOT EXISTS ${this.s}.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
        const done = new Set((await q.query(`SELECT version FROM ${this.s}.schema_migrations`)).rows.map((r) => Number(r.version)));
        for (const migration of MIGRATIONS) {
          if (done.has(migration.version)) continue;
          // one simple query: the migration and its row in one transaction, which a second instance applying the
          // same one at the same moment (past the advisory lock, on a server that shares sessions) finds applied
          const guard = `DO $$ BEGIN IF EXISTS (SELECT 1 FROM ${this.s}.schema_migrations WHERE version = ${migration.version}) THEN RAISE EXCEPTION 'infery-migration-applied'; END IF; END $$;`;
          const record = `INSERT INTO ${this.s}.schema_migrations (version, name) VALUES (${migration.version}, '${migration.name.replace(/'/g, "''")}');`;
          try {
            await q.query(`BEGIN; LOCK TABLE ${this.s}.schema_migrations IN EXCLUSIVE MODE; ${guard} ${migration.sql.split('{s}').join(this.s)}; ${record} COMMIT;`);
            applied.push(migration.version);
          } catch (err) {
            await q.query('ROLLBACK').catch(() => undefined);
            if (!(err instanceof Error && err.message.includes('infery-migration-applied'))) throw err;
          }
        }
      } finally {
        await q.query(`SELECT pg_advisory_unlock(hashtext('infery-stream migrate ' || $1))`, [this.s]).catch(() => undefined);
      }
    } finally {
      client?.release();
    }
    return applied;
  }

  /** Settlements waiting in this process for PostgreSQL to come back. */
  get pendingSettles(): number {
    return this.queue.depth;
  }

  /** Creates `account` with `credits` unless it exists; resolves whether it was created (an existing one is never reset). */
  async open(account: string, credits: number): Promise<boolean> {
    checkCredits('start an account with', credits);
    const { rowCount } = await this.run(`INSERT INTO ${this.s}.accounts (account, start_milli) VALUES ($1, $2) ON CONFLICT (account) DO NOTHING`, [account, toMilli(credits)]);
    return rowCount === 1;
  }

  async has(account: string): Promise<boolean> {
    return (await this.run(`SELECT 1 FROM ${this.s}.accounts WHERE account = $1`, [account])).rows.length === 1;
  }

  /**
   * Holds `credits` under `holdId` (one transaction, the account's row locked); false when the balance does not
   * cover them. With a `budget` window, throws `BudgetExhaustedError` when the window's spend, every hold of the
   * account in flight and this one would pass its limit. The limits of `ReserveContext.limits` are not taken here
   * (`RedisLimitStore` or the in-memory one takes them).
   */
  async reserve(account: string, holdId: string, credits: number, _limits?: ReserveLimits, budget?: BudgetWindow): Promise<boolean> {
    checkCredits('hold', credits);
    const milli = toMilliUp(credits);
    const { rows } = await this.run(`SELECT code, spent, held, ages_out FROM ${this.s}.reserve($1, $2, $3, $4, $5, $6, $7, $8)`, [
      account,
      holdId,
      milli,
      this.holdTtlMs,
      budget?.id ?? '',
      Math.round((budget?.limit ?? 0) * 1000),
      budget?.rolling?.sliceMs ?? 0,
      budget?.rolling?.spanMs ?? 0,
    ]);
    const row = rows[0] ?? {};
    const code = Number(row.code);
    if (code === -1) throw new Error('unknown key');
    if (code === -2) throw new Error(`hold ${holdId} exists already`);
    if (code === -5) {
      const ages = Number(row.ages_out);
      throw new BudgetExhaustedError(budget!, Number(row.spent) / 1000, Number(row.held) / 1000, milli / 1000, budget!.rolling && ages > 0 ? ages : undefined);
    }
    if (code !== 1) return false;
    this.live.set(holdId, { account, milli });
    this.renewer.start();
    return true;
  }

  /**
   * Releases the hold and charges `credits` (at most the hold plus what is available), adds the charge to the
   * budget window, and writes `record` — one transaction, committed before this resolves. Idempotent by hold id.
   * PostgreSQL unreachable: queued here and answered `pending` (at most the hold as the charge).
   */
  async settle(account: string, holdId: string, model: string, credits: number, record?: GenerationDraft, _limits?: ReserveLimits, budget?: BudgetWindow): Promise<Settlement> {
    checkCredits('charge', credits);
    const item: PendingSettle = { account, holdId, model: model.slice(0, MAX_MODEL_CHARS), cost: toMilliUp(credits), record, budget };
    return settleOrQueue(item, (pending) => this.write(pending), this.live, this.queue);
  }

  async balanceOf(account: string): Promise<Balance | undefined> {
    const { rows } = await this.run(
      `SELECT a.start_milli, a.used_milli,
              coalesce((SELECT sum(h.milli) FROM ${this.s}.holds h WHERE h.account = a.account AND h.expires_at > clock_timestamp()), 0) AS held_milli,
              coalesce((SELECT json_object_agg(m.model, m.used_milli) FROM ${this.s}.usage_by_model m WHERE m.account = a.account), '{}') AS models
         FROM ${this.s}.accounts a WHERE a.account = $1`,
      [account],
    );
    const row = rows[0];
    if (!row) return undefined;
    const byModel: Record<string, number> = Object.create(null) as Record<string, number>;
    for (const [model, milli] of Object.entries(row.models as Record<string, number | string>)) byModel[model] = Number(milli) / 1000;
    const start = Number(row.start_milli);
    const used = Number(row.used_milli);
    const held = Number(row.held_milli);
    return { balance: (start - used - held) / 1000, held: held / 1000, used: used / 1000, by_model: byModel };
  }

  async findGeneration(account: string, id: string): Promise<GenerationRecord | undefined> {
    // a gateway id, else the account's latest generation with that provider id
    const { rows } = await this.run(
      `SELECT * FROM ${this.s}.generations WHERE account = $1 AND (id = $2 OR provider_id = $2) ORDER BY (id = $2) DESC, settled_at DESC LIMIT 1`,
      [account, id],
    );
    return rows[0] ? recordOf(rows[0]) : undefined;
  }

  /**
   * The account's generation records, newest first: at most `limit` (≤ 1,000), settled before `before` (the
   * `settled_at` of the last one of the previous page) when given.
   */
  async listGenerations(account: string, limit = 100, before?: string): Promise<GenerationRecord[]> {
    const n = Math.max(1, Math.min(1000, Math.floor(limit)));
    const { rows } = before
      ? await this.run(`SELECT * FROM ${this.s}.generations WHERE account = $1 AND settled_at < $2 ORDER BY settled_at DESC, id DESC LIMIT $3`, [account, before, n])
      : await this.run(`SELECT * FROM ${this.s}.generations WHERE account = $1 ORDER BY settled_at DESC, id DESC LIMIT $2`, [account, n]);
    return rows.map(recordOf);
  }

  /**
   * Tries to write the settlements still queued within `deadlineMs`, stops renewing holds, and resolves to the
   * number still pending (each logged at error level with its generation id and amount).
   */
  async drain(deadlineMs = 5_000): Promise<number> {
    return (await this.queue.drain(deadlineMs)).length;
  }

  /** Tries the queued settlements now (call when the connection is back; they are retried on their own too). */
  retryPending(): void {
    this.queue.kick();
  }

  /** Stops timers (does not end the pool, which the host owns). */
  close(): void {
    this.renewer.stop();
    this.queue.close();
  }

  /** One statement; a server that cannot be used is {@link LedgerUnavailableError}. */
  private async run(text: string, values: unknown[]): Promise<{ rows: Array<Record<string, unknown>>; rowCount?: number | null }> {
    try {
      return await this.db.query(text, values);
    } catch (err) {
      // the client is told the ledger is unreachable, never where it lives (the cause stays on the error, for logs)
      if (isUnavailable(err)) throw new LedgerUnavailableError('PostgreSQL unreachable', err);
      throw err;
    }
  }

  /** One settle call: the settlement, or 'unknown' for an account that does not exist. */
  private async write(item: PendingSettle): Promise<Settlement | 'unknown'> {
    const { budget } = item;
    const { rows } = await this.run(`SELECT code, charged, unpaid, spent, crossed FROM ${this.s}.settle($1, $2, $3, $4, $5, $6, $7, $8, $9)`, [
      item.account,
      item.holdId,
      item.model,
      item.cost,
      item.record ? JSON.stringify(item.record) : null,
      budget?.id ?? '',
      Math.round((budget?.soft ?? 0) * 1000),
      budget?.rolling?.sliceMs ?? 0,
      budget?.rolling?.spanMs ?? 0,
    ]);
    this.live.delete(item.holdId);
    const row = rows[0] ?? {};
    if (Number(row.code) === -1) return 'unknown';
    const settlement: Settlement = { charged: Number(row.charged) / 1000, unpaid: Number(row.unpaid) / 1000 };
    if (budget && Number(row.code) === 1) settlement.budget = { id: budget.id, spent: Number(row.spent) / 1000, limit: budget.limit, softLimitCrossed: row.crossed === true };
    return settlement;
  }

  private attempt(item: PendingSettle): Promise<AttemptResult> {
    return attemptSettle(item, (pending) => this.write(pending), this.logger, () => true);
  }


  private async renewHolds(): Promise<void> {
    if (this.live.size === 0) return;
    const ids = [...this.live.keys()];
    for (let i = 0; i < ids.length; i += 1000) {
      await this.run(`UPDATE ${this.s}.holds SET expires_at = clock_timestamp() + $2 * interval '1 millisecond' WHERE hold_id = ANY($1::text[])`, [ids.slice(i, i + 1000), this.holdTtlMs]);
    }
  }
}

/** A generations row as a {@link GenerationRecord}. */
function recordOf(row: Record<string, unknown>): GenerationRecord {
  const iso = (v: unknown): string => (v instanceof Date ? v.toISOString() : new Date(String(v)).toISOString());
  return {
    id: String(row.id),
    provider_id: (row.provider_id as string | null) ?? null,
    endpoint: String(row.endpoint),
    model: String(row.model),
    upstream: (row.upstream as string | null) ?? null,
    failed_upstreams: (row.failed_upstreams as GenerationRecord['failed_upstreams']) ?? [],
    stream: row.stream === true,
    outcome: row.outcome as GenerationRecord['outcome'],
    usage: row.usage as GenerationRecord['usage'],
    credits_used: Number(row.credits_used),
    unpaid: Number(row.unpaid),
    cancelled: row.cancelled === true,
    finish_reason: (row.finish_reason as string | null) ?? null,
    error: (row.error as string | null) ?? null,
    time_to_first_token_ms: row.time_to_first_token_ms === null || row.time_to_first_token_ms === undefined ? null : Number(row.time_to_first_token_ms),
    duration_ms: Number(row.duration_ms),
    created_at: iso(row.created_at),
  };
}
