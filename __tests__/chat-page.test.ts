import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { createApp } from '../example-app/app';
import { startMockProvider, type MockProvider } from '../example-app/mock-provider';
import { browserToLaunch } from './helpers/browser';

/**
 * The example chat page end to end, in a headless Chromium driven by playwright-core (which never downloads a
 * browser): `CHROMIUM_PATH` if set, else Debian's `/usr/bin/chromium` when installed (`.ci/run` installs it), else
 * the Chromium that the `@sparticuz/chromium` dev dependency ships inside npm — so `npm install && npm test`
 * needs nothing installed by hand.
 */

const ROOT = path.resolve(__dirname, '..');
const ARTIFACTS = path.join(__dirname, 'artifacts');
const PROMPT = 'Write a haiku about TCP';
/** One key per test, so each test reads its own ledger line. */
const KEYS = {
  text: 'page-key-text',
  stop: 'page-key-stop',
  tools: 'page-key-tools',
  reference: 'page-key-reference',
  markdown: 'page-key-markdown',
  turns: 'page-key-turns',
  elapsed: 'page-key-elapsed',
  responses: 'page-key-responses',
  responsesStop: 'page-key-responses-stop',
  responsesFail: 'page-key-responses-fail',
  responsesTurns: 'page-key-responses-turns',
  responsesTools: 'page-key-responses-tools',
  messages: 'page-key-messages',
  messagesTools: 'page-key-messages-tools',
  enter: 'page-key-enter',
};
/** What GET /v1/models lists that can chat: the mock's list without mock-embed (an embedding model). */
const MOCK_MODELS = ['mock-1', 'mock-slow', 'mock-error', 'mock-garbage', 'mock-429', 'mock-stall', 'mock-no-usage'];
const API_STORAGE = 'infery-stream.api';
type Api = 'chat' | 'responses' | 'messages';

let mock: MockProvider;
let server: http.Server;
let url: string;
let created: ReturnType<typeof createApp>;
let browser: Browser | undefined;
let page: Page;

const used = (key: string): number => created.ledger.balanceOf(key)!.used;
const text = async (selector: string): Promise<string> => (await page.textContent(selector))?.trim() ?? '';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Opens the page as the banner's link does (`/?key=…`, plus `extra` parameters), waits for the balance and the
 * models, and sets the API toggle (kept in sessionStorage, so each test says which it wants).
 */
async function openPage(key: string, api: Api = 'chat', extra = ''): Promise<void> {
  await page.goto(`${url}/?key=${encodeURIComponent(key)}${extra}`);
  await page.waitForFunction(() => document.querySelector('#balance')?.textContent !== '');
  await page.waitForSelector('select#model option[value="mock-1"]', { state: 'attached' });
  await page.check(`#api-${api}`);
}

/** The key's ledger line through the API, as a client would read it. */
async function credits(key: string): Promise<{ balance: number; used: number }> {
  const res = await fetch(`${url}/v1/credits`, { headers: { authorization: `Bearer ${key}` } });
  return ((await res.json()) as { data: { balance: number; used: number } }).data;
}

/** Sends `prompt` (on the selected model) and waits until the answer is done. */
async function ask(prompt: string): Promise<void> {
  await page.fill('#prompt', prompt);
  await page.click('#send');
  await page.waitForFunction(() => document.querySelector('#status')?.textContent?.startsWith('done'));
}

interface RecordedBody {
  model: string;
  stream?: boolean;
  messages: Array<{ role: string; content: string | null }>;
  input: Array<{ role: string; content: string }>;
  previous_response_id?: string;
}

/** The bodies of the page's POST requests to `endpoint` (chat completions by default), recorded while `fn` runs. */
async function recordingRequests(fn: () => Promise<void>, endpoint = '/v1/chat/completions'): Promise<RecordedBody[]> {
  const bodies: RecordedBody[] = [];
  const listener = (req: import('playwright-core').Request): void => {
    if (req.method() === 'POST' && new URL(req.url()).pathname === endpoint) bodies.push(req.postDataJSON());
  };
  page.on('request', listener);
  try {
    await fn();
  } finally {
    page.off('request', listener);
  }
  return bodies;
}

