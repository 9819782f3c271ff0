import { performance } from 'node:perf_hooks';

/** Text is counted in slices of at most this many characters: BPE cost grows with the square of a run's length. */
const SLICE = 2_000;
/** A slice ends at the last whitespace within this many characters of its end, when there is one. */
const LOOK_BACK = 200;
/** Counting yields to the event loop after this many milliseconds of work. */
const YIELD_AFTER_MS = 4;

/**
 * Cuts `text` into slices of at most 2,000 characters, at whitespace where possible and never inside a
 * surrogate pair, so a tokenizer's cost stays linear in the text's length whatever the text (a megabyte of one
 * letter included) while the count stays within a fraction of a percent of counting the whole.
 */
export function* slices(text: string): Generator<string> {
  let start = 0;
  while (text.length - start > SLICE) {
    let end = start + SLICE;
    for (let i = end - 1; i > end - LOOK_BACK; i--) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x0a || c === 0x09 || c === 0x0d) {
        end = i;
        break;
      }
    }
    const c = text.charCodeAt(end);
    if (c >= 0xdc00 && c <= 0xdfff) end -= 1; // do not split a surrogate pair
    yield text.slice(start, end);
    start = end;
  }
  if (start < text.length) yield text.slice(start);
}

/** Counts `text` slice by slice with `count` (linear time). */
export function countInSlices(text: string, count: (text: string) => number): number {
  if (text.length <= SLICE) return count(text);
  let tokens = 0;
  for (const slice of slices(text)) tokens += count(slice);
  return tokens;
}

/**
 * Counts many texts slice by slice, yielding to the event loop every few milliseconds, so no request blocks
 * the others for long whatever its size.
 */
export async function countYielding(texts: readonly string[], count: (text: string) => number): Promise<number> {
  let tokens = 0;
  let since = performance.now();
  for (const text of texts) {
    for (const slice of text.length <= SLICE ? [text] : slices(text)) {
      tokens += count(slice);
      if (performance.now() - since > YIELD_AFTER_MS) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        since = performance.now();
      }
    }
  }
  return tokens;
}
