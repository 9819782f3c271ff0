import http from 'node:http';
import { ScriptedProvider, textSteps } from './helpers/provider';
import { KEY, startGateway, type TestGateway } from './helpers/gateway';
import { jsonEvents, postStream, waitFor } from './helpers/sse-client';

const request = { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'Tell me a long story' }] };
const words = Array.from({ length: 100 }, (_, i) => ` word${i}`);

let provider: ScriptedProvider;
let gw: TestGateway;
beforeAll(async () => {
  provider = await new ScriptedProvider().start();
  gw = await startGateway(provider.url);
});
afterAll(async () => {
  await gw.close();
  await provider.stop();
});
beforeEach(() => {
  gw.meterCalls.length = 0;
});

describe('cancellation', () => {
  test('aborts the upstream within 250 ms when the client disconnects, and meters only the tokens produced', async () => {
    provider.reply = () => ({ steps: textSteps(words, { gap: 30, usage: false }) });
    let abortedAt = 0;
    const result = await postStream(gw.url, request, {
      onEvent: (_data, i) => {
        if (i === 10) {
          abortedAt = Date.now();
          return 'abort';
        }
      },
    });
    expect(result.events).toHaveLength(11);
    await waitFor(() => provider.last.closedEarlyAt !== undefined, 2000, 'the provider to see its connection closed');
    expect(provider.last.closedEarlyAt! - abortedAt).toBeLessThan(250);
    expect(provider.last.stepsWritten).toBeLessThan(40);
    await waitFor(() => gw.meterCalls.length === 1, 2000, 'meter');
    const event = gw.meterCalls[0]!;
    expect(event.cancelled).toBe(true);
    expect(event.error).toBeUndefined();
    expect(event.usage.estimated).toBe(true);
    // about ten words reached the client; whatever else was in flight is at most a few more
    expect(event.usage.completion_tokens).toBeGreaterThanOrEqual(10);
    expect(event.usage.completion_tokens).toBeLessThan(30);
    expect(gw.logs.some((l) => l.msg === 'infery-stream client disconnected; upstream request aborted')).toBe(true);
    const line = gw.logs.find((l) => l.msg === 'infery-stream request' && l.cancelled === true)!;
    expect(line).toMatchObject({ status: 499, outcome: 'cancelled', providerId: 'chatcmpl-test123', generationId: expect.stringMatching(/^gen-/) });
    // metered once, and stays once
    await new Promise((r) => setTimeout(r, 100));
    expect(gw.meterCalls).toHaveLength(1);
  });

  test('a client that leaves after the provider usage arrived leaves a completed generation, billed at that usage', async () => {
    provider.reply = () => ({ steps: [...textSteps(['a', 'b'], { usage: [7, 2], done: false }), { wait: 2000 }, { data: '[DONE]' }] });
    await postStream(gw.url, request, { onEvent: (data) => (data.includes('"usage":{') ? 'abort' : undefined) });
    await waitFor(() => gw.meterCalls.length === 1, 2000, 'meter');
    expect(gw.meterCalls[0]).toMatchObject({ outcome: 'completed', cancelled: false, usage: { prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 } });
  });

  test('aborts the upstream when the client leaves before the provider answered, metering the prompt only', async () => {
    provider.reply = () => ({ delay: Infinity });
    const seen = provider.requests.length;
    const req = http.request(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    });
    req.on('error', () => {});
    req.end(JSON.stringify(request));
    await provider.waitForRequests(seen + 1);
    const abortedAt = Date.now();
    req.destroy();
    await waitFor(() => provider.last.closedEarlyAt !== undefined, 2000, 'the provider to see its connection closed');
    expect(provider.last.closedEarlyAt! - abortedAt).toBeLessThan(250);
    await waitFor(() => gw.meterCalls.length === 1, 2000, 'meter');
    expect(gw.meterCalls[0]).toMatchObject({ cancelled: true, usage: { completion_tokens: 0, estimated: true } });
    expect(gw.meterCalls[0]!.usage.prompt_tokens).toBeGreaterThan(0);
  });

  test('a client that hangs up right after [DONE] completed its generation: not a cancellation', async () => {
    provider.reply = () => ({ steps: textSteps(['a', 'b']) });
    const result = await postStream(gw.url, request, { onEvent: (data) => (data === '[DONE]' ? 'abort' : undefined) });
    expect(jsonEvents(result).at(-1)).toHaveProperty('credits_used');
    await waitFor(() => gw.meterCalls.length === 1, 2000, 'meter');
    expect(gw.meterCalls[0]!.cancelled).toBe(false);
    expect(provider.last.closedEarlyAt).toBeUndefined();
  });

  test('a client that leaves while meter is running after the upstream finished is metered as completed, once', async () => {
    let release: () => void = () => {};
    const slow = await startGateway(provider.url, {
      meter: async (event) => {
        slow.meterCalls.push(event);
        await new Promise<void>((resolve) => (release = resolve));
        return 5;
      },
    });
    try {
      provider.reply = () => ({ steps: textSteps(['a', 'b']) });
      const pending = postStream(slow.url, request, { onEvent: (data) => (data.includes('"usage":{') ? 'abort' : undefined) });
      await waitFor(() => slow.meterCalls.length === 1, 2000, 'meter');
      await pending;
      release();
      await new Promise((r) => setTimeout(r, 50));
      expect(slow.meterCalls).toHaveLength(1);
      expect(slow.meterCalls[0]!.cancelled).toBe(false);
    } finally {
      await slow.close();
    }
  });
});
