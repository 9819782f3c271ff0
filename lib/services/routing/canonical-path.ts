/**
 * Canonical request paths. A path the gateway serves or forwards must mean the same thing to every server that
 * might read it after us (a proxy, the provider's router): no empty, `.` or `..` segment, no backslash, nothing
 * percent-encoded that some server would decode into a separator, a dot or a plain character. Anything else is
 * refused, never normalised, so nothing forwarded can resolve outside the upstream's base path.
 */

/** Characters allowed as they are in a segment: RFC 3986 `pchar` without `;` (path parameters) and `%`. */
const RAW_SEGMENT = /^[A-Za-z0-9\-._~!$&'()*+,=:@%]+$/;
const PCT = /%([0-9A-Fa-f]{2})?/g;

/** Why `segment` is not canonical, or `undefined` when it is. */
function segmentProblem(segment: string): string | undefined {
  if (segment === '') return 'an empty segment';
  if (segment === '.' || segment === '..') return `a "${segment}" segment`;
  if (segment.includes('\\')) return 'a backslash';
  if (!RAW_SEGMENT.test(segment)) return 'a character that must not appear in a path';
  for (const match of segment.matchAll(PCT)) {
    const hex = match[1];
    if (hex === undefined) return 'a malformed percent-encoding';
    const code = parseInt(hex, 16);
    const ch = String.fromCharCode(code);
    if (/[A-Za-z0-9\-._~]/.test(ch)) return `a percent-encoded "${ch}"`;
    if (ch === '/' || ch === '\\' || ch === '%') return `a percent-encoded "${ch}"`;
    if (code < 0x20 || code === 0x7f) return 'a percent-encoded control character';
  }
  if (segment.includes('%')) {
    try {
      decodeURIComponent(segment); // rejects invalid and overlong UTF-8 (%C0%AE is an old spelling of ".")
    } catch {
      return 'a percent-encoding that is not valid UTF-8';
    }
  }
  return undefined;
}

/** Where a request path stands relative to the base path. */
export type PathVerdict =
  | { kind: 'outside' }
  | { kind: 'invalid'; reason: string }
  | { kind: 'inside'; subPath: string };

/**
 * The raw path of a request (`req.url` as received, without its query): origin-form as is; absolute-form
 * (`http://host/path`) reduced to its path without any normalising.
 */
export function rawPathOf(url: string): string {
  const query = url.indexOf('?');
  let path = query === -1 ? url : url.slice(0, query);
  if (!path.startsWith('/')) {
    const absolute = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/]*/.exec(path);
    path = absolute ? path.slice(absolute[0].length) || '/' : path;
  }
  return path;
}

/**
 * Checks the path below `basePath` (matched exactly and case-sensitively). `outside` is for the host app;
 * `invalid` is refused with 400 `invalid_path`; `inside` carries the canonical sub-path (`''` for the base
 * path itself).
 */
export function classifyPath(rawPath: string, basePath: string): PathVerdict {
  if (basePath !== '' && rawPath !== basePath && !rawPath.startsWith(`${basePath}/`)) return { kind: 'outside' };
  const subPath = rawPath.slice(basePath.length);
  if (subPath === '' || subPath === '/') return subPath === '' ? { kind: 'inside', subPath } : { kind: 'invalid', reason: 'an empty segment' };
  if (!subPath.startsWith('/')) return { kind: 'invalid', reason: 'a path that does not start with "/"' };
  for (const segment of subPath.slice(1).split('/')) {
    const problem = segmentProblem(segment);
    if (problem) return { kind: 'invalid', reason: problem };
  }
  return { kind: 'inside', subPath };
}

/** True when `segment` could be one segment of a canonical path. */
export function isCanonicalSegment(segment: string): boolean {
  return segmentProblem(segment) === undefined;
}
