/**
 * Loaded by jest before every test file (jest.config.js `setupFilesAfterEnv`): an `unhandledRejection` or an
 * `uncaughtException` anywhere in the process — the gateway's request path included — fails the file, since in
 * production either would end the process with every open stream.
 */
import vm from 'node:vm';

// Inside a jest test file `process` is a sandboxed copy whose listeners never fire: listen on the real one.
const host = vm.runInThisContext('process') as NodeJS.Process;
const seen: unknown[] = [];
const record = (err: unknown): void => {
  seen.push(err);
};

beforeAll(() => {
  host.on('unhandledRejection', record);
  host.on('uncaughtException', record);
});

afterAll(async () => {
  // let late rejections of the file's last test surface
  await new Promise((resolve) => setTimeout(resolve, 20));
  host.off('unhandledRejection', record);
  host.off('uncaughtException', record);
  if (seen.length > 0) {
    const first = seen[0];
    throw new Error(`${seen.length} unhandled rejection(s) or uncaught exception(s); the first: ${first instanceof Error ? first.stack : String(first)}`);
  }
});
