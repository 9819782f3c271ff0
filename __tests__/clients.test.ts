/**
 * The clients our users' apps use — the openai SDK 7 and 6, the Vercel AI SDK (`@ai-sdk/openai` chat and
 * Responses models, `@ai-sdk/openai-compatible`) and LangChain's ChatOpenAI — each in its own Node process as an
 * app loads it (__tests__/clients/driver.mjs), against the real gateway in front of a scripted, misbehaving
 * provider, and against the example app. What each client reports is checked against what the gateway metered.
 * Everything on 127.0.0.1; the driver process, gateways and providers are stopped after each block.
 */
import { ClientDriver, type ClientName, type EmbedOutcome, type StreamOutcome } from './helpers/client-driver';
import { startExampleServer, type ExampleServer } from './helpers/example-server';
import { KEY, startGateway, type TestGateway } from './helpers/gateway';
import { BASE, ScriptedProvider, sleep, textSteps, type Step } from './helpers/provider';
import { responsesPrefix, responsesSteps } from './helpers/surface-scripts';
import { waitFor } from './helpers/sse-client';

const CHAT_CLIENTS: ClientName[] = ['openai7', 'openai6', 'ai-openai', 'ai-compatible', 'langchain'];
/** LangChain's ChatOpenAI skips stream chunks without `choices`: it never sees the gateway chunk's credits_used. */
const READS_STREAM_CREDITS = (client: ClientName): boolean => client !== 'langchain';
const WORDS = ['Hello', ' from', ' the', ' gateway', ',', ' one', ' chunk', ' at', ' a', ' time'];

let driver: ClientDriver;
beforeAll(() => {
  driver = new ClientDriver();
});
afterAll(() => driver.close());

/** The table the closing note reports: client × feature, as measured. */
const table = new Map<string, Record<string, string>>();
const mark = (client: string, feature: string, value: string): void => void table.set(client, { ...table.get(client), [feature]: value });
afterAll(() => {
  const features = ['stream', 'tools', 'usage', 'credits_used', 'abort', 'mid-stream error', 'embeddings'];
  const rows = [...table.entries()].map(([client, cells]) => `| ${client} | ${features.map((f) => cells[f] ?? '–').join(' | ')} |`);
  console.log(['clients × features, as measured:', `| client | ${features.join(' | ')} |`, `|---|${features.map(() => '---').join('|')}|`, ...rows].join('\n'));
});

/** A scripted provider and a gateway in front of it, new for each test of the block, stopped after it. */
function scriptedPerTest(): { provider: () => ScriptedProvider; gw: () => TestGateway; target: () => { baseURL: string; apiKey: string; model: string } } {
  let provider: ScriptedProvider;
  let gw: TestGateway;
  beforeEach(async () => {
    provider = await new ScriptedProvider().start();
    gw = await startGateway(provider.url);
  });
  afterEach(async () => {
    await gw.close();
    await provider.stop();
  });
  return { provider: () => provider, gw: () => gw, target: () => ({ baseURL: `${gw.url}/v1`, apiKey: KEY, model: 'test-model' }) };
}

