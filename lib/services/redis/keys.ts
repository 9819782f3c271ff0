import { createHash } from 'node:crypto';

/** A short, stable, non-reversible tag of an account id or a provider id: API keys used as ids never reach Redis. */
export function tagOf(value: string): string {
  return createHash('sha256').update(value).digest('hex').slice(0, 32);
}

/**
 * The Redis keys of one account. All of them share the hash tag `{a:<tag>}`, so every script touches one slot
 * (Redis Cluster runs it on one node) and one account's data can be found, or deleted, by its prefix.
 */
export interface AccountKeys {
  /** HASH start, used, held (integer thousandths of a credit), expired (holds released by expiry). */
  account: string;
  /** HASH hold id → thousandths held. */
  holds: string;
  /** ZSET hold id → expiry time (ms, Redis clock). */
  expiry: string;
  /** HASH model → thousandths used. */
  models: string;
  /** ZSET gateway id → settle time (ms): the account's recent generation records. */
  generations: string;
  /** STRING `charged,unpaid` of a settled hold: a retried settle answers this. */
  settled(holdId: string): string;
  /** HASH record (JSON), charged, unpaid: one generation's record. */
  generation(id: string): string;
  /** STRING the latest gateway id the account saw with this provider id. */
  providerId(id: string): string;
  /** HASH id, starts, spent (thousandths): the account's latest budget window. */
  budget: string;
}

export function accountKeys(prefix: string, account: string): AccountKeys {
  const base = `${prefix}{a:${tagOf(account)}}`;
  return {
    account: base,
    holds: `${base}:holds`,
    expiry: `${base}:expiry`,
    models: `${base}:models`,
    generations: `${base}:generations`,
    settled: (holdId) => `${base}:settled:${holdId}`,
    generation: (id) => `${base}:generation:${id}`,
    providerId: (id) => `${base}:provider-id:${tagOf(id)}`,
    budget: `${base}:budget`,
  };
}

/**
 * The Redis keys of one limit key: concurrency leases and the per-minute bucket. They share the hash tag of the
 * account of the same id (`{a:<tag>}`), so when the limit key is the account (the default `limits.key`) one
 * script can take the rate, the slot and the hold together and Redis Cluster still runs it on one node.
 */
export function limitKeys(prefix: string, key: string): { leases: string; bucket: string; tokenBucket: string } {
  const base = `${prefix}{a:${tagOf(key)}}:limit`;
  return { leases: `${base}:leases`, bucket: `${base}:rpm`, tokenBucket: `${base}:tpm` };
}
