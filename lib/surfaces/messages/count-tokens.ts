import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { InferyError, sendError, toInferyError } from '../../base/errors';
import { readJsonBody, readText, requireModel } from '../../base/request-body';
import { authenticateOrThrow, checkRequestRate, limitRefusalOf } from '../../core/admission';
import { logRequestEnd, requestIdOf } from '../../core/request-log';
import { shuttingDown, type InFlight } from '../../core/shutdown';
import type { ResolvedOptions } from '../../options/resolved';
import type { Tool } from '../../relay/surface';
import { decodedBody } from '../../services/upstream/decode';
import { carriesKey, redact } from '../../services/upstream/upstream-headers';
import { modelNotFound, UpstreamAttemptsError, type UpstreamPool } from '../../services/upstream/upstream-pool';
import { messages } from './messages';
import { anthropicErrorBody } from '../shared/anthropic-errors';

const PATH = '/messages/count_tokens';
/** The largest answer read from an upstream's count_tokens (it is `{"input_tokens": N}`). */
const MAX_ANSWER_BYTES = 64 * 1024;

/**
 * `POST /messages/count_tokens` (the Messages API's token counter; Claude Code calls it): free — never reserved
 * or metered — but authenticated and counted against `requestsPerMinute`. Answered by the first Anthropic
 * upstream that serves the model (with fallback, as a generation), else, for a model only upstreams of the
 * other dialect serve, estimated by the gateway (`{"input_tokens": N}`: its o200k count of the system prompt,
 * the messages and the tools, which is not Anthropic's tokenizer). A model nobody serves is a 404; errors are
 * the Messages API's.
 */
export const countTokens: Tool = {
  path: PATH,
  async handle<Account>(opts: ResolvedOptions<Account>, pool: UpstreamPool, inflight: InFlight, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const reqId = requestIdOf(req);
    const startedAt = performance.now();
    res.setHeader('X-Request-Id', reqId);
    let model: string | undefined;
    let upstream: string | undefined;
    const end = (status: number, err?: InferyError): void =>
      logRequestEnd(opts, {
        reqId,
        path: PATH,
        route: PATH,
        method: 'POST',
        status,
        durationMs: Math.round(performance.now() - startedAt),
        model,
        upstream,
        ...(err ? { errorCode: err.code, errorSource: err instanceof UpstreamAttemptsError || upstream !== undefined ? 'upstream' : 'gateway', limit: limitRefusalOf(err) } : {}),
      });
    try {
      if (inflight.draining) throw shuttingDown();
      const account = await authenticateOrThrow(opts, req);
      await checkRequestRate(opts, account, false, res);
      const body = await readJsonBody(req, opts.bodyLimit);
      model = requireModel(body);
      if (!Array.isArray(body.messages) || body.messages.length === 0) {
        throw new InferyError(400, 'missing_required_parameter', 'You must provide `messages`: a non-empty array of messages.', { param: 'messages' });
      }
      if (pool.candidates(model, undefined, 'anthropic').length > 0) {
        const call = pool.open(PATH, model, (providerModel) => JSON.stringify(providerModel === model ? body : { ...body, model: providerModel }), req, false, undefined, 'anthropic');
        const onClose = (): void => call.abort();
        res.once('close', onClose);
        try {
          const served = await call.response;
          upstream = served.upstream.name;
          let text: string;
          try {
            text = await readText(decodedBody(served.res), MAX_ANSWER_BYTES);
          } catch {
            call.abort();
            throw new InferyError(502, 'upstream_invalid_response', `The upstream provider's count_tokens answer was cut off or larger than ${MAX_ANSWER_BYTES} bytes.`, { type: 'upstream_error' });
          }
          if (carriesKey(text, served.upstream.apiKey)) text = redact(text, served.upstream.apiKey);
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            throw new InferyError(502, 'upstream_invalid_response', 'The upstream provider answered count_tokens with something that is not JSON.', { type: 'upstream_error' });
          }
          reply(res, 200, json);
          end(200);
        } finally {
          res.off('close', onClose);
        }
        return;
      }
      if (pool.candidates(model).length === 0) throw modelNotFound(model);
      const estimate = await messages.estimate(body, (texts) => opts.countTexts(texts, model!));
      reply(res, 200, { input_tokens: await estimate.tokens() });
      end(200);
    } catch (caught) {
      const err = toInferyError(caught);
      sendError(res, err, err.status === 413, anthropicErrorBody);
      end(err.status, err);
    }
  },
};

function reply(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(text));
  res.end(text);
}
