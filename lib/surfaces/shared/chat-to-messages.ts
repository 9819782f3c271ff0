import { InferyError } from '../../base/errors';

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value);

/** 400 for a field of a chat request the Messages API has no faithful equivalent of. */
function untranslatable(param: string, why: string): InferyError {
  return new InferyError(400, 'unsupported_parameter', `\`${param}\` cannot be sent to this model: it is served by a Messages API upstream, which ${why}.`, { param });
}

/** Chat fields that are copied, renamed or dropped as meaningless there; anything else is refused by name. */
const HANDLED = new Set([
  'model', 'messages', 'stream', 'stream_options', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'stop', 'tools',
  'tool_choice', 'parallel_tool_calls', 'user', 'metadata', 'n', 'store', 'service_tier',
]);

/** A chat content part as Messages API blocks (text; images by URL or base64 data: URL). */
function contentBlocks(content: unknown, at: string): Json[] {
  if (typeof content === 'string') return content === '' ? [] : [{ type: 'text', text: content }];
  if (content === null || content === undefined) return [];
  if (!Array.isArray(content)) throw new InferyError(400, 'invalid_type', `\`${at}.content\` must be a string or an array of content parts.`, { param: `${at}.content` });
  return content.map((part, i): Json => {
    if (!isObject(part)) throw new InferyError(400, 'invalid_type', `\`${at}.content[${i}]\` must be a content part object.`, { param: `${at}.content` });
    if (part.type === 'text' && typeof part.text === 'string') return { type: 'text', text: part.text };
    if (part.type === 'image_url') {
      const url = isObject(part.image_url) ? part.image_url.url : part.image_url;
      if (typeof url !== 'string') throw new InferyError(400, 'invalid_type', `\`${at}.content[${i}].image_url.url\` must be a string.`, { param: `${at}.content` });
      const data = /^data:([^;,]{1,100});base64,(.*)$/s.exec(url);
      return data ? { type: 'image', source: { type: 'base64', media_type: data[1], data: data[2] } } : { type: 'image', source: { type: 'url', url } };
    }
    throw untranslatable(`${at}.content[${i}]`, `takes text and image parts only (got a \`${String(part.type)}\` part)`);
  });
}

/** A tool call's arguments as the object Messages API `tool_use.input` is. */
function toolInput(args: unknown, at: string): Json {
  if (args === undefined || args === null || args === '') return {};
  try {
    const input = JSON.parse(String(args)) as unknown;
    if (isObject(input)) return input;
  } catch {
    // refused below
  }
  throw untranslatable(at, 'needs tool-call arguments that are a JSON object');
}

/** The text of a system or tool message's content. */
function textOf(content: unknown, at: string): string {
  if (typeof content === 'string') return content;
  return contentBlocks(content, at)
    .map((block) => {
      if (block.type !== 'text') throw untranslatable(`${at}.content`, 'takes only text here');
      return block.text as string;
    })
    .join('\n');
}

/**
 * A Chat Completions request as a Messages API request, for a model only an Anthropic upstream serves. System and
 * developer messages become `system`; user and assistant turns become messages of content blocks (consecutive ones
 * of one role joined, as the API wants turns to alternate); an assistant's `tool_calls` become `tool_use` blocks
 * and `tool` messages `tool_result` blocks; `tools` and `tool_choice` map to theirs; the cap is `max_tokens`;
 * `stop` is `stop_sequences`; `user` is `metadata.user_id`. A field with no faithful equivalent (`n` > 1,
 * `logprobs`, `response_format`, penalties, `seed`, `audio`…) is a 400 naming it, never dropped silently.
 */
