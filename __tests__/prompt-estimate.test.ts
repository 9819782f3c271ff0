import { countTokens } from 'gpt-tokenizer';
import { estimatePrompt, MEDIA_PART_TOKENS, TOKENIZE_LIMIT, UNCOUNTED_BOUND } from '../lib/ledgers/billing/prompt-estimate';
import { slices } from '../lib/ledgers/billing/token-count';
import fs from 'node:fs';
import path from 'node:path';
import { CompletionTally, textsCounter } from '../lib/core/usage';

// the gateway's default counter (o200k in its worker thread); a fallback would fail the test
const counter = textsCounter(undefined, (err) => {
  throw err;
});
const count = async (texts: readonly string[]): Promise<number> => (await counter(texts, 'gpt-4o'))!;
const exact = (text: string): number => countTokens(text, { disallowedSpecial: new Set() });
const SECRET = 'The quick brown fox jumps over the lazy dog, again and again. '.repeat(300); // ~3,900 tokens
const user = (content: unknown) => ({ role: 'user', content });

describe('the prompt estimate and its bound', () => {
  test.each<[string, Record<string, unknown>]>([
    ['content', { messages: [user(SECRET)] }],
    ['a text part', { messages: [user([{ type: 'text', text: SECRET }])] }],
    ['an assistant refusal', { messages: [user('hi'), { role: 'assistant', refusal: SECRET }] }],
    ['reasoning_content', { messages: [user('hi'), { role: 'assistant', content: 'ok', reasoning_content: SECRET }] }],
    ['tool_call_id', { messages: [{ role: 'tool', tool_call_id: SECRET, content: 'x' }] }],
    ['content as an object', { messages: [user({ text: SECRET })] }],
    ['a part keyed other than text', { messages: [user([{ type: 'input_text', input_text: SECRET }])] }],
    ['a field of an image part', { messages: [user([{ type: 'image_url', image_url: { url: 'https://x/y.png', detail: SECRET } }])] }],
    ['prediction', { messages: [user('hi')], prediction: { type: 'content', content: SECRET } }],
    ['tool_choice', { messages: [user('hi')], tool_choice: { type: 'function', function: { name: SECRET } } }],
    ['an unknown top-level field', { messages: [user('hi')], documents: [{ text: SECRET }] }],
    ['tools', { messages: [user('hi')], tools: [{ type: 'function', function: { name: 'f', description: SECRET } }] }],
  ])('text in %s counts in the estimate and the bound', async (_where, body) => {
    const { tokens: counted, bound } = await estimatePrompt(body, count);
    const tokens = await counted();
    expect(tokens).toBeGreaterThanOrEqual(exact(SECRET));
    expect(bound).toBeGreaterThanOrEqual(tokens);
  });

  test('settings are not prompt text: a plain request estimates as OpenAI\'s cookbook does', async () => {
    const body = { model: 'gpt-4o', stream: true, max_tokens: 5, temperature: 0.2, user: 'u', metadata: { a: 'b' }, messages: [user('Hello there')] };
    // 3 to prime the reply, 3 for the message, its role and content
    expect(await (await estimatePrompt(body, count)).tokens()).toBe(3 + 3 + exact('user') + exact('Hello there'));
  });

  test(`a prompt whose strict bound is at most ${UNCOUNTED_BOUND} tokens is held at it and counted only when asked, once`, async () => {
    const calls: Array<readonly string[]> = [];
    const spy = async (texts: readonly string[]): Promise<number> => (calls.push(texts), count(texts));
    const body = { messages: [{ role: 'system', content: 'Be brief.' }, user('Hello there')] };
    const { tokens, bound } = await estimatePrompt(body, spy);
    expect(calls).toHaveLength(0);
    // a token per UTF-8 byte of text, plus 3 to prime the reply and 3 per message
    expect(bound).toBe(3 + 3 + 3 + Buffer.byteLength('systemBe brief.userHello there'));
    const estimate = await tokens();
    expect(estimate).toBe(3 + 3 + 3 + exact('system') + exact('Be brief.') + exact('user') + exact('Hello there'));
    expect(estimate).toBeLessThanOrEqual(bound);
    expect(await tokens()).toBe(estimate);
    expect(calls).toHaveLength(1);
  });

  test('a longer prompt is counted for its bound: the estimate plus 10% and 16', async () => {
    let calls = 0;
    const spy = async (texts: readonly string[]): Promise<number> => (calls++, count(texts));
    const { tokens, bound } = await estimatePrompt({ messages: [user(SECRET)] }, spy);
    expect(calls).toBe(1);
    const estimate = await tokens();
    expect(calls).toBe(1);
    expect(bound).toBe(Math.ceil(estimate * 1.1) + 16);
  });

  test('media parts and data: URLs add a fixed figure to the bound, whatever their size', async () => {
    const image = { type: 'image_url', image_url: { url: `data:image/png;base64,${'A'.repeat(500_000)}` } };
    const { tokens: counted, bound } = await estimatePrompt({ messages: [user([{ type: 'text', text: 'what is it?' }, image])] }, count);
    const tokens = await counted();
    expect(tokens).toBeLessThan(200);
    expect(bound).toBeGreaterThanOrEqual(tokens);
    expect(bound).toBeLessThanOrEqual(tokens + MEDIA_PART_TOKENS + 50);
  });

  test.each<[string, string]>([
    ['letters and digits interleaved', 'a1b2c3d4e5'.repeat(500)],
    ['rare scripts', Array.from({ length: 2000 }, (_, i) => String.fromCodePoint(0x13000 + (i % 1000))).join('')],
    ['CJK without spaces', '漢字仮名交じり文'.repeat(600)],
    ['random printable ASCII', Array.from({ length: 6000 }, (_, i) => String.fromCharCode(33 + ((i * 7919) % 94))).join('')],
  ])('the bound is never below the exact o200k count: %s', async (_name, text) => {
    const { bound } = await estimatePrompt({ messages: [user(text)] }, count);
    expect(bound).toBeGreaterThanOrEqual(exact(text));
  });

  test('past 1 MiB of text nothing is tokenised: the strict bound (a token per byte) stands for both', async () => {
    const text = 'x'.repeat(TOKENIZE_LIMIT + 10);
    let calls = 0;
    const { tokens, bound } = await estimatePrompt({ messages: [user(text)] }, async (texts) => (calls++, texts.length));
    expect(await tokens()).toBe(bound);
    expect(calls).toBe(0);
    expect(bound).toBeGreaterThanOrEqual(text.length);
  });

  // Whole, gpt-tokenizer needs minutes for this (quadratic); in slices it is milliseconds (npm run bench measures it).
  test('900 KB of one letter is counted in slices, at the exact count of its slices', async () => {
    const text = 'a'.repeat(900_000);
    const { tokens } = await estimatePrompt({ messages: [user(text)] }, count);
    expect(await tokens()).toBe(3 + 3 + exact('user') + [...slices(text)].reduce((n, s) => n + exact(s), 0));
  });

  test('slices never split a surrogate pair and add up to the text', () => {
    const text = `${'x'.repeat(1999)}😀${'y'.repeat(3000)}`;
    const parts = [...slices(text)];
    expect(parts.join('')).toBe(text);
    for (const p of parts) expect(p.charCodeAt(0) >= 0xdc00 && p.charCodeAt(0) <= 0xdfff).toBe(false);
  });
});

