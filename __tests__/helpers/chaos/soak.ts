import http from 'node:http';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { type Usage } from '../../../lib';
import { stopTokenizerThreads } from '../../../lib/ledgers/billing/tokenizer-thread';
import { ClientResult, runClients } from './clients';
import { MeterRecord, SOAK_KEY, SoakGateway, milli, startSoakGateway } from './gateway';
import { Behaviour, ChaosProvider, ProviderRecord, STREAM_BEHAVIOURS, expectedOutcome } from './provider';
import { sleep } from './random';

/**
 * Chaos soak (issue 7, point 8): a misbehaving provider (`./provider.ts`), clients that hang up at random
 * (`./clients.ts`), the gateway between them (`./gateway.ts`), and the invariants that must hold whatever
 * happened. Shared by `__tests__/soak.test.ts` (1,000 requests) and `bench/soak.ts` (`npm run soak`). No jest
 * globals in this folder: the bench compiles it too.
 */

/** The invariants, by name; each violation says which one it breaks. */
export type Check =
  | 'meter-once' // every admitted generation has exactly one meter call
  | 'reserve-meter' // every reserve is matched by one meter call with its generation id, and nothing else is metered
  | 'ledger' // balance + held + used = start, held = 0 at rest, used = the sum of the charges, nothing unpaid
  | 'credits-seen' // a client that saw credits saw what was settled for its generation, with the same usage
  | 'outcome' // a client that stayed to the end got the answer its provider behaviour calls for, metered so
  | 'usage' // metered usage: the provider's (the larger of two), or marked as an estimate; never above the worst case
  | 'log-line' // one end-of-request log line per generation; no hook failure logged
  | 'in-flight' // gateway.inFlight back to 0
  | 'sockets' // no client socket left open on the gateway, no upstream response left open on the provider
  | 'handles' // active handles and timers back to the baseline after teardown
  | 'crash' // no unhandledRejection / uncaughtException
  | 'hung' // every client request ended within its deadline
  | 'coverage'; // the chaos happened: every behaviour and every kind of cancel and outcome occurred

export interface Violation {
  check: Check;
  detail: string;
}

export interface SoakOptions {
  requests: number;
  concurrency: number;
  seed: number;
  startingCredits?: number;
  idleTimeout?: number;
  usageGraceTimeout?: number;
  upstreamTimeout?: number;
  /** A client request still open after this is a hung request. Default 20 s. */
  clientTimeoutMs?: number;
  /** The process whose `unhandledRejection` / `uncaughtException` to watch (in jest: the host's). */
  watchProcess?: NodeJS.Process;
  /** Require every behaviour, cancel kind and outcome to have occurred (off for tiny runs). Default true. */
  requireCoverage?: boolean;
  /** Runs before each RSS reading (the bench passes `global.gc` when exposed). */
  gc?: () => void;
}

export interface SoakFigures {
  requests: number;
  concurrency: number;
  seed: number;
  durationMs: number;
  /** What the clients saw. */
  clients: Record<string, number>;
  /** What the provider did. */
  behaviours: Record<string, number>;
  admitted: number;
  meterCalls: number;
  meterByOutcome: Record<string, number>;
  ledger: { start: number; balance: number; held: number; used: number; charged: number };
  rssBeforeMiB: number;
  rssAfterMiB: number;
  heapBeforeMiB: number;
  heapAfterMiB: number;
  /** Stalls of the gateway's event loop over 50 ms. */
  loopStalls: number;
  /** Answers that came gzip-encoded. */
  gzipAnswers: number;
  eventLoopDelayMs: { p99: number; max: number };
  resourcesBaseline: Record<string, number>;
  resourcesAfter: Record<string, number>;
  logMessages: Record<string, number>;
  /** Timeouts explained by the provider's own slowness plus a stall of the gateway's event loop: expected, not violations. */
  timingTolerated: string[];
}

export interface SoakReport {
  figures: SoakFigures;
  violations: Violation[];
}

export function resourceCounts(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) counts[r] = (counts[r] ?? 0) + 1;
  return counts;
}