export function chatToMessagesBody(body: Json, maxTokens: number, stream: boolean): Json {
  for (const key of Object.keys(body)) {
    if (HANDLED.has(key) || body[key] === undefined || body[key] === null) continue;
    throw untranslatable(key, 'has no such field');
  }
  if (body.n !== undefined && body.n !== null && body.n !== 1) throw untranslatable('n', 'answers with one choice only');
  const system: string[] = [];
  const messages: Array<{ role: string; content: Json[] }> = [];
  const push = (role: 'user' | 'assistant', blocks: Json[]): void => {
    if (blocks.length === 0) return;
    const last = messages[messages.length - 1];
    if (last && last.role === role) last.content.push(...blocks);
    else messages.push({ role, content: blocks });
  };
  (body.messages as unknown[]).forEach((message, i) => {
    const at = `messages[${i}]`;
    if (!isObject(message)) throw new InferyError(400, 'invalid_type', `\`${at}\` must be a message object.`, { param: 'messages' });
    const role = message.role;
    if (role === 'system' || role === 'developer') {
      if (messages.length > 0) throw untranslatable(at, 'takes system instructions only before the conversation');
      system.push(textOf(message.content, at));
    } else if (role === 'user') push('user', contentBlocks(message.content, at));
    else if (role === 'assistant') {
      const blocks = contentBlocks(message.content, at);
      if (Array.isArray(message.tool_calls)) {
        message.tool_calls.forEach((call: unknown, j) => {
          const fn = isObject(call) && isObject(call.function) ? call.function : undefined;
          if (!isObject(call) || typeof call.id !== 'string' || typeof fn?.name !== 'string') {
            throw new InferyError(400, 'invalid_type', `\`${at}.tool_calls[${j}]\` needs an id and a function name.`, { param: 'messages' });
          }
          blocks.push({ type: 'tool_use', id: call.id, name: fn.name, input: toolInput(fn.arguments, `${at}.tool_calls[${j}].function.arguments`) });
        });
      }
      push('assistant', blocks);
    } else if (role === 'tool') {
      if (typeof message.tool_call_id !== 'string') throw new InferyError(400, 'missing_required_parameter', `\`${at}.tool_call_id\` is required.`, { param: 'messages' });
      push('user', [{ type: 'tool_result', tool_use_id: message.tool_call_id, content: textOf(message.content, at) }]);
    } else throw untranslatable(`${at}.role`, `has no \`${String(role)}\` role`);
  });
  if (messages.length === 0) throw new InferyError(400, 'missing_required_parameter', 'The conversation needs a user message besides the system prompt.', { param: 'messages' });

  const out: Json = { model: body.model, max_tokens: maxTokens, messages };
  if (system.length > 0) out.system = system.join('\n\n');
  if (stream) out.stream = true;
  if (typeof body.temperature === 'number') {
    if (body.temperature > 1) throw untranslatable('temperature', 'takes a temperature from 0 to 1');
    out.temperature = body.temperature;
  }
  if (typeof body.top_p === 'number') out.top_p = body.top_p;
  if (typeof body.stop === 'string') out.stop_sequences = [body.stop];
  else if (Array.isArray(body.stop)) out.stop_sequences = body.stop;
  if (typeof body.user === 'string') out.metadata = { user_id: body.user };
  if (Array.isArray(body.tools) && body.tools.length > 0) {
    out.tools = body.tools.map((tool: unknown, i) => {
      const fn = isObject(tool) && tool.type === 'function' && isObject(tool.function) ? tool.function : undefined;
      if (!fn || typeof fn.name !== 'string') throw untranslatable(`tools[${i}]`, 'takes function tools only');
      return { name: fn.name, ...(typeof fn.description === 'string' ? { description: fn.description } : {}), input_schema: isObject(fn.parameters) ? fn.parameters : { type: 'object', properties: {} } };
    });
  }
  const choice = body.tool_choice;
  const noParallel = body.parallel_tool_calls === false ? { disable_parallel_tool_use: true } : {};
  if (choice === 'auto' || (choice === undefined && out.tools && body.parallel_tool_calls === false)) out.tool_choice = { type: 'auto', ...noParallel };
  else if (choice === 'required') out.tool_choice = { type: 'any', ...noParallel };
  else if (choice === 'none') out.tool_choice = { type: 'none' };
  else if (isObject(choice) && isObject(choice.function) && typeof choice.function.name === 'string') out.tool_choice = { type: 'tool', name: choice.function.name, ...noParallel };
  else if (choice !== undefined && choice !== null) throw untranslatable('tool_choice', 'takes "auto", "required", "none" or one function');
  return out;
}
