import type { BudgetSpec, Logger } from '../contract/hooks';
import type { ContainedObserver } from '../ledgers/metrics/observer';
import type { LimitStore } from '../ledgers/stores/limit-store';
import type { ResponseOwners, StoredResponse } from '../ledgers/stores/response-owners';
import type { Options } from './options';
import type { Route } from '../services/routing/routes';
import type { UpstreamTarget } from '../services/upstream/upstream-settings';
import type { FallbackOptions, ResolvedUpstream } from '../services/upstream/upstreams';

/**
 * The options after validation and defaults, as every layer below the entry reads them: nothing optional. Types
 * only; `parseOptions` (in the entry) builds them.
 */

/** Limits after validation. */
export interface ResolvedLimits<Account> {
  maxConcurrent: number;
  requestsPerMinute: number;
  /** The account's tokens per minute (0: none). */
  tokensPerMinute: (account: Account) => number;
  tokensCounted: 'input' | 'output' | 'total';
  budget: ((account: Account) => BudgetSpec | undefined) | undefined;
  store: LimitStore;
  key: (account: Account) => string;
}

/** Options after validation and defaults: nothing optional. */
export interface ResolvedOptions<Account> {
  /** The first upstream: where pass-through routes go. */
  upstream: UpstreamTarget;
  /** Every upstream, in order (one named `default` for the single `upstream` option). */
  upstreams: ResolvedUpstream[];
  /** True when the host gave `upstreams`: the gateway answers `GET /models` itself. */
  severalUpstreams: boolean;
  fallback: Required<FallbackOptions>;
  authenticate: Options<Account>['authenticate'];
  preflight: NonNullable<Options<Account>['preflight']> | undefined;
  reserve: NonNullable<Options<Account>['reserve']> | undefined;
  meter: NonNullable<Options<Account>['meter']> | undefined;
  defaultMaxTokens: number;
  limits: ResolvedLimits<Account> | undefined;
  basePath: string;
  passThrough: Route[];
  allowBackground: boolean;
  /**
   * Where the account's stored response is (`{ upstream }`: its upstream's name, undefined for the first), or
   * undefined when it is not the account's: the host's `ownsResponse`, or the in-memory record.
   */
  findResponse: (account: Account, responseId: string) => Promise<StoredResponse | undefined>;
  /** The in-memory record of response owners (recorded when a Responses generation settles). */
  responseOwners: ResponseOwners;
  /** The account's key for the in-memory records (`limits.key`, else the account or its `id`); undefined if none. */
  accountKey: (account: Account) => string | undefined;
  usageGraceTimeout: number;
  bodyLimit: number;
  upstreamTimeout: number;
  idleTimeout: number;
  heartbeatInterval: number;
  maxDuration: number;
  writeTimeout: number;
  maxEventBytes: number;
  meterTimeout: number;
  maxResponseBytes: number;
  forwardHeaders: ReadonlySet<string>;
  logger: Logger | undefined;
  /** The host's observer, each member contained (see `containedObserver`). */
  observer: ContainedObserver | undefined;
  /** The host's `accountTag`, contained: a string of at most 128 characters, or undefined. */
  accountTag: (account: Account) => string | undefined;
  /**
   * The host's `countTokens` or the default, contained, counting several texts at once; `undefined` when they
   * could not be counted (see `textsCounter`).
   */
  countTexts: (texts: readonly string[], model: string) => Promise<number | undefined>;
}