function excess(now: Record<string, number>, baseline: Record<string, number>): Record<string, number> {
  const over: Record<string, number> = {};
  for (const [type, n] of Object.entries(now)) if (n > (baseline[type] ?? 0)) over[type] = n - (baseline[type] ?? 0);
  return over;
}

/** Records stalls of this event loop over 50 ms, as [from, to] in epoch ms. */
function watchStalls(): { stalls: Array<[number, number]>; stop(): void } {
  const stalls: Array<[number, number]> = [];
  let last = Date.now();
  const timer = setInterval(() => {
    const now = Date.now();
    if (now - last > 70) stalls.push([last, now]);
    last = now;
  }, 20);
  return { stalls, stop: () => clearInterval(timer) };
}

/** The longest stall (ms) that overlaps [from, to]. */
function longestStall(stalls: ReadonlyArray<readonly [number, number]>, from: number, to: number): number {
  let longest = 0;
  for (const [a, b] of stalls) if (a < to && b > from) longest = Math.max(longest, b - a);
  return longest;
}

async function until(check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

const mib = (bytes: number): number => Math.round((bytes / (1024 * 1024)) * 10) / 10;

const countBy = <T>(items: readonly T[], key: (item: T) => string): Record<string, number> => {
  const out: Record<string, number> = {};
  for (const item of items) out[key(item)] = (out[key(item)] ?? 0) + 1;
  return out;
};

/** How a client's request ended, for the figures. */
function clientCategory(r: ClientResult): string {
  if (r.timedOut) return 'hung';
  if (r.cancelled) return r.cancelledBeforeHeaders ? 'cancelled before headers' : 'cancelled mid-answer';
  if (r.networkError) return `network error (${r.networkError})`;
  if (r.status !== 200) return `HTTP ${r.status}`;
  if (!r.stream) return 'JSON 200';
  if (r.sawDone) return 'stream [DONE]';
  if (r.errorCode) return `stream error chunk (${r.errorCode})`;
  return 'stream cut short';
}

/** The error code a client that stayed sees when the provider fails mid-answer. */
const FAILED_CODE: Partial<Record<Behaviour, { stream: string; json: string }>> = {
  drop: { stream: 'upstream_connection_lost', json: 'upstream_connection_lost' },
  stall: { stream: 'upstream_timeout', json: 'upstream_connection_lost' },
  garble: { stream: 'upstream_invalid_response', json: 'upstream_invalid_response' },
  'error-chunk': { stream: 'overloaded', json: 'overloaded' },
  'no-headers': { stream: 'upstream_timeout', json: 'upstream_timeout' },
};

const UNSERVED_STATUS: Partial<Record<Behaviour, number>> = { 'http-500': 500, 'http-429': 429, refuse: 502, 'no-headers': 504 };

const sameUsage = (a: Usage | undefined, b: Usage): boolean =>
  a !== undefined && a.prompt_tokens === b.prompt_tokens && a.completion_tokens === b.completion_tokens && a.total_tokens === b.total_tokens && a.estimated === b.estimated;

const showUsage = (u: Usage | undefined): string => (u ? `${u.prompt_tokens}+${u.completion_tokens}=${u.total_tokens}${u.estimated ? ' (estimated)' : ''}` : 'none');

/**
 * Starts the chaos provider and the soak gateway, runs the clients, waits for the gateway to come to rest,
 * checks every invariant, tears everything down and checks the handles. Never throws for a violation: they
 * are returned (at most 20 listed per check, then a count).
 */
export async function runSoak(o: SoakOptions): Promise<SoakReport> {
  const idleTimeout = o.idleTimeout ?? 300;
  const startingCredits = o.startingCredits ?? 100_000;
  const watched = o.watchProcess ?? process;
  const violations: Violation[] = [];
  const perCheck = new Map<Check, number>();
  const violate = (check: Check, detail: string): void => {
    const n = (perCheck.get(check) ?? 0) + 1;
    perCheck.set(check, n);
    if (n <= 20) violations.push({ check, detail });
  };

  const crashes: string[] = [];
  const onRejection = (reason: unknown): void => void crashes.push(`unhandledRejection: ${reason instanceof Error ? reason.stack : String(reason)}`);
  const onException = (err: Error): void => void crashes.push(`uncaughtException: ${err.stack ?? String(err)}`);

  const resourcesBaseline = resourceCounts();
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  o.gc?.();
  const rssBefore = process.memoryUsage().rss;
  const heapBefore = process.memoryUsage().heapUsed;
  let rssAfter = rssBefore;
  let heapAfter = heapBefore;
  let results: ClientResult[] = [];
  let records: ProviderRecord[] = [];
  let timingTolerated: string[] = [];
  let durationMs = 0;
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.concurrency });
  const stallWatch = watchStalls();
  const provider = new ChaosProvider({ seed: o.seed });
  let gw: SoakGateway | undefined;
  watched.on('unhandledRejection', onRejection);
  watched.on('uncaughtException', onException);
  try {
    await provider.start();
    gw = await startSoakGateway({
      upstreamURL: provider.url,
      startingCredits,
      seed: o.seed,
      idleTimeout,
      usageGraceTimeout: o.usageGraceTimeout ?? 300,
      upstreamTimeout: o.upstreamTimeout ?? 1000,
    });
    const gateway = gw;
    loopDelay.enable();
    const started = performance.now();
    results = await runClients(new URL(`${gateway.url}/v1/chat/completions`), agent, SOAK_KEY, {
      requests: o.requests,
      concurrency: o.concurrency,
      seed: o.seed,
      timeoutMs: o.clientTimeoutMs ?? 20_000,
    });
    // at rest: every generation settled and written (a cancelled one may still be settling)
    if (!(await until(() => gateway.gateway.inFlight === 0, 10_000))) violate('in-flight', `gateway.inFlight is ${gateway.gateway.inFlight} 10 s after the last client finished`);
    durationMs = Math.round(performance.now() - started);
    loopDelay.disable();
    stallWatch.stop();
    o.gc?.();
    rssAfter = process.memoryUsage().rss;
    heapAfter = process.memoryUsage().heapUsed;

    records = await provider.records();
    timingTolerated = checkInvariants(o, gateway, records, stallWatch.stalls, results, startingCredits, violate);
    // a few are a busy machine; many would be the gateway timing out answers that came in time
    if (timingTolerated.length > Math.max(5, o.requests * 0.02)) violate('outcome', `${timingTolerated.length} timeouts put down to event-loop stalls: too many to be the machine`);

    // sockets: the clients' keep-alive agent is the test's own; once it is gone the gateway holds no client socket
    agent.destroy();
    if (!(await until(async () => (await gateway.connections()) === 0, 5_000))) {
      violate('sockets', `the gateway still has ${await gateway.connections()} client connections after the client agent was destroyed`);
    }
    // every upstream response ended or aborted: a stall the gateway never cut would still be open here
    if (!(await until(async () => (await provider.status()).open === 0, 2 * idleTimeout + 1_000))) {
      violate('sockets', `${(await provider.status()).open} upstream responses are still open on the provider`);
    }
  } finally {
    stallWatch.stop();
    loopDelay.disable();
    agent.destroy();
    await gw?.close();
    await provider.stop();
    // the process's tokenizer thread (cancelled streams are counted there) idles 30 s by design: stopped as a host's exit would
    await stopTokenizerThreads();
  }
  // handles and timers back to the baseline taken before anything started (timers still running settle first)
  const back = await until(() => Object.keys(excess(resourceCounts(), resourcesBaseline)).length === 0, 5_000);
  const resourcesAfter = resourceCounts();
  if (!back) violate('handles', `active resources above the baseline after teardown: ${JSON.stringify(excess(resourcesAfter, resourcesBaseline))}`);
  // a late rejection from a settling generation would land now
  await sleep(50);
  watched.off('unhandledRejection', onRejection);
  watched.off('uncaughtException', onException);
  for (const c of crashes) violate('crash', c);

  for (const [check, n] of perCheck) if (n > 20) violations.push({ check, detail: `… and ${n - 20} more` });
  const balance = gw.ledger.balanceOf(SOAK_KEY)!;
  const p99 = loopDelay.percentile(99) / 1e6;
  return {
    violations,
    figures: {
      requests: o.requests,
      concurrency: o.concurrency,
      seed: o.seed,
      durationMs,
      clients: countBy(results, clientCategory),
      behaviours: countBy(records, (r) => `${r.behaviour}${r.stream ? '' : ' (json)'}`),
      admitted: gw.reserved.length,
      meterCalls: [...gw.meterCalls.values()].reduce((a, b) => a + b, 0),
      meterByOutcome: countBy(gw.meters, (m) => m.outcome),
      ledger: {
        start: startingCredits,
        balance: balance.balance,
        held: balance.held,
        used: balance.used,
        charged: gw.meters.reduce((sum, m) => sum + milli(m.settlement.charged), 0) / 1000,
      },
      rssBeforeMiB: mib(rssBefore),
      rssAfterMiB: mib(rssAfter),
      heapBeforeMiB: mib(heapBefore),
      heapAfterMiB: mib(heapAfter),
      loopStalls: stallWatch.stalls.length,
      gzipAnswers: results.filter((r) => r.gzipped).length,
      eventLoopDelayMs: { p99: Math.round(p99 * 10) / 10, max: Math.round((loopDelay.max / 1e6) * 10) / 10 },
      resourcesBaseline,
      resourcesAfter,
      logMessages: Object.fromEntries(gw.logMessages),
      timingTolerated,
    },
  };
}

