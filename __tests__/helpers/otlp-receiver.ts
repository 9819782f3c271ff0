import http from 'node:http';
import type { AddressInfo } from 'node:net';
import zlib from 'node:zlib';

/**
 * A local OTLP/HTTP receiver on 127.0.0.1 — what an OpenTelemetry Collector is to an app: it accepts
 * `POST /v1/traces` and `POST /v1/metrics` in both encodings the exporters send (`application/x-protobuf` and
 * `application/json`, gzip or not), decodes them (a small protobuf wire-format reader for the OTLP messages, the
 * OTLP/JSON mapping for JSON) and keeps what arrived, normalized to one shape.
 */

/** A span as received, ids in hex, times in nanoseconds since the epoch. */
export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  /** OTLP's enum: 1 internal, 2 server, 3 client. */
  kind: number;
  startNs: bigint;
  endNs: bigint;
  attributes: Record<string, unknown>;
  events: Array<{ name: string; timeNs: bigint; attributes: Record<string, unknown> }>;
  /** OTLP's enum: 0 unset, 1 ok, 2 error. */
  status: { code: number; message: string };
  resource: Record<string, unknown>;
  scope: string;
  /** How it was sent. */
  encoding: 'protobuf' | 'json';
}

/** A metric as received (histogram data points: their count and sum). */
export interface ReceivedMetric {
  name: string;
  unit: string;
  resource: Record<string, unknown>;
  points: Array<{ attributes: Record<string, unknown>; count?: number; sum?: number }>;
  encoding: 'protobuf' | 'json';
}

export const SPAN_KIND = { INTERNAL: 1, SERVER: 2, CLIENT: 3 } as const;

/** A protobuf field: its number, wire type and value (bigint for varints and fixed64, Buffer for length-delimited). */
interface Field {
  no: number;
  wire: number;
  value: bigint | Buffer | number;
}

/** Reads every field of one protobuf message. */
function fields(buf: Buffer): Field[] {
  const out: Field[] = [];
  let pos = 0;
  const varint = (): bigint => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (pos >= buf.length) throw new Error('protobuf: truncated varint');
      const byte = buf[pos++]!;
      result |= BigInt(byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return result;
      shift += 7n;
      if (shift > 70n) throw new Error('protobuf: varint too long');
    }
  };
  while (pos < buf.length) {
    const key = Number(varint());
    const no = key >>> 3;
    const wire = key & 7;
    if (wire === 0) out.push({ no, wire, value: varint() });
    else if (wire === 1) {
      out.push({ no, wire, value: buf.readBigUInt64LE(pos) });
      pos += 8;
    } else if (wire === 2) {
      const len = Number(varint());
      if (pos + len > buf.length) throw new Error('protobuf: truncated field');
      out.push({ no, wire, value: buf.subarray(pos, pos + len) });
      pos += len;
    } else if (wire === 5) {
      out.push({ no, wire, value: buf.readUInt32LE(pos) });
      pos += 4;
    } else throw new Error(`protobuf: wire type ${wire} not supported`);
  }
  return out;
}

const bytesOf = (f: Field[], no: number): Buffer[] => f.filter((x) => x.no === no && x.wire === 2).map((x) => x.value as Buffer);
const first = (f: Field[], no: number): Field | undefined => f.find((x) => x.no === no);
const text = (f: Field[], no: number): string => bytesOf(f, no)[0]?.toString('utf8') ?? '';
const hex = (f: Field[], no: number): string => bytesOf(f, no)[0]?.toString('hex') ?? '';
const fixed64 = (f: Field[], no: number): bigint => {
  const x = first(f, no);
  return x === undefined ? 0n : (x.value as bigint);
};
const double = (x: Field): number => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(x.value as bigint);
  return b.readDoubleLE(0);
};

function anyValue(buf: Buffer): unknown {
  const f = fields(buf);
  const x = f[0];
  if (!x) return undefined;
  switch (x.no) {
    case 1:
      return (x.value as Buffer).toString('utf8');
    case 2:
      return (x.value as bigint) !== 0n;
    case 3:
      return Number(BigInt.asIntN(64, x.value as bigint));
    case 4:
      return double(x);
    case 5:
      return bytesOf(fields(x.value as Buffer), 1).map(anyValue);
    case 6:
      return keyValues(bytesOf(fields(x.value as Buffer), 1));
    default:
      return (x.value as Buffer).toString('base64');
  }
}

