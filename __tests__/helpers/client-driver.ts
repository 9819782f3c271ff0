import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';

/** The clients __tests__/clients/driver.mjs drives. */
export type ClientName = 'openai7' | 'openai6' | 'ai-openai' | 'ai-responses' | 'ai-compatible' | 'langchain' | 'ai-anthropic' | 'langchain-anthropic';
export type ClientOp = 'stream' | 'tools' | 'abort' | 'error' | 'embed';

/** An error as a client raised or reported it. */
export interface ClientError {
  name?: string;
  message: string;
  code?: string;
  type?: string;
  status?: number;
}

/** What a streaming task saw, in the client's own terms. */
export interface StreamOutcome {
  deltas: Array<{ text: string; at: number }>;
  usage?: Record<string, unknown>;
  credits_used?: number;
  finish?: string;
  toolCalls: Array<{ id?: string; name: string; args: unknown }>;
  /** thrown by the client */
  error?: ClientError;
  /** the AI SDK only: error parts of the stream, and what onError received */
  errorParts?: ClientError[];
  onError?: ClientError[];
  onAbort?: boolean;
}

export interface EmbedOutcome {
  dimensions: number;
  usage?: Record<string, unknown>;
  credits_used?: number;
}

/**
 * One driver process (the real clients, loaded as native ES modules by the Node running the tests), fed tasks
 * one JSON line each. Every task has a deadline; `close()` ends the process.
 */
export class ClientDriver {
  private readonly child: ChildProcess;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private nextId = 1;
  private readonly ready: Promise<void>;
  private stderr = '';

  constructor() {
    this.child = spawn(process.execPath, [path.join(__dirname, '..', 'clients', 'driver.mjs')], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (text: string) => (this.stderr = (this.stderr + text).slice(-4000)));
    let markReady!: () => void;
    let failReady!: (e: Error) => void;
    this.ready = new Promise<void>((resolve, reject) => ((markReady = resolve), (failReady = reject)));
    const readyTimer = setTimeout(() => failReady(new Error(`the client driver did not start within 20 s: ${this.stderr}`)), 20_000);
    this.child.on('exit', (code) => {
      clearTimeout(readyTimer);
      failReady(new Error(`the client driver exited (${code}): ${this.stderr}`));
      for (const [, task] of this.pending) {
        clearTimeout(task.timer);
        task.reject(new Error(`the client driver exited (${code}) with a task open: ${this.stderr}`));
      }
      this.pending.clear();
    });
    readline.createInterface({ input: this.child.stdout! }).on('line', (line) => {
      let message: { id?: number; ready?: boolean; ok?: boolean; result?: unknown; error?: ClientError };
      try {
        message = JSON.parse(line);
      } catch {
        return;
      }
      if (message.ready) {
        clearTimeout(readyTimer);
        markReady();
        return;
      }
      const task = message.id === undefined ? undefined : this.pending.get(message.id);
      if (!task) return;
      this.pending.delete(message.id!);
      clearTimeout(task.timer);
      if (message.ok) task.resolve(message.result);
      else task.reject(Object.assign(new Error(`client task failed: ${message.error?.message}`), { clientError: message.error }));
    });
  }

  /** Runs one task; rejects when the client itself failed outside the outcome, or after `timeoutMs`. */
  async run<T = StreamOutcome>(client: ClientName, op: ClientOp, target: { baseURL: string; apiKey: string; model: string }, timeoutMs = 15_000): Promise<T> {
    await this.ready;
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${client} ${op} gave no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.child.stdin!.write(JSON.stringify({ id, client, op, ...target }) + '\n');
    });
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin!.end();
    const kill = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(kill);
  }
}
