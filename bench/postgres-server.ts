import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';

/**
 * A PostgreSQL for the tests and the bench, on a loopback port: Debian's server (initdb + postgres in a temporary
 * directory, as the `postgres` user when run as root), else PGlite from npm in a child process.
 */

/** A PostgreSQL the tests and the bench run: Debian's server (initdb + postgres in a temporary directory), or PGlite behind a socket. */
export interface PostgresHandle {
  /** `postgres://postgres@127.0.0.1:<port>/postgres` */
  url: string;
  /** `server`: a real PostgreSQL; `embedded`: PGlite (WASM) in this process, speaking the wire protocol. */
  kind: 'server' | 'embedded';
  /** Stops it (and removes its directory). */
  stop(): Promise<void>;
  /** A real server only: stops it and starts it again on the same port and data. */
  restart?(): Promise<void>;
  /** A real server only: stops it (kept for `start`). */
  halt?(): Promise<void>;
  start?(): Promise<void>;
}

/** The directory of Debian's PostgreSQL binaries (the newest version), or undefined. */
export function postgresBinDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  try {
    const versions = fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
    return versions[0] ? path.join(root, versions[0], 'bin') : undefined;
  } catch {
    return undefined;
  }
}

let noticed = false;
/** Says once, plainly, which PostgreSQL the SQL suites run on. */
export function noticePostgres(kind: PostgresHandle['kind']): void {
  if (noticed) return;
  noticed = true;
  process.stderr.write(
    kind === 'server'
      ? 'PostgreSQL suites: on a real PostgreSQL server (Debian\'s, started by the tests on a loopback port)\n'
      : 'PostgreSQL suites: no PostgreSQL server here (install the Debian package postgresql), so they run on the embedded PGlite instead\n',
  );
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

async function waitReady(url: string, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1_000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query('SELECT 1');
      await client.end();
      return;
    } catch (err) {
      await client.end().catch(() => undefined);
      if (Date.now() > until) throw new Error(`PostgreSQL did not accept connections within ${timeoutMs} ms: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Runs Debian's PostgreSQL in a fresh temporary directory on a free loopback port (as the `postgres` user when root). */
async function startServer(bin: string): Promise<PostgresHandle> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'infery-pg-'));
  const data = path.join(dir, 'data');
  let ids: { uid: number; gid: number } | undefined;
  if (process.getuid?.() === 0) {
    // PostgreSQL refuses to run as root
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    fs.chownSync(dir, uid, gid);
    ids = { uid, gid };
  }
  execFileSync(path.join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync', '--no-instructions'], { stdio: 'ignore', ...ids });
  const port = await freePort();
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  let child: ChildProcess | undefined;
  const start = async (): Promise<void> => {
    child = spawn(path.join(bin, 'postgres'), ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'max_connections=300'], { stdio: 'ignore', ...ids });
    await waitReady(url);
  };
  const halt = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      c.kill('SIGINT'); // fast shutdown: open connections are ended
    });
  };
  await start();
  return {
    url,
    kind: 'server',
    start,
    halt,
    restart: async () => {
      await halt();
      await start();
    },
    stop: async () => {
      await halt();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** PGlite (PostgreSQL in WASM, from npm) behind a wire-protocol socket on a loopback port, in a child process. */
async function startEmbedded(): Promise<PostgresHandle> {
  // bench/pglite-server.mjs, from the sources (the tests) or from dist/bench (the built bench)
  const script = [path.join(__dirname, 'pglite-server.mjs'), path.resolve(__dirname, '..', '..', 'bench', 'pglite-server.mjs')].find((file) => fs.existsSync(file))!;
  const child = spawn(process.execPath, [script, '0'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('the embedded PostgreSQL (PGlite) did not start within 30 s')), 30_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = /ready (\d+)/.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the embedded PostgreSQL (PGlite) exited with ${String(code)}`));
    });
  });
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  await waitReady(url);
  return {
    url,
    kind: 'embedded',
    stop: async () => {
      if (child.exitCode !== null) return;
      await new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      });
    },
  };
}

/** A PostgreSQL: the real server when Debian's is installed, else the embedded one (`quiet`: without the notice). */
export async function startPostgres(quiet = false): Promise<PostgresHandle> {
  const bin = postgresBinDir();
  const handle = bin ? await startServer(bin) : await startEmbedded();
  if (!quiet) noticePostgres(handle.kind);
  return handle;
}

/** Whether a real server runs the suites (the tests that stop and restart it need one). */
export function realServerOnly(): boolean {
  return postgresBinDir() !== undefined;
}