describe.each(CHAT_CLIENTS)('%s against a scripted provider', (client) => {
  const { provider, gw, target } = scriptedPerTest();

  test('streaming text arrives chunk by chunk; usage is reported; credits_used is what meter returned', async () => {
    provider().reply = () => ({ steps: textSteps(WORDS, { gap: 40, usage: [12, 10] }) });
    const out = await driver.run(client, 'stream', target());
    expect(out.error).toBeUndefined();
    expect(out.deltas.map((d) => d.text).join('')).toBe(WORDS.join(''));
    // one delta per provider chunk, spread over the ~360 ms the provider took, not delivered at the end
    expect(out.deltas).toHaveLength(WORDS.length);
    expect(out.deltas.at(-1)!.at - out.deltas[0]!.at).toBeGreaterThan(200);
    const usage = out.usage as Record<string, unknown>;
    expect(usage.prompt_tokens ?? usage.inputTokens ?? usage.input_tokens).toBe(12);
    expect(usage.completion_tokens ?? usage.outputTokens ?? usage.output_tokens).toBe(10);
    expect(gw().meterCalls).toHaveLength(1);
    if (READS_STREAM_CREDITS(client)) expect(out.credits_used).toBe(22);
    else expect(out.credits_used).toBeUndefined();
    mark(client, 'stream', `${out.deltas.length} deltas over ${Math.round(out.deltas.at(-1)!.at - out.deltas[0]!.at)} ms`);
    mark(client, 'usage', 'yes');
    mark(client, 'credits_used', READS_STREAM_CREDITS(client) ? 'stream (see README)' : 'invoke() only');
  });

  test('tool-call arguments split over fragments assemble into the call', async () => {
    const fragments = ['{"ci', 'ty":', '"Par', 'is"}'];
    provider().reply = () => ({
      steps: [
        { data: { ...BASE, choices: [{ index: 0, delta: { role: 'assistant', content: null, tool_calls: [{ index: 0, id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '' } }] }, finish_reason: null }] } },
        ...fragments.map((args): Step => ({ data: { ...BASE, choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: args } }] }, finish_reason: null }] } })),
        { data: { ...BASE, choices: [{ index: 0, delta: {}, finish_reason: 'tool_calls' }] } },
        { data: { ...BASE, choices: [], usage: { prompt_tokens: 30, completion_tokens: 8, total_tokens: 38 } } },
        { data: '[DONE]' },
      ],
    });
    const out = await driver.run(client, 'tools', target());
    expect(out.error).toBeUndefined();
    expect(out.toolCalls).toEqual([{ id: 'call_1', name: 'get_weather', args: { city: 'Paris' } }]);
    expect(provider().last.json?.tools).toHaveLength(1);
    mark(client, 'tools', 'yes');
  });

  test('abort after the first delta cancels the upstream; metered once as cancelled, with what was produced', async () => {
    provider().reply = () => ({ steps: textSteps(Array.from({ length: 50 }, (_, i) => ` w${i}`), { gap: 50 }) });
    const out = await driver.run(client, 'abort', target());
    expect(out.deltas.length).toBeGreaterThanOrEqual(1);
    expect(out.deltas.length).toBeLessThan(10);
    await waitFor(() => provider().last.closedEarlyAt !== undefined, 2000, 'the upstream request to be closed');
    await waitFor(() => gw().meterCalls.length > 0, 2000, 'meter');
    await sleep(50);
    expect(gw().meterCalls).toHaveLength(1);
    expect(gw().meterCalls[0]!.outcome).toBe('cancelled');
    expect(gw().meterCalls[0]!.usage.completion_tokens).toBeGreaterThan(0);
    expect(gw().meterCalls[0]!.usage.completion_tokens).toBeLessThan(50);
    mark(client, 'abort', `upstream closed, metered cancelled (${gw().meterCalls[0]!.usage.completion_tokens} tokens)`);
  });

  test('a provider that dies mid-stream: the client raises or reports the error with the gateway code; what was produced is metered', async () => {
    provider().reply = () => ({ steps: [...textSteps(['One', ' two', ' three'], { usage: false, done: false }).slice(0, 4), { wait: 20 }, { destroy: true }] });
    const out = await driver.run(client, 'error', target());
    expect(out.deltas.map((d) => d.text).join('')).toBe('One two three');
    const reported = client.startsWith('ai-') ? out.errorParts![0] : out.error;
    expect(reported).toBeDefined();
    expect(reported!.code).toBe('upstream_connection_lost');
    expect(reported!.message).toMatch(/upstream/i);
    if (client.startsWith('ai-')) {
      // the AI SDK: an error part in the stream, and onError ran with it
      expect(out.onError![0]?.code).toBe('upstream_connection_lost');
      expect(out.finish).not.toBe('stop');
    }
    await waitFor(() => gw().meterCalls.length > 0, 2000, 'meter');
    expect(gw().meterCalls[0]!.outcome).toBe('failed');
    expect(gw().meterCalls[0]!.error?.code).toBe('upstream_connection_lost');
    mark(client, 'mid-stream error', client.startsWith('ai-') ? 'error part + onError, code' : `${reported!.name}, code`);
  });

  test('embeddings', async () => {
    // as OpenAI answers: base64 little-endian float32 when asked for it (the openai SDK asks by default)
    const vector = [0.1, 0.2, 0.3];
    const base64 = Buffer.from(new Float32Array(vector).buffer).toString('base64');
    provider().reply = (seen) => ({
      json: {
        object: 'list',
        model: 'test-model',
        data: [{ object: 'embedding', index: 0, embedding: seen.json?.encoding_format === 'base64' ? base64 : vector }],
        usage: { prompt_tokens: 2, total_tokens: 2 },
      },
    });
    const out = await driver.run<EmbedOutcome>(client, 'embed', target());
    expect(out.dimensions).toBe(3);
    expect(provider().last.path).toBe('/v1/embeddings');
    expect(gw().meterCalls).toHaveLength(1);
    // LangChain's embedQuery returns the vector only
    if (client !== 'langchain') expect(out.credits_used).toBe(2);
    mark(client, 'embeddings', client === 'langchain' ? 'vector only' : 'yes, credits_used');
  });
});

