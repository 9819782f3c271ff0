/**
 * The load bench's other gateway: the library alone in a bare Express 5 app (no compression(), no
 * express.json(), no request log, no metrics; the in-memory stores, limits off), in front of `LOAD_UPSTREAM`, on
 * `PORT`, client key `LOAD_KEY`. Beside the example app it shows what the library costs and what the host app's
 * middleware does. Run it with `LOAD_GATEWAY_SCRIPT=dist/bench/load/bare-gateway.js npm run bench:load`.
 */
import express from 'express';
import { bearerToken, generationDraft, inferyStream, MemoryCreditStore } from '../../lib';

const upstream = process.env.LOAD_UPSTREAM ?? process.env.INFERY_UPSTREAM_URL;
if (!upstream) throw new Error('LOAD_UPSTREAM (or INFERY_UPSTREAM_URL) is not set');
const key = process.env.LOAD_KEY ?? (process.env.INFERY_API_KEYS ?? 'load-key').split(':')[0]!;
const store = new MemoryCreditStore({ [key]: 1e12 });
const app = express();
app.use(
  inferyStream<string>({
    upstream: { baseURL: upstream, apiKey: process.env.INFERY_UPSTREAM_KEY },
    authenticate: (req) => {
      const k = bearerToken(req);
      return k !== undefined && store.has(k) ? k : undefined;
    },
    reserve: ({ account, generationId, worstCase }) => store.reserve(account, generationId, worstCase.total_tokens / 1000) && generationId,
    meter: (e) => store.settle(e.account, e.generationId, e.model, e.usage.total_tokens / 1000, generationDraft(e)).charged,
  }),
);
const server = app.listen(Number(process.env.PORT ?? 0), '127.0.0.1');
server.keepAliveTimeout = 60_000;
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
