/**
 * The answer's text, kept only for an observer that asked for it (`Observer.content`): the visible text of each
 * choice (not reasoning, not tool arguments), in arrival order, at most `maxChars` characters in all — past it
 * the rest is dropped and `truncated` set. One string append per content delta; nothing when no observer asked.
 */
export class ContentCapture {
  private readonly parts: string[][] = [];
  private chars = 0;
  truncated = false;

  constructor(
    private readonly maxChars: number,
    private readonly choices: number,
  ) {}

  /** Adds text of choice `index` (a provider's index outside the choices asked for is dropped). */
  add(text: unknown, index: unknown = 0): void {
    if (typeof text !== 'string' || text === '') return;
    const i = typeof index === 'number' ? index : 0;
    if (!Number.isInteger(i) || i < 0 || i >= this.choices) return;
    const room = this.maxChars - this.chars;
    if (room <= 0) {
      this.truncated = true;
      return;
    }
    const part = text.length > room ? text.slice(0, room) : text;
    if (part.length < text.length) this.truncated = true;
    (this.parts[i] ??= []).push(part);
    this.chars += part.length;
  }

  /** The text of each choice, index by index (an empty string for a choice that produced none). */
  output(): string[] {
    return Array.from({ length: this.parts.length }, (_, i) => (this.parts[i] ?? []).join(''));
  }
}
