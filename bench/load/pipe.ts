/**
 * The load bench's baseline: a bare byte pipe, Express 5 + http-proxy-middleware and nothing else, in front of
 * `LOAD_UPSTREAM` (`http://127.0.0.1:N/v1`), mounted at `/v1`. No auth, no metering, no parsing: what a
 * gateway costs at the least. Prints `{"port":N}` when it listens; stops on SIGTERM.
 */
import express from 'express';
import type { AddressInfo } from 'node:net';
import http from 'node:http';
import { createProxyMiddleware } from 'http-proxy-middleware';

const upstream = process.env.LOAD_UPSTREAM;
if (!upstream) throw new Error('LOAD_UPSTREAM is not set');
const app = express();
app.use('/v1', createProxyMiddleware({ target: upstream, changeOrigin: true, agent: new http.Agent({ keepAlive: true, maxSockets: Infinity }) }));
const server = app.listen(0, '127.0.0.1', () => process.stdout.write(JSON.stringify({ port: (server.address() as AddressInfo).port }) + '\n'));
server.keepAliveTimeout = 60_000;
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
