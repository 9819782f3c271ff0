import path from 'node:path';
import { Child } from './local-process';

const ROOT = path.resolve(__dirname, '../..');
const SERVER = path.join(ROOT, 'example-app/server.ts');
const TS_REGISTER = path.join(ROOT, 'scripts/ts-register.cjs');
const LISTENING = /infery-stream example gateway listening on http:\/\/localhost:(\d+)/;

/** The example gateway running as its own Node process (`example-app/server.ts`, compiled on require, no build). */
export interface AppProcess {
  /** `http://127.0.0.1:<port>` */
  url: string;
  port: number;
  pid: number;
  /** Everything the process wrote so far (captured, not printed). */
  readonly stdout: string;
  readonly stderr: string;
  /** The exit code and signal once it exited (`null` while running). */
  readonly exitCode: number | null;
  readonly exitSignal: NodeJS.Signals | null;
  /** Sends `signal` (SIGTERM: the app drains its streams), waits for the exit; SIGKILL after `deadlineMs`. */
  stop(signal?: NodeJS.Signals, deadlineMs?: number): Promise<void>;
  /** SIGKILL (no drain, nothing settled), then waits for the exit. */
  kill(): Promise<void>;
  /** Resolves when the process has exited. */
  waitForExit(): Promise<void>;
  /** Labelled stdout and stderr, for error messages. */
  output(): string;
}

/** Variables of the parent's environment that would change how the app runs; the test's `env` sets its own. */
const APP_ENV = /^(PORT|LOG_LEVEL|SHUTDOWN_DEADLINE_MS|INFERY_.*|REDIS_URL|OTEL_.*)$/;

const started = new Set<Child>();

/**
 * Spawns the example app with `env` (and `PORT=0`), resolves once it printed the line with its port. Variables
 * it reads: INFERY_UPSTREAM_URL (unset: its built-in mock provider), INFERY_UPSTREAM_KEY, INFERY_API_KEYS
 * (`key:credits,…`), INFERY_MAX_CONCURRENT, INFERY_RPM, INFERY_*_TIMEOUT_MS, LOG_LEVEL, SHUTDOWN_DEADLINE_MS
 * (see example-app/server.ts). Rejects with the process's output if it exits or is silent for `startTimeoutMs`.
 */
export async function startExampleApp(env: Record<string, string> = {}, startTimeoutMs = 20_000): Promise<AppProcess> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([name]) => !APP_ENV.test(name)));
  const child = new Child('example-app', process.execPath, ['--enable-source-maps', '-r', TS_REGISTER, SERVER], {
    cwd: ROOT,
    env: { ...base, PORT: '0', ...env },
  });
  started.add(child);
  void child.waitForExit().then(() => started.delete(child));

  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`the example app printed no listening line within ${startTimeoutMs} ms`)), startTimeoutMs);
    const onData = (): void => {
      const match = LISTENING.exec(child.stdout);
      if (match) finish(Number(match[1]));
    };
    const onClose = (): void => finish(new Error('the example app exited before it listened'));
    function finish(result: number | Error): void {
      clearTimeout(timer);
      child.proc.stdout!.off('data', onData);
      child.proc.off('close', onClose);
      if (typeof result === 'number') resolve(result);
      else reject(result);
    }
    child.proc.stdout!.on('data', onData);
    child.proc.once('close', onClose);
    onData();
  }).catch(async (err: Error) => {
    await child.kill();
    throw new Error(`${err.message}\n${child.output()}`);
  });

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    pid: child.pid,
    get stdout() {
      return child.stdout;
    },
    get stderr() {
      return child.stderr;
    },
    get exitCode() {
      return child.exitCode;
    },
    get exitSignal() {
      return child.exitSignal;
    },
    stop: (signal = 'SIGTERM', deadlineMs = 15_000) => child.stop(signal, deadlineMs),
    kill: () => child.kill(),
    waitForExit: () => child.waitForExit(),
    output: () => child.output(),
  };
}

/** Kills every example-app process this file started that is still running (call in afterAll). */
export async function stopAllApps(): Promise<void> {
  await Promise.all([...started].map((child) => child.kill()));
}