function keyValues(list: Buffer[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const kv of list) {
    const f = fields(kv);
    const value = bytesOf(f, 2)[0];
    out[text(f, 1)] = value === undefined ? undefined : anyValue(value);
  }
  return out;
}

/** The attributes of a ResourceSpans' / ResourceMetrics' `resource` (field 1). */
function protobufResource(f: Field[]): Record<string, unknown> {
  const resource = bytesOf(f, 1)[0];
  return resource ? keyValues(bytesOf(fields(resource), 1)) : {};
}

function protobufSpans(body: Buffer): ReceivedSpan[] {
  const spans: ReceivedSpan[] = [];
  for (const rs of bytesOf(fields(body), 1)) {
    const rsf = fields(rs);
    const resource = protobufResource(rsf);
    for (const ss of bytesOf(rsf, 2)) {
      const ssf = fields(ss);
      const scopeBuf = bytesOf(ssf, 1)[0];
      const scope = scopeBuf ? text(fields(scopeBuf), 1) : '';
      for (const sp of bytesOf(ssf, 2)) {
        const f = fields(sp);
        const status = bytesOf(f, 15)[0];
        const sf = status ? fields(status) : [];
        spans.push({
          traceId: hex(f, 1),
          spanId: hex(f, 2),
          parentSpanId: hex(f, 4),
          name: text(f, 5),
          kind: Number((first(f, 6)?.value as bigint | undefined) ?? 0n),
          startNs: fixed64(f, 7),
          endNs: fixed64(f, 8),
          attributes: keyValues(bytesOf(f, 9)),
          events: bytesOf(f, 11).map((e) => {
            const ef = fields(e);
            return { timeNs: fixed64(ef, 1), name: text(ef, 2), attributes: keyValues(bytesOf(ef, 3)) };
          }),
          status: { message: text(sf, 2), code: Number((first(sf, 3)?.value as bigint | undefined) ?? 0n) },
          resource,
          scope,
          encoding: 'protobuf',
        });
      }
    }
  }
  return spans;
}

function protobufMetrics(body: Buffer): ReceivedMetric[] {
  const out: ReceivedMetric[] = [];
  for (const rm of bytesOf(fields(body), 1)) {
    const rmf = fields(rm);
    const resource = protobufResource(rmf);
    for (const sm of bytesOf(rmf, 2)) {
      for (const m of bytesOf(fields(sm), 2)) {
        const f = fields(m);
        const histogram = bytesOf(f, 9)[0];
        const points = histogram
          ? bytesOf(fields(histogram), 1).map((p) => {
              const pf = fields(p);
              const sum = first(pf, 5);
              return { attributes: keyValues(bytesOf(pf, 9)), count: Number(fixed64(pf, 4)), ...(sum ? { sum: double(sum) } : {}) };
            })
          : [];
        out.push({ name: text(f, 1), unit: text(f, 3), resource, points, encoding: 'protobuf' });
      }
    }
  }
  return out;
}

type JsonValue = Record<string, unknown>;
function jsonAny(v: JsonValue | undefined): unknown {
  if (!v) return undefined;
  if ('stringValue' in v) return v.stringValue;
  if ('boolValue' in v) return v.boolValue;
  if ('intValue' in v) return Number(v.intValue);
  if ('doubleValue' in v) return Number(v.doubleValue);
  if ('arrayValue' in v) return ((v.arrayValue as { values?: JsonValue[] }).values ?? []).map(jsonAny);
  if ('kvlistValue' in v) return jsonKeyValues((v.kvlistValue as { values?: JsonValue[] }).values);
  return undefined;
}
function jsonKeyValues(list: JsonValue[] | undefined): Record<string, unknown> {
  return Object.fromEntries((list ?? []).map((kv) => [kv.key as string, jsonAny(kv.value as JsonValue)]));
}
/** OTLP/JSON ids are hex; some exporters have sent base64: both are read. */
const jsonId = (id: unknown): string => (typeof id !== 'string' ? '' : /^[0-9a-f]*$/i.test(id) ? id.toLowerCase() : Buffer.from(id, 'base64').toString('hex'));