beforeAll(async () => {
  // The page imports /stream-reader.js, the browser build of lib/client/stream-reader.ts.
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.browser.json'], { cwd: ROOT, timeout: 30_000, stdio: 'pipe' });

  mock = await startMockProvider();
  // the mock as the example app runs it by default: both dialects (the Messages API from `mock-messages`)
  created = createApp({
    upstreamURL: mock.url,
    upstreams: [{ name: 'mock', baseURL: mock.url }, { name: 'mock-messages', baseURL: mock.url, api: 'anthropic' }],
    apiKeys: Object.fromEntries(Object.values(KEYS).map((k) => [k, 100])),
  });
  server = http.createServer(created.app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const { executablePath, args } = await browserToLaunch();
  browser = await chromium.launch({ executablePath, args, headless: true, timeout: 20_000 });
  page = await browser.newPage({ viewport: { width: 900, height: 820 } });
  page.setDefaultTimeout(10_000);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  if (server) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  created?.gateway.close();
  await mock?.close();
});

test('serves the page, the browser build of the stream reader, and marked and DOMPurify from node_modules', async () => {
  const js = await fetch(`${url}/stream-reader.js`);
  expect(js.status).toBe(200);
  expect(js.headers.get('content-type')).toMatch(/javascript/);
  expect(await js.text()).toMatch(/export async function readGatewayStream/);
  const html = await fetch(`${url}/`);
  expect(html.status).toBe(200);
  expect(await html.text()).toMatch(/id="transcript"/);
  for (const [route, pattern] of [
    ['/vendor/marked.js', /export\s*\{[^}]*\bmarked\b/],
    ['/vendor/purify.js', /export\s*\{[^}]*\bdefault\b/],
  ] as const) {
    const res = await fetch(`${url}${route}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/javascript/);
    expect(await res.text()).toMatch(pattern);
  }
});

test('streams an answer token by token, then shows credits_used and time to first token', async () => {
  await openPage(KEYS.text);
  expect(await page.inputValue('#key')).toBe(KEYS.text);
  expect(await page.inputValue('#model')).toBe('mock-1');
  await page.fill('#prompt', PROMPT);
  await page.click('#send');

  // Sample the output's length while it streams (~60 words, 20–60 ms apart).
  const lengths: number[] = [];
  for (let i = 0; i < 80; i++) {
    lengths.push((await page.textContent('#output'))?.length ?? 0);
    if ((await text('#status')).startsWith('done')) break;
    await sleep(60);
  }
  await page.waitForFunction(() => document.querySelector('#status')?.textContent?.startsWith('done'));
  const final = await text('#output');
  expect(final).toMatch(/^You said: "Write a haiku about TCP"\. Streaming lets a reader/);

  const partial = [...new Set(lengths.filter((n) => n > 0 && n < final.length))];
  // it grew over several moments, starting well short of the whole answer
  expect(partial.length).toBeGreaterThanOrEqual(4);
  expect(partial).toEqual([...partial].sort((a, b) => a - b));
  expect(partial[0]!).toBeLessThan(final.length / 2);

  const credits = Number(await text('#credits'));
  expect(credits).toBeGreaterThan(0);
  expect(credits).toBe(used(KEYS.text));
  const ttft = Number(await text('#ttft'));
  expect(Number.isFinite(ttft)).toBe(true);
  expect(ttft).toBeGreaterThan(0);
  await page.waitForFunction((u) => document.querySelector('#used')?.textContent === String(u), used(KEYS.text));
  expect(Number(await text('#balance'))).toBeCloseTo(100 - credits, 6);
  expect(await text('#error')).toBe('');
  await page.screenshot({ path: path.join(ARTIFACTS, 'chat-page.png'), fullPage: true });
});

test('Stop aborts a slow answer: output stops growing and only the produced tokens are charged', async () => {
  // What the whole answer costs: the same prompt, non-streaming, on mock-1 (same words, same price as mock-slow).
  const ref = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${KEYS.reference}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'mock-1', messages: [{ role: 'user', content: PROMPT }] }),
  });
  const fullCharge = ((await ref.json()) as { credits_used: number }).credits_used;
  expect(fullCharge).toBeGreaterThan(0);

  await openPage(KEYS.stop);
  await page.selectOption('#model', 'mock-slow');
  await page.fill('#prompt', PROMPT);
  await page.click('#send');
  // mock-slow: first word after ~150 ms, then one per second; stop after the second word.
  await page.waitForFunction(() => (document.querySelector('#output')?.textContent ?? '').split(' ').length >= 2, undefined, { timeout: 5_000 });
  await page.click('#stop');
  await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'stopped');
  const atStop = await text('#output');
  expect(atStop.length).toBeGreaterThan(0);

  // The page polls /v1/generation?id=<X-Generation-Id> until the cancelled generation is settled, then shows its charge.
  await page.waitForFunction(() => document.querySelector('#credits')?.textContent !== '', undefined, { timeout: 5_000 });
  const charged = used(KEYS.stop);
  expect(charged).toBeGreaterThan(0);
  expect(charged).toBeLessThan(fullCharge / 2);
  expect(Number(await text('#credits'))).toBeCloseTo(charged, 6);
  expect(Number(await text('#used'))).toBeCloseTo(charged, 6);
  expect(Number(await text('#balance'))).toBeCloseTo(100 - charged, 6);
  const api = (await (await fetch(`${url}/v1/credits`, { headers: { authorization: `Bearer ${KEYS.stop}` } })).json()) as { data: { used: number } };
  expect(api.data.used).toBe(charged);

  // More than a mock-slow word gap later, nothing more arrived and nothing more was charged.
  await sleep(1_300);
  expect(await text('#output')).toBe(atStop);
  expect(used(KEYS.stop)).toBe(charged);
  expect(await page.isDisabled('#stop')).toBe(true);
  expect(await page.isEnabled('#send')).toBe(true);
  // What arrived before Stop stays in the transcript, marked stopped.
  expect(await text('.turn.assistant[data-outcome="stopped"] .content')).toBe(atStop);
  expect(await text('.turn.assistant .meta')).toBe('stopped');
  await page.screenshot({ path: path.join(ARTIFACTS, 'chat-page-stopped.png'), fullPage: true });
});

test('with the tools checkbox, the streamed get_weather call renders with its JSON arguments', async () => {
  await openPage(KEYS.tools);
  await page.fill('#prompt', 'What is the weather in Paris?');
  await page.check('#tools');
  await page.click('#send');
  await page.waitForSelector('#toolcalls .toolcall');
  await page.waitForFunction(() => document.querySelector('#status')?.textContent?.startsWith('done'));
  expect(await text('#status')).toContain('tool_calls');
  expect(await text('#toolcalls .toolcall .name')).toContain('get_weather');
  const args = JSON.parse(await text('#toolcalls .toolcall .arguments')) as Record<string, unknown>;
  expect(args).toHaveProperty('location');
  expect(await text('#output')).toBe('');
  expect(Number(await text('#credits'))).toBe(used(KEYS.tools));
  await page.screenshot({ path: path.join(ARTIFACTS, 'chat-page-tools.png'), fullPage: true });
});

test('shows a mid-stream failure with the text received before it', async () => {
  await openPage(KEYS.tools);
  await page.uncheck('#tools');
  await page.selectOption('#model', 'mock-error'); // the mock drops the connection after a few words
  await page.fill('#prompt', PROMPT);
  await page.click('#send');
  await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'failed mid-stream');
  expect(await text('#error')).toMatch(/^The stream failed mid-answer: .+ \(upstream_connection_lost\)$/);
  expect(await text('#output')).toMatch(/^You said/);
});

test('shows an HTTP error in OpenAI shape', async () => {
  await page.goto(`${url}/?key=not-a-key`);
  // GET /v1/models is refused too: the model is typed in a text field instead
  await page.waitForSelector('input#model');
  await page.check('#api-chat');
  await page.fill('#model', 'mock-1');
  await page.click('#send');
  await page.waitForFunction(() => document.querySelector('#error')?.textContent !== '');
  expect(await text('#error')).toMatch(/^HTTP 401: .*invalid_api_key/);
  expect(await text('#status')).toBe('error 401');
  // nothing was answered: the turn is taken back and the prompt given back
  expect(await page.locator('#transcript .turn').count()).toBe(0);
  expect(await page.inputValue('#prompt')).toBe(PROMPT);
});

test('renders the answer as sanitised Markdown: bold, no event handlers, links with rel="noopener noreferrer"', async () => {
  let dialogs = 0;
  const onDialog = (d: import('playwright-core').Dialog): void => {
    dialogs++;
    void d.dismiss();
  };
  page.on('dialog', onDialog);
  try {
    await openPage(KEYS.markdown);
    // The mock echoes the first 8 words of the prompt.
    await ask('**bold** and <img src=x onerror=alert(1)> [link](https://example.com) <script>alert(2)</script>');
    expect(await text('#output strong')).toBe('bold');
    expect(await page.locator('#output img, #output [onerror], #output script').count()).toBe(0); // no images at all: an answer cannot make the browser fetch a URL
    const link = page.locator('#output a[href="https://example.com"]');
    expect(await link.count()).toBe(1);
    expect(await link.getAttribute('rel')).toBe('noopener noreferrer');
    expect(await link.getAttribute('target')).toBe('_blank');
    expect(await text('#output')).toMatch(/^You said: "bold and/);
    await sleep(200);
    expect(dialogs).toBe(0);
    await page.screenshot({ path: path.join(ARTIFACTS, 'chat-page-markdown.png'), fullPage: true });
  } finally {
    page.off('dialog', onDialog);
  }
});

test('keeps a multi-turn conversation: earlier turns are sent as messages; New chat clears it', async () => {
  await openPage(KEYS.turns);
  const bodies = await recordingRequests(async () => {
    await ask('first question about sockets');
    await ask('second question about ports');
  });
  expect(bodies).toHaveLength(2);
  expect(bodies[0]!.messages).toEqual([{ role: 'user', content: 'first question about sockets' }]);
  const second = bodies[1]!.messages;
  expect(second.length).toBeGreaterThanOrEqual(3);
  expect(second.map((m) => m.role)).toEqual(['user', 'assistant', 'user']);
  expect(second[0]!.content).toBe('first question about sockets');
  expect(second[1]!.content).toMatch(/^You said: "first question about sockets"\. Streaming lets a reader/);
  expect(second[2]!.content).toBe('second question about ports');

  // the transcript shows both turns, the latest answer echoing the latest question
  expect(await page.locator('#transcript .turn.user').allTextContents()).toEqual(['Youfirst question about sockets', 'Yousecond question about ports']);
  const answers = await page.locator('#transcript .turn.assistant .content').allTextContents();
  expect(answers).toHaveLength(2);
  expect(answers[0]).toMatch(/^You said: "first question about sockets"/);
  expect(answers[1]).toMatch(/^You said: "second question about ports"/);
  await page.screenshot({ path: path.join(ARTIFACTS, 'chat-page-conversation.png'), fullPage: true });

  await page.click('#new-chat');
  expect(await page.locator('#transcript .turn').count()).toBe(0);
  const afterNew = await recordingRequests(() => ask('a fresh start'));
  expect(afterNew[0]!.messages).toEqual([{ role: 'user', content: 'a fresh start' }]);
});

test('lists the models from GET /v1/models in a select', async () => {
  await openPage(KEYS.text);
  expect(await page.locator('select#model').count()).toBe(1);
  const options = await page.locator('#model option').evaluateAll((os) => os.map((o) => (o as HTMLOptionElement).value));
  // the mock lists mock-embed too: an embedding model cannot chat, so it is left out
  const listed = ((await (await fetch(`${url}/v1/models`, { headers: { authorization: `Bearer ${KEYS.text}` } })).json()) as { data: Array<{ id: string }> }).data.map((m) => m.id);
  expect(listed).toContain('mock-embed');
  expect(options).toEqual(MOCK_MODELS);
  expect(await page.inputValue('#model')).toBe('mock-1');
});

test('moves the key from ?key= into the field and sessionStorage, out of the address bar', async () => {
  await page.goto(`${url}/?key=${encodeURIComponent(KEYS.text)}&model=mock-slow`);
  await page.waitForFunction(() => document.querySelector('#balance')?.textContent !== '');
  expect(await page.inputValue('#key')).toBe(KEYS.text);
  expect(await page.evaluate(() => sessionStorage.getItem('infery-stream.key'))).toBe(KEYS.text);
  const search = await page.evaluate(() => location.search);
  expect(search).not.toContain('key');
  expect(search).not.toContain(KEYS.text);
  expect(page.url()).not.toContain(KEYS.text);
  // other parameters stay, and a reload without ?key= keeps the key (sessionStorage)
  expect(search).toBe('?model=mock-slow');
  await page.waitForSelector('select#model option[value="mock-1"]', { state: 'attached' });
  expect(await page.inputValue('#model')).toBe('mock-slow');
  await page.goto(`${url}/`);
  await page.waitForFunction(() => document.querySelector('#balance')?.textContent !== '');
  expect(await page.inputValue('#key')).toBe(KEYS.text);

  // a key typed in the field replaces the stored one
  await page.fill('#key', KEYS.turns);
  await page.press('#key', 'Tab');
  await page.waitForFunction((k) => sessionStorage.getItem('infery-stream.key') === k, KEYS.turns);
});

test('shows the elapsed time while waiting and streaming, then time to first token and total', async () => {
  await openPage(KEYS.elapsed);
  await page.selectOption('#model', 'mock-slow');
  await page.fill('#prompt', PROMPT);
  await page.click('#send');
  // mock-slow: ~150 ms to the first word, then one word per second
  const seen = new Set<string>();
  for (let i = 0; i < 15; i++) {
    seen.add(await text('#elapsed'));
    await sleep(100);
  }
  const ticking = [...seen].filter((t) => /^\d+\.\d s/.test(t));
  expect(ticking.length).toBeGreaterThanOrEqual(5); // it moved on every ~100 ms
  expect([...seen].some((t) => /first token \d+ ms/.test(t))).toBe(true);
  await page.click('#stop');
  await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'stopped');
  const ttft = Number(await text('#ttft'));
  const total = Number(await text('#total'));
  expect(ttft).toBeGreaterThan(0);
  expect(total).toBeGreaterThanOrEqual(1_000);
  expect(total).toBeGreaterThan(ttft);
  expect(await text('#elapsed')).toMatch(/^first token \d+ ms · total \d+\.\d s$/);
  await page.waitForFunction(() => document.querySelector('#credits')?.textContent !== '', undefined, { timeout: 5_000 });
});

// ---- The Responses API toggle --------------------------------------------------------------------------------

/** Samples the output's text length every 60 ms until the status says done (or 80 samples). */
async function sampleWhileStreaming(): Promise<number[]> {
  const lengths: number[] = [];
  for (let i = 0; i < 80; i++) {
    lengths.push((await page.textContent('#output'))?.length ?? 0);
    if ((await text('#status')).startsWith('done')) break;
    await sleep(60);
  }
  return lengths;
}

test('with the API toggle on Responses, streams the answer from POST /v1/responses token by token and shows its credits_used', async () => {
  await openPage(KEYS.responses, 'responses');
  expect(await page.evaluate((k) => sessionStorage.getItem(k), API_STORAGE)).toBe('responses');
  expect(await text('#endpoint')).toBe('POST /v1/responses');
  const before = await credits(KEYS.responses);
  let lengths: number[] = [];
  const chatBodies = await recordingRequests(async () => {
    const bodies = await recordingRequests(async () => {
      await page.fill('#prompt', PROMPT);
      await page.click('#send');
      lengths = await sampleWhileStreaming();
      await page.waitForFunction(() => document.querySelector('#status')?.textContent?.startsWith('done'));
    }, '/v1/responses');
    expect(bodies).toHaveLength(1);
    expect(bodies[0]!.model).toBe('mock-1');
    expect(bodies[0]!.stream).toBe(true);
    expect(bodies[0]!.input).toEqual([{ role: 'user', content: PROMPT }]);
    expect(bodies[0]!.messages).toBeUndefined();
    expect(bodies[0]!.previous_response_id).toBeUndefined();
  });
  expect(chatBodies).toHaveLength(0);

  const final = await text('#output');
  expect(final).toMatch(/^You said: "Write a haiku about TCP"\. Streaming lets a reader/);
  expect(await text('#status')).toBe('done · status completed');
  const partial = [...new Set(lengths.filter((n) => n > 0 && n < final.length))];
  expect(partial.length).toBeGreaterThanOrEqual(4);
  expect(partial).toEqual([...partial].sort((a, b) => a - b));
  expect(partial[0]!).toBeLessThan(final.length / 2);

  // credits_used from response.completed, equal to what the ledger charged
  const after = await credits(KEYS.responses);
  const charged = after.used - before.used;
  expect(charged).toBeGreaterThan(0);
  expect(Number(await text('#credits'))).toBe(charged);
  expect(await text('.turn.assistant .cost')).toBe(`· ${charged} credits`);
  expect(await text('.turn.assistant .via')).toBe('/v1/responses');
  expect(Number(await text('#ttft'))).toBeGreaterThan(0);
  await page.waitForFunction((u) => document.querySelector('#used')?.textContent === String(u), after.used);
  expect(Number(await text('#balance'))).toBeCloseTo(after.balance, 6);
  expect(await text('#error')).toBe('');
  await page.screenshot({ path: path.join(ARTIFACTS, 'chat-page-responses.png'), fullPage: true });
});

test('Responses: Stop aborts a slow answer and shows the charge of the stopped generation', async () => {
  // What the whole answer costs: the same input, non-streaming, on mock-1 (same words, same price as mock-slow).
  const ref = await fetch(`${url}/v1/responses`, {
    method: 'POST',
    headers: { authorization: `Bearer ${KEYS.reference}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'mock-1', input: [{ role: 'user', content: PROMPT }] }),
  });
  const fullCharge = ((await ref.json()) as { credits_used: number }).credits_used;
  expect(fullCharge).toBeGreaterThan(0);

  await openPage(KEYS.responsesStop, 'responses');
  await page.selectOption('#model', 'mock-slow');
  await page.fill('#prompt', PROMPT);
  await page.click('#send');
  await page.waitForFunction(() => (document.querySelector('#output')?.textContent ?? '').split(' ').length >= 2, undefined, { timeout: 5_000 });
  await page.click('#stop');
  await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'stopped');
  const atStop = await text('#output');
  expect(atStop).toMatch(/^You said/);

  await page.waitForFunction(() => document.querySelector('#credits')?.textContent !== '', undefined, { timeout: 5_000 });
  const charged = (await credits(KEYS.responsesStop)).used;
  expect(charged).toBe(used(KEYS.responsesStop));
  expect(charged).toBeGreaterThan(0);
  expect(charged).toBeLessThan(fullCharge / 2);
  expect(Number(await text('#credits'))).toBeCloseTo(charged, 6);
  expect(await text('.turn.assistant .cost')).toBe(`· ${Number(await text('#credits'))} credits`);
  expect(await text('#credits-note')).toMatch(/^Stopped: charged only for the tokens produced before Stop/);
  await page.waitForFunction((u) => Number(document.querySelector('#used')?.textContent) === u, charged);

  // More than a mock-slow word gap later, nothing more arrived and nothing more was charged.
  await sleep(1_300);
  expect(await text('#output')).toBe(atStop);
  expect(used(KEYS.responsesStop)).toBe(charged);
  expect(await page.isDisabled('#stop')).toBe(true);
  expect(await page.isEnabled('#send')).toBe(true);
  expect(await text('.turn.assistant[data-outcome="stopped"] .content')).toBe(atStop);
  expect(await text('.turn.assistant .meta')).toBe('stopped');
  await page.screenshot({ path: path.join(ARTIFACTS, 'chat-page-responses-stopped.png'), fullPage: true });
});