/** Every invariant that can be checked once the gateway is at rest. */
function checkInvariants(
  o: SoakOptions,
  gw: SoakGateway,
  records: readonly ProviderRecord[],
  stalls: ReadonlyArray<readonly [number, number]>,
  results: ClientResult[],
  startingCredits: number,
  violate: (check: Check, detail: string) => void,
): string[] {
  const idleTimeout = o.idleTimeout ?? 300;
  const upstreamTimeout = o.upstreamTimeout ?? 1000;
  const tolerated: string[] = [];
  // --- meter: exactly once per admitted generation, and only for admitted ones
  const reservedIds = new Set<string>();
  for (const r of gw.reserved) {
    if (reservedIds.has(r.generationId)) violate('reserve-meter', `reserve was called twice for ${r.generationId}`);
    reservedIds.add(r.generationId);
  }
  for (const id of reservedIds) {
    const calls = gw.meterCalls.get(id) ?? 0;
    if (calls === 0) violate('meter-once', `lost meter call: ${id} (${gw.reserved.find((r) => r.generationId === id)?.soakId}) was reserved and never metered`);
    else if (calls > 1) violate('meter-once', `doubled meter call: ${id} metered ${calls} times`);
  }
  for (const [id, calls] of gw.meterCalls) if (!reservedIds.has(id)) violate('reserve-meter', `${id} metered ${calls}× without a reservation`);
  if (gw.reserveRefusals > 0) violate('reserve-meter', `reserve refused ${gw.reserveRefusals} requests (the balance should cover them all)`);
  const meterOf = new Map<string, MeterRecord>();
  for (const m of gw.meters) if (!meterOf.has(m.generationId)) meterOf.set(m.generationId, m);
  const generationOfSoak = new Map<string, string>();
  for (const r of gw.reserved) {
    if (r.soakId === undefined) continue;
    if (generationOfSoak.has(r.soakId)) violate('reserve-meter', `client request ${r.soakId} was admitted twice`);
    generationOfSoak.set(r.soakId, r.generationId);
  }

  // --- the ledger adds up (thousandths)
  const balance = gw.ledger.balanceOf(SOAK_KEY)!;
  const [b, h, u] = [milli(balance.balance), milli(balance.held), milli(balance.used)];
  if (b + h + u !== milli(startingCredits)) violate('ledger', `balance ${balance.balance} + held ${balance.held} + used ${balance.used} ≠ start ${startingCredits}`);
  if (h !== 0) violate('ledger', `${balance.held} credits still held with nothing in flight`);
  const charged = gw.meters.reduce((sum, m) => sum + milli(m.settlement.charged), 0);
  if (u !== charged) violate('ledger', `used ${balance.used} ≠ the sum of the settled charges ${charged / 1000}`);
  for (const m of gw.meters) {
    if (m.settlement.unpaid !== 0) violate('ledger', `${m.generationId} left ${m.settlement.unpaid} unpaid`);
    if (m.outcome === 'unserved' && m.settlement.charged !== 0) violate('ledger', `unserved ${m.generationId} was charged ${m.settlement.charged}`);
  }

  // --- metered usage
  for (const m of gw.meters) {
    if (m.usage.prompt_tokens > m.worstCase.prompt_tokens || m.usage.completion_tokens > m.worstCase.completion_tokens) {
      violate('usage', `${m.generationId} metered ${showUsage(m.usage)}, above its worst case ${m.worstCase.prompt_tokens}+${m.worstCase.completion_tokens}`);
    }
  }
  for (const p of records) {
    if (p.cap !== undefined && p.words > p.cap) violate('usage', `the provider produced ${p.words} tokens over the cap ${p.cap} for ${p.soakId}`);
  }

  // --- one log line per generation; no hook failure
  for (const id of reservedIds) {
    const lines = gw.logLines.get(id) ?? 0;
    if (lines !== 1) violate('log-line', `${id} has ${lines} end-of-request log lines`);
  }
  for (const [msg, n] of gw.logMessages) {
    if (/meter (threw|timed out|returned)|hook or handler threw/.test(msg)) violate('log-line', `${n}× "${msg}"`);
  }

  // --- what each client saw
  const providerOf = new Map<string, ProviderRecord>();
  for (const p of records) {
    if (p.soakId === undefined) continue;
    if (providerOf.has(p.soakId)) violate('outcome', `the provider saw ${p.soakId} twice (a retried upstream call)`);
    providerOf.set(p.soakId, p);
  }
  for (const r of results) {
    const where = `${r.soakId} (${r.stream ? 'stream' : 'json'}, cancel ${r.cancel}${r.cancel === 'never' ? '' : ` @${r.cancelAt}`})`;
    if (r.timedOut) violate('hung', `${where} was still open after ${o.clientTimeoutMs ?? 20_000} ms`);
    if (r.malformed) violate('outcome', `${where}: ${r.malformed}`);
    const genId = generationOfSoak.get(r.soakId);
    if (r.generationId !== undefined && !reservedIds.has(r.generationId)) violate('reserve-meter', `${where} got X-Generation-Id ${r.generationId}, which was never reserved`);
    if (r.generationId !== undefined && genId !== undefined && r.generationId !== genId) violate('reserve-meter', `${where} got ${r.generationId}, reserved as ${genId}`);
    const m = genId === undefined ? undefined : meterOf.get(genId);

    if (r.credits !== undefined) {
      if (!m) violate('credits-seen', `${where} saw credits_used ${r.credits} for a generation that was never metered`);
      else {
        if (r.credits !== m.settlement.charged) violate('credits-seen', `${where} saw credits_used ${r.credits}; ${m.settlement.charged} were settled`);
        if (!sameUsage(r.usage, m.usage)) violate('credits-seen', `${where} saw usage ${showUsage(r.usage)} next to its credits; ${showUsage(m.usage)} was metered`);
      }
    }
    if (r.stream && r.creditsChunks > 1) violate('credits-seen', `${where} saw ${r.creditsChunks} credits chunks`);

    if (r.cancelled || r.timedOut) continue;
    // the client stayed to the end: its answer and its settlement follow from what the provider did
    const p = providerOf.get(r.soakId);
    if (r.networkError) {
      violate('outcome', `${where}: ${r.networkError} (provider: ${p?.behaviour ?? 'never called'})`);
      continue;
    }
    if (!genId || !m) {
      violate('outcome', `${where} answered ${r.status} ${r.errorCode ?? ''} without being admitted and metered`);
      continue;
    }
    if (r.generationId === undefined) violate('outcome', `${where} answered ${r.status} without an X-Generation-Id header`);
    if (!p) {
      violate('outcome', `${where} was admitted (${m.outcome}) but never reached the provider`);
      continue;
    }
    const want = expectedOutcome(p.behaviour, r.stream);
    const seen = `answered ${r.status}${r.sawDone ? ' [DONE]' : ''}${r.errorCode ? ` ${r.errorCode}` : ''}, metered ${m.outcome}${m.errorCode ? ` (${m.errorCode})` : ''}`;
    if (m.outcome !== want) {
      // An idle timeout is right when the provider was that silent, or when the gateway's own event loop stalled
      // long enough (a busy machine): after a stall, timers run before the data that waited is read. Counted in
      // the figures, not a violation.
      const stalled = longestStall(stalls, r.startedAt, r.startedAt + r.durationMs);
      if (m.outcome === 'failed' && p.maxSilenceMs + stalled >= idleTimeout - 30 && m.errorCode === (r.stream ? 'upstream_timeout' : 'upstream_connection_lost')) {
        tolerated.push(`${where}, provider ${p.behaviour} silent for ${p.maxSilenceMs} ms, event loop stalled ${stalled} ms: ${seen}`);
        continue;
      }
      // likewise the upstreamTimeout, for headers that came late because of the provider plus a stall
      if ((m.outcome === 'unserved' || (m.outcome === 'failed' && !r.stream)) && m.errorCode === 'upstream_timeout' && (p.headersAfterMs ?? upstreamTimeout) + stalled >= upstreamTimeout - 30) {
        tolerated.push(`${where}, provider ${p.behaviour} sent headers after ${p.headersAfterMs} ms, event loop stalled ${stalled} ms: ${seen}`);
        continue;
      }
      const reservedAt = gw.reserved.find((x) => x.generationId === genId)?.at ?? NaN;
      violate('outcome', `${where}, provider ${p.behaviour} (reached the provider ${Math.round(p.arrivedAt - reservedAt)} ms after reserve, connection accepted ${Math.round(p.connectedAt - reservedAt)} ms after reserve with ${p.requestsBefore} requests before, headers after ${p.headersAfterMs} ms; client took ${r.durationMs} ms): ${seen}; expected ${want}`);
      continue;
    }
    if (want === 'completed') {
      const ok = r.status === 200 && r.credits !== undefined && (!r.stream || (r.sawDone && r.creditsChunks === 1 && r.creditsIndex === r.events - 2 && r.errorCode === undefined));
      if (!ok) violate('outcome', `${where}, provider ${p.behaviour}: ${seen}, ${r.creditsChunks} credits chunks at ${r.creditsIndex} of ${r.events} events`);
      const reported = p.usages.reduce((best, x) => ({ prompt_tokens: Math.max(best.prompt_tokens, x.prompt_tokens), completion_tokens: Math.max(best.completion_tokens, x.completion_tokens) }), { prompt_tokens: 0, completion_tokens: 0 });
      if (p.usages.length === 0) {
        if (m.usage.estimated !== true) violate('usage', `${where}: the provider sent no usage, yet ${showUsage(m.usage)} was metered as the provider's`);
      } else if (m.usage.estimated || m.usage.prompt_tokens !== reported.prompt_tokens || m.usage.completion_tokens !== reported.completion_tokens) {
        violate('usage', `${where}, provider ${p.behaviour} reported ${p.usages.map((x) => `${x.prompt_tokens}+${x.completion_tokens}`).join(' then ')}; ${showUsage(m.usage)} was metered`);
      }
    } else if (want === 'failed') {
      const code = FAILED_CODE[p.behaviour]?.[r.stream ? 'stream' : 'json'];
      const failedStatus = p.behaviour === 'no-headers' ? 504 : 502;
      const ok = r.stream ? r.status === 200 && !r.sawDone && r.creditsChunks === 0 && r.errorCode === code : r.status === failedStatus && r.errorCode === code;
      if (!ok) violate('outcome', `${where}, provider ${p.behaviour}: ${seen}; expected ${r.stream ? 'an error chunk' : '502'} ${code}`);
    } else {
      const status = UNSERVED_STATUS[p.behaviour];
      if (r.status !== status || r.credits !== undefined) violate('outcome', `${where}, provider ${p.behaviour}: ${seen}; expected HTTP ${status}`);
      if (m.settlement.charged !== 0 || m.usage.total_tokens !== 0) violate('outcome', `${where}: unserved but metered ${showUsage(m.usage)} for ${m.settlement.charged}`);
    }
  }

  // --- the chaos happened
  if (o.requireCoverage ?? true) {
    const behaviours = new Set(records.map((p) => p.behaviour));
    for (const [b] of STREAM_BEHAVIOURS) if (!behaviours.has(b)) violate('coverage', `no request met provider behaviour "${b}"`);
    const cancels = new Set<string>(results.filter((r) => r.cancelled).map((r) => (r.cancelledBeforeHeaders ? 'before headers' : 'mid-answer')));
    for (const c of ['before headers', 'mid-answer'] as const) if (!cancels.has(c)) violate('coverage', `no client cancelled ${c}`);
    const outcomes = new Set(gw.meters.map((m) => m.outcome));
    for (const out of ['completed', 'cancelled', 'failed', 'unserved'] as const) if (!outcomes.has(out)) violate('coverage', `no generation ended ${out}`);
    if (!results.some((r) => r.gzipped)) violate('coverage', 'no answer came gzip-encoded');
  }
  return tolerated;
}

