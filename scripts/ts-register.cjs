'use strict';
// Runs the TypeScript sources without a build: `node -r ./scripts/ts-register.cjs example-app/server.ts`.
// Each .ts file outside node_modules is compiled when it is required, with typescript's transpileModule
// (CommonJS, ES2022, an inline source map; types are not checked here: `npm run typecheck` does that).
// Used by the tests that run the example app as a separate process (__tests__/helpers/app-process.ts).
const fs = require('node:fs');
const path = require('node:path');
const ts = require('typescript');

const NODE_MODULES = `${path.sep}node_modules${path.sep}`;
const compilerOptions = {
  module: ts.ModuleKind.CommonJS,
  target: ts.ScriptTarget.ES2022,
  esModuleInterop: true,
  inlineSourceMap: true,
  inlineSources: true,
};

require.extensions['.ts'] = function compileTypeScript(module, filename) {
  if (filename.includes(NODE_MODULES)) {
    throw new Error(`ts-register: will not compile ${filename} (TypeScript inside node_modules)`);
  }
  const source = fs.readFileSync(filename, 'utf8');
  const { outputText } = ts.transpileModule(source, { fileName: filename, compilerOptions, reportDiagnostics: false });
  module._compile(outputText, filename);
};