test('Responses: the mid-stream error event (mock-fail) and an HTTP 429 are shown', async () => {
  // mock-fail is not listed by GET /v1/models: ?model= adds it to the select
  await openPage(KEYS.responsesFail, 'responses', '&model=mock-fail');
  expect(await page.inputValue('#model')).toBe('mock-fail');
  await page.fill('#prompt', PROMPT);
  await page.click('#send');
  await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'failed mid-stream');
  expect(await text('#error')).toBe('The stream failed mid-answer: The mock provider failed mid-response (mock-fail). (server_error)');
  expect(await text('#output')).toMatch(/^You said/);
  expect(await text('.turn.assistant .meta')).toBe('failed');
  // the words produced before the failure are charged, and that charge is shown
  await page.waitForFunction(() => document.querySelector('#credits')?.textContent !== '', undefined, { timeout: 5_000 });
  const charged = (await credits(KEYS.responsesFail)).used;
  expect(charged).toBeGreaterThan(0);
  expect(Number(await text('#credits'))).toBeCloseTo(charged, 6);
  await page.screenshot({ path: path.join(ARTIFACTS, 'chat-page-responses-error.png'), fullPage: true });

  // mock-429: refused before any event, HTTP 429 in OpenAI's error shape; the turn is taken back
  await page.click('#new-chat');
  await page.selectOption('#model', 'mock-429');
  await page.fill('#prompt', PROMPT);
  await page.click('#send');
  await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'error 429');
  expect(await text('#error')).toMatch(/^HTTP 429: .*Rate limit reached for mock-429.* \(rate_limit_exceeded\)$/);
  expect(await page.locator('#transcript .turn').count()).toBe(0);
  expect(await page.inputValue('#prompt')).toBe(PROMPT);
  expect((await credits(KEYS.responsesFail)).used).toBe(charged);
  await page.screenshot({ path: path.join(ARTIFACTS, 'chat-page-responses-429.png'), fullPage: true });
});

