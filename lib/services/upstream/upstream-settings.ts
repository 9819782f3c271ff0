import type { UpstreamApi } from './upstreams';

/** One provider as the upstream client reaches it: its base URL, dialect, key and static headers. */
export interface UpstreamTarget {
  /** The dialect it speaks, which says how its key is sent. Default: `openai`. */
  api?: UpstreamApi;
  /** Base URL including the version prefix, e.g. `https://api.openai.com/v1`. */
  baseURL: URL;
  /** Sent as `Authorization: Bearer <apiKey>` (`x-api-key` to an `anthropic` upstream); never logged, never sent to clients. */
  apiKey: string | undefined;
  /** Static headers for every request (names lower-cased). */
  headers: Record<string, string>;
}

/**
 * What the upstream client and its header policy read: the upstream's own settings type, so `upstream/` needs
 * nothing from the options above it (the resolved options satisfy it as they are).
 */
export interface UpstreamSettings {
  upstream: UpstreamTarget;
  /** Client request headers forwarded upstream (lower-case). */
  forwardHeaders: ReadonlySet<string>;
  /** Milliseconds to wait for the upstream's response headers. */
  upstreamTimeout: number;
}
