import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createApp } from '../../example-app/app';
import type { Price } from '../../example-app/ledger';
import { startMockProvider } from '../../example-app/mock-provider';
import type { UpstreamConfig } from '../../lib';

export interface ExampleServer {
  /** `http://127.0.0.1:<port>/v1` */
  baseURL: string;
  /** `http://127.0.0.1:<port>` (the Anthropic SDK's `baseURL`) */
  origin: string;
  example: ReturnType<typeof createApp>;
  close(): Promise<void>;
}

/**
 * The mock as both dialects, by model name: OpenAI's routes for `mock-*` (and `extraOpenAI`), the Messages API for
 * `claude-*` (and `extraAnthropic`).
 */
export function dialectUpstreams(mockURL: string, extraOpenAI: string[] = [], extraAnthropic: string[] = []): UpstreamConfig[] {
  return [
    { name: 'mock', baseURL: mockURL, models: ['mock-*', ...extraOpenAI] },
    { name: 'mock-messages', baseURL: mockURL, api: 'anthropic', models: ['claude-*', ...extraAnthropic] },
  ];
}

/**
 * The example app in front of its mock provider, listening on 127.0.0.1, with these client keys and credits;
 * `upstreams` makes the mock several upstreams (e.g. {@link dialectUpstreams}) instead of the single one; `prices`
 * are `INFERY_CONFIG`'s (for models neither the catalog nor the mock's own prices know).
 */
export async function startExampleServer(apiKeys: Record<string, number>, upstreams?: (mockURL: string) => UpstreamConfig[], prices?: Record<string, Price>): Promise<ExampleServer> {
  const mock = await startMockProvider();
  const example = createApp({ upstreamURL: mock.url, upstreams: upstreams?.(mock.url), apiKeys, prices });
  const server = http.createServer(example.app);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    baseURL: `${origin}/v1`,
    origin,
    example,
    close: async () => {
      example.gateway.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await mock.close();
    },
  };
}