describe("the AI SDK's openai.responses() model against a scripted Responses provider", () => {
  const { provider, gw, target } = scriptedPerTest();

  test('text chunk by chunk, usage, credits_used from the final event', async () => {
    provider().reply = () => ({ steps: responsesSteps(WORDS, { gap: 40 }) });
    const out = await driver.run('ai-responses', 'stream', target());
    expect(out.error).toBeUndefined();
    expect(provider().last.path).toBe('/v1/responses');
    expect(out.deltas.map((d) => d.text).join('')).toBe(WORDS.join(''));
    expect(out.deltas.at(-1)!.at - out.deltas[0]!.at).toBeGreaterThan(200);
    expect(out.usage).toMatchObject({ inputTokens: 11, outputTokens: WORDS.length });
    expect(out.credits_used).toBe(gw().meterCalls[0]!.usage.total_tokens);
    mark('ai-responses', 'stream', `${out.deltas.length} deltas`);
    mark('ai-responses', 'usage', 'yes');
    mark('ai-responses', 'credits_used', 'stream (raw final event)');
  });

  test('a mid-stream failure is an error part with the gateway code, and onError runs', async () => {
    provider().reply = () => ({ steps: [...responsesPrefix(['One', ' two']), { wait: 20 }, { destroy: true }] });
    const out = await driver.run('ai-responses', 'error', target());
    expect(out.deltas.map((d) => d.text).join('')).toBe('One two');
    expect(out.errorParts![0]?.code ?? out.error?.code).toBe('upstream_connection_lost');
    expect(out.onError![0]).toBeDefined();
    await waitFor(() => gw().meterCalls.length > 0, 2000, 'meter');
    expect(gw().meterCalls[0]!.outcome).toBe('failed');
    mark('ai-responses', 'mid-stream error', 'error part + onError, code');
  });

  test('abort cancels the upstream, metered as cancelled', async () => {
    provider().reply = () => ({ steps: responsesPrefix(Array.from({ length: 50 }, (_, i) => ` w${i}`), 50) });
    const out = await driver.run('ai-responses', 'abort', target());
    expect(out.deltas.length).toBeGreaterThanOrEqual(1);
    await waitFor(() => provider().last.closedEarlyAt !== undefined, 2000, 'the upstream request to be closed');
    await waitFor(() => gw().meterCalls.length > 0, 2000, 'meter');
    expect(gw().meterCalls[0]!.outcome).toBe('cancelled');
    mark('ai-responses', 'abort', 'upstream closed, metered cancelled');
  });
});

describe('every client against the example app (its mock provider)', () => {
  let app: ExampleServer;
  beforeAll(async () => {
    app = await startExampleServer({ 'client-key': 1_000_000 });
  });
  afterAll(() => app.close());

  test.each([...CHAT_CLIENTS, 'ai-responses' as const])('%s: a stream with usage and credits_used, a tool call, a mid-stream failure, embeddings', async (client) => {
    const at = (model: string) => ({ baseURL: app.baseURL, apiKey: 'client-key', model });
    const text = await driver.run(client, 'stream', at('mock-1'));
    expect(text.error).toBeUndefined();
    expect(text.deltas.length).toBeGreaterThan(5);
    expect(text.usage).toBeDefined();
    if (READS_STREAM_CREDITS(client)) expect(text.credits_used).toBeGreaterThan(0);
    const tools = await driver.run(client, 'tools', at('mock-1'));
    expect(tools.toolCalls[0]?.name).toBe('get_weather');
    // mock-error dies after a few words
    const failed = await driver.run(client, 'error', at('mock-error'));
    expect(failed.deltas.length).toBeGreaterThan(0);
    const reported = client.startsWith('ai-') ? failed.errorParts?.[0] : failed.error;
    expect(reported?.code).toBe('upstream_connection_lost');
    const vectors = await driver.run<EmbedOutcome>(client, 'embed', at('mock-embed'));
    expect(vectors.dimensions).toBeGreaterThan(0);
  });
});
