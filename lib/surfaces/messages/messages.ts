import { InferyError } from '../../base/errors';
import { checkStream, requireModel } from '../../base/request-body';
import { estimatePrompt } from '../../ledgers/billing/prompt-estimate';
import { MAX_OUTPUT_TOKENS, wholeParam, type CompletionCap } from '../../ledgers/billing/reservation';
import type { Surface } from '../../relay/surface';
import { chatAsMessagesJson, chatAsMessagesStream } from '../shared/answer-chat-as-messages';
import { messagesToChatBody } from '../shared/request-messages-as-chat';
import { messagesJson } from './messages-json';
import { messagesStream } from './messages-stream';
import { boundWebSearches, messagesWorstExtras } from './server-tools';

/** What a Messages API request must hold (400 otherwise), whichever upstream serves it. */
function validate(body: Record<string, unknown>): { model: string; stream: boolean } {
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
}

const shared = {
  endpoint: 'messages',
  path: '/messages',
  object: 'message',
  estimate: (body, count) => estimatePrompt(body, count),
  cap(body): CompletionCap {
    return { perChoice: wholeParam(body, 'max_tokens', MAX_OUTPUT_TOKENS)!, source: 'max_tokens', choices: 1 };
  },
  // the client's cap always stands (the API requires it)
  withCap: (body) => body,
} satisfies Partial<Surface>;

/**
 * The Messages API for a model only an OpenAI-dialect upstream serves (Claude Code on an OpenAI-compatible
 * model): the request translated into Chat Completions' (`messagesToChatBody`; what has no faithful equivalent
 * is a 400 naming the field), the answer back into the Messages API's events or message, metered from the chat
 * usage; the client sees its own dialect, `credits_used` on the final `message_delta` included.
 */
const messagesViaChat: Surface = {
  ...shared,
  api: 'openai',
  usage: 'chat',
  upstreamPath: '/chat/completions',
  validate(body) {
    const checked = validate(body);
    messagesToChatBody(body, 1, checked.stream);
    return checked;
  },
  upstreamBody: (body, stream) => JSON.stringify(messagesToChatBody(body, body.max_tokens as number, stream)),
  stream: chatAsMessagesStream,
  json: chatAsMessagesJson(),
};

/**
 * `POST /messages` (Anthropic's Messages API; the Anthropic SDKs, Claude Code, `@ai-sdk/anthropic` call it),
 * served by upstreams that speak it (`api: "anthropic"`), or translated for a model only OpenAI-dialect upstreams
 * serve. A request needs `model`, a non-empty `messages` and `max_tokens` (the API requires it; thinking tokens
 * count within it): its worst case is the bound of every string the
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
  ...shared,
  api: 'anthropic',
  usage: 'anthropic',
  validate,
  // cache writes (a premium) and web searches (a fee each) are in the worst case the hold covers
  worstExtras: messagesWorstExtras,
  // a web search tool without `max_uses` gets the bound its hold counted
  withCap: boundWebSearches,
  // the body goes upstream as it came (Claude Code's beta fields included)
  upstreamBody: (body) => JSON.stringify(body),
  stream: messagesStream,
  json: messagesJson,
  translations: [messagesViaChat],
};