test('Responses: a streamed function_call item renders like a chat tool call, and the next turn sends it back as input items', async () => {
  await openPage(KEYS.responsesTools, 'responses');
  await page.check('#tools');
  try {
    const bodies = await recordingRequests(async () => {
      await page.fill('#prompt', 'What is the weather in Paris?');
      await page.click('#send');
      await page.waitForSelector('#toolcalls .toolcall');
      await page.waitForFunction(() => document.querySelector('#status')?.textContent?.startsWith('done'));
      expect(await text('#toolcalls .toolcall .name')).toBe('get_weather()');
      expect(JSON.parse(await text('#toolcalls .toolcall .arguments'))).toHaveProperty('location');
      expect(await text('#output')).toBe('');
      expect(Number(await text('#credits'))).toBe(used(KEYS.responsesTools));
      await page.uncheck('#tools');
      await ask('thanks, and now?');
    }, '/v1/responses');
    expect(bodies).toHaveLength(2);
    expect(bodies[0]!.input).toEqual([{ role: 'user', content: 'What is the weather in Paris?' }]);
    expect((bodies[0] as unknown as { tools: Array<{ type: string; name: string }> }).tools).toEqual([expect.objectContaining({ type: 'function', name: 'get_weather' })]);
    const items = bodies[1]!.input as unknown as Array<Record<string, unknown>>;
    expect(items.map((i) => i.type ?? i.role)).toEqual(['user', 'function_call', 'function_call_output', 'user']);
    expect(items[1]).toMatchObject({ name: 'get_weather', call_id: expect.stringMatching(/^call_/) });
    expect(items[2]!.call_id).toBe(items[1]!.call_id);
    expect(await page.locator('#transcript .turn.assistant .content').last().textContent()).toMatch(/^You said: "thanks, and now\?"/);
  } finally {
    await page.uncheck('#tools');
  }
});

