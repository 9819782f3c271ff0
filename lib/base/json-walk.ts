import { performance } from 'node:perf_hooks';

/** Deepest nesting a JSON value may have (a request body, a provider answer): real ones stay far below it. */
export const MAX_JSON_DEPTH = 100;
/** A walk yields to the event loop after this many milliseconds of work. */
const YIELD_AFTER_MS = 4;

/** Yields to the event loop once a few milliseconds of work went by since the last yield (checked every 1,024 ticks). */
export class Yielder {
  private since = performance.now();
  private ticks = 0;

  /** True when it is time to yield (synchronous, so the common case costs no promise). */
  due(): boolean {
    return (++this.ticks & 1023) === 0 && performance.now() - this.since >= YIELD_AFTER_MS;
  }

  /** Yields to the event loop. */
  async pause(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.since = performance.now();
  }
}

/**
 * Visits every value in a parsed JSON value without recursion (any depth) and without copying a large object's
 * keys into an array, yielding to the event loop every few milliseconds, so neither deep nor wide input can
 * overflow the stack or hold the event loop. `visit` gets each value with its depth (the root is 1) and the key
 * it sits under; returning `false` skips its children. Stops as soon as a container sits deeper than `maxDepth`
 * (`'too-deep'`) or more than `maxValues` values were seen (`'too-many'`), else resolves `'ok'`. Pass one
 * `yielder` to several walks that make up one piece of work.
 */
export async function walkJson(
  root: unknown,
  visit: (value: unknown, depth: number, key: string | undefined) => boolean | void,
  maxDepth = MAX_JSON_DEPTH,
  yielder = new Yielder(),
  maxValues = Infinity,
): Promise<'ok' | 'too-deep' | 'too-many'> {
  const stack: Array<[unknown, number, string | undefined]> = [[root, 1, undefined]];
  let values = 1;
  while (stack.length > 0) {
    const [value, depth, key] = stack.pop()!;
    if (visit(value, depth, key) === false || typeof value !== 'object' || value === null) {
      if (yielder.due()) await yielder.pause();
      continue;
    }
    if (depth > maxDepth) return 'too-deep';
    if (Array.isArray(value)) {
      if ((values += value.length) > maxValues) return 'too-many';
      for (let i = value.length - 1; i >= 0; i--) {
        stack.push([value[i], depth + 1, undefined]);
        if (yielder.due()) await yielder.pause();
      }
    } else {
      for (const k in value) {
        if (!Object.hasOwn(value, k)) continue;
        if (++values > maxValues) return 'too-many';
        stack.push([(value as Record<string, unknown>)[k], depth + 1, k]);
        if (yielder.due()) await yielder.pause();
      }
    }
  }
  return 'ok';
}
