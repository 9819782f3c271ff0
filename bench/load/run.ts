/**
 * `npm run bench:load`: what the gateway adds to time to first token under load, beside a bare byte pipe, each
 * in its own process on 127.0.0.1 — the provider (bench/load/provider.ts: 10 chunks 40 ms apart), the pipe
 * (bench/load/pipe.ts: Express 5 + http-proxy-middleware), the gateway (the example app as users run it,
 * `node dist/example-app/server.js`, per-key limits off), and a load generator process per run
 * (bench/load/loadgen.ts). For each load level and repetition the three targets run in rotated order, so all
 * share the machine's state; every added figure is over the provider directly in the same repetition. It prints
 * figures and a JSON file, never pass/fail.
 *
 *   LOAD_REPS (default 2)   LOAD_LEVELS (default "1,100,500,1000")   LOAD_JSON (default bench-load.json)
 *   LOAD_GATEWAY_NODE_OPTIONS, LOAD_PIPE_NODE_OPTIONS: Node flags for that process only (`--cpu-prof --cpu-prof-dir=prof`)
 *   LOAD_GATEWAY_SCRIPT: another build's example-app/server.js as the gateway (a worktree of an earlier commit, built),
 *   to set this one beside it under the same harness
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { percentile } from '../stats';

const DIST = path.resolve(__dirname, '..', '..');
const ROOT = path.resolve(DIST, '..');
const KEY = 'load-key';
const REPS = Math.max(1, Number(process.env.LOAD_REPS ?? 2));
const LEVELS = (process.env.LOAD_LEVELS ?? '1,100,500,1000').split(',').map(Number).filter((c) => c > 0);
/**
 * Streams per run: sequential runs are slow (each stream takes ~400 ms); concurrent ones run twice their width,
 * and at least 1,000, so a narrow level's percentiles come from ten waves rather than two.
 */
const streamsFor = (c: number): number => (c === 1 ? 20 : Math.max(c * 2, 1_000));
const TICK = 100; // USER_HZ: /proc/<pid>/stat counts CPU in 1/100 s on Linux
const WATCHDOG_MS = 15 * 60_000;

type TargetName = 'direct' | 'pipe' | 'gateway';
interface Target {
  name: TargetName;
  url: string;
  key: string;
  /** the process between client and provider (none for direct) */
  pid?: number;
}
interface Run {
  level: number;
  rep: number;
  target: TargetName;
  ok: number;
  failed: number;
  chunks: number;
  ttftP50: number;
  ttftP99: number;
  cpuSeconds?: number;
  idleRss?: number;
  peakRss?: number;
}

const children: ChildProcess[] = [];
function stopAll(): void {
  for (const child of children) if (child.exitCode === null) child.kill('SIGTERM');
}
process.on('exit', stopAll);
const watchdog = setTimeout(() => {
  console.error(`bench:load: still running after ${WATCHDOG_MS / 60_000} min, stopping`);
  stopAll();
  process.exit(1);
}, WATCHDOG_MS);

/** Starts a bench process that prints {"port":N}; resolves with the port. */
function startPrinting(script: string, env: Record<string, string>, nodeFlags: string[] = []): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [...nodeFlags, path.join(DIST, 'bench', 'load', script)], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${script} did not start`)), 15_000);
    child.once('exit', (code) => reject(new Error(`${script} exited (${code})`)));
    readline.createInterface({ input: child.stdout! }).once('line', (line) => {
      clearTimeout(timer);
      resolve({ child, port: (JSON.parse(line) as { port: number }).port });
    });
  });
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

async function waitForPort(port: number, what: string): Promise<void> {
  const until = Date.now() + 30_000;
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => (socket.destroy(), resolve(true)));
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    if (Date.now() > until) throw new Error(`${what} did not listen on ${port} within 30 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** utime + stime of a process, in seconds. */
function cpuOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICK;
}
/** Resident set size of a process, in bytes. */
function rssOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN) * 1024;
}