test('the API toggle persists across a reload; Responses keeps a multi-turn conversation as input messages; chat completions still works', async () => {
  await openPage(KEYS.responsesTurns, 'responses');
  await page.reload();
  await page.waitForSelector('select#model option[value="mock-1"]', { state: 'attached' });
  expect(await page.isChecked('#api-responses')).toBe(true);
  expect(await page.isChecked('#api-chat')).toBe(false);
  expect(await text('#endpoint')).toBe('POST /v1/responses');

  const bodies = await recordingRequests(async () => {
    await ask('first question about sockets');
    await ask('second question about ports');
  }, '/v1/responses');
  expect(bodies).toHaveLength(2);
  expect(bodies[0]!.input).toEqual([{ role: 'user', content: 'first question about sockets' }]);
  const second = bodies[1]!.input;
  expect(second.map((m) => m.role)).toEqual(['user', 'assistant', 'user']);
  expect(second[0]!.content).toBe('first question about sockets');
  expect(second[1]!.content).toMatch(/^You said: "first question about sockets"\. Streaming lets a reader/);
  expect(second[2]!.content).toBe('second question about ports');
  expect(bodies.every((b) => b.previous_response_id === undefined)).toBe(true);
  const answers = await page.locator('#transcript .turn.assistant .content').allTextContents();
  expect(answers[1]).toMatch(/^You said: "second question about ports"/);

  // switched back to chat completions, the same conversation goes on as messages
  await page.check('#api-chat');
  expect(await page.evaluate((k) => sessionStorage.getItem(k), API_STORAGE)).toBe('chat');
  expect(await text('#endpoint')).toBe('POST /v1/chat/completions');
  const before = used(KEYS.responsesTurns);
  const chatBodies = await recordingRequests(() => ask('third question, over chat'));
  expect(chatBodies).toHaveLength(1);
  expect(chatBodies[0]!.messages.map((m) => m.role)).toEqual(['user', 'assistant', 'user', 'assistant', 'user']);
  expect(chatBodies[0]!.messages[4]!.content).toBe('third question, over chat');
  expect(await text('#status')).toMatch(/^done · finish_reason stop$/);
  const lastAnswer = page.locator('#transcript .turn.assistant').last();
  expect(await lastAnswer.locator('.via').textContent()).toBe('/v1/chat/completions');
  expect(await lastAnswer.locator('.content').textContent()).toMatch(/^You said: "third question, over chat"/);
  expect(Number(await text('#credits'))).toBeCloseTo(used(KEYS.responsesTurns) - before, 6);
  await page.screenshot({ path: path.join(ARTIFACTS, 'chat-page-mixed-apis.png'), fullPage: true });

  await page.reload();
  await page.waitForSelector('select#model option[value="mock-1"]', { state: 'attached' });
  expect(await page.isChecked('#api-chat')).toBe(true);
});

