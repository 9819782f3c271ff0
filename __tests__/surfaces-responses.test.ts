/**
 * The Responses API (`POST /v1/responses`, reads of stored responses) with the official `openai` SDK as the
 * client of a real gateway over real sockets, in front of a scripted provider that answers like OpenAI.
 * Tests named "regression (was a BUG): …" pin bugs these suites found, fixed since.
 */
import type { AddressInfo } from 'node:net';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { APIError, APIUserAbortError } from 'openai';
import type { ResponseStreamEvent } from 'openai/resources/responses/responses';
import type { Options, ReserveContext } from '../lib';
import { KEY, UPSTREAM_KEY, type Account } from './helpers/gateway';
import { ScriptedProvider, sleep } from './helpers/provider';
import { waitFor } from './helpers/sse-client';
import { RESP_ID, responseObject, responsesPrefix, responsesSteps, responsesUsage, typed } from './helpers/surface-scripts';
import { INPUT, provider, gateway, client, extraServers, sdk, gatewayWith, settle, collect, rawPost, sseEvents, deltas } from './helpers/surfaces';

describe('Responses API, streaming', () => {
  test('responses.create({stream:true}): deltas in order, the completed event carries credits_used = what meter returned, metered once as responses with both usage shapes, X-Generation-Id', async () => {
    const words = ['Hello', ' from', ' the', ' Responses', ' API'];
    provider.reply = () => ({ steps: responsesSteps(words, { usage: responsesUsage(21, 5, 4, 2) }) });

    const { data: stream, response } = await client.responses.create({ model: 'test-model', input: INPUT, stream: true }).withResponse();
    const generationId = response.headers.get('x-generation-id');
    expect(generationId).toMatch(/^gen-/);
    const { events, error } = await collect(stream);
    expect(error).toBeUndefined();

    expect(deltas(events)).toEqual(words);
    const types = events.map((e) => e.type);
    expect(types[0]).toBe('response.created');
    expect(types.at(-1)).toBe('response.completed');
    expect(types.filter((t) => t === 'response.completed')).toHaveLength(1);
    // sequence numbers as the provider sent them, strictly increasing
    const seqs = events.map((e) => e.sequence_number);
    expect([...seqs].sort((a, b) => a - b)).toEqual(seqs);

    const completed = events.at(-1) as Extract<ResponseStreamEvent, { type: 'response.completed' }>;
    expect(gateway.meterCalls).toHaveLength(1);
    const meter = gateway.meterCalls[0]!;
    expect((completed.response as any).credits_used).toBe(26); // startGateway's meter returns total_tokens
    expect(completed.response.usage).toMatchObject({ input_tokens: 21, output_tokens: 5, total_tokens: 26 });
    expect(completed.response.output_text ?? words.join('')).toBe(words.join(''));

    expect(meter.endpoint).toBe('responses');
    expect(meter.path).toBe('/responses');
    expect(meter.outcome).toBe('completed');
    expect(meter.generationId).toBe(generationId);
    expect(meter.providerId).toBe(RESP_ID);
    expect(meter.upstream).toBe('default');
    expect(meter.failedUpstreams).toEqual([]);
    expect(meter.usage).toMatchObject({ prompt_tokens: 21, completion_tokens: 5, total_tokens: 26 });
    expect(meter.usage.estimated).toBeUndefined();
    expect(meter.usage.prompt_tokens_details).toEqual({ cached_tokens: 4 });
    expect(meter.usage.completion_tokens_details).toEqual({ reasoning_tokens: 2 });
    expect(meter.providerUsage).toEqual({
      input_tokens: 21,
      input_tokens_details: { cached_tokens: 4 },
      output_tokens: 5,
      output_tokens_details: { reasoning_tokens: 2 },
      total_tokens: 26,
    });
    expect(meter.stream).toBe(true);
    expect(meter.timings.ttftMs).not.toBeNull();

    // upstream got the request as the client sent it, with the gateway's cap and its own key
    expect(provider.last.path).toBe('/v1/responses');
    expect(provider.last.json).toMatchObject({ model: 'test-model', input: INPUT, stream: true, max_output_tokens: 4096 });
    expect(provider.last.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
    await settle();
    expect(gateway.meterCalls).toHaveLength(1);
  });

  test('each delta is flushed: a provider pacing events 120 ms apart sends the next one only after the client has seen the previous one', async () => {
    const words = ['one', ' two', ' three', ' four', ' five'];
    let seenByClient = 0;
    const violations: string[] = [];
    const sentAt: number[] = [];
    const paced = http.createServer((req: IncomingMessage, res: ServerResponse) => {
      req.resume();
      req.on('end', async () => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.flushHeaders();
        const steps = responsesSteps(words);
        let deltaIndex = 0;
        for (const step of steps) {
          if (res.destroyed) return;
          const raw = (step as { raw: string }).raw;
          if (raw.includes('response.output_text.delta')) {
            if (deltaIndex > 0) {
              await sleep(120);
              if (seenByClient < deltaIndex) violations.push(`delta ${deltaIndex} about to be sent, the client has seen ${seenByClient}`);
            }
            sentAt.push(Date.now());
            deltaIndex++;
          }
          res.write(raw);
        }
        res.end();
      });
    });
    extraServers.push(paced);
    await new Promise<void>((r) => paced.listen(0, '127.0.0.1', r));
    const gw = await gatewayWith({}, `http://127.0.0.1:${(paced.address() as AddressInfo).port}/v1`);

    const stream = await sdk(gw).responses.create({ model: 'test-model', input: INPUT, stream: true });
    const seenAt: number[] = [];
    const got: string[] = [];
    for await (const event of stream) {
      if (event.type === 'response.output_text.delta') {
        seenByClient++;
        seenAt.push(Date.now());
        got.push(event.delta);
      }
    }
    expect(got).toEqual(words);
    const lag = seenAt.map((t, i) => t - sentAt[i]!);
    console.log(`responses flush: delta seen by the SDK ${lag.join(', ')} ms after the provider wrote it`);
    expect(violations).toEqual([]);
    for (const ms of lag) expect(ms).toBeLessThan(100);
  });

  test('the responses.stream() helper: finalResponse() has output_text and credits_used', async () => {
    const words = ['The', ' helper', ' works'];
    provider.reply = () => ({ steps: responsesSteps(words, { usage: responsesUsage(9, 3) }) });
    const helper = client.responses.stream({ model: 'test-model', input: INPUT });
    const texts: string[] = [];
    helper.on('response.output_text.delta', (e) => texts.push(e.delta));
    const final = await helper.finalResponse();
    expect(texts).toEqual(words);
    expect(final.output_text).toBe('The helper works');
    expect((final as any).credits_used).toBe(12);
    expect(final.id).toBe(RESP_ID);
    expect(gateway.meterCalls).toHaveLength(1);
    expect(gateway.meterCalls[0]).toMatchObject({ endpoint: 'responses', outcome: 'completed', usage: { prompt_tokens: 9, completion_tokens: 3 } });
  });

  test('an aborted Responses stream: the provider sees its request closed promptly, metered once as cancelled with an estimate of what was produced', async () => {
    const words = Array.from({ length: 100 }, (_, i) => ` word${i}`);
    provider.reply = () => ({ steps: responsesSteps(words, { gap: 40 }) });
    const controller = new AbortController();
    const stream = await client.responses.create({ model: 'test-model', input: INPUT, stream: true }, { signal: controller.signal });
    let seen = 0;
    let abortedAt = 0;
    let caught: unknown;
    try {
      for await (const event of stream) {
        if (event.type === 'response.output_text.delta') seen++;
        if (seen === 5 && abortedAt === 0) {
          abortedAt = Date.now();
          controller.abort();
        }
        if (seen > 60) break; // bound: the abort did not stop the stream
      }
    } catch (err) {
      caught = err;
    }
    expect(abortedAt).toBeGreaterThan(0);
    // the plain Stream of create() ends its iteration quietly on abort (the .stream() helper raises APIUserAbortError)
    if (caught !== undefined) expect(caught).toBeInstanceOf(APIUserAbortError);
    expect(seen).toBeLessThan(10);

    await waitFor(() => provider.last.closedEarlyAt !== undefined, 3000, 'the provider to see its request closed');
    const latency = provider.last.closedEarlyAt! - abortedAt;
    console.log(`responses abort: the provider saw its request closed ${latency} ms after AbortController.abort()`);
    expect(latency).toBeLessThan(1000);
    expect(provider.last.stepsWritten).toBeLessThan(60);

    await waitFor(() => gateway.meterCalls.length > 0, 3000, 'meter');
    await settle();
    expect(gateway.meterCalls).toHaveLength(1);
    const event = gateway.meterCalls[0]!;
    expect(event).toMatchObject({ endpoint: 'responses', outcome: 'cancelled', cancelled: true });
    expect(event.usage.estimated).toBe(true);
    // about 5–8 words of two tokens each were produced
    expect(event.usage.completion_tokens).toBeGreaterThanOrEqual(5);
    expect(event.usage.completion_tokens).toBeLessThan(40);
    expect(event.usage.prompt_tokens).toBeGreaterThan(0);
  });

  describe('a provider failing mid-stream: the SDK iteration throws an APIError (the gateway error event), metered once as failed', () => {
    test.each<[string, () => ReturnType<ScriptedProvider['reply']>, Partial<Options<Account>>, RegExp]>([
      ['drops the connection', () => ({ steps: [...responsesPrefix(['Half', ' an']), { wait: 20 }, { destroy: true }] }), {}, /connection to the upstream provider was lost/i],
      [
        'sends garbage',
        () => ({ steps: [...responsesPrefix(['Half', ' an']), { raw: 'event: response.output_text.delta\ndata: {"type":"response.output_text.del\n\n' }, { wait: 500 }] }),
        {},
        /not valid JSON/i,
      ],
      ['goes idle', () => ({ steps: [...responsesPrefix(['Half', ' an']), { hang: true }] }), { idleTimeout: 300 }, /sent nothing for 300 ms/i],
      [
        'ends the stream without a final event',
        () => ({ steps: responsesPrefix(['Half', ' an']) }),
        {},
        /ended the stream before the generation finished/i,
      ],
    ])('%s', async (_name, reply, overrides, message) => {
      provider.reply = reply;
      const gw = Object.keys(overrides).length ? await gatewayWith(overrides) : gateway;
      const stream = await sdk(gw).responses.create({ model: 'test-model', input: INPUT, stream: true });
      const { events, error } = await collect(stream);
      expect(deltas(events)).toEqual(['Half', ' an']);
      expect(error).toBeInstanceOf(APIError);
      expect((error as APIError).message).toMatch(message);
      expect((error as APIError).code).toMatch(/^upstream_/);
      await waitFor(() => gw.meterCalls.length > 0, 3000, 'meter');
      await settle();
      expect(gw.meterCalls).toHaveLength(1);
      expect(gw.meterCalls[0]).toMatchObject({ endpoint: 'responses', outcome: 'failed', cancelled: false });
      expect(gw.meterCalls[0]!.error?.code).toMatch(/^upstream_/);
      expect(gw.meterCalls[0]!.usage.completion_tokens).toBeGreaterThan(0);
    });

    test('the error event is in the Responses shape, its sequence_number after the last relayed one', async () => {
      provider.reply = () => ({ steps: [...responsesPrefix(['Half', ' an']), { wait: 30 }, { destroy: true }] });
      const res = await rawPost(gateway.url, '/responses', { model: 'test-model', input: INPUT, stream: true });
      const events = sseEvents(res.text);
      const last = events.at(-1)!;
      expect(last.event).toBe('error');
      const payload = JSON.parse(last.data) as Record<string, unknown>;
      const previous = JSON.parse(events.at(-2)!.data) as { sequence_number: number };
      expect(payload).toMatchObject({ type: 'error', code: 'upstream_connection_lost', param: null, sequence_number: previous.sequence_number + 1 });
      expect(payload.error).toMatchObject({ code: 'upstream_connection_lost', type: 'upstream_error' });
      expect(typeof payload.message).toBe('string');
    });

    test('a provider `error` event that carries the upstream key is redacted: the key never reaches the client', async () => {
      const secretMessage = `Incorrect API key provided: ${UPSTREAM_KEY}. You can find your key at platform.openai.com.`;
      provider.reply = () => ({
        steps: [
          ...responsesPrefix(['Half']),
          typed('error', { code: `invalid_api_key ${UPSTREAM_KEY}`, message: secretMessage, param: null, sequence_number: 6 }),
          { wait: 200 },
        ],
      });
      const res = await rawPost(gateway.url, '/responses', { model: 'test-model', input: INPUT, stream: true });
      expect(res.text).not.toContain(UPSTREAM_KEY);
      expect(res.text).not.toContain(UPSTREAM_KEY.slice(3)); // nor its secret part without the prefix

      const stream = await client.responses.create({ model: 'test-model', input: INPUT, stream: true });
      const { error } = await collect(stream);
      expect(error).toBeInstanceOf(APIError);
      const err = error as APIError;
      expect(err.message).toMatch(/Incorrect API key provided/);
      expect(JSON.stringify({ m: err.message, c: err.code, e: err.error })).not.toContain(UPSTREAM_KEY.slice(3));
      await settle();
      expect(gateway.meterCalls).toHaveLength(2);
      for (const call of gateway.meterCalls) expect(call.outcome).toBe('failed');
      expect(JSON.stringify(gateway.logs)).not.toContain(UPSTREAM_KEY.slice(3));
    });
  });

  test.each(['response.incomplete', 'response.failed'] as const)('a %s final event also gets credits_used (metered once)', async (final) => {
    provider.reply = () => ({
      steps: responsesSteps(['Cut', ' short'], {
        final,
        usage: responsesUsage(8, 2),
        finalExtra: final === 'response.failed' ? { error: { code: 'server_error', message: 'The model failed.' } } : { incomplete_details: { reason: 'max_output_tokens' } },
      }),
    });
    const stream = await client.responses.create({ model: 'test-model', input: INPUT, stream: true });
    const { events, error } = await collect(stream);
    expect(error).toBeUndefined();
    const last = events.at(-1)!;
    expect(last.type).toBe(final);
    expect((last as any).response.credits_used).toBe(10);
    await settle();
    expect(gateway.meterCalls).toHaveLength(1);
    expect(gateway.meterCalls[0]!.outcome).toBe(final === 'response.failed' ? 'failed' : 'completed');
    expect(gateway.meterCalls[0]!.usage).toMatchObject({ prompt_tokens: 8, completion_tokens: 2 });
    if (final === 'response.incomplete') expect(gateway.meterCalls[0]!.finishReason).toBe('incomplete');
  });

  test('provider usage missing from the final event: the estimate is billed and shown as usage.estimated in the final event', async () => {
    provider.reply = () => ({ steps: responsesSteps(['Some', ' words', ' here'], { usage: null }) });
    const stream = await client.responses.create({ model: 'test-model', input: INPUT, stream: true });
    const { events } = await collect(stream);
    const final = events.at(-1) as Extract<ResponseStreamEvent, { type: 'response.completed' }>;
    expect(final.type).toBe('response.completed');
    const usage = final.response.usage as unknown as Record<string, unknown>;
    expect(usage.estimated).toBe(true);
    expect(usage.output_tokens).toBeGreaterThan(0);
    expect(gateway.meterCalls).toHaveLength(1);
    const meter = gateway.meterCalls[0]!;
    expect(meter.usage.estimated).toBe(true);
    expect(meter.providerUsage).toBeUndefined();
    expect(usage.input_tokens).toBe(meter.usage.prompt_tokens);
    expect(usage.output_tokens).toBe(meter.usage.completion_tokens);
    expect((final.response as any).credits_used).toBe(meter.usage.total_tokens);
  });
});

