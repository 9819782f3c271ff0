/**
 * The load bench's provider, a process of its own: `POST …/chat/completions` streams `LOAD_CHUNKS` (10) content
 * chunks `LOAD_GAP_MS` (40) ms apart — the first at once — then the finish chunk, a usage chunk and `[DONE]`,
 * the way OpenAI does. Prints `{"port":N}` when it listens; stops on SIGTERM.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

const CHUNKS = Number(process.env.LOAD_CHUNKS ?? 10);
const GAP_MS = Number(process.env.LOAD_GAP_MS ?? 40);
const BASE = { object: 'chat.completion.chunk', created: 1_700_000_000, model: 'mock-1', system_fingerprint: 'fp_load' };
let counter = 0;

const event = (payload: unknown): string => `data: ${JSON.stringify(payload)}\n\n`;

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || !req.url?.endsWith('/chat/completions')) {
    res.writeHead(404, { 'content-type': 'application/json' });
    return void res.end('{"error":{"message":"not found","type":"invalid_request_error","code":"not_found"}}');
  }
  req.resume();
  req.on('end', () => {
    const id = `chatcmpl-load${(counter++).toString(36)}`;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    let sent = 0;
    const timer = setInterval(tick, GAP_MS);
    res.on('close', () => clearInterval(timer));
    tick();
    function tick(): void {
      if (res.destroyed) return void clearInterval(timer);
      if (sent < CHUNKS) {
        const delta = sent === 0 ? { role: 'assistant', content: 'Hello' } : { content: ` w${sent}` };
        res.write(event({ id, ...BASE, choices: [{ index: 0, delta, finish_reason: null }] }));
        sent++;
        return;
      }
      clearInterval(timer);
      res.write(event({ id, ...BASE, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] }));
      res.write(event({ id, ...BASE, choices: [], usage: { prompt_tokens: 9, completion_tokens: CHUNKS, total_tokens: 9 + CHUNKS } }));
      res.end('data: [DONE]\n\n');
    }
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => process.stdout.write(JSON.stringify({ port: (server.address() as AddressInfo).port }) + '\n'));
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
