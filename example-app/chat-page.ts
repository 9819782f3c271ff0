import fs from 'node:fs';
import path from 'node:path';
import express, { type Express } from 'express';

/** The first of `candidates` that exists, else the first (so error messages name the expected place). */
function firstExisting(candidates: string[]): string {
  return candidates.find((p) => fs.existsSync(p)) ?? candidates[0]!;
}

/**
 * Serves the chat page: `example-app/public` at `/`, and the browser build of `lib/client/stream-reader.ts` at
 * `/stream-reader.js`, and the browser builds of `marked` and `dompurify` at `/vendor/marked.js` and
 * `/vendor/purify.js`. Paths are resolved for both layouts: `example-app/` (ts-jest, ts-node) and
 * `dist/example-app/` (`npm start`, where tsc does not copy `public/`).
 */
export function mountChatPage(app: Express): void {
  const publicDir = firstExisting([path.join(__dirname, 'public'), path.resolve(__dirname, '../../example-app/public')]);
  // Looked up per request: `npm run build` may run after the app started.
  const readerCandidates = [path.resolve(__dirname, '../browser/stream-reader.js'), path.resolve(__dirname, '../dist/browser/stream-reader.js')];

  app.get('/stream-reader.js', (_req, res) => {
    const file = readerCandidates.find((p) => fs.existsSync(p));
    if (!file) {
      res
        .status(500)
        .type('text/plain')
        .send('dist/browser/stream-reader.js is missing: run npm run build (it compiles lib/client/stream-reader.ts with tsconfig.browser.json).');
      return;
    }
    res.setHeader('Cache-Control', 'no-cache');
    res.type('text/javascript').sendFile(file);
  });
  // The Markdown renderer and sanitiser of the chat page: their browser ES module builds, from node_modules
  // (devDependencies, since the example app is not part of the package). Resolved per request like the reader.
  const vendor: Record<string, () => string> = {
    '/vendor/marked.js': () => require.resolve('marked'), // its only export: lib/marked.esm.js
    '/vendor/purify.js': () => path.join(path.dirname(require.resolve('dompurify')), 'purify.es.mjs'),
  };
  for (const [route, locate] of Object.entries(vendor)) {
    app.get(route, (_req, res) => {
      let file: string | undefined;
      try {
        file = locate();
      } catch {
        file = undefined;
      }
      if (!file || !fs.existsSync(file)) {
        res.status(500).type('text/plain').send(`${route} is missing: install the dev dependencies (npm install) for marked and dompurify.`);
        return;
      }
      res.setHeader('Cache-Control', 'no-cache');
      res.type('text/javascript').sendFile(file);
    });
  }
  app.use(express.static(publicDir, { index: 'index.html', redirect: false, setHeaders: (res) => res.setHeader('Cache-Control', 'no-cache') }));
}
