import { validateChatRequest } from '../../base/request-body';
import { estimatePrompt } from '../../ledgers/billing/prompt-estimate';
import { completionCap, withCap } from '../../ledgers/billing/reservation';
import type { Surface } from '../../relay/surface';
import { choicesJson, withUsageRequested } from '../shared/choices-json';
import { choicesStream } from '../shared/choices-stream';
import { chatToMessagesBody } from '../shared/chat-to-messages';
import { messagesAsChatJson, messagesAsChatStream } from '../shared/messages-to-chat';

/**
 * `POST /chat/completions`. A request needs `model` and a non-empty `messages`; its worst case is the prompt's
 * bound (every string the provider reads) plus the cap (`max_completion_tokens` or `max_tokens`, else
 * `defaultMaxTokens`, sent upstream as `max_completion_tokens`) times `n`. A stream always asks the provider for
 * usage (`stream_options.include_usage`); the client gets the provider's chunks untouched, then the gateway's
 * usage chunk `{"choices":[],"usage":{…},"credits_used":N}`, then `data: [DONE]`. A JSON answer gets a top-level
 * `credits_used` and the usage that was billed.
 */
const chat = {
  endpoint: 'chat.completions',
  path: '/chat/completions',
  object: 'chat.completion.chunk',
  estimate: (body, count) => estimatePrompt(body, count),
  cap: completionCap,
} satisfies Partial<Surface>;

/**
 * Chat Completions for a model only a Messages API upstream serves: the request translated into the Messages
 * API's (`chatToMessagesBody`; what has no faithful equivalent is a 400 naming the field), the answer translated
 * back into chat chunks or a chat completion (`messages-to-chat.ts`), metered from the Messages API's usage.
 */
const chatViaMessages: Surface = {
  ...chat,
  api: 'anthropic',
  usage: 'anthropic',
  upstreamPath: '/messages',
  validate(body) {
    const checked = validateChatRequest(body);
    chatToMessagesBody(body, 1, checked.stream);
    return checked;
  },
  // the cap is always sent (the Messages API requires one), whatever the client set
  withCap: (body, _cap, perChoice) => ({ ...body, max_completion_tokens: perChoice }),
  upstreamBody: (body, stream) => JSON.stringify(chatToMessagesBody(body, body.max_completion_tokens as number, stream)),
  stream: messagesAsChatStream,
  json: messagesAsChatJson(),
};

export const chatCompletions: Surface = {
  ...chat,
  api: 'openai',
  usage: 'chat',
  validate: (body) => validateChatRequest(body),
  withCap,
  upstreamBody: (body, stream) => JSON.stringify(stream ? withUsageRequested(body) : body),
  stream: () => choicesStream('delta'),
  json: choicesJson('delta'),
  translations: [chatViaMessages],
};
