/**
 * `infery-stream/postgres`: the credit ledger of record in PostgreSQL (node-postgres `pg` ≥ 8, an optional peer
 * dependency): `PostgresCreditStore`, with its schema's migrations (`migrate()`). Pair it with
 * `RedisLimitStore` (`infery-stream/redis`) for the limits of several instances, or the in-memory limit store
 * for one.
 */
export { PostgresCreditStore } from './credit-store';
export type { PostgresCreditStoreOptions, PgQueryable } from './credit-store';
export { MIGRATIONS } from './schema';
export { LedgerUnavailableError } from '../../ledgers/stores/ledger-unavailable';
