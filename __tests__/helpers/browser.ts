import fs from 'node:fs';

const DEBIAN_CHROMIUM = '/usr/bin/chromium';
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/**
 * Where the headless Chromium of the browser tests is and how to start it (playwright-core never downloads
 * one): `CHROMIUM_PATH` if set, else Debian's `/usr/bin/chromium` when installed, else the Chromium that the
 * `@sparticuz/chromium` dev dependency ships inside npm — so `npm install && npm test` needs nothing by hand.
 */
export async function browserToLaunch(): Promise<{ executablePath: string; args: string[]; source: string }> {
  const fromEnv = process.env.CHROMIUM_PATH;
  if (fromEnv) return { executablePath: fromEnv, args: FLAGS, source: 'CHROMIUM_PATH' };
  if (fs.existsSync(DEBIAN_CHROMIUM)) return { executablePath: DEBIAN_CHROMIUM, args: FLAGS, source: 'Debian chromium' };
  const packaged = (await import('@sparticuz/chromium')).default;
  return { executablePath: await packaged.executablePath(), args: [...packaged.args, ...FLAGS], source: '@sparticuz/chromium' };
}
