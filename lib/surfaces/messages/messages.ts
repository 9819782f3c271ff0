import { InferyError } from '../../base/errors';
import { checkStream, requireModel } from '../../base/request-body';
import { estimatePrompt } from '../../ledgers/billing/prompt-estimate';
import { MAX_OUTPUT_TOKENS, wholeParam, type CompletionCap } from '../../ledgers/billing/reservation';
import type { Surface } from '../../relay/surface';
import { messagesJson } from './messages-json';
import { messagesStream } from './messages-stream';

/**
 * `POST /messages` (Anthropic's Messages API; the Anthropic SDKs, Claude Code, `@ai-sdk/anthropic` call it), served by
 * upstreams that speak it (`api: "anthropic"`). A request needs `model`, a non-empty `messages` and `max_tokens`
 * (the API requires it; thinking tokens count within it): its worst case is the bound of every string the
 * provider reads (the system prompt, the messages, the tools) plus `max_tokens`. The body goes upstream as the
 * client sent it (`?beta=true` and the `anthropic-beta` features Claude Code sends included).
 *
 * The stream's typed events (`message_start`, `content_block_*`, `ping`, …) are relayed as they come; the final
 * `message_delta` (cumulative usage, the stop reason) is held until `meter` returns and goes out with a top-level
 * `credits_used`, second to last, before `message_stop`. A failure mid-stream ends with the API's `event: error`;
 * errors before the first byte are HTTP errors in its shape (`{"type":"error","error":{"type","message"}}`). The
 * JSON answer gets a top-level `credits_used`.
 */
export const messages: Surface = {
  api: 'anthropic',
  endpoint: 'messages',
  path: '/messages',
  usage: 'anthropic',
  object: 'message',
  validate(body) {
    const model = requireModel(body);
    if (!Array.isArray(body.messages) || body.messages.length === 0) {
      throw new InferyError(400, 'missing_required_parameter', 'You must provide `messages`: a non-empty array of messages.', { param: 'messages' });
    }
    if (body.max_tokens === undefined || body.max_tokens === null) {
      throw new InferyError(400, 'missing_required_parameter', 'You must provide `max_tokens`: the most tokens the answer may have (thinking included).', { param: 'max_tokens' });
    }
    const system = body.system;
    if (system !== undefined && system !== null && typeof system !== 'string' && !Array.isArray(system)) {
      throw new InferyError(400, 'invalid_type', '`system` must be a string or an array of text blocks.', { param: 'system' });
    }
    return { model, stream: checkStream(body) };
  },
  estimate: (body, count) => estimatePrompt(body, count),
  cap(body): CompletionCap {
    return { perChoice: wholeParam(body, 'max_tokens', MAX_OUTPUT_TOKENS)!, source: 'max_tokens', choices: 1 };
  },
  // the client's cap always stands (the API requires it), so the body goes upstream as it came
  withCap: (body) => body,
  upstreamBody: (body) => JSON.stringify(body),
  stream: messagesStream,
  json: messagesJson,
};
