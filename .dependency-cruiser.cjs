/**
 * The layers of lib/, top to bottom; each part imports only parts below it (type-only imports included):
 *
 *   entry      lib/index.ts, lib/middleware.ts, lib/parse-options.ts  the public API, the one place that wires
 *                                                                     the surfaces, the route table and the pool
 *   surfaces   lib/surfaces/<api>/, lib/surfaces/shared/               one folder per API, and what two share
 *   relay      lib/relay/                                              route handlers, SSE and JSON relays, the
 *                                                                     Surface contract
 *   core       lib/core/                                               admission, the generation, settlement,
 *                                                                     metering; sees an API as a MeteredApi
 *   options    lib/options/                                            the option types, public and resolved
 *   services   lib/services/{upstream,routing,redis,postgres}/         each with its own settings type
 *   ledgers    lib/ledgers/{billing,stores,metrics}/                   cost estimates, stores, metrics
 *   contract   lib/contract/                                           the hook contract, types only
 *   base       lib/base/                                               errors and small helpers
 *   client     lib/client/                                             the browser reader: imports nothing
 *
 * `npm test` runs these rules (`npm run lint:layers`); `__tests__/layers.test.ts` proves each one fires. A rule
 * broken on purpose later is changed here, visibly, with its reason — never worked around.
 */
