/** Most token arrays counted in one request (OpenAI accepts 2,048 inputs): past it, the rest is not looked at. */
const MAX_ARRAYS = 4096;

/**
 * The tokens of a prompt or input given as token ids: `[1, 2, 3]` or `[[1, 2], [3]]` (each number is one token
 * the provider reads). Strings and anything else count 0 here (the prompt estimate counts strings).
 */
export function tokenArrayLength(value: unknown): number {
  if (!Array.isArray(value)) return 0;
  let tokens = 0;
  let arrays = 0;
  for (const item of value) {
    if (typeof item === 'number') tokens += 1;
    else if (Array.isArray(item) && ++arrays <= MAX_ARRAYS) {
      for (const token of item) if (typeof token === 'number') tokens += 1;
    }
  }
  return tokens;
}
