import type { Cluster, Redis } from 'ioredis';
import { LedgerUnavailableError } from '../../ledgers/stores/ledger-unavailable';
import type { Script } from './scripts';

/** An ioredis client: a `Redis` connection or a `Cluster`. */
export type RedisClient = Redis | Cluster;

export { LedgerUnavailableError };

/**
 * Runs the stores' scripts on one client: fails at once when the client is not connected (whatever its offline
 * queue settings), bounds every call by `timeoutMs`, and turns connection failures into
 * {@link LedgerUnavailableError}. A script error (a bug, or data someone else wrote under our keys) is thrown
 * as is.
 */
export class ScriptRunner {
  constructor(
    readonly redis: RedisClient,
    private readonly timeoutMs: number,
  ) {}

  /** Whether the client is connected and ready for commands. */
  get ready(): boolean {
    return this.redis.status === 'ready';
  }

  async run(script: Script, keys: string[], args: Array<string | number>): Promise<unknown> {
    return this.call(async () => {
      try {
        return await this.redis.evalsha(script.sha, keys.length, ...keys, ...args);
      } catch (err) {
        if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
        return await this.redis.eval(script.source, keys.length, ...keys, ...args);
      }
    });
  }

  /** Runs one plain command (`fn`) under the same rules. */
  async call<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.ready) throw new LedgerUnavailableError(`Redis is ${this.redis.status}`);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new LedgerUnavailableError(`no answer from Redis within ${this.timeoutMs} ms`)), this.timeoutMs);
    });
    const work = fn();
    // a late answer or failure after the deadline must not become an unhandled rejection
    work.catch(() => undefined);
    try {
      return await Promise.race([work, deadline]);
    } catch (err) {
      if (err instanceof LedgerUnavailableError || isScriptError(err)) throw err;
      throw new LedgerUnavailableError(describe(err), err);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Whether Redis answered with an error of the script itself (not a connection or availability problem). */
export function isScriptError(err: unknown): boolean {
  if (!(err instanceof Error) || err.name !== 'ReplyError') return false;
  // LOADING (restarting), BUSY (another script), MASTERDOWN, CLUSTERDOWN, TRYAGAIN, READONLY: Redis is not usable yet
  return !/^(LOADING|BUSY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|READONLY|NOREPLICAS)\b/.test(err.message);
}

function describe(err: unknown): string {
  if (err instanceof Error) return err.message.split('\n')[0]!.slice(0, 120);
  return String(err).slice(0, 120);
}