async function loadRun(target: Target, level: number, rep: number): Promise<Run> {
  const job = { url: target.url, key: target.key, concurrency: level, streams: streamsFor(level) };
  const cpuBefore = target.pid ? cpuOf(target.pid) : undefined;
  const idleRss = target.pid ? rssOf(target.pid) : undefined;
  let peakRss = idleRss ?? 0;
  const sampler = target.pid ? setInterval(() => (peakRss = Math.max(peakRss, rssOf(target.pid!))), 20) : undefined;
  const child = spawn(process.execPath, [path.join(DIST, 'bench', 'load', 'loadgen.js'), JSON.stringify(job)], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  await new Promise<void>((resolve) => child.once('exit', () => resolve()));
  if (sampler) clearInterval(sampler);
  const result = JSON.parse(out) as { ok: number; failed: number; chunks: number; ttft: number[] };
  return {
    level,
    rep,
    target: target.name,
    ok: result.ok,
    failed: result.failed,
    chunks: result.chunks,
    ttftP50: percentile(result.ttft, 50),
    ttftP99: percentile(result.ttft, 99),
    cpuSeconds: target.pid ? cpuOf(target.pid) - cpuBefore! : undefined,
    idleRss,
    peakRss: target.pid ? peakRss : undefined,
  };
}

const fmt = (v: number | undefined, digits = 1): string => (v === undefined || !Number.isFinite(v) ? 'n/a' : v.toFixed(digits));
const signed = (v: number): string => (Number.isFinite(v) ? `${v >= 0 ? '+' : ''}${v.toFixed(1)}` : 'n/a');
const mib = (bytes: number | undefined): string => (bytes === undefined ? 'n/a' : `${(bytes / 1048576).toFixed(0)} MB`);

async function main(): Promise<void> {
  const provider = await startPrinting('provider.js', {});
  const upstream = `http://127.0.0.1:${provider.port}/v1`;
  const flags = (name: string): string[] => (process.env[name] ?? '').split(' ').filter(Boolean);
  const pipe = await startPrinting('pipe.js', { LOAD_UPSTREAM: upstream }, flags('LOAD_PIPE_NODE_OPTIONS'));
  const gatewayPort = await freePort();
  const gateway = spawn(process.execPath, [...flags('LOAD_GATEWAY_NODE_OPTIONS'), path.resolve(process.env.LOAD_GATEWAY_SCRIPT ?? path.join(DIST, 'example-app', 'server.js'))], {
    cwd: ROOT,
    env: {
      ...process.env,
      PORT: String(gatewayPort),
      INFERY_UPSTREAM_URL: upstream,
      INFERY_UPSTREAM_KEY: 'sk-load-upstream',
      INFERY_API_KEYS: `${KEY}:1000000000`,
      INFERY_MAX_CONCURRENT: '0',
      INFERY_RPM: '0',
    },
    // its request log goes where a user's would; here nowhere, so the bench's output stays readable
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  children.push(gateway);
  await waitForPort(gatewayPort, 'the example app');
  const targets: Target[] = [
    { name: 'direct', url: `${upstream}/chat/completions`, key: KEY },
    { name: 'pipe', url: `http://127.0.0.1:${pipe.port}/v1/chat/completions`, key: KEY, pid: pipe.child.pid },
    { name: 'gateway', url: `http://127.0.0.1:${gatewayPort}/v1/chat/completions`, key: KEY, pid: gateway.pid },
  ];
  console.log(`bench:load — Node ${process.version}, ${REPS} repetitions, levels ${LEVELS.join(', ')}; provider: 10 chunks 40 ms apart`);
  if (process.env.LOAD_GATEWAY_SCRIPT) console.log(`gateway: ${process.env.LOAD_GATEWAY_SCRIPT}`);
  // warm-up: JIT and connection pools of both middle processes
  for (const t of targets) await loadRun(t, 20, 0);

  const runs: Run[] = [];
  for (const level of LEVELS) {
    for (let rep = 1; rep <= REPS; rep++) {
      const order = targets.map((_, i) => targets[(i + rep + level) % targets.length]!);
      for (const target of order) {
        const run = await loadRun(target, level, rep);
        runs.push(run);
        if (run.failed > 0) console.log(`  ${target.name} C=${level} rep ${rep}: ${run.failed} of ${run.ok + run.failed} streams failed`);
        await new Promise((r) => setTimeout(r, 300));
      }
    }
  }

  // per level: added TTFT over direct in the same repetition, for each middle process
  interface Row {
    level: number;
    target: 'pipe' | 'gateway';
    addedP50: number[];
    addedP99: number[];
    cpuPer1000Chunks: number;
    peakRss: number;
    rssPerStreamKB: number;
    failed: number;
  }
  const rows: Row[] = [];
  for (const level of LEVELS) {
    for (const name of ['pipe', 'gateway'] as const) {
      const mine = runs.filter((r) => r.level === level && r.target === name);
      const direct = (rep: number) => runs.find((r) => r.level === level && r.rep === rep && r.target === 'direct')!;
      const chunks = mine.reduce((s, r) => s + r.chunks, 0);
      const cpu = mine.reduce((s, r) => s + (r.cpuSeconds ?? 0), 0);
      rows.push({
        level,
        target: name,
        addedP50: mine.map((r) => r.ttftP50 - direct(r.rep).ttftP50),
        addedP99: mine.map((r) => r.ttftP99 - direct(r.rep).ttftP99),
        cpuPer1000Chunks: chunks > 0 ? (cpu / chunks) * 1000 : NaN,
        peakRss: Math.max(...mine.map((r) => r.peakRss ?? 0)),
        rssPerStreamKB: Math.max(...mine.map((r) => ((r.peakRss ?? 0) - (r.idleRss ?? 0)) / 1024 / level)),
        failed: mine.reduce((s, r) => s + r.failed, 0),
      });
    }
  }
  const range = (values: number[]): string => {
    const lo = Math.min(...values);
    const hi = Math.max(...values);
    return lo === hi || values.length === 1 ? `${signed(lo)} ms` : `${signed(lo)} to ${signed(hi)} ms`;
  };
  const mid = (values: number[]): number => percentile(values, 50);
  // a ratio over a pipe that added under half a millisecond (or, in the noise, less than nothing) says nothing
  const ratio = (gateway: number, pipe: number): string => (pipe < 0.5 ? 'n/a' : `${fmt(gateway / pipe, 2)}x`);
  console.log('\nadded time to first token over the provider directly (per repetition: min to max), CPU, memory:');
  console.log('| load | target | added TTFT p50 | added TTFT p99 | CPU s / 1,000 chunks | peak RSS | RSS per open stream | failed |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const row of rows) {
    const label = row.level === 1 ? 'sequential' : `${row.level} concurrent`;
    console.log(`| ${label} | ${row.target} | ${range(row.addedP50)} | ${range(row.addedP99)} | ${fmt(row.cpuPer1000Chunks, 3)} | ${mib(row.peakRss)} | ${fmt(row.rssPerStreamKB)} KB | ${row.failed} |`);
  }
  console.log('\ngateway ÷ pipe (medians of the repetitions):');
  console.log('| load | added TTFT p50 | CPU per chunk | peak RSS | RSS per open stream: gateway − pipe |');
  console.log('|---|---|---|---|---|');
  for (const level of LEVELS) {
    const p = rows.find((r) => r.level === level && r.target === 'pipe')!;
    const g = rows.find((r) => r.level === level && r.target === 'gateway')!;
    const label = level === 1 ? 'sequential' : `${level} concurrent`;
    console.log(
      `| ${label} | ${ratio(mid(g.addedP50), mid(p.addedP50))} (${signed(mid(g.addedP50))} vs ${signed(mid(p.addedP50))} ms) | ${fmt(g.cpuPer1000Chunks / p.cpuPer1000Chunks, 2)}x | ${fmt(g.peakRss / p.peakRss, 2)}x | ${signed(g.rssPerStreamKB - p.rssPerStreamKB)} KB |`,
    );
  }
  const file = path.resolve(process.env.LOAD_JSON ?? path.join(ROOT, 'bench-load.json'));
  fs.writeFileSync(file, JSON.stringify({ node: process.version, at: new Date().toISOString(), reps: REPS, levels: LEVELS, runs, rows }, null, 2) + '\n');
  console.log(`\nfigures: ${path.relative(process.cwd(), file) || file}`);
  clearTimeout(watchdog);
  stopAll();
}

main().catch((err: unknown) => {
  console.error(err);
  stopAll();
  process.exit(1);
});
