/** Longest value kept by default; a longer one is cut. */
const MAX_LABEL_LENGTH = 64;

/**
 * Bounds a metric label (attribute) whose values come from clients or providers (a model name, a provider's
 * error code): values are cut to `maxLength` characters, and past `limit` distinct ones every new value is
 * `other`, so a client sending random model names cannot grow the metrics without bound.
 */
export class BoundedLabel {
  private readonly seen = new Set<string>();

  constructor(
    private readonly limit: number,
    private readonly maxLength = MAX_LABEL_LENGTH,
  ) {}

  value(raw: string): string {
    const value = raw.length > this.maxLength ? raw.slice(0, this.maxLength) : raw;
    if (this.seen.has(value)) return value;
    if (this.seen.size >= this.limit) return 'other';
    this.seen.add(value);
    return value;
  }
}
