/**
 * The Responses, Completions and Embeddings APIs end to end through the example app (createApp) and its
 * built-in mock provider, the official `openai` SDK as the client.
 * Tests named "regression (was a BUG): …" pin bugs these suites found, fixed since.
 */
import type { AddressInfo } from 'node:net';
import http from 'node:http';
import OpenAI, { APIError } from 'openai';
import type { ResponseStreamEvent } from 'openai/resources/responses/responses';
import { createApp } from '../example-app/app';
import { startMockProvider, type MockProvider } from '../example-app/mock-provider';
import { waitFor } from './helpers/sse-client';
import { collect, deltas } from './helpers/surfaces';

describe('example app with the mock provider, end to end', () => {
  let mock: MockProvider;
  let example: ReturnType<typeof createApp>;
  let server: http.Server;
  let base: string;
  let alice: OpenAI;
  const ALICE = 'alice-e2e-key';

  beforeAll(async () => {
    mock = await startMockProvider();
    example = createApp({ upstreamURL: mock.url, apiKeys: { [ALICE]: 1000 } });
    server = http.createServer(example.app);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    alice = new OpenAI({ apiKey: ALICE, baseURL: `${base}/v1`, maxRetries: 0, timeout: 15_000 });
  });
  afterAll(async () => {
    example.gateway.close();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
    await mock.close();
  });

  const used = async (): Promise<number> => {
    const res = await fetch(`${base}/v1/credits`, { headers: { authorization: `Bearer ${ALICE}` } });
    return ((await res.json()) as { data: { used: number; held: number } }).data.used;
  };
  const record = async (id: string): Promise<Record<string, unknown>> => {
    const res = await fetch(`${base}/v1/generation?id=${encodeURIComponent(id)}`, { headers: { authorization: `Bearer ${ALICE}` } });
    expect(res.status).toBe(200);
    return ((await res.json()) as { data: Record<string, unknown> }).data;
  };
  /** Waits until nothing is held any more (the last generation settled). */
  const nothingHeld = (): Promise<void> =>
    waitFor(() => example.ledger.balanceOf(ALICE)?.held === 0, 3000, 'the holds to be released');

  test('responses.create({stream:true}): text deltas and credits_used on the completed event; charged and recorded once', async () => {
    const before = await used();
    const { data: stream, response } = await alice.responses.create({ model: 'mock-1', input: 'hello gateway', stream: true }).withResponse();
    const { events, error } = await collect(stream);
    expect(error).toBeUndefined();
    const text = deltas(events).join('');
    expect(text.length).toBeGreaterThan(20);
    const completed = events.at(-1) as Extract<ResponseStreamEvent, { type: 'response.completed' }>;
    expect(completed.type).toBe('response.completed');
    const credits = (completed.response as any).credits_used as number;
    expect(credits).toBeGreaterThan(0);
    expect(completed.response.output_text ?? text).toBe(text);
    await nothingHeld();
    expect((await used()) - before).toBeCloseTo(credits, 3);
    const rec = await record(completed.response.id);
    expect(rec).toMatchObject({ id: response.headers.get('x-generation-id'), endpoint: 'responses', outcome: 'completed', stream: true, model: 'mock-1' });
  });

  test('the responses.stream() helper\'s final response has output_text and credits_used', async () => {
    const final = await alice.responses.stream({ model: 'mock-1', input: 'hello helper' }).finalResponse();
    expect(final.output_text.length).toBeGreaterThan(20);
    expect((final as any).credits_used).toBeGreaterThan(0);
    await nothingHeld();
  });

  test('an aborted Responses stream closes the mock provider\'s request quickly and is charged as cancelled', async () => {
    const before = await used();
    const controller = new AbortController();
    const stream = await alice.responses.create({ model: 'mock-slow', input: 'abort me', stream: true }, { signal: controller.signal });
    let seen = 0;
    let generationDone = false;
    let responseId = '';
    const loop = (async () => {
      try {
        for await (const event of stream) {
          if (event.type === 'response.created') responseId = event.response.id;
          if (event.type === 'response.output_text.delta' && ++seen === 2) controller.abort();
          if (seen > 20) break;
        }
      } catch {
        // aborted
      }
      generationDone = true;
    })();
    await waitFor(() => generationDone, 10_000, 'the stream to end');
    await loop;
    expect(seen).toBeLessThan(5);
    await nothingHeld();
    const rec = await record(responseId);
    expect(rec).toMatchObject({ endpoint: 'responses', outcome: 'cancelled', cancelled: true });
    expect((await used()) - before).toBeGreaterThan(0);
  });

  test('completions.create({stream:true}): text chunks, the credits chunk last', async () => {
    const stream = await alice.completions.create({ model: 'mock-1', prompt: 'Write something', stream: true });
    const { events, error } = await collect(stream);
    expect(error).toBeUndefined();
    const text = events.map((c) => c.choices[0]?.text ?? '').join('');
    expect(text.trim().split(/\s+/)).toHaveLength(16); // max_tokens 16 sent by default, one word a token at the mock
    const last = events.at(-1) as any;
    expect(last.choices).toEqual([]);
    expect(last.credits_used).toBeGreaterThan(0);
    await nothingHeld();
    expect(await record(last.id)).toMatchObject({ endpoint: 'completions', outcome: 'completed' });
  });

  test.each<[string, 'float' | undefined]>([
    ['float', 'float'],
    ['base64 (the SDK default)', undefined],
  ])('embeddings.create with %s: vectors of the asked dimensions, credits_used', async (_name, format) => {
    const answer = await alice.embeddings.create({ model: 'mock-embed', input: ['one', 'two'], dimensions: 8, ...(format ? { encoding_format: format } : {}) });
    expect(answer.data).toHaveLength(2);
    for (const item of answer.data) {
      expect(item.embedding).toHaveLength(8);
      for (const x of item.embedding) expect(Number.isFinite(x)).toBe(true);
    }
    expect((answer as any).credits_used).toBeGreaterThan(0);
    await nothingHeld();
  });

  test('both formats return the same vectors', async () => {
    const f = await alice.embeddings.create({ model: 'mock-embed', input: 'same text', encoding_format: 'float' });
    const b = await alice.embeddings.create({ model: 'mock-embed', input: 'same text' });
    expect(b.data[0]!.embedding.map((x) => Math.fround(x))).toEqual(f.data[0]!.embedding.map((x) => Math.fround(x)));
  });

  test('the mock\'s mock-fail model: an `error` event mid-stream reaches the SDK as an APIError, charged as failed', async () => {
    const stream = await alice.responses.create({ model: 'mock-fail', input: 'fail please', stream: true });
    const { events, error } = await collect(stream);
    expect(deltas(events).length).toBeGreaterThan(0);
    expect(error).toBeInstanceOf(APIError);
    await nothingHeld();
  });
});
