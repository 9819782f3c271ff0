import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createApp } from '../../example-app/app';
import { startMockProvider } from '../../example-app/mock-provider';

export interface ExampleServer {
  /** `http://127.0.0.1:<port>/v1` */
  baseURL: string;
  example: ReturnType<typeof createApp>;
  close(): Promise<void>;
}

/** The example app in front of its mock provider, listening on 127.0.0.1, with these client keys and credits. */
export async function startExampleServer(apiKeys: Record<string, number>): Promise<ExampleServer> {
  const mock = await startMockProvider();
  const example = createApp({ upstreamURL: mock.url, apiKeys });
  const server = http.createServer(example.app);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    baseURL: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    example,
    close: async () => {
      example.gateway.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await mock.close();
    },
  };
}
