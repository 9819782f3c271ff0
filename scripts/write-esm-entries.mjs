#!/usr/bin/env node
/**
 * Writes the ES module entry points next to the CommonJS build: `dist/lib/index.mjs` re-exports, by name,
 * exactly what the CommonJS module exports. One implementation is loaded whichever way a
 * consumer imports it, so there is no dual-package hazard (two `InferyError` classes, two option parsers).
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'lib');
const require = createRequire(import.meta.url);
// dist/browser/stream-reader.js is the client's ES module build (no imports at all): it is what
// `import 'infery-stream/client'` loads, and what the example chat page serves. Mark its folder as ESM.
fs.writeFileSync(path.join(dist, '..', 'browser', 'package.json'), '{ "type": "module" }\n');

// each CommonJS entry of package.json's exports gets an .mjs twin
for (const entry of ['index', 'services/redis/index', 'services/postgres/index', 'ledgers/metrics/prometheus', 'ledgers/metrics/otel', 'ledgers/billing/price-catalog']) {
  if (!fs.existsSync(path.join(dist, `${entry}.js`))) throw new Error(`dist/lib/${entry}.js is missing: is it built?`);
  const names = Object.keys(require(path.join(dist, `${entry}.js`))).filter((name) => name !== '__esModule' && name !== 'default');
  const source = `// ES module entry of infery-stream: the names of ./${entry}.js (CommonJS), one implementation.\nimport cjs from './${path.basename(entry)}.js';\nexport const { ${names.join(', ')} } = cjs;\n`;
  fs.writeFileSync(path.join(dist, `${entry}.mjs`), source);
}
