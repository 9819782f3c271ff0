/**
 * The Messages API's clients as our users' apps load them (@ai-sdk/anthropic, LangChain's ChatAnthropic), each
 * in the client driver's process, against the example app whose built-in mock is an Anthropic-dialect upstream.
 */
import { ClientDriver, type ClientName } from './helpers/client-driver';
import { startExampleServer, type ExampleServer } from './helpers/example-server';
import { waitFor } from './helpers/sse-client';

const KEY = 'messages-clients-key';
const CLIENTS: ClientName[] = ['ai-anthropic', 'langchain-anthropic'];

// @ai-sdk/anthropic asks for the model's whole output window (max_tokens 128,000 for a model it does not know):
// the gateway holds that worst case, so the key needs the credits for it (with 1,000 it answers 402, as it should)
let driver: ClientDriver;
let app: ExampleServer;
let example: ExampleServer['example'];
let baseURL: string;

beforeAll(async () => {
  driver = new ClientDriver();
  app = await startExampleServer({ [KEY]: 1_000_000 }, (url) => [{ name: 'mock-messages', baseURL: url, api: 'anthropic' }]);
  ({ example, baseURL } = app);
});
afterAll(async () => {
  await driver.close();
  await app.close();
});

const used = (): number => example.ledger.balanceOf(KEY)!.used;
const settled = (): Promise<void> => waitFor(() => example.ledger.balanceOf(KEY)?.held === 0, 5000, 'the holds to be released');

describe.each(CLIENTS)('%s through the gateway', (client) => {
  test('streams text delta by delta, reports usage, and is charged once', async () => {
    const before = used();
    const out = await driver.run(client, 'stream', { baseURL, apiKey: KEY, model: 'claude-mock-1' });
    expect(out.error).toBeUndefined();
    const text = out.deltas.map((d) => d.text).join('');
    expect(text).toMatch(/^You said: "Say hello"\./);
    expect(out.deltas.length).toBeGreaterThan(10);
    // spread over the time the mock took, not delivered at the end
    expect(out.deltas.at(-1)!.at - out.deltas[0]!.at).toBeGreaterThan(300);
    const usage = out.usage as Record<string, unknown>;
    expect(usage.outputTokens ?? usage.output_tokens).toBeGreaterThan(10);
    await settled();
    expect(used()).toBeGreaterThan(before);
    if (client === 'ai-anthropic') expect(out.credits_used).toBeCloseTo(used() - before, 6);
  });

  test('tool use: the streamed input assembles into the call', async () => {
    const out = await driver.run(client, 'tools', { baseURL, apiKey: KEY, model: 'claude-mock-1' });
    expect(out.error).toBeUndefined();
    expect(out.toolCalls).toHaveLength(1);
    expect(out.toolCalls[0]).toMatchObject({ name: 'get_weather', args: { city: 'city value' } });
    await settled();
  });

  test('a provider that drops mid-stream: the client reports the error', async () => {
    const out = await driver.run(client, 'error', { baseURL, apiKey: KEY, model: 'mock-error' });
    const reported = [out.error, ...(out.errorParts ?? []), ...(out.onError ?? [])].filter(Boolean);
    expect(reported.length).toBeGreaterThan(0);
    await settled();
  });
});