// ---- The Messages API toggle, and the Enter key ---------------------------------------------------------------

interface MessagesBody {
  model: string;
  stream: boolean;
  max_tokens: number;
  messages: Array<{ role: string; content: Array<Record<string, unknown>> }>;
  tools?: Array<{ name: string; input_schema: unknown }>;
}

test('with the API toggle on Messages, streams the answer from POST /v1/messages token by token and shows the final message_delta\'s credits_used', async () => {
  await openPage(KEYS.messages, 'messages');
  expect(await text('#endpoint')).toBe('POST /v1/messages');
  const before = await credits(KEYS.messages);
  let lengths: number[] = [];
  const bodies = (await recordingRequests(async () => {
    await page.fill('#prompt', PROMPT);
    await page.click('#send');
    lengths = await sampleWhileStreaming();
    await page.waitForFunction(() => document.querySelector('#status')?.textContent?.startsWith('done'));
  }, '/v1/messages')) as unknown as MessagesBody[];
  expect(bodies).toHaveLength(1);
  expect(bodies[0]).toMatchObject({ model: 'mock-1', stream: true, max_tokens: 1024, messages: [{ role: 'user', content: [{ type: 'text', text: PROMPT }] }] });
  const final = await text('#output');
  expect(final).toMatch(/^You said: "Write a haiku about TCP"\. Streaming lets a reader/);
  expect(await text('#status')).toBe('done · stop_reason end_turn');
  expect([...new Set(lengths.filter((n) => n > 0 && n < final.length))].length).toBeGreaterThanOrEqual(4);
  const after = await credits(KEYS.messages);
  const charged = after.used - before.used;
  expect(charged).toBeGreaterThan(0);
  expect(Number(await text('#credits'))).toBe(charged);
  expect(await text('.turn.assistant .via')).toBe('/v1/messages');
  await page.screenshot({ path: path.join(ARTIFACTS, 'chat-page-messages.png'), fullPage: true });
});

