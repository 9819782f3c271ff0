import Redis from 'ioredis';
import { startExampleApp, stopAllApps, type AppProcess } from './helpers/app-process';
import { withOutputOnFailure } from './helpers/local-process';
import { describeRedis, itRestartingRedis, startRedis, stopAllRedis } from './helpers/redis-server';

// The helpers that run real servers for the scale-out tests: redis-server, and the example app as a process.

describeRedis('a real Redis for tests', () => {
  afterAll(stopAllRedis);

  it('starts and answers PING', async () => {
    const redis = await startRedis();
    const client = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await client.connect();
      expect(await client.ping()).toBe('PONG');
    } finally {
      client.disconnect();
    }
  });

  itRestartingRedis(
    'keeps a key across a restart and a SIGKILL when persistent, on the same port',
    async () => {
      const redis = await startRedis({ persistent: true });
      const read = async (key: string): Promise<string | null> => {
        const client = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
        try {
          await client.connect();
          return await client.get(key);
        } finally {
          client.disconnect();
        }
      };
      await withOutputOnFailure([redis], async () => {
        const client = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
        await client.connect();
        await client.set('infery:test:kept', 'yes');
        client.disconnect();

        await redis.restart();
        expect(await read('infery:test:kept')).toBe('yes');

        await redis.kill(); // no shutdown: appendfsync always has the write on disk already
        await redis.restart();
        expect(await read('infery:test:kept')).toBe('yes');
        expect(redis.url).toMatch(/^redis:\/\/127\.0\.0\.1:\d+$/);
      });
    },
    30_000,
  );
});

describe('the example app as a separate process', () => {
  afterAll(stopAllApps);

  it('starts without a build, serves /v1/models from its built-in mock, and exits 0 on SIGTERM', async () => {
    const app: AppProcess = await startExampleApp({ INFERY_API_KEYS: 'key-smoke:100', LOG_LEVEL: 'info' });
    await withOutputOnFailure([app], async () => {
      expect(app.port).toBeGreaterThan(0);
      const res = await fetch(`${app.url}/v1/models`, { headers: { authorization: 'Bearer key-smoke' } });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { object: string; data: Array<{ id: string }> };
      expect(body.object).toBe('list');
      expect(body.data.length).toBeGreaterThan(0);

      await app.stop('SIGTERM');
      expect(app.exitCode).toBe(0);
      expect(app.stdout).toContain('"msg":"shut down"');
    });
  }, 30_000);

  it('reports the output of an app that cannot start', async () => {
    await expect(startExampleApp({ INFERY_RPM: 'lots' })).rejects.toThrow(/exited before it listened[\s\S]*INFERY_RPM must be a whole number/);
  }, 30_000);
});
