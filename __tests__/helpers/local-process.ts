import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/**
 * What the real-server helpers (redis-server, nginx, the example app as a process) share: free loopback ports,
 * finding a program on PATH, waiting with a deadline, and child processes that are always stopped.
 */

/** True when `program` is an executable file in one of PATH's directories. */
export function onPath(program: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    try {
      fs.accessSync(path.join(dir, program), fs.constants.X_OK);
      return true;
    } catch {
      // not here
    }
  }
  return false;
}

/** A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Resolves once `127.0.0.1:port` accepts a TCP connection; throws after `timeoutMs`. */
export async function waitForPort(port: number, timeoutMs: number, what: string, alive: () => boolean = () => true): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ port, host: '127.0.0.1' });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    if (!alive()) throw new Error(`${what} exited before it accepted connections on port ${port}`);
    if (Date.now() > until) throw new Error(`${what} did not accept connections on port ${port} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** A child process whose output is kept (not printed) and which is stopped however the test ends. */
export class Child {
  readonly proc: ChildProcess;
  stdout = '';
  stderr = '';
  exitCode: number | null = null;
  exitSignal: NodeJS.Signals | null = null;
  private readonly exited: Promise<void>;

  constructor(
    readonly name: string,
    command: string,
    args: string[],
    options: SpawnOptions = {},
  ) {
    this.proc = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.setEncoding('utf8').on('data', (text: string) => (this.stdout += text));
    this.proc.stderr!.setEncoding('utf8').on('data', (text: string) => (this.stderr += text));
    this.exited = new Promise((resolve) => {
      // 'close': the process exited and its output pipes are drained, so `stdout` is complete
      this.proc.once('close', (code, signal) => {
        this.exitCode = code;
        this.exitSignal = signal;
        running.delete(this);
        resolve();
      });
      // a program that could not be started (ENOENT) emits 'error' and then 'close'
      this.proc.once('error', (err) => (this.stderr += `\n[spawn error] ${err.message}\n`));
    });
    running.add(this);
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get running(): boolean {
    return this.exitCode === null && this.exitSignal === null && this.proc.pid !== undefined && running.has(this);
  }

  /** The process's output so far, labelled, for error messages. */
  output(): string {
    const status = this.running ? 'running' : `exited (code ${this.exitCode}, signal ${this.exitSignal})`;
    return `--- ${this.name} (pid ${this.pid}, ${status}) stdout ---\n${this.stdout.trimEnd()}\n--- ${this.name} stderr ---\n${this.stderr.trimEnd()}\n`;
  }

  /** Sends `signal` and waits for the exit; SIGKILL once `deadlineMs` has passed. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', deadlineMs = 10_000): Promise<void> {
    if (!this.running) return this.exited;
    this.proc.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), deadlineMs)));
    const late = (await Promise.race([this.exited, deadline])) === 'late';
    clearTimeout(timer);
    if (late) {
      this.proc.kill('SIGKILL');
      await this.exited;
    }
  }

  /** SIGKILL, then waits for the exit. */
  async kill(): Promise<void> {
    if (this.running) this.proc.kill('SIGKILL');
    await this.exited;
  }

  /** Resolves when the process has exited. */
  waitForExit(): Promise<void> {
    return this.exited;
  }
}

const running = new Set<Child>();

/** Kills every child process still running (jest's afterAll calls this through each helper's stopAll). */
export async function killAllChildren(): Promise<void> {
  await Promise.all([...running].map((child) => child.kill()));
}

const temporaryDirs = new Set<string>();

/** A fresh directory under the OS's temporary directory, removed by `removeTemporaryDir` or when the process exits. */
export function temporaryDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  temporaryDirs.add(dir);
  return dir;
}

export function removeTemporaryDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
  temporaryDirs.delete(dir);
}

// Last resort: a jest worker that exits (a test timed out, afterAll never ran) leaves no process and no
// temporary directory behind.
process.once('exit', () => {
  for (const child of running) child.proc.kill('SIGKILL');
  for (const dir of temporaryDirs) fs.rmSync(dir, { recursive: true, force: true });
});

/**
 * Runs `fn`; when it throws, appends the output of `children` to the error, so a failing test shows what the
 * servers said (their output is otherwise not printed).
 */
export async function withOutputOnFailure<T>(children: Array<{ output(): string } | undefined>, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const logs = children.filter((c): c is { output(): string } => c !== undefined).map((c) => c.output()).join('\n');
    if (err instanceof Error) {
      err.message += `\n\n${logs}`;
      throw err;
    }
    throw new Error(`${String(err)}\n\n${logs}`);
  }
}

const notices = new Set<string>();

/** Prints `text` once per test file, as a plain line (not jest's console block with a stack). */
export function noticeOnce(text: string): void {
  if (notices.has(text)) return;
  notices.add(text);
  process.stderr.write(`\n${text}\n`);
}
