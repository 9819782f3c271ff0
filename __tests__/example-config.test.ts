import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { loadConfig } from '../example-app/config';
import { startExampleApp, stopAllApps, type AppProcess } from './helpers/app-process';
import { refusedURL } from './helpers/provider';
import { withOutputOnFailure } from './helpers/local-process';

/**
 * The example app as a user runs it, with INFERY_CONFIG naming two upstreams: the first down (a refused port),
 * the second the built-in mock. Every API is served by the second, metered once, findable in /v1/generation,
 * and /v1/credits adds up. Then the config file's own errors.
 */

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'infery-config-'));
const KEY = 'config-key';
let app: AppProcess;
let client: OpenAI;

const credits = async (): Promise<{ balance: number; held: number; used: number }> =>
  ((await (await fetch(`${app.url}/v1/credits`, { headers: { authorization: `Bearer ${KEY}` } })).json()) as { data: { balance: number; held: number; used: number } }).data;
const record = async (id: string): Promise<Record<string, unknown>> =>
  ((await (await fetch(`${app.url}/v1/generation?id=${encodeURIComponent(id)}`, { headers: { authorization: `Bearer ${KEY}` } })).json()) as { data: Record<string, unknown> }).data;

beforeAll(async () => {
  const file = path.join(dir, 'two.json');
  fs.writeFileSync(
    file,
    JSON.stringify({
      upstreams: [
        { name: 'primary', baseURL: await refusedURL(), apiKey: '$PRIMARY_TEST_KEY', models: ['*'] },
        { name: 'backup', baseURL: 'mock', models: ['*'] },
      ],
    }),
  );
  app = await startExampleApp({ INFERY_CONFIG: file, PRIMARY_TEST_KEY: 'sk-primary-0123456789abcdef', INFERY_API_KEYS: `${KEY}:500`, INFERY_RPM: '0', LOG_LEVEL: 'info' }, 30_000);
  client = new OpenAI({ apiKey: KEY, baseURL: `${app.url}/v1`, maxRetries: 0 });
}, 40_000);

afterAll(async () => {
  await stopAllApps();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('INFERY_CONFIG with the first upstream down', () => {
  test('every API is served by the second, metered once, recorded and charged', async () => {
    await withOutputOnFailure([app], async () => {
      const ids: string[] = [];
      const seen: number[] = [];

      const chat = await client.chat.completions.create({ model: 'mock-1', stream: true, max_tokens: 5, messages: [{ role: 'user', content: 'Hi' }] }).withResponse();
      let chatCredits = 0;
      for await (const chunk of chat.data) chatCredits = (chunk as { credits_used?: number }).credits_used ?? chatCredits;
      ids.push(chat.response.headers.get('x-generation-id')!);
      seen.push(chatCredits);

      const resp = await client.responses.create({ model: 'mock-1', stream: true, input: 'Hello', max_output_tokens: 6 }).withResponse();
      let respCredits = 0;
      for await (const event of resp.data) {
        if (event.type === 'response.completed' || event.type === 'response.incomplete') respCredits = (event.response as { credits_used?: number }).credits_used ?? 0;
      }
      ids.push(resp.response.headers.get('x-generation-id')!);
      seen.push(respCredits);

      const cmpl = await client.completions.create({ model: 'mock-1', prompt: 'Say hi', stream: true }).withResponse();
      let cmplCredits = 0;
      for await (const chunk of cmpl.data) cmplCredits = (chunk as { credits_used?: number }).credits_used ?? cmplCredits;
      ids.push(cmpl.response.headers.get('x-generation-id')!);
      seen.push(cmplCredits);

      const emb = await client.embeddings.create({ model: 'mock-embed', input: ['a', 'b'] }).withResponse();
      expect(emb.data.data).toHaveLength(2);
      ids.push(emb.response.headers.get('x-generation-id')!);
      seen.push((emb.data as { credits_used?: number }).credits_used ?? 0);

      for (const c of seen) expect(c).toBeGreaterThan(0);
      const records = await Promise.all(ids.map(record));
      expect(records.map((r) => r.endpoint)).toEqual(['chat.completions', 'responses', 'completions', 'embeddings']);
      for (const [i, r] of records.entries()) {
        expect(r).toMatchObject({ upstream: 'backup', credits_used: seen[i] });
        expect(r.failed_upstreams).toEqual([expect.objectContaining({ upstream: 'primary', code: 'upstream_unreachable' })]);
      }
      const ledger = await credits();
      expect(ledger.held).toBe(0);
      expect(Math.round(ledger.used * 1000)).toBe(Math.round(seen.reduce((a, b) => a + b, 0) * 1000));
      // GET /v1/models is the gateway's own list of what it serves
      const models = await client.models.list();
      expect(models.data.map((m) => m.id)).toEqual(expect.arrayContaining(['mock-1', 'mock-embed']));
      // the primary's key never reaches the client or the log
      expect(app.output()).not.toContain('sk-primary-0123456789abcdef');
    });
  }, 60_000);
});

describe('INFERY_CONFIG errors: one line, exit 1', () => {
  const run = (env: Record<string, string>): { status: number | null; stderr: string } => {
    const result = spawnSync(process.execPath, ['-r', './scripts/ts-register.cjs', 'example-app/server.ts'], {
      cwd: path.join(__dirname, '..'),
      env: { PATH: process.env.PATH, PORT: '0', ...env },
      encoding: 'utf8',
      timeout: 30_000,
    });
    return { status: result.status, stderr: result.stderr };
  };

  test.each([
    ['a missing file', () => path.join(dir, 'nope.json'), /cannot read .*nope\.json: ENOENT/],
    ['invalid JSON', () => write('bad.json', '{"upstreams": ['), /not valid JSON/],
    ['no upstreams', () => write('empty.json', '{"upstreams": []}'), /needs "upstreams"/],
    ['an unknown key', () => write('typo.json', '{"upstream": []}'), /unknown key "upstream"/],
    ['an unset $VARIABLE key', () => write('env.json', '{"upstreams":[{"name":"a","baseURL":"http://127.0.0.1:9/v1","apiKey":"$NOT_SET_ANYWHERE"}]}'), /NOT_SET_ANYWHERE, which is not set/],
    ['a bad upstream', () => write('url.json', '{"upstreams":[{"name":"a","baseURL":"ftp://x"}]}'), /baseURL/],
    ['a bad price', () => write('price.json', '{"upstreams":[{"name":"a","baseURL":"mock"}],"prices":{"m":{"prompt":-1}}}'), /prices\["m"\]/],
  ])('%s', (_what, file, message) => {
    const { status, stderr } = run({ INFERY_CONFIG: file() });
    expect(status).toBe(1);
    expect(stderr.trim().split('\n')).toHaveLength(1);
    expect(stderr).toMatch(message);
  }, 40_000);

  function write(name: string, text: string): string {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    return file;
  }

  test('loadConfig reads $NAME keys from the environment and lower-cases price names', () => {
    const file = path.join(dir, 'ok.json');
    fs.writeFileSync(file, JSON.stringify({ upstreams: [{ name: 'a', baseURL: 'mock', apiKey: '$K' }], prices: { 'GPT-X': { prompt: 1, completion: 2 } } }));
    const config = loadConfig(file, { K: 'secret' });
    expect(config.upstreams[0]).toMatchObject({ apiKey: 'secret' });
    expect(config.prices).toEqual({ 'gpt-x': { prompt: 1, completion: 2 } });
  });
});
