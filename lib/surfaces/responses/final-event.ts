/**
 * Adds fields to the `response` object of a Responses API event without parsing and re-serialising the event (a
 * provider's JSON is never re-serialised: it could be nested deeper than a serialiser survives). One linear scan
 * finds the top-level `"response": { … }` and the fields go in before its closing brace, so they win over any
 * the provider sent (the last of duplicate keys is the one JSON readers keep). Without a `response` object they
 * go at the top level.
 */
export function addToResponse(data: string, fields: Record<string, unknown>): string {
  const extra = Object.entries(fields)
    .map(([name, value]) => `${JSON.stringify(name)}:${JSON.stringify(value)}`)
    .join(',');
  if (extra === '') return data;
  const span = responseSpan(data);
  if (span) return insertBefore(data, span.start, span.end, extra);
  const last = data.lastIndexOf('}');
  const first = data.indexOf('{');
  return first === -1 || last <= first ? data : insertBefore(data, first, last, extra);
}

function insertBefore(data: string, open: number, close: number, extra: string): string {
  const empty = data.slice(open + 1, close).trim() === '';
  return `${data.slice(0, close)}${empty ? '' : ','}${extra}${data.slice(close)}`;
}

/**
 * Where the top-level `response` object opens and closes, or undefined. With duplicate `response` keys, the last
 * one: the one JSON readers keep (so a provider cannot hide the added fields in a first copy).
 */
function responseSpan(data: string): { start: number; end: number } | undefined {
  let depth = 0;
  let i = 0;
  let key: string | undefined;
  let expectKey = false;
  let start = -1;
  let last: { start: number; end: number } | undefined;
  const n = data.length;
  while (i < n) {
    const c = data[i]!;
    if (c === '"') {
      // a string: find its end (escapes skip the next character)
      let j = i + 1;
      while (j < n && data[j] !== '"') j += data[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) key = data.slice(i + 1, j);
      i = j + 1;
      continue;
    }
    if (c === '{' || c === '[') {
      if (depth === 1 && c === '{' && key === 'response') start = i;
      depth++;
      expectKey = c === '{' && depth === 1;
    } else if (c === '}' || c === ']') {
      depth--;
      if (depth === 1 && start !== -1) {
        last = { start, end: i };
        start = -1;
      }
      if (depth === 0) return last;
    } else if (c === ',' && depth === 1) {
      expectKey = true;
      key = undefined;
    } else if (c === ':' && depth === 1) {
      expectKey = false;
    }
    i++;
  }
  return last;
}