describe('token counting stays accurate in slices', () => {
  // A corpus of ordinary text: English prose, Markdown, code, JSON and other scripts.
  const corpus: Array<[string, string]> = [
    ['the README (Markdown prose)', fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8')],
    ['TypeScript source', fs.readFileSync(path.join(__dirname, '..', 'lib', 'relay', 'stream-relay.ts'), 'utf8')],
    ['JSON', fs.readFileSync(path.join(__dirname, '..', 'package-lock.json'), 'utf8').slice(0, 60_000)],
    ['French prose', 'Le traitement par flux permet au lecteur de voir les premiers mots pendant que le reste est encore écrit. '.repeat(300)],
    ['Japanese prose', '吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所でニャーニャー泣いていた事だけは記憶している。'.repeat(60)],
  ];
  test.each(corpus)('%s: the sliced count is within 1%% of the exact count', async (_name, text) => {
    const sliced = await count([text]);
    const whole = exact(text);
    expect(Math.abs(sliced - whole) / whole).toBeLessThan(0.01);
  });
});

describe('nothing is tokenised on the per-chunk path', () => {
  test('a tally only keeps text until it is counted; the count equals counting the text', async () => {
    const calls: string[] = [];
    const tally = new CompletionTally(async (texts) => (calls.push(...texts), texts.join('').length), 'm');
    for (let i = 0; i < 1000; i++) tally.add('word ');
    expect(calls).toHaveLength(0);
    expect(await tally.tokens()).toBe(5000);
    expect(tally.produced).toBe(5000);
  });

  test('past a megabyte pending, text is counted in the background, not in add()', async () => {
    const calls: number[] = [];
    const tally = new CompletionTally(async (texts) => (calls.push(texts.join('').length), texts.join('').length), 'm');
    const piece = 'z'.repeat(64 * 1024);
    for (let i = 0; i < 20; i++) tally.add(piece);
    expect(calls).toHaveLength(0); // nothing yet: add() never counts
    await new Promise((r) => setImmediate(r));
    expect(await tally.tokens()).toBe(20 * piece.length);
  });
});
