import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startGateway, KEY, type TestGateway } from './helpers/gateway';
import { waitFor } from './helpers/sse-client';

/**
 * A provider that honours backpressure itself: it writes 16 KiB chunks as fast as the gateway reads them,
 * and counts how many it managed to write. If the gateway kept reading while its client did not, the provider
 * would get through all of them.
 */
async function floodingProvider(total: number) {
  const state = { written: 0, finished: false };
  const payload = 'x'.repeat(16 * 1024);
  const server = http.createServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    const chunk = (i: number) => `data: ${JSON.stringify({ id: 'chatcmpl-bp', choices: [{ index: 0, delta: { content: payload }, finish_reason: null }], n: i })}\n\n`;
    const pump = (): void => {
      while (state.written < total) {
        const ok = res.write(chunk(state.written));
        state.written++;
        if (!ok) {
          res.once('drain', pump);
          return;
        }
      }
      res.write(`data: ${JSON.stringify({ id: 'chatcmpl-bp', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`);
      res.end('data: [DONE]\n\n');
      state.finished = true;
    };
    pump();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    state,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}

describe('backpressure', () => {
  let gw: TestGateway;
  let provider: Awaited<ReturnType<typeof floodingProvider>>;
  const TOTAL = 3000; // ~48 MiB
  beforeAll(async () => {
    provider = await floodingProvider(TOTAL);
    gw = await startGateway(provider.url, { idleTimeout: 2000 });
  });
  afterAll(async () => {
    await gw.close();
    await provider.close();
  });

  test('a client that does not read makes the gateway stop reading the upstream; resuming delivers everything', async () => {
    const body = JSON.stringify({ model: 'm', stream: true, messages: [{ role: 'user', content: 'flood' }] });
    const req = http.request(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    });
    const response = new Promise<http.IncomingMessage>((resolve) => req.on('response', resolve));
    req.end(body);
    const res = await response;
    res.pause(); // the client stops reading
    await waitFor(() => provider.state.written > 0, 2000, 'the provider to start');
    await new Promise((r) => setTimeout(r, 600));
    const heldAt = provider.state.written;
    await new Promise((r) => setTimeout(r, 400));
    // the provider is stuck: only socket buffers' worth (loopback buffers hold several MiB) left it, not the 48 MiB
    expect(provider.state.written).toBe(heldAt);
    expect(heldAt).toBeLessThan(TOTAL / 3);
    expect(provider.state.finished).toBe(false);
    // the client comes back: everything arrives, in order, and the stream ends properly
    let received = '';
    res.setEncoding('utf8');
    res.on('data', (t: string) => (received += t));
    res.resume();
    await new Promise((r) => res.on('end', r));
    expect(provider.state.finished).toBe(true);
    const events = received.split('\n\n').filter((e) => e.startsWith('data: '));
    expect(events.at(-1)).toBe('data: [DONE]');
    const numbered = events.filter((e) => e.includes('"n":')).map((e) => (JSON.parse(e.slice(6)) as { n: number }).n);
    expect(numbered).toEqual(Array.from({ length: TOTAL }, (_, i) => i));
    expect(gw.meterCalls).toHaveLength(1);
    expect(gw.meterCalls[0]!.cancelled).toBe(false);
  });
});
