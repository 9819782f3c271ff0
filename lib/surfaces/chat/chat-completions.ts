import { validateChatRequest } from '../../base/request-body';
import { estimatePrompt } from '../../ledgers/billing/prompt-estimate';
import { completionCap, withCap } from '../../ledgers/billing/reservation';
import type { Surface } from '../../relay/surface';
import { choicesJson, withUsageRequested } from '../shared/choices-json';
import { choicesStream } from '../shared/choices-stream';

/**
 * `POST /chat/completions`. A request needs `model` and a non-empty `messages`; its worst case is the prompt's
 * bound (every string the provider reads) plus the cap (`max_completion_tokens` or `max_tokens`, else
 * `defaultMaxTokens`, sent upstream as `max_completion_tokens`) times `n`. A stream always asks the provider for
 * usage (`stream_options.include_usage`); the client gets the provider's chunks untouched, then the gateway's
 * usage chunk `{"choices":[],"usage":{…},"credits_used":N}`, then `data: [DONE]`. A JSON answer gets a top-level
 * `credits_used` and the usage that was billed.
 */
export const chatCompletions: Surface = {
  api: 'openai',
  endpoint: 'chat.completions',
  path: '/chat/completions',
  usage: 'chat',
  object: 'chat.completion.chunk',
  validate: (body) => validateChatRequest(body),
  estimate: (body, count) => estimatePrompt(body, count),
  cap: completionCap,
  withCap,
  upstreamBody: (body, stream) => JSON.stringify(stream ? withUsageRequested(body) : body),
  stream: () => choicesStream('delta'),
  json: choicesJson('delta'),
};
