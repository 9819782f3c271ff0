// PGlite (PostgreSQL compiled to WASM, from npm) behind its wire-protocol socket server on a loopback port, in a
// process of its own (PGlite loads its WASM with dynamic imports, which jest's module sandbox does not run).
// Prints "ready <port>" once it accepts connections; stops on SIGTERM or when its parent's stdin closes.
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';

const db = await PGlite.create();
const server = new PGLiteSocketServer({ db, port: Number(process.argv[2] ?? 0), host: '127.0.0.1', maxConnections: 100 });
await server.start();
process.stdout.write(`ready ${server.getServerConn().split(':').pop()}\n`);
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await server.stop().catch(() => undefined);
  await db.close().catch(() => undefined);
  process.exit(0);
};
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();
