import { InferyError } from '../../base/errors';
import { checkStream, requireModel } from '../../base/request-body';
import { estimatePrompt } from '../../ledgers/billing/prompt-estimate';
import { MAX_OUTPUT_TOKENS, wholeParam, type CompletionCap } from '../../ledgers/billing/reservation';
import type { Surface } from '../../relay/surface';
import { responsesJson } from './responses-json';
import { DEFAULT_MAX_TOOL_CALLS, hasWebSearchTool, maxToolCalls } from './responses-usage';
import { responsesStream } from './responses-stream';

/**
 * `POST /responses` (OpenAI's Responses API). A request needs `model` and something to answer (`input`, a stored
 * `prompt`, or a `previous_response_id` of the caller's own to continue; `conversation` is refused, as no
 * conversation can be proven to be the caller's); its worst case is the bound of every
 * string the provider reads plus `max_output_tokens` (else `defaultMaxTokens`, sent upstream as
 * `max_output_tokens`; reasoning tokens count within it). `background: true` runs on after the request and cannot
 * be metered here: 400 `background_not_supported` unless the host set `allowBackground`.
 *
 * The stream's typed events (`event: response.output_text.delta`, …) are relayed as they come; the final one
 * (`response.completed`, `response.incomplete` or `response.failed`, which carries `response.usage`) is held until
 * `meter` returns and goes out with `credits_used` in its `response`. A failure mid-stream ends with an `error`
 * event (`{"type":"error","code","message","param","sequence_number"}`). The JSON answer gets a top-level
 * `credits_used`.
 */
export const responses: Surface = {
  api: 'openai',
  endpoint: 'responses',
  path: '/responses',
  usage: 'responses',
  object: 'response',
  validate(body, opts) {
    const model = requireModel(body);
    const input = body.input;
    if (input !== undefined && input !== null && typeof input !== 'string' && !Array.isArray(input)) {
      throw new InferyError(400, 'invalid_type', '`input` must be a string or an array of input items.', { param: 'input' });
    }
    const hasInput = (typeof input === 'string' && input !== '') || (Array.isArray(input) && input.length > 0);
    if (!hasInput && body.prompt == null && body.previous_response_id == null) {
      throw new InferyError(400, 'missing_required_parameter', 'You must provide `input` (a string or an array of input items).', { param: 'input' });
    }
    if (Array.isArray(input) && input.some((item) => typeof item === 'object' && item !== null && (item as { type?: unknown }).type === 'item_reference')) {
      // an item id is looked up in stored responses with the gateway's key, which reads every account's
      throw new InferyError(
        400,
        'item_reference_not_supported',
        '`item_reference` input items are not available on this gateway: send the item itself, or continue a response of yours with `previous_response_id`.',
        { param: 'input' },
      );
    }
    if (body.conversation !== undefined && body.conversation !== null) {
      // a conversation is read with the gateway's upstream key, which reads every account's; this gateway does not
      // serve the Conversations API, so none of them can be proven to be the caller's
      throw new InferyError(
        400,
        'conversation_not_supported',
        '`conversation` is not available on this gateway: send the earlier turns in `input`, or continue a response of yours with `previous_response_id`.',
        { param: 'conversation' },
      );
    }
    if (body.background !== undefined && body.background !== null && typeof body.background !== 'boolean') {
      throw new InferyError(400, 'invalid_type', '`background` must be a boolean.', { param: 'background' });
    }
    if (body.background === true && !opts.allowBackground) {
      throw new InferyError(
        400,
        'background_not_supported',
        'Background responses are not available on this gateway: they run on after the request, so they cannot be metered. Send the request without `background`.',
        { param: 'background' },
      );
    }
    return { model, stream: checkStream(body) };
  },
  continues(body) {
    const previous = body.previous_response_id;
    if (previous === undefined || previous === null) return undefined;
    if (typeof previous !== 'string' || previous === '') {
      throw new InferyError(400, 'invalid_type', '`previous_response_id` must be a response id (a string).', { param: 'previous_response_id' });
    }
    return previous;
  },
  estimate: (body, count) => estimatePrompt(body, count),
  cap(body, defaultMaxTokens): CompletionCap {
    const max = wholeParam(body, 'max_output_tokens', MAX_OUTPUT_TOKENS);
    return max === undefined ? { perChoice: defaultMaxTokens, source: 'default', choices: 1 } : { perChoice: max, source: 'max_output_tokens', choices: 1 };
  },
  // a web search has a fee of its own: the hold covers the most built-in tool calls the request allows
  worstExtras: (body) => (hasWebSearchTool(body) ? { webSearches: maxToolCalls(body) ?? DEFAULT_MAX_TOOL_CALLS } : {}),
  // ... which the provider is held to: `max_tool_calls` sent when the client set none
  withCap: (body, _cap, perChoice) =>
    hasWebSearchTool(body) && maxToolCalls(body) === undefined ? { ...body, max_output_tokens: perChoice, max_tool_calls: DEFAULT_MAX_TOOL_CALLS } : { ...body, max_output_tokens: perChoice },
  // the provider stores each response: its owner may read it back and continue it, the provider then reading
  // its input and output again
  storedContextTokens: (usage) => usage.prompt_tokens + usage.completion_tokens,
  upstreamBody: (body) => JSON.stringify(body),
  stream: responsesStream,
  json: responsesJson,
};
