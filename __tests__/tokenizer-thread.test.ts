import fs from 'node:fs';
import path from 'node:path';
import { countTokens } from 'gpt-tokenizer';
import { fallbackCount, sharedTokenizer, TokenizerThread } from '../lib/ledgers/billing/tokenizer-thread';
import { slices } from '../lib/ledgers/billing/token-count';
import { CompletionTally, textsCounter } from '../lib/core/usage';
import { estimatePrompt } from '../lib/ledgers/billing/prompt-estimate';
import { startGateway } from './helpers/gateway';
import { ScriptedProvider, textSteps } from './helpers/provider';
import { postStream, waitFor } from './helpers/sse-client';

// The default counter runs gpt-tokenizer in a worker thread, started on the first count and stopped when idle.

const exact = (text: string): number => [...slices(text)].reduce((n, s) => n + countTokens(s, { disallowedSpecial: new Set() }), 0);
const threads: TokenizerThread[] = [];
const thread = (...args: ConstructorParameters<typeof TokenizerThread>): TokenizerThread => {
  const t = new TokenizerThread(...args);
  threads.push(t);
  return t;
};
afterEach(async () => {
  await Promise.all(threads.splice(0).map((t) => t.stop()));
});
const noFallback = (reason: string): void => {
  throw new Error(`unexpected fallback: ${reason}`);
};

test('counts exactly what gpt-tokenizer counts in this thread, special-token text as plain text, slice by slice', async () => {
  const texts = [
    fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8'),
    'a'.repeat(50_000),
    'Hello <|endoftext|> there',
    '漢字仮名交じり文😀'.repeat(500),
    '',
  ];
  const t = thread();
  expect(t.running).toBe(false);
  expect(await t.count(texts, noFallback)).toBe(texts.reduce((n, text) => n + exact(text), 0));
  expect(t.running).toBe(true);
  expect(await t.count([], noFallback)).toBe(0);
});

test('counts from many callers at once each get their own answer', async () => {
  const t = thread();
  const texts = Array.from({ length: 50 }, (_, i) => `message number ${i} `.repeat(i + 1));
  const counts = await Promise.all(texts.map((text) => t.count([text], noFallback)));
  expect(counts).toEqual(texts.map(exact));
});

test('a thread that cannot load its tokenizer answers "not counted" and says why; it is not restarted at once', async () => {
  const reasons: string[] = [];
  const t = thread(path.join(__dirname, 'no-such-tokenizer.js'));
  const texts = ['héllo wörld', 'x'.repeat(1000)];
  expect(await t.count(texts, (r) => reasons.push(r))).toBeUndefined();
  expect(reasons[0]).toMatch(/tokenizer thread (failed|exited)/);
  expect(t.running).toBe(false);
  // within the restart delay nothing is started
  expect(await t.count(['abc'], (r) => reasons.push(r))).toBeUndefined();
  expect(reasons[1]).toMatch(/failed recently/);
  expect(t.running).toBe(false);
  // what billing uses then: a token per 3 UTF-8 bytes
  expect(fallbackCount(texts)).toBe(Math.ceil(Buffer.byteLength('héllo wörld') / 3) + 334);
});

test('texts past 8 M characters waiting are not queued: "not counted" at once', async () => {
  const t = thread();
  const reasons: string[] = [];
  const big = 'word '.repeat(1_000_000);
  const first = t.count([big], noFallback);
  expect(await t.count([big, big], (r) => reasons.push(r))).toBeUndefined();
  expect(reasons).toEqual(['the tokenizer thread is too far behind']);
  expect(await first).toBe(exact(big));
});

test('a long prompt that cannot be counted is held at the strict bound, and billed at a token per 3 bytes within it', async () => {
  const text = 'The quick brown fox jumps over the lazy dog. '.repeat(400);
  const { tokens, bound } = await estimatePrompt({ messages: [{ role: 'user', content: text }] }, async () => undefined);
  expect(bound).toBe(3 + 3 + Buffer.byteLength('user') + Buffer.byteLength(text));
  expect(await tokens()).toBe(3 + 3 + fallbackCount(['user', text]));
});