test('Messages: a streamed tool_use renders like a tool call, and the next turn sends it back as tool_use and tool_result blocks', async () => {
  await openPage(KEYS.messagesTools, 'messages');
  await page.check('#tools');
  await ask('What is the weather in Paris?');
  expect(await text('#status')).toBe('done · stop_reason tool_use');
  expect(await page.textContent('.turn.assistant')).toContain('get_weather');
  await page.uncheck('#tools');
  const bodies = (await recordingRequests(() => ask('Thanks'), '/v1/messages')) as unknown as MessagesBody[];
  const sent = bodies[0]!.messages;
  expect(sent.map((m) => m.role)).toEqual(['user', 'assistant', 'user']);
  expect(sent[1]!.content).toEqual([expect.objectContaining({ type: 'tool_use', name: 'get_weather', input: expect.any(Object) })]);
  const toolUseId = (sent[1]!.content[0] as { id: string }).id;
  expect(sent[2]!.content[0]).toMatchObject({ type: 'tool_result', tool_use_id: toolUseId });
  expect(sent[2]!.content.at(-1)).toEqual({ type: 'text', text: 'Thanks' });
});

test('Enter sends; Shift+Enter starts a new line and sends nothing', async () => {
  await openPage(KEYS.enter, 'chat');
  await page.fill('#prompt', 'first line');
  const none = await recordingRequests(async () => {
    await page.focus('#prompt');
    await page.keyboard.press('Shift+Enter');
    await page.keyboard.type('second line');
    await sleep(200);
  });
  expect(none).toHaveLength(0);
  expect(await page.inputValue('#prompt')).toBe('first line\nsecond line');
  const sent = await recordingRequests(async () => {
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelector('#status')?.textContent?.startsWith('done'));
  });
  expect(sent).toHaveLength(1);
  expect(sent[0]!.messages.at(-1)).toEqual({ role: 'user', content: 'first line\nsecond line' });
});
