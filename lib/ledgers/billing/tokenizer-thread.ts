import { Worker } from 'node:worker_threads';
import { slices } from './token-count';

/**
 * The worker's code (plain JavaScript, evaluated in the thread): it loads gpt-tokenizer from the path it is
 * given and answers `{id, parts}` with `{id, tokens}` (o200k_base, special-token text counted as plain text).
 */
const SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { countTokens } = require(workerData.tokenizer);
const plain = { disallowedSpecial: new Set() };
parentPort.on('message', ({ id, parts }) => {
  try {
    let tokens = 0;
    for (const part of parts) tokens += countTokens(part, plain);
    parentPort.postMessage({ id, tokens });
  } catch (err) {
    parentPort.postMessage({ id, error: String((err && err.message) || err) });
  }
});
`;

/**
 * The thread stops after this long without a count, and gives its memory back. Long enough that a gateway whose
 * clients cancel now and then keeps it warm (a cold start, ~0.3 s, delays the settlement that waits for it).
 */
const IDLE_MS = 5 * 60_000;
/** After the thread failed, counts use the fallback for this long before it is started again. */
const RESTART_AFTER_MS = 10_000;
/** Characters waiting to be counted past which new texts are not queued (the count is `undefined`). */
const MAX_QUEUED_CHARS = 8 * 1024 * 1024;
/** The thread's heap limit: a count never takes the process's memory with it. */
const MAX_HEAP_MB = 512;

/** A count's fallback for billing when none could be made: a token per 3 UTF-8 bytes (more than o200k gives prose). */
export function fallbackCount(texts: readonly string[]): number {
  let tokens = 0;
  for (const text of texts) tokens += Math.ceil(Buffer.byteLength(text) / 3);
  return tokens;
}

interface Pending {
  resolve: (tokens: number | undefined) => void;
  chars: number;
  onFallback: (reason: string) => void;
}

/** Every thread started and not yet stopped, so a test run can stop them all (`stopTokenizerThreads`). */
const live = new Set<TokenizerThread>();

/**
 * The default token counter: gpt-tokenizer's o200k_base in a worker thread, started on the first count and
 * stopped after 5 minutes without one. Its vocabulary (some 50 MB once loaded) is resident only while counts are
 * needed — the provider's usage makes them rare: a cancelled stream, a provider that sends none, a long prompt's
 * bound — and no count ever runs on the event loop. Texts are cut in slices (linear time) before they are sent.
 * When the thread cannot answer (it failed to start, crashed, or is more than 8 M characters behind) a count
 * resolves to `undefined` and `onFallback` says why: the caller then bounds by bytes (`fallbackCount`, or the
 * strict bound). Counts never reject. The thread keeps the process alive only while a count is under way (a
 * settlement waiting for one is never cut short by the process exiting), never when idle.
 */
export class TokenizerThread {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private queuedChars = 0;
  private idle: NodeJS.Timeout | undefined;
  private failedAt = -Infinity;

  /**
   * @param tokenizerPath the module the thread counts with (default: gpt-tokenizer's main entry, resolved when the
   *   thread first starts)
   * @param idleMs how long the thread stays up without a count
   */
  constructor(
    private tokenizerPath?: string,
    private readonly idleMs: number = IDLE_MS,
  ) {}

  /** Whether the thread is up (started and not yet stopped). */
  get running(): boolean {
    return this.worker !== undefined;
  }

  /** The o200k tokens of `texts` together, or `undefined` when they could not be counted. */
  count(texts: readonly string[], onFallback: (reason: string) => void): Promise<number | undefined> {
    const parts: string[] = [];
    let chars = 0;
    for (const text of texts) {
      if (text.length === 0) continue;
      chars += text.length;
      for (const slice of slices(text)) parts.push(slice);
    }
    if (parts.length === 0) return Promise.resolve(0);
    if (this.queuedChars + chars > MAX_QUEUED_CHARS) return this.uncounted(onFallback, 'the tokenizer thread is too far behind');
    const worker = this.started();
    if (!worker) return this.uncounted(onFallback, 'the tokenizer thread failed recently');
    if (this.idle) clearTimeout(this.idle);
    this.idle = undefined;
    const id = this.nextId++;
    this.queuedChars += chars;
    if (this.pending.size === 0) worker.ref();
    return new Promise<number | undefined>((resolve) => {
      this.pending.set(id, { resolve, chars, onFallback });
      worker.postMessage({ id, parts });
    });
  }

  /** Stops the thread (if any); counts under way resolve to `undefined`. */
  stop(): Promise<void> {
    const worker = this.worker;
    this.detach('the tokenizer thread was stopped');
    return worker ? worker.terminate().then(() => undefined, () => undefined) : Promise.resolve();
  }

  private uncounted(onFallback: (reason: string) => void, reason: string): Promise<undefined> {
    onFallback(reason);
    return Promise.resolve(undefined);
  }

  private started(): Worker | undefined {
    if (this.worker) return this.worker;
    if (performance.now() - this.failedAt < RESTART_AFTER_MS) return undefined;
    let worker: Worker;
    try {
      // resolved here, not at load: a bundle without gpt-tokenizer beside it only loses exact counts
      this.tokenizerPath ??= require.resolve('gpt-tokenizer');
      worker = new Worker(SOURCE, {
        eval: true,
        workerData: { tokenizer: this.tokenizerPath },
        resourceLimits: { maxOldGenerationSizeMb: MAX_HEAP_MB },
      });
    } catch {
      this.failedAt = performance.now();
      return undefined;
    }
    worker.unref();
    worker.on('message', (message: { id: number; tokens?: number; error?: string }) => this.answered(message));
    worker.on('error', (err) => this.failed(worker, `the tokenizer thread failed: ${err.message}`));
    worker.on('exit', (code) => this.failed(worker, `the tokenizer thread exited (${code})`));
    this.worker = worker;
    live.add(this);
    return worker;
  }

  private answered({ id, tokens, error }: { id: number; tokens?: number; error?: string }): void {
    const entry = this.pending.get(id);
    if (!entry) return;
    this.pending.delete(id);
    this.queuedChars -= entry.chars;
    if (typeof tokens === 'number' && Number.isSafeInteger(tokens) && tokens >= 0) entry.resolve(tokens);
    else {
      entry.onFallback(`the tokenizer could not count a text: ${error ?? 'no count'}`);
      entry.resolve(undefined);
    }
    if (this.pending.size === 0 && this.worker) {
      this.worker.unref();
      this.idle = setTimeout(() => void this.stop(), this.idleMs);
      this.idle.unref();
    }
  }

  private failed(worker: Worker, reason: string): void {
    if (this.worker !== worker) return;
    this.failedAt = performance.now();
    this.detach(reason);
    void worker.terminate().catch(() => undefined);
  }

  /** Forgets the thread; whatever it was counting resolves to `undefined`. */
  private detach(reason: string): void {
    if (this.idle) clearTimeout(this.idle);
    this.idle = undefined;
    this.worker = undefined;
    live.delete(this);
    const waiting = [...this.pending.values()];
    this.pending.clear();
    this.queuedChars = 0;
    for (const entry of waiting) {
      entry.onFallback(reason);
      entry.resolve(undefined);
    }
  }
}

/** The process's shared counter thread (every gateway of the process uses it). */
let shared: TokenizerThread | undefined;

/** The process's tokenizer thread, created (not started) on first use. */
export function sharedTokenizer(): TokenizerThread {
  shared ??= new TokenizerThread();
  return shared;
}

/** Stops every tokenizer thread of this module instance (for test runs, which load modules once per file). */
export async function stopTokenizerThreads(): Promise<void> {
  await Promise.all([...live].map((thread) => thread.stop()));
}
