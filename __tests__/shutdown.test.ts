import request from 'supertest';
import { ScriptedProvider, textSteps } from './helpers/provider';
import { expectNothingBilled, KEY, startGateway, type TestGateway } from './helpers/gateway';
import { jsonEvents, postStream, waitFor } from './helpers/sse-client';

const chat = { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] };
const words = (n: number) => Array.from({ length: n }, (_, i) => ` w${i}`);

let provider: ScriptedProvider;
beforeAll(async () => {
  provider = await new ScriptedProvider().start();
});
afterAll(() => provider.stop());

describe('graceful shutdown', () => {
  let gw: TestGateway;
  beforeEach(async () => {
    gw = await startGateway(provider.url);
  });
  afterEach(() => gw.close());

  test('lets an open stream finish within the deadline, metered once, and refuses new requests with 503', async () => {
    provider.reply = () => ({ steps: textSteps(words(6), { gap: 50 }) });
    const pending = postStream(gw.url, chat);
    await waitFor(() => gw.gateway.inFlight === 1, 2000, 'the stream to start');
    const drained = gw.gateway.shutdown({ deadlineMs: 5000 });
    const refused = await request(gw.url).post('/v1/chat/completions').set('Authorization', `Bearer ${KEY}`).send(chat);
    expect(refused.status).toBe(503);
    expect(refused.body.error).toMatchObject({ code: 'shutting_down', type: 'server_error' });
    const models = await request(gw.url).get('/v1/models').set('Authorization', `Bearer ${KEY}`);
    expect(models.status).toBe(503);
    const result = await pending;
    await drained;
    expect(result.events.at(-1)).toBe('[DONE]');
    expect(jsonEvents(result).at(-1)).toHaveProperty('credits_used');
    expect(gw.meterCalls).toHaveLength(1);
    expect(gw.meterCalls[0]!.cancelled).toBe(false);
    expect(gw.gateway.inFlight).toBe(0);
  });

  test('ends streams still open at the deadline with an error chunk, metering each once', async () => {
    provider.reply = () => ({ steps: textSteps(words(100), { gap: 40, usage: false }) });
    const pending = [postStream(gw.url, chat), postStream(gw.url, chat)];
    await waitFor(() => gw.gateway.inFlight === 2, 2000, 'two streams');
    await new Promise((r) => setTimeout(r, 200));
    const started = Date.now();
    await gw.gateway.shutdown({ deadlineMs: 150 });
    expect(Date.now() - started).toBeLessThan(1000);
    for (const result of await Promise.all(pending)) {
      const last = jsonEvents(result).at(-1)!;
      expect(last).toMatchObject({ error: { code: 'shutting_down', type: 'server_error' } });
      expect(Object.keys(last)).toEqual(['error']);
      expect(result.events).not.toContain('[DONE]');
    }
    expect(gw.meterCalls).toHaveLength(2);
    for (const call of gw.meterCalls) {
      expect(call.error?.code).toBe('shutting_down');
      expect(call.usage.completion_tokens).toBeGreaterThan(0);
    }
    await waitFor(() => provider.requests.slice(-2).every((r) => r.closedEarlyAt !== undefined), 1000, 'upstreams aborted');
  });

  test('a request still waiting for the provider at the deadline gets a 503 and is released, never charged', async () => {
    provider.reply = () => ({ delay: Infinity });
    // supertest sends on then(): start it now
    const pending = request(gw.url).post('/v1/chat/completions').set('Authorization', `Bearer ${KEY}`).send({ ...chat, stream: false }).then((r) => r);
    await waitFor(() => gw.gateway.inFlight === 1, 2000, 'the request to go upstream');
    await gw.gateway.shutdown({ deadlineMs: 50 });
    const res = await pending;
    expect(res.status).toBe(503);
    expect(res.body.error.code).toBe('shutting_down');
    expect(gw.meterCalls).toHaveLength(1);
    expect(gw.meterCalls[0]!.error?.code).toBe('shutting_down');
    expectNothingBilled(gw.meterCalls, 1); // released, never charged
  });

  test('requests that failed before the first byte do not hold up shutdown and are never charged', async () => {
    provider.reply = () => ({ status: 500, json: { error: { message: 'boom' } } });
    await request(gw.url).post('/v1/chat/completions').set('Authorization', `Bearer ${KEY}`).send(chat);
    expect(gw.gateway.inFlight).toBe(0);
    const started = Date.now();
    await gw.gateway.shutdown({ deadlineMs: 2000 });
    expect(Date.now() - started).toBeLessThan(100);
    expectNothingBilled(gw.meterCalls);
  });

  test('streams that complete during the drain get credits_used and [DONE] before shutdown() resolves', async () => {
    await gw.close();
    // an async meter widens the gap between settling and writing the last chunks
    const outcomes: string[] = [];
    gw = await startGateway(provider.url, {
      meter: (e) => new Promise((r) => setTimeout(() => r(e.usage.total_tokens), 5 + (outcomes.push(e.outcome) % 7))),
    });
    provider.reply = () => ({ steps: textSteps(words(3), { gap: 100 }) });
    const pending = Array.from({ length: 40 }, () => postStream(gw.url, chat));
    await waitFor(() => gw.gateway.inFlight >= 20, 3000, 'the streams to start');
    await gw.gateway.shutdown({ deadlineMs: 5000 });
    // what a process does next: close every connection at once
    await gw.close();
    const results = await Promise.all(pending);
    const served = results.filter((r) => r.status === 200);
    expect(served.length).toBeGreaterThanOrEqual(20);
    expect(served.length + results.filter((r) => r.status === 503).length).toBe(40); // the late ones were refused
    for (const result of served) {
      expect(result.events.at(-1)).toBe('[DONE]');
      expect(jsonEvents(result).at(-1)).toHaveProperty('credits_used');
    }
    expect(outcomes.filter((o) => o === 'completed')).toHaveLength(served.length);
    expect(outcomes).toHaveLength(served.length);
  });

  test('a pass-through request under way is waited for, and answered in full', async () => {
    provider.reply = () => ({ delay: 300, json: { object: 'list', data: [] } });
    const pending = request(gw.url).get('/v1/models').set('Authorization', `Bearer ${KEY}`).then((r) => r);
    await waitFor(() => gw.gateway.inFlight === 1, 2000, 'the request to go upstream');
    await gw.gateway.shutdown({ deadlineMs: 5000 });
    await gw.close();
    const res = await pending;
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ object: 'list', data: [] });
  });

  test('a pass-through request still waiting for the provider at the deadline gets a 503', async () => {
    provider.reply = () => ({ delay: Infinity });
    const pending = request(gw.url).get('/v1/models').set('Authorization', `Bearer ${KEY}`).then((r) => r);
    await waitFor(() => gw.gateway.inFlight === 1, 2000, 'the request to go upstream');
    await gw.gateway.shutdown({ deadlineMs: 50 });
    const res = await pending;
    expect(res.status).toBe(503);
    expect(res.body.error.code).toBe('shutting_down');
    expect(gw.gateway.inFlight).toBe(0);
  });

  test('rejects a bad deadline', async () => {
    await expect(gw.gateway.shutdown({ deadlineMs: -1 })).rejects.toThrow(/deadlineMs/);
  });
});