test('a tally whose text cannot be counted bills a token per 3 bytes', async () => {
  const tally = new CompletionTally(async () => undefined, 'm');
  tally.add('hello world, again');
  expect(await tally.tokens()).toBe(fallbackCount(['hello world, again']));
});

test('stopping the thread answers the counts under way with the fallback; the next count starts a new one', async () => {
  const t = thread();
  const reasons: string[] = [];
  const big = 'word '.repeat(400_000);
  const pending = t.count([big], (r) => reasons.push(r));
  await t.stop();
  expect(await pending).toBeUndefined();
  expect(reasons).toEqual(['the tokenizer thread was stopped']);
  expect(await t.count(['hello'], noFallback)).toBe(1);
  expect(t.running).toBe(true);
});

test('the thread keeps the process alive only while a count is under way (a settlement is never cut short by exit)', async () => {
  const t = thread();
  const before = process.getActiveResourcesInfo().filter((r) => r === 'MessagePort').length;
  const pending = t.count(['hello world '.repeat(50_000)], noFallback);
  expect(process.getActiveResourcesInfo().filter((r) => r === 'MessagePort').length).toBe(before + 1);
  expect(await pending).toBe(exact('hello world '.repeat(50_000)));
  expect(t.running).toBe(true);
  expect(process.getActiveResourcesInfo().filter((r) => r === 'MessagePort').length).toBe(before);
});

test('the thread stops by itself once idle', async () => {
  const t = thread(undefined, 50);
  expect(await t.count(['hello world'], noFallback)).toBe(2);
  expect(t.running).toBe(true);
  for (let i = 0; i < 100 && t.running; i++) await new Promise((r) => setTimeout(r, 20));
  expect(t.running).toBe(false);
});

test('a host countTokens is used in this thread, contained', async () => {
  const warnings: unknown[] = [];
  const counter = textsCounter((text) => (text === 'bad' ? Number.NaN : text.length), (err) => warnings.push(err));
  expect(await counter(['abcd', 'ef'], 'm')).toBe(6);
  expect(await counter(['bad'], 'm')).toBe(1);
  expect(warnings).toHaveLength(1);
});

test('a streamed generation with the provider\'s usage tokenises nothing: the thread is never started', async () => {
  const provider = await new ScriptedProvider().start();
  provider.reply = () => ({ steps: textSteps(['Hello', ' world'], { usage: [9, 2] }) });
  const gw = await startGateway(provider.url);
  try {
    const res = await postStream(gw.url, { model: 'mock-1', stream: true, messages: [{ role: 'user', content: 'Say hello' }] });
    expect(res.status).toBe(200);
    await waitFor(() => gw.meterCalls.length === 1);
    expect(gw.meterCalls[0]!.usage.prompt_tokens).toBe(9);
    expect(sharedTokenizer().running).toBe(false);
  } finally {
    await gw.close();
    await provider.stop();
  }
});

test('a stream the client leaves is billed what was produced, counted in the thread', async () => {
  const provider = await new ScriptedProvider().start();
  provider.reply = () => ({ steps: [...textSteps(['Hello', ' world'], { usage: false, done: false }).slice(0, 3), { hang: true }] });
  const gw = await startGateway(provider.url);
  try {
    await postStream(gw.url, { model: 'mock-1', stream: true, messages: [{ role: 'user', content: 'Say hello' }] }, { onEvent: (_d, i) => (i === 1 ? 'abort' : undefined) });
    await waitFor(() => gw.meterCalls.length === 1, 5000);
    const usage = gw.meterCalls[0]!.usage;
    expect(usage.estimated).toBe(true);
    expect(usage.completion_tokens).toBe(exact('Hello world'));
    expect(usage.prompt_tokens).toBe(3 + 3 + exact('user') + exact('Say hello'));
    expect(sharedTokenizer().running).toBe(true);
  } finally {
    await gw.close();
    await provider.stop();
  }
});