describe('Responses API, JSON, background and reads', () => {
  test('non-stream responses.create() has a top-level credits_used, metered once', async () => {
    provider.reply = () => ({ json: responseObject('completed', 'Plain answer', responsesUsage(14, 2)) });
    const { data, response } = await client.responses.create({ model: 'test-model', input: INPUT }).withResponse();
    expect(data.output_text).toBe('Plain answer');
    expect((data as any).credits_used).toBe(16);
    expect(data.usage).toMatchObject({ input_tokens: 14, output_tokens: 2 });
    expect(response.headers.get('x-generation-id')).toBe(gateway.meterCalls[0]!.generationId);
    expect(gateway.meterCalls).toHaveLength(1);
    expect(gateway.meterCalls[0]).toMatchObject({ endpoint: 'responses', outcome: 'completed', stream: false, usage: { prompt_tokens: 14, completion_tokens: 2 } });
    expect(provider.last.json?.max_output_tokens).toBe(4096);
  });

  test('background: true → 400 background_not_supported, nothing upstream, nothing metered; with allowBackground it is forwarded', async () => {
    const reserves: unknown[] = [];
    const gw = await gatewayWith({ reserve: (ctx) => void reserves.push(ctx) });
    let caught: unknown;
    try {
      await sdk(gw).responses.create({ model: 'test-model', input: INPUT, background: true });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(APIError);
    expect((caught as APIError).status).toBe(400);
    expect((caught as APIError).code).toBe('background_not_supported');
    expect((caught as APIError).param).toBe('background');
    const streamed = await rawPost(gw.url, '/responses', { model: 'test-model', input: INPUT, background: true, stream: true });
    expect(streamed.status).toBe(400);
    expect(provider.requests).toHaveLength(0);
    expect(reserves).toHaveLength(0);
    await settle();
    expect(gw.meterCalls).toHaveLength(0);

    const allowed = await gatewayWith({ allowBackground: true });
    provider.reply = () => ({ json: responseObject('queued' as never, undefined, null, { background: true }) });
    const queued = await sdk(allowed).responses.create({ model: 'test-model', input: INPUT, background: true });
    expect(queued.status).toBe('queued');
    expect(provider.requests).toHaveLength(1);
    expect(provider.last.json?.background).toBe(true);
    expect(allowed.meterCalls).toHaveLength(1);
    expect(allowed.meterCalls[0]!.endpoint).toBe('responses');
  });

  test('GET /v1/responses/{id} and /input_items are passed through (free: no reserve, no meter), the upstream key used and never shown', async () => {
    const reserves: unknown[] = [];
    const gw = await gatewayWith({ reserve: (ctx) => void reserves.push(ctx) });
    provider.reply = (req) =>
      req.path.endsWith('/input_items')
        ? { json: { object: 'list', data: [{ id: 'msg_in1', type: 'message', role: 'user', status: 'completed', content: [{ type: 'input_text', text: INPUT }] }], first_id: 'msg_in1', last_id: 'msg_in1', has_more: false } }
        : { json: responseObject('completed', 'Stored answer', responsesUsage(3, 2)) };
    const c = sdk(gw);
    // an account reads back only what it created through the gateway
    const created = await c.responses.create({ model: 'test-model', input: INPUT });
    expect(created.id).toBe(RESP_ID);
    const stored = await c.responses.retrieve(RESP_ID);
    expect(stored.output_text).toBe('Stored answer');
    expect((stored as any).credits_used).toBeUndefined();
    expect(provider.last.method).toBe('GET');
    expect(provider.last.path).toBe(`/v1/responses/${RESP_ID}`);
    expect(provider.last.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);

    const items = await c.responses.inputItems.list(RESP_ID);
    expect(items.data).toHaveLength(1);
    expect(provider.last.path).toMatch(new RegExp(`^/v1/responses/${RESP_ID}/input_items`));
    await settle();
    expect(reserves).toHaveLength(1); // the create only
    expect(gw.meterCalls).toHaveLength(1);

    // other methods on those paths are not passed through
    const del = await fetch(`${gw.url}/v1/responses/${RESP_ID}`, { method: 'DELETE', headers: { authorization: `Bearer ${KEY}` } });
    expect([404, 405]).toContain(del.status);
    const unauth = await fetch(`${gw.url}/v1/responses/${RESP_ID}`);
    expect(unauth.status).toBe(401);
    expect(provider.requests).toHaveLength(3);
  });

  test('regression (was a BUG): GET /v1/responses/{id} does not let one account read another account\'s stored response (the pass-through uses the shared upstream key)', async () => {
    // two accounts on one gateway; alice creates a stored response, bob reads it by id
    const gw = await gatewayWith({ authenticate: (req) => ({ 'key-alice': { id: 'alice' }, 'key-bob': { id: 'bob' } })[String(req.headers.authorization).slice(7)] ?? null });
    const store = new Map<string, Record<string, unknown>>();
    provider.reply = (req) => {
      if (req.method === 'POST') {
        const answer = responseObject('completed', 'alice\'s private answer', responsesUsage(5, 3), { id: 'resp_alice_private' });
        store.set('resp_alice_private', answer);
        return { json: answer };
      }
      const id = req.path.split('/')[3]!;
      return store.has(id) ? { json: store.get(id) } : { status: 404, json: { error: { message: 'No response found', type: 'invalid_request_error', code: null, param: null } } };
    };
    const alice = sdk(gw, 'key-alice');
    const bob = sdk(gw, 'key-bob');
    const created = await alice.responses.create({ model: 'test-model', input: 'my secret question' });
    expect(created.id).toBe('resp_alice_private');
    let bobRead: unknown;
    try {
      bobRead = await bob.responses.retrieve('resp_alice_private');
    } catch (err) {
      bobRead = err;
    }
    // bob must not get alice's response: 404 as if it did not exist
    expect(bobRead).toBeInstanceOf(APIError);
    expect((bobRead as APIError).status).toBe(404);
  });
  test('the owner check cannot be walked around with path tricks: no request of bob\'s reaches the provider naming alice\'s response', async () => {
    const gw = await gatewayWith({ authenticate: (req) => ({ 'key-alice': { id: 'alice' }, 'key-bob': { id: 'bob' } })[String(req.headers.authorization).slice(7)] ?? null });
    provider.reply = (req) =>
      req.method === 'POST'
        ? { json: responseObject('completed', 'mine', responsesUsage(5, 3), { id: req.headers.authorization === `Bearer ${UPSTREAM_KEY}` && String(req.json?.input).includes('alice') ? 'resp_alice' : 'resp_bob' }) }
        : { json: { object: 'response', id: 'echo', output: [], path: req.path } };
    await sdk(gw, 'key-alice').responses.create({ model: 'test-model', input: 'alice asks' });
    await sdk(gw, 'key-bob').responses.create({ model: 'test-model', input: 'bob asks' });
    const before = provider.requests.length;
    const paths = [
      '/v1/responses/resp_alice',
      '/v1/responses/resp_alice/input_items',
      '/v1/responses/resp_bob/../resp_alice',
      '/v1/responses/resp_bob%2F..%2Fresp_alice',
      '/v1/responses/resp_bob%2f..%2fresp_alice/input_items',
      '/v1/responses/resp_bob/input_items/../../resp_alice',
      '/v1/responses//resp_alice',
      '/v1/responses/resp_alice?x=/resp_bob',
      '/v1/responses/resp_bob?x=/../resp_alice',
      '/v1/responses/%72esp_alice',
      '/V1/Responses/resp_alice',
      '/v1/responses/resp_bob;/../resp_alice',
      '/v1/responses/resp_bob%00/../resp_alice',
      '/v1/responses/resp_bob\\..\\resp_alice',
      '/v1/./responses/resp_alice',
    ];
    const statuses: string[] = [];
    for (const path of paths) {
      const status = await new Promise<number>((resolve) => {
        const r = http.request(`${gw.url}${path}`, { method: 'GET', headers: { authorization: 'Bearer key-bob' } }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        r.on('error', () => resolve(-1));
        r.end();
      });
      statuses.push(`${status} ${path}`);
    }
    console.log(`bob's tricky reads:\n${statuses.join('\n')}`);
    // a query string is the provider's to read as parameters, not as a path: only the path part counts
    const leaked = provider.requests.slice(before).filter((r) => /alice/.test(decodeURIComponent(r.path.split('?')[0]!)));
    expect(leaked.map((r) => r.path)).toEqual([]);
    // bob reads his own
    expect((await sdk(gw, 'key-bob').responses.retrieve('resp_bob')).id).toBe('echo');
  });
});

describe('Responses API: what a client cannot get for free', () => {
  test.each<[string, unknown]>([
    ['0', 0],
    ['negative', -5],
    ['fractional', 1.5],
    ['a string', '100'],
    ['above 2^53', 2 ** 60],
  ])('max_output_tokens %s → 400 before anything is held or sent', async (_name, value) => {
    const reserves: unknown[] = [];
    const gw = await gatewayWith({ reserve: (ctx) => void reserves.push(ctx) });
    const res = await rawPost(gw.url, '/responses', { model: 'test-model', input: INPUT, max_output_tokens: value, stream: true });
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text).error).toMatchObject({ code: 'invalid_value', param: 'max_output_tokens' });
    expect(reserves).toHaveLength(0);
    expect(provider.requests).toHaveLength(0);
    await settle();
    expect(gw.meterCalls).toHaveLength(0);
  });

  test('a huge max_output_tokens is reserved for in full and sent upstream as it is (the provider is held to what was reserved)', async () => {
    const reserves: ReserveContext<Account>[] = [];
    const gw = await gatewayWith({ reserve: (ctx) => (reserves.push(ctx), ctx.worstCase.completion_tokens <= 100_000) });
    const res = await rawPost(gw.url, '/responses', { model: 'test-model', input: INPUT, max_output_tokens: 50_000_000 });
    expect(res.status).toBe(402);
    expect(reserves[0]!.worstCase.completion_tokens).toBe(50_000_000);
    expect(reserves[0]!.capSource).toBe('max_output_tokens');
    expect(provider.requests).toHaveLength(0);

    provider.reply = () => ({ json: responseObject('completed', 'ok', responsesUsage(5, 1)) });
    const ok = await rawPost(gw.url, '/responses', { model: 'test-model', input: INPUT, max_output_tokens: 50_000 });
    expect(ok.status).toBe(200);
    expect(provider.last.json?.max_output_tokens).toBe(50_000);
  });

  test('a reserve hook lowering the cap lowers max_output_tokens sent upstream', async () => {
    const gw = await gatewayWith({ reserve: () => ({ hold: 'h', maxCompletionTokens: 64 }) });
    provider.reply = () => ({ json: responseObject('completed', 'ok', responsesUsage(5, 1)) });
    const res = await rawPost(gw.url, '/responses', { model: 'test-model', input: INPUT });
    expect(res.status).toBe(200);
    expect(provider.last.json?.max_output_tokens).toBe(64);
    expect(gw.meterCalls[0]!.worstCase.completion_tokens).toBe(64);
  });

  test.each<[string, unknown]>([
    ['output_tokens 1e308', { input_tokens: 10, output_tokens: 1e308, total_tokens: 1e308 }],
    ['negative input_tokens', { input_tokens: -50, output_tokens: 3, total_tokens: 3 }],
    ['counts as strings', { input_tokens: '10', output_tokens: '3' }],
    ['no output_tokens', { input_tokens: 10 }],
    ['chat-shaped usage only', { prompt_tokens: 1, completion_tokens: 1 }],
  ])('a provider reporting absurd usage (%s) fails closed: the estimate is billed, never the absurd figure', async (_name, usage) => {
    provider.reply = () => ({ steps: responsesSteps(['A', ' real', ' answer', ' of', ' words'], { usage }) });
    const stream = await client.responses.create({ model: 'test-model', input: INPUT, stream: true });
    const { events, error } = await collect(stream);
    expect(error).toBeUndefined();
    const final = events.at(-1) as any;
    expect(final.response.usage.estimated).toBe(true);
    expect(gateway.meterCalls).toHaveLength(1);
    const meter = gateway.meterCalls[0]!;
    expect(meter.usage.estimated).toBe(true);
    expect(meter.usage.completion_tokens).toBeGreaterThan(0);
    expect(meter.usage.completion_tokens).toBeLessThanOrEqual(meter.worstCase.completion_tokens);
    expect(meter.usage.prompt_tokens).toBeGreaterThan(0);
    expect(Number.isSafeInteger(final.response.credits_used)).toBe(true);
    expect(gateway.logs.some((l) => l.level === 'warn' && /unusable provider usage/.test(String(l.msg)))).toBe(true);
  });

  test('a provider reporting zero usage for a non-empty answer is not believed (no free generation)', async () => {
    provider.reply = () => ({ steps: responsesSteps(['Free', ' words', ' for', ' nobody'], { usage: responsesUsage(0, 0) }) });
    const stream = await client.responses.create({ model: 'test-model', input: INPUT, stream: true });
    const { events } = await collect(stream);
    const final = events.at(-1) as any;
    expect(final.response.credits_used).toBeGreaterThan(0);
    const meter = gateway.meterCalls[0]!;
    expect(meter.usage.prompt_tokens).toBeGreaterThan(0);
    expect(meter.usage.completion_tokens).toBeGreaterThan(0);
  });

  test('a model no upstream serves → 404 model_not_found before any reserve, on every surface', async () => {
    const reserves: unknown[] = [];
    const gw = await gatewayWith({
      upstream: undefined,
      upstreams: [{ name: 'only', baseURL: provider.url, apiKey: UPSTREAM_KEY, models: ['gpt-*'] }],
      reserve: (ctx) => void reserves.push(ctx),
    });
    const c = sdk(gw);
    const attempts: Array<Promise<unknown>> = [
      c.responses.create({ model: 'claude-x', input: INPUT, stream: true }),
      c.responses.create({ model: 'claude-x', input: INPUT }),
      c.completions.create({ model: 'claude-x', prompt: 'hi' }),
      c.embeddings.create({ model: 'claude-x', input: 'hi' }),
      c.chat.completions.create({ model: 'claude-x', messages: [{ role: 'user', content: 'hi' }] }),
    ];
    // openai 7 sends at once: each outcome is caught as it comes, not only when the loop reaches it
    const outcomes = attempts.map((attempt) =>
      attempt.then(
        () => undefined,
        (e: unknown) => e,
      ),
    );
    for (const outcome of outcomes) {
      const err = await outcome;
      expect(err).toBeInstanceOf(APIError);
      expect((err as APIError).status).toBe(404);
      expect((err as APIError).code).toBe('model_not_found');
    }
    expect(reserves).toHaveLength(0);
    expect(provider.requests).toHaveLength(0);
    await settle();
    expect(gw.meterCalls).toHaveLength(0);
  });
});

