import vm from 'node:vm';
import { formatReport, runSoak, type Check, type SoakReport } from './helpers/chaos/soak';

// Chaos soak (issue 7, point 8): about 1,000 requests at concurrency 100 against a provider that drops, stalls,
// garbles, splits bytes, sends usage twice or not at all, errors mid-stream and before the first byte, with
// clients that hang up at random. Whatever happened: one meter call per admitted request, a ledger that adds
// up, the credits a client saw are the ones settled, no socket, handle or stream left behind, no crash.
// The provider runs in a worker thread (its own event loop, as a real one); the gateway is the example app's
// billing (CreditLedger, priced reserve and settle) on the library directly, with idleTimeout and
// usageGraceTimeout 300 ms and upstreamTimeout 1 s (createApp takes no meter to observe). Every invariant is
// checked in __tests__/helpers/chaos/soak.ts; each test below asserts one group of them, and the figures are printed.
// The larger soak is `npm run soak` (bench/soak.ts). SOAK_SEED=<n> replays another seed.

const REQUESTS = 1000;
const CONCURRENCY = 100;
const SEED = Number(process.env.SOAK_SEED ?? 20240607);

let report: SoakReport;

beforeAll(async () => {
  report = await runSoak({
    requests: REQUESTS,
    concurrency: CONCURRENCY,
    seed: SEED,
    idleTimeout: 300,
    usageGraceTimeout: 300,
    upstreamTimeout: 1000,
    // the process jest runs in: the sandbox's `process` is a copy whose listeners never fire
    watchProcess: vm.runInThisContext('process') as NodeJS.Process,
  });
  console.log(formatReport(report));
}, 90_000);

const violationsOf = (check: Check): string[] => report.violations.filter((v) => v.check === check).map((v) => v.detail);

describe(`chaos soak: ${REQUESTS} requests at concurrency ${CONCURRENCY}`, () => {
  test('ran every request in under a minute, and the chaos happened (every fault, every kind of cancel, every outcome)', () => {
    expect(Object.values(report.figures.clients).reduce((a, b) => a + b, 0)).toBe(REQUESTS);
    expect(report.figures.durationMs).toBeLessThan(60_000);
    expect(violationsOf('coverage')).toEqual([]);
  });

  test('no lost or doubled meter call: every reserve is settled by exactly one meter call with its generation id', () => {
    expect(violationsOf('meter-once')).toEqual([]);
    expect(violationsOf('reserve-meter')).toEqual([]);
    expect(report.figures.meterCalls).toBe(report.figures.admitted);
    expect(report.figures.admitted).toBeGreaterThan(0);
  });

  test('the ledger adds up: balance + held + used = start, nothing held at rest, used = the settled charges', () => {
    expect(violationsOf('ledger')).toEqual([]);
    const { ledger } = report.figures;
    expect(Math.round((ledger.balance + ledger.held + ledger.used) * 1000)).toBe(ledger.start * 1000);
    expect(ledger.held).toBe(0);
    expect(ledger.used).toBe(ledger.charged);
  });

  test('every client that saw credits_used saw what was settled for its generation, with the metered usage', () => {
    expect(violationsOf('credits-seen')).toEqual([]);
  });

  test('a client that stayed got the answer its fault calls for (credits and [DONE], an error chunk, or the HTTP error), metered as such', () => {
    expect(violationsOf('outcome')).toEqual([]);
    expect(violationsOf('usage')).toEqual([]);
    expect(violationsOf('hung')).toEqual([]);
  });

  test('one log line per generation, no hook failure logged', () => {
    expect(violationsOf('log-line')).toEqual([]);
  });

  test('at rest: inFlight 0, no client socket on the gateway, no upstream response open, handles and timers back to the baseline', () => {
    expect(violationsOf('in-flight')).toEqual([]);
    expect(violationsOf('sockets')).toEqual([]);
    expect(violationsOf('handles')).toEqual([]);
  });

  test('no crash: no unhandledRejection or uncaughtException', () => {
    expect(violationsOf('crash')).toEqual([]);
  });
});
