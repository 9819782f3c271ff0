/**
 * `infery-stream/redis`: the shared stores for running several gateway instances on one Redis (ioredis ≥ 5, an
 * optional peer dependency). `RedisCreditStore` is the credit ledger with reserve-then-settle and generation
 * records; `RedisLimitStore` is `limits.store`.
 */
export { RedisCreditStore } from './credit-store';
export type { RedisCreditStoreOptions } from './credit-store';
export { RedisLimitStore } from './limit-store';
export type { RedisLimitStoreOptions } from './limit-store';
export { LedgerUnavailableError } from './runner';
export type { RedisClient } from './runner';