describe('Responses API: a provider that misbehaves', () => {
  test('a provider that ignores stream:true and answers one JSON Response: the client gets it as the final event with credits_used', async () => {
    provider.reply = () => ({ json: responseObject('completed', 'All at once', responsesUsage(4, 3)) });
    const res = await rawPost(gateway.url, '/responses', { model: 'test-model', input: INPUT, stream: true });
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const events = sseEvents(res.text);
    const final = events.at(-1)!;
    expect(final.event).toBe('response.completed');
    const payload = JSON.parse(final.data) as { type: string; response: Record<string, unknown> };
    expect(payload.type).toBe('response.completed');
    expect(payload.response.credits_used).toBe(7);
    expect(gateway.meterCalls).toHaveLength(1);
  });

  test('regression (was a BUG): a final event with a duplicated top-level "response" key shows the client the gateway\'s credits_used, not the provider\'s (0)', async () => {
    const response = responseObject('completed', 'Pay me', responsesUsage(4, 3));
    // the gateway writes credits_used into the first "response" object; JSON readers keep the last one
    const data = `{"type":"response.completed","sequence_number":9,"response":${JSON.stringify(response)},"response":${JSON.stringify({ ...response, credits_used: 0 })}}`;
    provider.reply = () => ({ steps: [...responsesPrefix(['Pay', ' me']), { raw: `event: response.completed\ndata: ${data}\n\n` }] });
    const stream = await client.responses.create({ model: 'test-model', input: INPUT, stream: true });
    const { events } = await collect(stream);
    const final = events.at(-1) as any;
    expect(gateway.meterCalls).toHaveLength(1);
    console.log(`duplicated "response" key: charged ${gateway.meterCalls[0]!.usage.total_tokens}, the client reads credits_used ${final.response.credits_used}`);
    expect(final.response.credits_used).toBe(7);
  });

  test('a provider that skips response.created: the plain iteration still gets the final event with credits_used', async () => {
    provider.reply = () => ({ steps: responsesSteps(['No', ' created']).slice(2) });
    const stream = await client.responses.create({ model: 'test-model', input: INPUT, stream: true });
    const { events, error } = await collect(stream);
    expect(error).toBeUndefined();
    expect((events.at(-1) as any).response.credits_used).toBeGreaterThan(0);
  });
});
