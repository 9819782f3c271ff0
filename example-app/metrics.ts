import { createHash, timingSafeEqual } from 'node:crypto';
import type { Express, Request, Response } from 'express';
import type { Registry } from 'prom-client';

/** What {@link mountMetrics} serves. */
export interface MetricsOptions {
  /** The registry to serve (`prometheusObserver().registry`). */
  registry: Registry;
  /** When set, `GET /metrics` asks for `Authorization: Bearer <token>`; unset, it is open. */
  token?: string;
}

/** Compares in constant time; hashing first makes the lengths equal, so not even the length leaks. */
function sameSecret(given: string, expected: string): boolean {
  const digest = (text: string): Buffer => createHash('sha256').update(text, 'utf8').digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/**
 * Serves `GET /metrics` in Prometheus' text format. With a `token`, a request without that bearer token gets
 * 401 in OpenAI's error shape. Mount it before the gateway (it lives outside `/v1`, so either order works).
 */
export function mountMetrics(app: Express, opts: MetricsOptions): void {
  const { registry, token } = opts;
  if (token !== undefined && token === '') throw new TypeError('mountMetrics: `token` must be a non-empty string when given (is INFERY_METRICS_TOKEN empty?).');
  app.get('/metrics', (req: Request, res: Response) => {
    res.set('Cache-Control', 'no-store');
    if (token !== undefined) {
      const given = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1];
      if (given === undefined || !sameSecret(given, token)) {
        res.set('WWW-Authenticate', 'Bearer realm="metrics"');
        res.status(401).json({
          error: { message: 'The metrics need the metrics token: send it as `Authorization: Bearer <token>`.', type: 'invalid_request_error', code: 'invalid_api_key', param: null },
        });
        return;
      }
    }
    registry.metrics().then(
      (text) => void res.type(registry.contentType).send(text),
      () => void res.status(500).json({ error: { message: 'The metrics could not be collected.', type: 'server_error', code: 'internal_error', param: null } }),
    );
  });
}
