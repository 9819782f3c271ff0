/**
 * Jest's module system cannot `require` an ES module (Node itself can, since 22.12). Our runtime dependencies
 * that ship only ES modules (http-proxy-middleware 4 and its httpxy) are turned into CommonJS here, with the
 * TypeScript compiler the project already has; they use neither `import.meta` nor top-level `await`, so the
 * output is the same code. Only the test run uses this: the built package `require`s them through Node.
 */
const ts = require('typescript');

module.exports = {
  process(source, filename) {
    const { outputText, sourceMapText } = ts.transpileModule(source, {
      fileName: filename.replace(/\.mjs$/, '.js'), // as .mjs, TypeScript would keep the ES module syntax
      compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, allowJs: true, sourceMap: true, esModuleInterop: true },
    });
    return { code: outputText, map: sourceMapText };
  },
  getCacheKey(source, filename) {
    return require('node:crypto').createHash('sha256').update(ts.version).update(require('node:fs').readFileSync(__filename)).update('\0').update(filename).update('\0').update(source).digest('hex');
  },
};
