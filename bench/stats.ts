/** The small statistics every bench prints: nearest-rank percentiles, process CPU, rounding. */

/** The nearest-rank `p`th percentile of `values` (NaN for none). */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export const median = (values: readonly number[]): number => percentile(values, 50);

/** Milliseconds of this process's CPU (user + system) since `since`. */
export function cpuMs(since: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(since);
  return (d.user + d.system) / 1000;
}

/** `v` rounded to `digits` decimals, as a number (for the JSON figures). */
export const round = (v: number, digits = 3): number => Number(v.toFixed(digits));
