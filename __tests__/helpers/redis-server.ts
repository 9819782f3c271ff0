import net from 'node:net';
import { Child, freePort, noticeOnce, onPath, removeTemporaryDir, temporaryDir } from './local-process';

/**
 * A Redis for tests: `REDIS_URL` when it is set (a server someone else runs: never started, stopped or
 * restarted here), else Debian's `redis-server` from PATH, started on a free 127.0.0.1 port in a fresh
 * temporary directory and stopped by `stopAllRedis()` (call it in afterAll).
 */
export interface RedisHandle {
  /** `redis://127.0.0.1:<port>` (or REDIS_URL). */
  url: string;
  port: number;
  /** False with REDIS_URL: stop/restart/kill are not ours to do, and throw. */
  restartable: boolean;
  /** Shuts the server down (SIGTERM: with `persistent` it writes its append-only file first) and waits for the exit. */
  stop(): Promise<void>;
  /** `stop()`, then starts it again on the same port and directory; resolves once it answers PING. */
  restart(): Promise<void>;
  /** SIGKILL (no shutdown), then waits for the exit. `restart()` brings it back. */
  kill(): Promise<void>;
  /** redis-server's log so far (for error messages). */
  output(): string;
}

export interface StartRedisOptions {
  /** Keep the data across stop/kill and restart: `--appendonly yes --appendfsync always`. Default: no persistence. */
  persistent?: boolean;
}

/** True when Redis tests can run: REDIS_URL is set or `redis-server` is on PATH. */
export function redisAvailable(): boolean {
  return Boolean(process.env.REDIS_URL) || onPath('redis-server');
}

/** True when tests may stop and restart Redis themselves: no REDIS_URL and `redis-server` on PATH. */
export function redisRestartable(): boolean {
  return !process.env.REDIS_URL && onPath('redis-server');
}

const SKIP_NOTICE = 'Redis tests skipped: no REDIS_URL and no redis-server on PATH (install the Debian package redis-server).';
const RESTART_NOTICE = 'Redis restart tests skipped: REDIS_URL points at a server these tests do not run, so they cannot stop or restart it.';

/** `describe` when Redis is available, else `describe.skip` with one plain notice saying why. */
export function describeRedis(name: string, fn: () => void): void {
  if (redisAvailable()) return describe(name, fn);
  noticeOnce(SKIP_NOTICE);
  describe.skip(name, fn);
}

/** `it` when the tests run their own redis-server (so they can stop and restart it), else `it.skip` with a notice. */
export function itRestartingRedis(name: string, fn: () => Promise<void>, timeoutMs?: number): void {
  if (redisRestartable()) return it(name, fn, timeoutMs);
  if (redisAvailable()) noticeOnce(RESTART_NOTICE);
  it.skip(name, fn, timeoutMs);
}

const started = new Set<{ dir: string; current: () => Child | undefined }>();

/** Starts (or, with REDIS_URL, borrows) a Redis; resolves once it answers PING. */
export async function startRedis(opts: StartRedisOptions = {}): Promise<RedisHandle> {
  const external = process.env.REDIS_URL;
  if (external) {
    const notOurs = async (): Promise<void> => {
      throw new Error('REDIS_URL is set: this Redis is not run by the tests, so it cannot be stopped or restarted (use itRestartingRedis)');
    };
    const parsed = new URL(external);
    return { url: external, port: Number(parsed.port || 6379), restartable: false, stop: notOurs, restart: notOurs, kill: notOurs, output: () => `(REDIS_URL ${parsed.host})` };
  }
  if (!onPath('redis-server')) throw new Error(SKIP_NOTICE);

  const dir = temporaryDir('infery-redis-');
  const port = await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir, '--daemonize', 'no', '--logfile', ''];
  args.push(...(opts.persistent ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']));
  let child: Child | undefined;
  let log = '';
  const entry = { dir, current: () => child };
  started.add(entry);

  const launch = async (): Promise<void> => {
    if (child) log += child.output();
    child = new Child('redis-server', 'redis-server', args, { cwd: dir });
    await waitForPing(port, 10_000, child);
  };
  const stop = async (): Promise<void> => {
    await child?.stop('SIGTERM', 10_000);
  };
  await launch();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    restartable: true,
    stop,
    restart: async () => {
      await stop();
      await launch();
    },
    kill: async () => {
      await child?.kill();
    },
    output: () => log + (child?.output() ?? ''),
  };
}

/** Stops every redis-server this file started and removes their directories (call in afterAll). */
export async function stopAllRedis(): Promise<void> {
  await Promise.all(
    [...started].map(async (entry) => {
      await entry.current()?.stop('SIGTERM', 5_000);
      removeTemporaryDir(entry.dir);
      started.delete(entry);
    }),
  );
}

/** Resolves once the server on `port` answers `PING` with `+PONG` (not `-LOADING`); throws after `timeoutMs`. */
async function waitForPing(port: number, timeoutMs: number, child: Child): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await ping(port)) return;
    if (!child.running) throw new Error(`redis-server exited before it answered PING on port ${port}\n${child.output()}`);
    if (Date.now() > until) throw new Error(`redis-server did not answer PING on port ${port} within ${timeoutMs} ms\n${child.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let reply = '';
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (data) => {
      reply += data.toString('latin1');
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
    socket.once('error', () => done(false));
  });
}
