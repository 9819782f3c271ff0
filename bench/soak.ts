/**
 * Chaos soak, the large one (issue 7, point 8): the soak of __tests__/soak.test.ts with more requests. A
 * provider that drops, stalls, garbles, splits bytes, sends usage twice or not at all and fails before the first
 * byte; clients that hang up at random; the gateway with the example app's reserve-then-settle ledger between
 * them, on 127.0.0.1 in this one process (the provider on a worker thread of its own). Prints the figures and
 * exits non-zero on any violated invariant.
 *
 *   npm run soak                                     (20,000 requests at concurrency 200)
 *   SOAK_REQUESTS=3000 SOAK_CONCURRENCY=100 SOAK_SEED=7 npm run soak
 *
 * Re-spawns itself with --expose-gc so the RSS figures are taken after full collections.
 */
import { spawnSync } from 'node:child_process';
import { formatReport, runSoak } from '../__tests__/helpers/chaos/soak';

function wholeEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 1) throw new Error(`${name} must be a whole number ≥ 1, got ${JSON.stringify(raw)}`);
  return value;
}

async function main(): Promise<void> {
  const requests = wholeEnv('SOAK_REQUESTS', 20_000);
  const concurrency = wholeEnv('SOAK_CONCURRENCY', 200);
  const seed = wholeEnv('SOAK_SEED', 20240607);
  // a hung soak must not hang CI: 2 minutes plus 20 ms a request
  const watchdogMs = 120_000 + requests * 20;
  const watchdog = setTimeout(() => {
    console.error(`soak: still running after ${Math.round(watchdogMs / 1000)} s; giving up.`);
    process.exit(2);
  }, watchdogMs);
  watchdog.unref();

  const gc = globalThis.gc;
  console.log(`infery-stream chaos soak — node ${process.version}, ${process.platform}/${process.arch}, gc ${gc ? 'exposed' : 'NOT exposed'}`);
  console.log('gateway (express + compression() + express.json() + inferyStream + CreditLedger) and clients in one process on 127.0.0.1,');
  console.log('the chaos provider on a worker thread of the same process (its own event loop)\n');
  const report = await runSoak({
    requests,
    concurrency,
    seed,
    startingCredits: 1_000_000,
    idleTimeout: 300,
    usageGraceTimeout: 300,
    upstreamTimeout: 1000,
    requireCoverage: requests >= 500,
    gc: gc ? () => (gc(), gc()) : undefined,
  });
  clearTimeout(watchdog);
  console.log(formatReport(report));
  console.log(JSON.stringify({ bench: 'infery-stream chaos soak', node: process.version, ...report.figures, violations: report.violations.length }));
  if (report.violations.length > 0) {
    console.error(`\nsoak FAILED: ${report.violations.length} violation(s)`);
    process.exitCode = 1;
  } else console.log('\nsoak passed: every invariant held');
}

if (typeof globalThis.gc !== 'function' && process.env.INFERY_SOAK_CHILD !== '1') {
  const child = spawnSync(process.execPath, ['--expose-gc', ...process.execArgv, __filename, ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, INFERY_SOAK_CHILD: '1' },
  });
  process.exitCode = child.status ?? 1;
} else {
  main().catch((err: unknown) => {
    console.error(`soak crashed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exitCode = 1;
  });
}