/** The attributes of a resourceSpans' / resourceMetrics' `resource`, in OTLP/JSON. */
const jsonResource = (entry: JsonValue): Record<string, unknown> => jsonKeyValues((entry.resource as JsonValue | undefined)?.attributes as JsonValue[] | undefined);

function jsonSpans(body: JsonValue): ReceivedSpan[] {
  const spans: ReceivedSpan[] = [];
  for (const rs of (body.resourceSpans as JsonValue[] | undefined) ?? []) {
    const resource = jsonResource(rs);
    for (const ss of (rs.scopeSpans as JsonValue[] | undefined) ?? []) {
      const scope = String((ss.scope as JsonValue | undefined)?.name ?? '');
      for (const sp of (ss.spans as JsonValue[] | undefined) ?? []) {
        const status = (sp.status as JsonValue | undefined) ?? {};
        spans.push({
          traceId: jsonId(sp.traceId),
          spanId: jsonId(sp.spanId),
          parentSpanId: jsonId(sp.parentSpanId),
          name: String(sp.name),
          kind: Number(sp.kind ?? 0),
          startNs: BigInt(String(sp.startTimeUnixNano ?? 0)),
          endNs: BigInt(String(sp.endTimeUnixNano ?? 0)),
          attributes: jsonKeyValues(sp.attributes as JsonValue[] | undefined),
          events: ((sp.events as JsonValue[] | undefined) ?? []).map((e) => ({ name: String(e.name), timeNs: BigInt(String(e.timeUnixNano ?? 0)), attributes: jsonKeyValues(e.attributes as JsonValue[] | undefined) })),
          status: { code: Number(status.code ?? 0), message: String(status.message ?? '') },
          resource,
          scope,
          encoding: 'json',
        });
      }
    }
  }
  return spans;
}

function jsonMetrics(body: JsonValue): ReceivedMetric[] {
  const out: ReceivedMetric[] = [];
  for (const rm of (body.resourceMetrics as JsonValue[] | undefined) ?? []) {
    const resource = jsonResource(rm);
    for (const sm of (rm.scopeMetrics as JsonValue[] | undefined) ?? []) {
      for (const m of (sm.metrics as JsonValue[] | undefined) ?? []) {
        const histogram = m.histogram as { dataPoints?: JsonValue[] } | undefined;
        const points = (histogram?.dataPoints ?? []).map((p) => ({ attributes: jsonKeyValues(p.attributes as JsonValue[] | undefined), count: Number(p.count ?? 0), ...(p.sum !== undefined ? { sum: Number(p.sum) } : {}) }));
        out.push({ name: String(m.name), unit: String(m.unit ?? ''), resource, points, encoding: 'json' });
      }
    }
  }
  return out;
}

const MAX_BODY = 16 * 1024 * 1024;

export class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  readonly metrics: ReceivedMetric[] = [];
  /** Requests that could not be decoded (a failing test shows them). */
  readonly errors: string[] = [];
  /** Content types of the requests received, in order. */
  readonly contentTypes: string[] = [];
  private server: http.Server | undefined;
  url = '';

  async start(): Promise<this> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_BODY) req.destroy();
        else chunks.push(chunk);
      });
      req.on('end', () => {
        const type = String(req.headers['content-type'] ?? '');
        this.contentTypes.push(type);
        try {
          let body = Buffer.concat(chunks);
          if (req.headers['content-encoding'] === 'gzip') body = zlib.gunzipSync(body);
          const json = type.includes('json');
          if (req.url === '/v1/traces') this.spans.push(...(json ? jsonSpans(JSON.parse(body.toString('utf8')) as JsonValue) : protobufSpans(body)));
          else if (req.url === '/v1/metrics') this.metrics.push(...(json ? jsonMetrics(JSON.parse(body.toString('utf8')) as JsonValue) : protobufMetrics(body)));
          else {
            res.writeHead(404).end();
            return;
          }
          res.writeHead(200, { 'content-type': json ? 'application/json' : 'application/x-protobuf' }).end(json ? '{}' : '');
        } catch (err) {
          this.errors.push(`${req.url} ${type}: ${err instanceof Error ? err.message : String(err)}`);
          res.writeHead(400).end();
        }
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
