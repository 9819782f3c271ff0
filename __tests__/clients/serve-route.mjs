/**
 * Serves a Next.js-style route handler module (`export async function POST(req: Request): Promise<Response>`)
 * on 127.0.0.1 the way Next.js calls it: a web Request in (its signal aborted when the browser leaves), the
 * web Response's body streamed out as it comes; `GET /` is route-page.html, a page that reads the route's
 * answer in a browser as useChat does. Prints {"port":N} once listening; ends on SIGTERM or stdin's end.
 * Usage: node serve-route.mjs <route module>
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';

const route = await import(pathToFileURL(path.resolve(process.argv[2])).href);
const page = fs.readFileSync(new URL('./route-page.html', import.meta.url));
const server = http.createServer(async (req, res) => {
  if (req.method === 'GET' && req.url === '/') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    return void res.end(page);
  }
  const controller = new AbortController();
  res.on('close', () => controller.abort());
  try {
    const request = new Request(`http://127.0.0.1${req.url}`, {
      method: req.method,
      headers: Object.entries(req.headers).flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => [k, x]) : v === undefined ? [] : [[k, v]])),
      body: req.method === 'GET' || req.method === 'HEAD' ? undefined : Readable.toWeb(req),
      duplex: 'half',
      signal: controller.signal,
    });
    const response = await route[req.method](request);
    res.writeHead(response.status, Object.fromEntries(response.headers));
    if (!response.body) return void res.end();
    Readable.fromWeb(response.body).on('error', () => res.destroy()).pipe(res);
  } catch (err) {
    res.writeHead(500, { 'content-type': 'text/plain' });
    res.end(String(err?.message ?? err));
  }
});
server.listen(0, '127.0.0.1', () => process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n'));
const stop = () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();
