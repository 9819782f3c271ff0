import type { WorstExtras } from '../../core/usage-classes';

/**
 * The web searches a Messages API request may run when a `web_search` server tool says no `max_uses`: the
 * gateway sends this bound upstream, so the searches it holds credits for are the most the provider runs.
 */
export const DEFAULT_WEB_SEARCH_USES = 10;

/** The largest `max_uses` believed (a bigger one is held as this many searches). */
const MAX_WEB_SEARCH_USES = 1000;

/** Content blocks looked at for `cache_control`, at most: a request with more is held as writing the cache. */
const MAX_BLOCKS = 100_000;

function isWebSearch(tool: unknown): tool is Record<string, unknown> {
  return typeof tool === 'object' && tool !== null && typeof (tool as Record<string, unknown>).type === 'string' && ((tool as Record<string, unknown>).type as string).startsWith('web_search');
}

/** A tool's `max_uses` when it is a whole number ≥ 1. */
function maxUses(tool: Record<string, unknown>): number | undefined {
  const n = tool.max_uses;
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 1 ? n : undefined;
}

/**
 * What a Messages API request may use beyond plain tokens: cache writes when any `cache_control` marks a block
 * (top level, system, tools, message content and tool results), at the longest `ttl` asked for (`1h` over the
 * default `5m`); web searches up to its `web_search` tools' `max_uses` (the default bound for one without).
 */
export function messagesWorstExtras(body: Record<string, unknown>): WorstExtras {
  const extras: WorstExtras = {};
  let seen = 0;
  const look = (block: unknown): void => {
    if (typeof block !== 'object' || block === null) return;
    const control = (block as Record<string, unknown>).cache_control;
    if (typeof control !== 'object' || control === null) return;
    extras.cacheWrite = (control as Record<string, unknown>).ttl === '1h' || extras.cacheWrite === '1h' ? '1h' : '5m';
  };
  const lookAll = (blocks: unknown, nested: boolean): void => {
    if (!Array.isArray(blocks)) return;
    for (const block of blocks) {
      if (++seen > MAX_BLOCKS) {
        extras.cacheWrite = '1h';
        return;
      }
      look(block);
      if (nested && typeof block === 'object' && block !== null) lookAll((block as Record<string, unknown>).content, false);
    }
  };
  look(body);
  lookAll(body.system, false);
  lookAll(body.tools, false);
  if (Array.isArray(body.messages)) {
    for (const message of body.messages) {
      if (typeof message === 'object' && message !== null) lookAll((message as Record<string, unknown>).content, true);
    }
  }
  if (Array.isArray(body.tools)) {
    let searches = 0;
    for (const tool of body.tools) if (isWebSearch(tool)) searches += Math.min(maxUses(tool) ?? DEFAULT_WEB_SEARCH_USES, MAX_WEB_SEARCH_USES);
    if (searches > 0) extras.webSearches = searches;
  }
  return extras;
}

/** The body with a `max_uses` on every `web_search` tool that has none (or one too large): the bound the hold counts. */
export function boundWebSearches(body: Record<string, unknown>): Record<string, unknown> {
  if (!Array.isArray(body.tools) || !body.tools.some((tool) => isWebSearch(tool) && (maxUses(tool) ?? Infinity) > MAX_WEB_SEARCH_USES)) return body;
  const tools = body.tools.map((tool: unknown) => {
    if (!isWebSearch(tool)) return tool;
    const uses = maxUses(tool);
    if (uses !== undefined && uses <= MAX_WEB_SEARCH_USES) return tool;
    return { ...tool, max_uses: uses === undefined ? DEFAULT_WEB_SEARCH_USES : MAX_WEB_SEARCH_USES };
  });
  return { ...body, tools };
}