const ENTRY = '^lib/(index|middleware|parse-options)\\.ts$';
const SURFACES = '^lib/surfaces/';
const REGISTRY = '^lib/surfaces/index\\.ts$';
const RELAY = '^lib/relay/';
const CORE = '^lib/core/';
const OPTIONS = '^lib/options/';
const SERVICES = '^lib/services/';
const LEDGERS = '^lib/ledgers/';
const CONTRACT = '^lib/contract/';
const BASE = '^lib/base/';
const CLIENT = '^lib/client/';

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment:
        'No import loop anywhere in lib/, type-only imports included: files in a loop can only be read, tested and changed together, and every loop grows.',
      severity: 'error',
      from: { path: '^lib/' },
      to: { circular: true },
    },
    {
      name: 'nothing-imports-the-entry',
      comment:
        'The entry (index, middleware, the options parser) is the top: nothing below may import it, or the layer order runs back up. index.ts re-exports the middleware, which uses the parser.',
      severity: 'error',
      from: { path: '^lib/', pathNot: ENTRY },
      to: { path: ENTRY },
    },
    {
      name: 'only-the-middleware-wires-the-surfaces',
      comment:
        'The registry of API surfaces is read by the middleware alone, which hands the route table and the options parser what they need (the paths): a registry imported below would pull every API folder under that layer.',
      severity: 'error',
      from: { pathNot: '^lib/middleware\\.ts$' },
      to: { path: REGISTRY },
    },
    {
      name: 'no-surface-imports-another',
      comment:
        'One API folder never imports another: what two APIs share (the choices stream and JSON of chat and legacy completions) lives in lib/surfaces/shared/, so changing one API never changes another by accident.',
      severity: 'error',
      from: { path: '^lib/surfaces/([^/]+)/' },
      to: { path: SURFACES, pathNot: ['^lib/surfaces/$1/', '^lib/surfaces/shared/'] },
    },
    {
      name: 'shared-surface-code-is-not-an-api',
      comment: 'lib/surfaces/shared/ holds what several APIs share; it imports no API folder itself.',
      severity: 'error',
      from: { path: '^lib/surfaces/shared/' },
      to: { path: SURFACES, pathNot: '^lib/surfaces/shared/' },
    },
    {
      name: 'relay-never-imports-a-surface',
      comment:
        'The relay (route handlers, the SSE and JSON relays) serves every API through the Surface contract it defines; it never knows a particular API.',
      severity: 'error',
      from: { path: RELAY },
      to: { path: [ENTRY, SURFACES] },
    },
    {
      name: 'core-never-imports-relay-or-a-surface',
      comment:
        'The core (admission, the generation, settlement, metering) sees an API only through its own narrow MeteredApi contract: endpoint, path, usage dialect, estimate, cap. It never imports the relay or an API folder.',
      severity: 'error',
      from: { path: CORE },
      to: { path: [ENTRY, SURFACES, RELAY] },
    },
    {
      name: 'options-import-nothing-above-them',
      comment:
        'The option types are read by every layer above them, so they may only import types from below (services, ledgers, contract): never the entry, a surface, the relay or the core.',
      severity: 'error',
      from: { path: OPTIONS },
      to: { path: [ENTRY, SURFACES, RELAY, CORE] },
    },
    {
      name: 'options-are-types-only',
      comment: 'lib/options/ holds types only; the parser (logic) is lib/parse-options.ts, in the entry. Any import there is `import type`.',
      severity: 'error',
      from: { path: OPTIONS },
      to: { dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'services-never-import-options-core-or-relay',
      comment:
        'upstream/, routing/ and redis/ take what they need as their own small settings types (UpstreamSettings, PoolSettings, the route table built from what the middleware hands it), so they are usable and testable without the gateway above them.',
      severity: 'error',
      from: { path: SERVICES },
      to: { path: [ENTRY, SURFACES, RELAY, CORE, OPTIONS] },
    },
    {
      name: 'no-service-imports-another',
      comment: 'The upstream client, the routing, the Redis stores and the PostgreSQL store are independent services: none imports another (what two stores share lives in lib/ledgers/stores/).',
      severity: 'error',
      from: { path: '^lib/services/([^/]+)/' },
      to: { path: SERVICES, pathNot: '^lib/services/$1/' },
    },
    {
      name: 'ledgers-never-import-services-options-core-or-relay',
      comment:
        'Billing estimates, the stores and the metrics observer sit below everything that uses them; a store (the in-memory one, or Redis above it) depends only on the contract and base.',
      severity: 'error',
      from: { path: LEDGERS },
      to: { path: [ENTRY, SURFACES, RELAY, CORE, OPTIONS, SERVICES] },
    },
    {
      name: 'contract-is-types-only-at-the-bottom',
      comment:
        'lib/contract/ is the hook contract every layer shares: types only (any import is `import type`), and only of base (the error class) — so importing it never pulls code or a layer in.',
      severity: 'error',
      from: { path: CONTRACT },
      to: { path: '^lib/', pathNot: [CONTRACT, BASE] },
    },
    {
      name: 'contract-imports-types-only',
      comment: 'The contract holds types only: every import there is `import type`.',
      severity: 'error',
      from: { path: CONTRACT },
      to: { dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'base-imports-only-base',
      comment: 'lib/base/ (errors, JSON walking, body reading, encodings) is the floor: it imports nothing else of lib/.',
      severity: 'error',
      from: { path: BASE },
      to: { path: '^lib/', pathNot: BASE },
    },
    {
      name: 'client-stands-alone',
      comment:
        'lib/client/ is the dependency-free reader that also runs in browsers (built on its own to dist/browser): it imports nothing outside its folder, not even Node built-ins.',
      severity: 'error',
      from: { path: CLIENT },
      to: { pathNot: CLIENT },
    },
    {
      name: 'only-the-entry-and-client-index-import-the-client',
      comment: 'The browser reader is public API, re-exported by lib/index.ts and lib/client/index.ts; server code never uses it.',
      severity: 'error',
      from: { path: '^lib/', pathNot: [ENTRY, CLIENT] },
      to: { path: CLIENT },
    },
    {
      name: 'express-is-types-only',
      comment: 'express is an optional peer dependency: lib/ imports its types, never the module (hosts bring Express 4 or 5).',
      severity: 'error',
      from: { path: '^lib/' },
      to: { path: 'node_modules/(express|@types/express)/', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'no-dev-dependency-in-lib',
      comment: 'What lib/ imports at run time must be a dependency or an optional peer of the package, never a devDependency a user does not get.',
      severity: 'error',
      from: { path: '^lib/' },
      to: { dependencyTypes: ['npm-dev'], dependencyTypesNot: ['npm-peer', 'type-only'] },
    },
    {
      name: 'no-unresolvable-import',
      comment: 'An import that resolves to nothing would hide a dependency from every rule above.',
      severity: 'error',
      from: { path: '^lib/' },
      to: { couldNotResolve: true },
    },
  ],
  options: {
    // type-only imports are dependencies too: a loop of types is still a loop of meaning
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '\\.d\\.ts$' },
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.json'] },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