/** The figures as text, for the test log and the bench. */
export function formatReport(report: SoakReport): string {
  const f = report.figures;
  const table = (title: string, counts: Record<string, number>): string => {
    const rows = Object.entries(counts).sort((a, b) => b[1] - a[1]);
    const width = Math.max(0, ...rows.map(([k]) => k.length));
    return `${title}\n${rows.map(([k, n]) => `    ${k.padEnd(width)}  ${String(n).padStart(6)}`).join('\n')}`;
  };
  const lines = [
    `chaos soak: ${f.requests} requests at concurrency ${f.concurrency}, seed ${f.seed}, in ${(f.durationMs / 1000).toFixed(1)} s`,
    table('  clients saw', f.clients),
    table('  the provider did', f.behaviours),
    `  admitted (reserve) ${f.admitted}, meter calls ${f.meterCalls}`,
    table('  metered outcomes', f.meterByOutcome),
    `  ledger: start ${f.ledger.start} = balance ${f.ledger.balance} + held ${f.ledger.held} + used ${f.ledger.used}; settled charges ${f.ledger.charged}`,
    `  RSS ${f.rssBeforeMiB} → ${f.rssAfterMiB} MiB, heap ${f.heapBeforeMiB} → ${f.heapAfterMiB} MiB (the run's records included); event-loop delay p99 ${f.eventLoopDelayMs.p99} ms, max ${f.eventLoopDelayMs.max} ms, ${f.loopStalls} stalls over 50 ms`,
    `  gzip-encoded answers: ${f.gzipAnswers}`,
    `  active resources: baseline ${JSON.stringify(f.resourcesBaseline)}, after ${JSON.stringify(f.resourcesAfter)}`,
    `  timeouts explained by the provider's slowness + event-loop stalls (not violations): ${f.timingTolerated.length}${f.timingTolerated.slice(0, 5).map((t) => `\n    ${t}`).join('')}`,
    Object.keys(f.logMessages).length ? table('  gateway warnings/errors logged', f.logMessages) : '  gateway warnings/errors logged: none',
    report.violations.length === 0 ? '  violations: none' : `  violations:\n${report.violations.map((v) => `    [${v.check}] ${v.detail}`).join('\n')}`,
  ];
  return lines.join('\n');
}
