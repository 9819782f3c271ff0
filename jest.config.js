// Dependencies that ship only ES modules, loaded as CommonJS through jest-esm-transform.js
const esmOnly = ['http-proxy-middleware', 'httpxy', 'is-plain-obj'].join('|');

/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/__tests__'],
  testMatch: ['**/*.test.ts'],
  setupFilesAfterEnv: ['<rootDir>/__tests__/helpers/fail-on-unhandled.ts', '<rootDir>/__tests__/helpers/stop-threads.ts'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.jest.json' }],
    // ES-module-only dependencies, as CommonJS for jest's module system (see jest-esm-transform.js)
    [`/node_modules/(${esmOnly})/.+\\.m?js$`]: '<rootDir>/jest-esm-transform.js',
  },
  transformIgnorePatterns: [`/node_modules/(?!(${esmOnly})/)`],
  testTimeout: 20000,
  maxWorkers: 2,
  reporters: ['default', '<rootDir>/jest-summary-reporter.js'],
};
