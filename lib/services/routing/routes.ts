import { isCanonicalSegment } from './canonical-path';

/** What serves a route: a metered API, or the pass-through proxy. */
export type RouteKind = 'generation' | 'pass-through';

/**
 * A route the gateway answers: a method and a path pattern below the base path (`{name}` is one segment). `Api`
 * is whatever the middleware serves a generation route with (its API surface): routing only carries it.
 */
export interface Route<Api = unknown> {
  kind: RouteKind;
  /** The API a `generation` route serves. */
  api?: Api;
  method: string;
  /** The pattern as written, e.g. `/models/{id}`. */
  pattern: string;
  segments: ReadonlyArray<string | { param: string }>;
}

/** The result of looking a request up: the route, a known path with other methods (405), or nothing (404). */
export type RouteMatch<Api = unknown> = { route: Route<Api> } | { allow: string[] } | undefined;

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/** The default `passThrough` allow-list: the free, read-only routes. */
export const DEFAULT_PASS_THROUGH = ['GET /models', 'GET /models/{id}', 'GET /responses/{id}', 'GET /responses/{id}/input_items'];

/**
 * Parses `"METHOD /path/{param}"`. Throws a message (the options parser wraps it) when the method is unknown or
 * the path is not a canonical pattern.
 */
export function parseRoute(spec: string, kind: RouteKind): Route {
  const match = /^\s*([A-Za-z]+)\s+(\S+)\s*$/.exec(spec);
  if (!match) throw new Error(`"${spec}" must be "METHOD /path", e.g. "GET /models/{id}"`);
  const method = match[1]!.toUpperCase();
  const pattern = match[2]!;
  if (!METHODS.has(method)) throw new Error(`"${spec}": unknown method ${method}`);
  if (!pattern.startsWith('/')) throw new Error(`"${spec}": the path must start with "/" (it is relative to basePath)`);
  const segments = pattern
    .slice(1)
    .split('/')
    .map((segment) => {
      const param = /^\{([A-Za-z_][A-Za-z0-9_]*)\}$/.exec(segment);
      if (param) return { param: param[1]! };
      if (!isCanonicalSegment(segment) || segment.includes('%')) {
        throw new Error(`"${spec}": "${segment}" is not a plain path segment or a {param}`);
      }
      return segment;
    });
  return { kind, method, pattern, segments };
}

function matches(route: Route<unknown>, parts: string[]): boolean {
  if (route.segments.length !== parts.length) return false;
  return route.segments.every((segment, i) => typeof segment !== 'string' || segment === parts[i]);
}

/**
 * The gateway's routes, matched exactly and case-sensitively against canonical sub-paths (see
 * `canonical-path.ts`: a `{param}` then matches one segment that cannot climb out of the base path). Built from
 * what the middleware hands it: the metered APIs (`POST {path}` each) and the pass-through routes.
 */
export class RouteTable<Api extends { path: string }> {
  readonly routes: ReadonlyArray<Route<Api>>;

  constructor(metered: readonly Api[], passThrough: readonly Route[]) {
    const generations = metered.map((api) => ({ ...parseRoute(`POST ${api.path}`, 'generation'), api }));
    this.routes = [...generations, ...(passThrough as ReadonlyArray<Route<Api>>)];
  }

  match(method: string, subPath: string): RouteMatch<Api> {
    const parts = subPath.slice(1).split('/');
    const candidates = this.routes.filter((route) => matches(route, parts));
    // HEAD is answered wherever GET is, as HTTP expects
    const route = candidates.find((r) => r.method === method) ?? (method === 'HEAD' ? candidates.find((r) => r.method === 'GET') : undefined);
    if (route) return { route };
    const allow = new Set(candidates.flatMap((r) => (r.method === 'GET' ? ['GET', 'HEAD'] : [r.method])));
    return candidates.length > 0 ? { allow: [...allow] } : undefined;
  }

  /** `"POST /v1/chat/completions, GET /v1/models, …"` for error messages. */
  describe(basePath: string): string {
    return this.routes.map((r) => `${r.method} ${basePath}${r.pattern}`).join(', ');
  }
}
