/**
 * What the surfaces suites share (surfaces-responses, -completions, -embeddings, -example-app): a scripted provider
 * and a gateway in front of it, fresh for every test, the openai SDK pointed at it, and small readers. Importing
 * this module registers the beforeEach/afterEach that start and stop them (every server is stopped).
 */
import type http from 'node:http';
import OpenAI from 'openai';
import type { ResponseStreamEvent } from 'openai/resources/responses/responses';
import type { Options } from '../../lib';
import { KEY, startGateway, type Account, type TestGateway } from './gateway';
import { ScriptedProvider, sleep } from './provider';

export const INPUT = 'Say hello to the gateway';

export let provider: ScriptedProvider;
export let gateway: TestGateway;
export let client: OpenAI;
export const extraGateways: TestGateway[] = [];
export const extraServers: http.Server[] = [];

beforeEach(async () => {
  provider = await new ScriptedProvider().start();
  gateway = await startGateway(provider.url);
  client = sdk(gateway);
});

afterEach(async () => {
  await gateway.close();
  for (const gw of extraGateways.splice(0)) await gw.close();
  for (const server of extraServers.splice(0)) {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
  await provider.stop();
});

export function sdk(gw: TestGateway, apiKey = KEY): OpenAI {
  return new OpenAI({ apiKey, baseURL: `${gw.url}/v1`, maxRetries: 0, timeout: 15_000 });
}

/** Another gateway in front of the same provider, closed in afterEach. */
export async function gatewayWith(overrides: Partial<Options<Account>>, upstreamURL = provider.url): Promise<TestGateway> {
  const gw = await startGateway(upstreamURL, overrides);
  extraGateways.push(gw);
  return gw;
}

/** Lets a late, unexpected meter call show up before a test checks how many there were. */
export const settle = (): Promise<void> => sleep(60);

/** Collects an SDK stream, returning the events and the error the iteration threw (if any). Bounded. */
export async function collect<T>(stream: AsyncIterable<T>, max = 10_000): Promise<{ events: T[]; error: unknown }> {
  const events: T[] = [];
  try {
    for await (const event of stream) {
      events.push(event);
      if (events.length >= max) break;
    }
  } catch (error) {
    return { events, error };
  }
  return { events, error: undefined };
}

/** POSTs JSON to the gateway with fetch and returns the raw answer text. */
export async function rawPost(url: string, path: string, body: unknown, key = KEY): Promise<{ status: number; headers: Headers; text: string }> {
  const res = await fetch(`${url}/v1${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** The SSE events of a raw answer as {event, data}. */
export function sseEvents(raw: string): Array<{ event: string | undefined; data: string }> {
  const out: Array<{ event: string | undefined; data: string }> = [];
  for (const block of raw.split('\n\n')) {
    if (block.trim() === '') continue;
    let event: string | undefined;
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith('event: ')) event = line.slice(7);
      else if (line.startsWith('data: ')) data.push(line.slice(6));
    }
    if (data.length) out.push({ event, data: data.join('\n') });
  }
  return out;
}

export const deltas = (events: ResponseStreamEvent[]): string[] =>
  events.filter((e): e is Extract<ResponseStreamEvent, { type: 'response.output_text.delta' }> => e.type === 'response.output_text.delta').map((e) => e.delta);

