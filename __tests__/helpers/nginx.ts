import fs from 'node:fs';
import path from 'node:path';
import { Child, freePort, noticeOnce, onPath, removeTemporaryDir, temporaryDir, waitForPort } from './local-process';

/** The deployment configuration users copy (README); the tests run this exact text. */
export const NGINX_TEMPLATE = path.resolve(__dirname, '../../deploy/nginx.conf');

const NGINX = 'nginx';
const SKIP_NOTICE = 'nginx tests skipped: no nginx on PATH (install the Debian package nginx).';

/** True when `nginx` is on PATH (Debian puts it in /usr/sbin, which is on root's PATH and CI's). */
export function nginxAvailable(): boolean {
  return onPath(NGINX) || fs.existsSync('/usr/sbin/nginx');
}

function nginxBinary(): string {
  return onPath(NGINX) ? NGINX : '/usr/sbin/nginx';
}

/** `describe` when nginx is available, else `describe.skip` with one plain notice saying why. */
export function describeNginx(name: string, fn: () => void): void {
  if (nginxAvailable()) return describe(name, fn);
  noticeOnce(SKIP_NOTICE);
  describe.skip(name, fn);
}

export interface NginxHandle {
  /** `http://127.0.0.1:<port>` */
  url: string;
  port: number;
  /** The directory holding the configuration, pid, logs and temporary files. */
  dir: string;
  /** The site configuration as run: deploy/nginx.conf with the test's listen and server lines. */
  siteConfig: string;
  /** Stops nginx (SIGTERM, SIGKILL after 5 s), waits for the exit and removes its directory. */
  stop(): Promise<void>;
  /** nginx's stderr, error log and access log so far (for error messages). */
  output(): string;
}

/**
 * deploy/nginx.conf with its `listen` line set to `127.0.0.1:<listenPort>` and the server lines of
 * `upstream infery` replaced by one line per upstream port. Throws when the template no longer has exactly the
 * lines it replaces, so the tests cannot silently run something other than what users copy.
 */
export function siteConfigFor(template: string, listenPort: number, upstreamPorts: number[]): string {
  const listens = template.match(/^\s*listen\s+[^;]+;/gm) ?? [];
  if (listens.length !== 1) throw new Error(`deploy/nginx.conf should have exactly one listen line, has ${listens.length}`);
  const upstream = /^upstream infery \{\n([\s\S]*?)^\}/m.exec(template);
  if (!upstream) throw new Error('deploy/nginx.conf should have an `upstream infery { … }` block');
  const serverLine = /^(\s*)server\s+[^\s;]+([^;]*);\n/gm;
  const servers = [...upstream[1]!.matchAll(serverLine)];
  if (servers.length === 0) throw new Error('the `upstream infery` block of deploy/nginx.conf should list servers');
  if (upstreamPorts.length === 0) throw new Error('startNginx needs at least one upstream port');
  const indent = servers[0]![1]!;
  const params = servers[0]![2]!;
  let first = true;
  const block = upstream[1]!.replace(serverLine, () => {
    if (!first) return '';
    first = false;
    return upstreamPorts.map((port) => `${indent}server 127.0.0.1:${port}${params};\n`).join('');
  });
  return template.replace(upstream[1]!, block).replace(/^(\s*)listen\s+[^;]+;/m, `$1listen 127.0.0.1:${listenPort};`);
}

/**
 * The main configuration around the site file, for a test run only: no daemon and no master process (one
 * process, so stopping it stops everything), every path inside `dir` (pid, logs, temporary files), workers
 * as root when the tests run as root.
 */
function mainConfig(dir: string, sitePath: string): string {
  const inDir = (name: string): string => path.join(dir, name);
  const runningAsRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  return [
    'daemon off;',
    'master_process off;',
    'worker_processes 1;',
    runningAsRoot ? 'user root;' : '',
    `pid ${inDir('nginx.pid')};`,
    `error_log ${inDir('error.log')} info;`,
    'events { worker_connections 1024; }',
    'http {',
    `  access_log ${inDir('access.log')};`,
    `  client_body_temp_path ${inDir('client_body')};`,
    `  proxy_temp_path ${inDir('proxy')};`,
    `  fastcgi_temp_path ${inDir('fastcgi')};`,
    `  uwsgi_temp_path ${inDir('uwsgi')};`,
    `  scgi_temp_path ${inDir('scgi')};`,
    '  default_type application/octet-stream;',
    `  include ${sitePath};`,
    '}',
    '',
  ].join('\n');
}

const started = new Set<NginxHandle>();

/** Starts nginx with deploy/nginx.conf in front of `upstreamPorts` on a free port; resolves once it accepts connections. */
export async function startNginx(upstreamPorts: number[]): Promise<NginxHandle> {
  if (!nginxAvailable()) throw new Error(SKIP_NOTICE);
  const dir = temporaryDir('infery-nginx-');
  const port = await freePort();
  const siteConfig = siteConfigFor(fs.readFileSync(NGINX_TEMPLATE, 'utf8'), port, upstreamPorts);
  const sitePath = path.join(dir, 'infery.conf');
  const confPath = path.join(dir, 'nginx.conf');
  fs.writeFileSync(sitePath, siteConfig);
  fs.writeFileSync(confPath, mainConfig(dir, sitePath));

  const readLog = (name: string): string => {
    try {
      return fs.readFileSync(path.join(dir, name), 'utf8');
    } catch {
      return '';
    }
  };
  // (nginx's messages before it reads error_log go to its built-in error log: stderr in Debian's build)
  const child = new Child('nginx', nginxBinary(), ['-p', dir, '-c', confPath], { cwd: dir });
  const output = (): string => `${child.output()}--- nginx error.log ---\n${readLog('error.log').trimEnd()}\n--- nginx access.log ---\n${readLog('access.log').trimEnd()}\n`;
  const handle: NginxHandle = {
    url: `http://127.0.0.1:${port}`,
    port,
    dir,
    siteConfig,
    output,
    stop: async () => {
      await child.stop('SIGTERM', 5_000);
      removeTemporaryDir(dir);
      started.delete(handle);
    },
  };
  started.add(handle);
  try {
    await waitForPort(port, 10_000, 'nginx', () => child.running);
  } catch (err) {
    const message = `${(err as Error).message}\n${output()}`;
    await handle.stop();
    throw new Error(message);
  }
  return handle;
}

/** Stops every nginx this file started (call in afterAll). */
export async function stopAllNginx(): Promise<void> {
  await Promise.all([...started].map((handle) => handle.stop()));
}
