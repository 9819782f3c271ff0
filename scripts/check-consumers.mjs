#!/usr/bin/env node
/**
 * Consumer check of the packed tarball: `npm pack`, then fresh temporary projects install it the way users do —
 * an Express 5 project (CommonJS, ES module, TypeScript with NodeNext and with Bundler resolution) and an
 * Express 4 project (CommonJS, ES module), no --legacy-peer-deps — and each runs a tiny app that streams a completion from
 * a local mock provider and reads `credits_used`. The client entry is bundled for browsers with esbuild and must
 * pull in no Node module. Exits 1 on any failure. Run by .ci/run after the test suite; `npm run check:consumers`.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'infery-consumers-'));
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: 180_000 }).toString();

// A mock provider and a gateway app, in one file per module system; each prints "ok <text> <credits>".
const provider = `
  const provider = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const b = { id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'm' };
      const send = (o) => res.write('data: ' + JSON.stringify({ ...b, ...o }) + '\\n\\n');
      send({ choices: [{ index: 0, delta: { content: 'Hello' }, finish_reason: null }] });
      send({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] });
      send({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 } });
      res.end('data: [DONE]\\n\\n');
    });
  });`;
const body = `
  provider.listen(0, '127.0.0.1', () => {
    const app = express();
    app.use(express.json());
    app.use(inferyStream({
      upstream: { baseURL: 'http://127.0.0.1:' + provider.address().port + '/v1' },
      authenticate: (req) => (bearerToken(req) === 'k' ? 'acct' : null),
      meter: (e) => e.usage.total_tokens,
    }));
    const server = app.listen(0, '127.0.0.1', async () => {
      const res = await fetch('http://127.0.0.1:' + server.address().port + '/v1/chat/completions', {
        method: 'POST', headers: { authorization: 'Bearer k', 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
      });
      const out = await readGatewayStream(res.body);
      console.log(out.done && out.creditsUsed === 4 ? 'ok' : 'FAIL', out.text, out.creditsUsed);
      server.close();
      provider.close();
    });
  });`;
const cjs = `const http = require('node:http');\nconst express = require('express');\nconst { inferyStream, bearerToken } = require('infery-stream');\nconst { readGatewayStream } = require('infery-stream/client');\n${provider}\n${body}\n`;
const esm = `import http from 'node:http';\nimport express from 'express';\nimport { inferyStream, bearerToken } from 'infery-stream';\nimport { readGatewayStream } from 'infery-stream/client';\n${provider}\n${body}\n`;
const ts = `import http from 'node:http';
import express from 'express';
import { inferyStream, bearerToken, type MeterEvent } from 'infery-stream';
import { readGatewayStream, type GatewayStreamResult } from 'infery-stream/client';
const meter = (e: MeterEvent<string, express.Request>): number => e.usage.total_tokens + (e.req.user ? 0 : 0);
const authenticate = (req: express.Request): string | null => (bearerToken(req) === 'k' ? 'acct' : null);
const gateway = inferyStream({ upstream: { baseURL: 'http://127.0.0.1:1/v1' }, authenticate, meter });
const check = async (r: ReadableStream<Uint8Array>): Promise<GatewayStreamResult> => readGatewayStream(r);
void check;
gateway.close();
declare global { namespace Express { interface Request { user?: { id: string } } } }
`;
// the optional entries: infery-stream/redis (ioredis) and infery-stream/prometheus (prom-client)
const extrasCjs = `const { RedisCreditStore, RedisLimitStore, LedgerUnavailableError } = require('infery-stream/redis');
const { prometheusObserver } = require('infery-stream/prometheus');
const { catalogPricer } = require('infery-stream/prices');
const { PostgresCreditStore, MIGRATIONS } = require('infery-stream/postgres');
const { otelObserver, GEN_AI_SEMCONV_VERSION } = require('infery-stream/otel');
const { Redis } = require('ioredis');
if (typeof otelObserver().upstreamAttempt !== 'function' || !GEN_AI_SEMCONV_VERSION) throw new Error('infery-stream/otel');
const redis = new Redis({ lazyConnect: true });
const store = new RedisCreditStore(redis, { prefix: 'x:' });
const limits = new RedisLimitStore(redis);
store.close(); limits.close();
const { registry, observer } = prometheusObserver();
const gpt4o = catalogPricer().price('gpt-4o-2024-08-06', { input_tokens: 1000, uncached_input_tokens: 1000, cache_read_tokens: 0, cache_write_tokens: 0, output_tokens: 0, output_reasoning_tokens: 0 });
const ledger = new PostgresCreditStore({ query: async () => ({ rows: [] }) });
ledger.close();
registry.metrics().then((text) => console.log(typeof observer.requestEnded === 'function' && text.includes('infery_requests_total') && new LedgerUnavailableError('x').status === 503 && gpt4o === 25 && MIGRATIONS.length > 0 ? 'ok' : 'FAIL'));
`;
const extrasEsm = `import { RedisCreditStore, LedgerUnavailableError } from 'infery-stream/redis';
import { prometheusObserver } from 'infery-stream/prometheus';
import { catalogPricer } from 'infery-stream/prices';
import { PostgresCreditStore } from 'infery-stream/postgres';
import { otelObserver } from 'infery-stream/otel';
import { Redis } from 'ioredis';
if (typeof otelObserver().generationStarted !== 'function') throw new Error('infery-stream/otel');
new PostgresCreditStore({ query: async () => ({ rows: [] }) }).close();
const store = new RedisCreditStore(new Redis({ lazyConnect: true }));
store.close();
const { registry } = prometheusObserver();
const known = catalogPricer().sourceOf('claude-sonnet-4-5')?.provider === 'anthropic';
console.log((await registry.metrics()).includes('infery_open_streams') && new LedgerUnavailableError('x').code === 'ledger_unavailable' && known ? 'ok' : 'FAIL');
`;
const extrasTs = `import { Redis } from 'ioredis';
import { inferyStream, type CreditStore, type Observer } from 'infery-stream';
import { RedisCreditStore, RedisLimitStore, type RedisCreditStoreOptions } from 'infery-stream/redis';
import { prometheusObserver, type PrometheusObserver } from 'infery-stream/prometheus';
import { catalogPricer, type Pricer } from 'infery-stream/prices';
import { PostgresCreditStore, type PostgresCreditStoreOptions } from 'infery-stream/postgres';
import { otelObserver, type OtelObserverOptions } from 'infery-stream/otel';
const otelOptions: OtelObserverOptions = { providerNames: { azure: 'azure.ai.openai' }, upstreamSpans: true };
const tracing: Observer = otelObserver(otelOptions);
const ledgerOptions: PostgresCreditStoreOptions = { schema: 'billing', holdTtlMs: 60_000 };
const ledger: CreditStore = new PostgresCreditStore({ query: async () => ({ rows: [] }) }, ledgerOptions);
void ledger;
const pricer: Pricer = catalogPricer({ markup: 1.2, overrides: { mine: { prompt: 1, completion: 2 } } });
void pricer;
const redis = new Redis({ lazyConnect: true });
const options: RedisCreditStoreOptions = { prefix: 'app:', holdTtlMs: 60_000 };
const store: CreditStore = new RedisCreditStore(redis, options);
const metrics: PrometheusObserver = prometheusObserver({ ledgerQueueDepth: () => 0 });
const observer: Observer = metrics.observer;
const gateway = inferyStream({ upstream: { baseURL: 'http://127.0.0.1:1/v1' }, authenticate: () => 'a', limits: { maxConcurrent: 2, store: new RedisLimitStore(redis) }, observer: [observer, tracing], accountTag: (a) => a });
void store;
gateway.close();
`;

const failures = [];
function step(name, fn) {
  try {
    const out = fn();
    console.log(`  ✓ ${name}${out ? `: ${out.trim()}` : ''}`);
  } catch (err) {
    failures.push(name);
    console.log(`  ✗ ${name}: ${(err.stderr?.toString() || err.stdout?.toString() || err.message).trim().split('\n').slice(-8).join('\n    ')}`);
  }
}

console.log(`consumer check in ${work}`);
const tarball = path.join(work, run(npm, ['pack', '--silent', '--pack-destination', work], root).trim().split('\n').pop());

function project(name, deps, pkg = {}) {
  const dir = path.join(work, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true, ...pkg }, null, 2));
  run(npm, ['install', '--no-audit', '--no-fund', tarball, ...deps], dir);
  return dir;
}

let e5;
step('Express 5 project installs the tarball', () => {
  e5 = project('express5', ['express@^5', 'typescript@~5.9', '@types/express@^5', '@types/node@^20', 'esbuild@^0.25', 'ioredis@^5', 'prom-client@^15', '@pydantic/genai-prices@^0.1.8', '@opentelemetry/api@^1.9']);
});
if (e5) {
  fs.writeFileSync(path.join(e5, 'app.cjs'), cjs);
  fs.writeFileSync(path.join(e5, 'app.mjs'), esm);
  fs.writeFileSync(path.join(e5, 'app.ts'), ts);
  step('Express 5, CommonJS: streams with credits_used', () => run('node', ['app.cjs'], e5));
  step('Express 5, ES module: streams with credits_used', () => run('node', ['app.mjs'], e5));
  fs.writeFileSync(path.join(e5, 'extras.cjs'), extrasCjs);
  fs.writeFileSync(path.join(e5, 'extras.mjs'), extrasEsm);
  fs.writeFileSync(path.join(e5, 'extras.ts'), extrasTs);
  step('infery-stream/redis, /prometheus, /prices, /postgres and /otel load, CommonJS', () => run('node', ['extras.cjs'], e5));
  step('infery-stream/redis, /prometheus, /prices, /postgres and /otel load, ES module', () => run('node', ['extras.mjs'], e5));
  for (const resolution of ['NodeNext', 'Bundler']) {
    const module = resolution === 'NodeNext' ? 'NodeNext' : 'ESNext';
    fs.writeFileSync(path.join(e5, `tsconfig.${resolution}.json`), JSON.stringify({ compilerOptions: { strict: true, noEmit: true, module, moduleResolution: resolution, target: 'ES2022', lib: ['ES2022', 'DOM'], types: ['node'], skipLibCheck: false, esModuleInterop: true }, files: ['app.ts', 'extras.ts'] }));
    step(`TypeScript (${resolution} resolution) type-checks against the package's types`, () => run(process.execPath, [path.join(e5, 'node_modules/typescript/bin/tsc'), '-p', `tsconfig.${resolution}.json`], e5));
  }
  fs.writeFileSync(path.join(e5, 'browser.js'), "import { readGatewayStream } from 'infery-stream/client';\nwindow.read = readGatewayStream;\n");
  step('the client entry bundles for browsers with esbuild', () => {
    run(path.join(e5, 'node_modules/.bin/esbuild'), ['browser.js', '--bundle', '--platform=browser', '--format=esm', '--outfile=bundle.js', '--log-level=error'], e5);
    const bundle = fs.readFileSync(path.join(e5, 'bundle.js'), 'utf8');
    if (/from\s+["']node:|require\(["'](node:|http|fs|crypto|stream)/.test(bundle)) throw new Error('the bundle pulls in a Node module');
    return `${bundle.length} bytes`;
  });
}
let e4;
step('Express 4 project installs the tarball (no --legacy-peer-deps)', () => {
  e4 = project('express4', ['express@^4']);
});
if (e4) {
  fs.writeFileSync(path.join(e4, 'app.cjs'), cjs);
  fs.writeFileSync(path.join(e4, 'app.mjs'), esm);
  step('Express 4, CommonJS: streams with credits_used', () => run('node', ['app.cjs'], e4));
  step('Express 4, ES module: streams with credits_used', () => run('node', ['app.mjs'], e4));
}

fs.rmSync(work, { recursive: true, force: true });
if (failures.length > 0) {
  console.log(`consumer check FAILED: ${failures.join('; ')}`);
  process.exit(1);
}
console.log('consumer check passed');
