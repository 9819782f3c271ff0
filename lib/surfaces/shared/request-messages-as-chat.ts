import { InferyError } from '../../base/errors';

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value);

/** 400 for a field of a Messages API request that Chat Completions has no faithful equivalent of. */
function untranslatable(param: string, why: string): InferyError {
  return new InferyError(400, 'unsupported_parameter', `\`${param}\` cannot be sent to this model: it is served by an OpenAI-dialect upstream, which ${why}.`, { param });
}

/** Messages API fields that are translated or meaningless for the chat request; anything else is refused by name. */
const HANDLED = new Set(['model', 'messages', 'system', 'max_tokens', 'stream', 'temperature', 'top_p', 'stop_sequences', 'tools', 'tool_choice', 'metadata', 'service_tier']);

/** Text of a `system` prompt or a `tool_result` content: a string or text blocks. */
function textOf(content: unknown, at: string): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw new InferyError(400, 'invalid_type', `\`${at}\` must be a string or an array of text blocks.`, { param: at });
  return content
    .map((block, i) => {
      if (!isObject(block) || block.type !== 'text' || typeof block.text !== 'string') throw untranslatable(`${at}[${i}]`, 'takes only text there');
      return block.text;
    })
    .join('\n');
}

/** An image block as a chat `image_url` part (base64 as a data: URL). */
function imagePart(block: Json, at: string): Json {
  const source = isObject(block.source) ? block.source : {};
  if (source.type === 'base64' && typeof source.media_type === 'string' && typeof source.data === 'string') {
    return { type: 'image_url', image_url: { url: `data:${source.media_type};base64,${source.data}` } };
  }
  if (source.type === 'url' && typeof source.url === 'string') return { type: 'image_url', image_url: { url: source.url } };
  throw untranslatable(at, 'takes images as base64 data or a URL');
}

/**
 * A Messages API request as a Chat Completions request, for a model only an OpenAI-dialect upstream serves:
 * `system` becomes the first message; text and image blocks become content parts; an assistant's `tool_use`
 * blocks become `tool_calls` and a user's `tool_result` blocks `tool` messages; `tools`, `tool_choice`
 * (`disable_parallel_tool_use` as `parallel_tool_calls: false`), `stop_sequences`, `metadata.user_id` map to
 * theirs; `max_tokens` goes as `max_completion_tokens`; a stream asks for usage. The thinking blocks of earlier
 * assistant turns are left out (the model's scratchpad, which chat has no place for). A field with no faithful
 * equivalent (`thinking`, `top_k`, server tools, documents…) is a 400 naming it, never dropped silently.
 */
export function messagesToChatBody(body: Json, maxTokens: number, stream: boolean): Json {
  for (const key of Object.keys(body)) {
    if (HANDLED.has(key) || body[key] === undefined || body[key] === null) continue;
    throw untranslatable(key, 'has no such field');
  }
  const messages: Json[] = [];
  if (body.system !== undefined && body.system !== null) messages.push({ role: 'system', content: textOf(body.system, 'system') });
  (body.messages as unknown[]).forEach((message, i) => {
    const at = `messages[${i}]`;
    if (!isObject(message) || (message.role !== 'user' && message.role !== 'assistant')) {
      throw new InferyError(400, 'invalid_type', `\`${at}\` must be a message with role "user" or "assistant".`, { param: 'messages' });
    }
    if (typeof message.content === 'string') {
      messages.push({ role: message.role, content: message.content });
      return;
    }
    if (!Array.isArray(message.content)) throw new InferyError(400, 'invalid_type', `\`${at}.content\` must be a string or an array of content blocks.`, { param: 'messages' });
    const parts: Json[] = [];
    const calls: Json[] = [];
    const results: Json[] = [];
    message.content.forEach((block: unknown, j) => {
      const where = `${at}.content[${j}]`;
      if (!isObject(block)) throw new InferyError(400, 'invalid_type', `\`${where}\` must be a content block.`, { param: 'messages' });
      if (block.type === 'text' && typeof block.text === 'string') parts.push({ type: 'text', text: block.text });
      else if (block.type === 'image' && message.role === 'user') parts.push(imagePart(block, where));
      else if (block.type === 'tool_use' && message.role === 'assistant' && typeof block.id === 'string' && typeof block.name === 'string') {
        calls.push({ id: block.id, type: 'function', function: { name: block.name, arguments: JSON.stringify(block.input ?? {}) } });
      } else if (block.type === 'tool_result' && message.role === 'user' && typeof block.tool_use_id === 'string') {
        if (block.is_error === true) throw untranslatable(`${where}.is_error`, 'has no way to mark a tool result as an error');
        results.push({ role: 'tool', tool_call_id: block.tool_use_id, content: block.content === undefined ? '' : textOf(block.content, `${where}.content`) });
      } else if ((block.type === 'thinking' || block.type === 'redacted_thinking') && message.role === 'assistant') {
        // an earlier turn's thinking: not part of what a chat model reads
      } else throw untranslatable(where, `takes no \`${String(block.type)}\` block there`);
    });
    // tool results answer the previous turn's calls: they come first, then what the user added
    messages.push(...results);
    const onlyText = parts.every((p) => p.type === 'text');
    const content = parts.length === 0 ? null : onlyText ? parts.map((p) => p.text).join('') : parts;
    if (message.role === 'assistant') {
      if (content !== null || calls.length > 0) messages.push({ role: 'assistant', content, ...(calls.length > 0 ? { tool_calls: calls } : {}) });
    } else if (content !== null) messages.push({ role: 'user', content });
  });

  const out: Json = { model: body.model, messages, max_completion_tokens: maxTokens };
  if (stream) {
    out.stream = true;
    out.stream_options = { include_usage: true };
  }
  if (typeof body.temperature === 'number') out.temperature = body.temperature;
  if (typeof body.top_p === 'number') out.top_p = body.top_p;
  if (Array.isArray(body.stop_sequences) && body.stop_sequences.length > 0) out.stop = body.stop_sequences;
  if (isObject(body.metadata) && typeof body.metadata.user_id === 'string') out.user = body.metadata.user_id;
  if (Array.isArray(body.tools) && body.tools.length > 0) {
    out.tools = body.tools.map((tool: unknown, i) => {
      if (!isObject(tool) || typeof tool.name !== 'string' || (tool.type !== undefined && tool.type !== 'custom')) {
        throw untranslatable(`tools[${i}]`, 'takes client tools with an input_schema only (no server tools)');
      }
      return { type: 'function', function: { name: tool.name, ...(typeof tool.description === 'string' ? { description: tool.description } : {}), parameters: isObject(tool.input_schema) ? tool.input_schema : { type: 'object', properties: {} } } };
    });
  }
  const choice = body.tool_choice;
  if (isObject(choice)) {
    if (choice.type === 'auto') out.tool_choice = 'auto';
    else if (choice.type === 'any') out.tool_choice = 'required';
    else if (choice.type === 'none') out.tool_choice = 'none';
    else if (choice.type === 'tool' && typeof choice.name === 'string') out.tool_choice = { type: 'function', function: { name: choice.name } };
    else throw untranslatable('tool_choice', 'takes "auto", "any", "none" or one tool');
    if (choice.disable_parallel_tool_use === true) out.parallel_tool_calls = false;
  } else if (choice !== undefined && choice !== null) throw untranslatable('tool_choice', 'takes an object such as {"type":"auto"}');
  return out;
}
