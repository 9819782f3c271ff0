/**
 * The real clients our users' apps use, driven in their own Node process as those apps load them (native ES
 * modules; `ai`, `@ai-sdk/*` and `@langchain/openai` ship nothing else). __tests__/helpers/client-driver.ts
 * starts it and sends one JSON line per task on stdin:
 *   {"id":1,"client":"ai-openai","op":"stream","baseURL":"http://127.0.0.1:…/v1","apiKey":"…","model":"…"}
 * and reads one JSON line per answer on stdout: {"id":1,"ok":true,"result":{…}} or {"id":1,"ok":false,"error":"…"}.
 *
 * clients: openai7, openai6 (the official SDK), ai-openai (the AI SDK's @ai-sdk/openai chat model), ai-responses
 * (its Responses model), ai-compatible (@ai-sdk/openai-compatible), langchain (@langchain/openai ChatOpenAI);
 * in the Messages API's dialect, ai-anthropic (@ai-sdk/anthropic) and langchain-anthropic (@langchain/anthropic
 * ChatAnthropic), whose `baseURL` is the same `…/v1`.
 * ops: stream, tools, abort, error, embed. Every result says what the client itself reported: the text deltas
 * as they arrived, the usage, credits_used where it can be read, the error it raised.
 */
import readline from 'node:readline';
import OpenAI7 from 'openai';
import OpenAI6 from 'openai6';
import { embed, jsonSchema, streamText, tool } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { ChatOpenAI, OpenAIEmbeddings } from '@langchain/openai';
import { createAnthropic } from '@ai-sdk/anthropic';
import { ChatAnthropic } from '@langchain/anthropic';

const PROMPT = 'Say hello';
const WEATHER = {
  name: 'get_weather',
  description: 'The weather in a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

/** The fields of an error worth comparing: what each client puts where. */
function errorFields(err) {
  if (err === null || err === undefined) return undefined;
  if (typeof err !== 'object') return { message: String(err) };
  const nested = typeof err.error === 'object' && err.error !== null ? err.error : undefined;
  return {
    // the class (APIError, APICallError…): the openai SDK's errors are all named 'Error'
    name: err.constructor?.name && !['Object', 'Error'].includes(err.constructor.name) ? err.constructor.name : err.name,
    message: String(err.message ?? nested?.message ?? ''),
    code: err.code ?? nested?.code ?? err.data?.error?.code,
    type: err.type ?? nested?.type,
    status: err.status ?? err.statusCode,
  };
}

// ---------------------------------------------------------------------------------------------- openai SDK

function openaiClient(OpenAI, task) {
  return new OpenAI({ apiKey: task.apiKey, baseURL: task.baseURL, maxRetries: 0 });
}

async function openaiStream(OpenAI, task, { tools = false, abortAfterFirst = false } = {}) {
  const client = openaiClient(OpenAI, task);
  const controller = new AbortController();
  const start = performance.now();
  const out = { deltas: [], usage: undefined, credits_used: undefined, finish: undefined, toolCalls: [], error: undefined };
  try {
    const stream = await client.chat.completions.create(
      { model: task.model, messages: [{ role: 'user', content: PROMPT }], stream: true, ...(tools ? { tools: [{ type: 'function', function: WEATHER }] } : {}) },
      { signal: controller.signal },
    );
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      if (choice?.delta?.content) {
        out.deltas.push({ text: choice.delta.content, at: performance.now() - start });
        if (abortAfterFirst) controller.abort();
      }
      for (const call of choice?.delta?.tool_calls ?? []) {
        const slot = (out.toolCalls[call.index] ??= { id: undefined, name: '', arguments: '' });
        if (call.id) slot.id = call.id;
        if (call.function?.name) slot.name += call.function.name;
        if (call.function?.arguments) slot.arguments += call.function.arguments;
      }
      if (choice?.finish_reason) out.finish = choice.finish_reason;
      if (chunk.usage && out.usage === undefined) out.usage = chunk.usage;
      // the gateway's chunk: `credits_used` beside the usage, not in the SDK's types
      if (chunk.credits_used !== undefined) out.credits_used = chunk.credits_used;
    }
  } catch (err) {
    out.error = errorFields(err);
  }
  out.toolCalls = out.toolCalls.map((c) => ({ id: c.id, name: c.name, args: safeJson(c.arguments) }));
  return out;
}

async function openaiEmbed(OpenAI, task) {
  const res = await openaiClient(OpenAI, task).embeddings.create({ model: task.model, input: 'hello world' });
  return { dimensions: res.data[0].embedding.length, usage: res.usage, credits_used: res.credits_used };
}

// ------------------------------------------------------------------------------------------------- AI SDK

function aiModel(task) {
  if (task.client === 'ai-anthropic') {
    const provider = createAnthropic({ baseURL: task.baseURL, apiKey: task.apiKey });
    return { model: provider(task.model), embedding: undefined };
  }
  if (task.client === 'ai-compatible') {
    const provider = createOpenAICompatible({ name: 'gateway', baseURL: task.baseURL, apiKey: task.apiKey, includeUsage: true });
    return { model: provider.chatModel(task.model), embedding: provider.embeddingModel(task.model) };
  }
  const provider = createOpenAI({ baseURL: task.baseURL, apiKey: task.apiKey });
  return {
    model: task.client === 'ai-responses' ? provider.responses(task.model) : provider.chat(task.model),
    embedding: provider.embedding(task.model),
  };
}

/** credits_used from a raw provider chunk: the chat gateway chunk, or the Responses API's final event. */
function creditsOfRaw(raw) {
  if (raw === null || typeof raw !== 'object') return undefined;
  if (raw.credits_used !== undefined) return raw.credits_used;
  if (raw.response && raw.response.credits_used !== undefined) return raw.response.credits_used;
  return undefined;
}

async function aiStream(task, { tools = false, abortAfterFirst = false } = {}) {
  const { model } = aiModel(task);
  const controller = new AbortController();
  const start = performance.now();
  const out = { deltas: [], usage: undefined, credits_used: undefined, finish: undefined, toolCalls: [], error: undefined, errorParts: [], onError: [], onAbort: false };
  try {
    const result = streamText({
      model,
      prompt: PROMPT,
      maxRetries: 0,
      abortSignal: controller.signal,
      include: { rawChunks: true },
      ...(tools ? { tools: { get_weather: tool({ description: WEATHER.description, inputSchema: jsonSchema(WEATHER.parameters) }) } } : {}),
      onError: ({ error }) => void out.onError.push(errorFields(error)),
      onAbort: () => void (out.onAbort = true),
    });
    for await (const part of result.stream) {
      if (part.type === 'text-delta') {
        out.deltas.push({ text: part.text, at: performance.now() - start });
        if (abortAfterFirst) controller.abort();
      } else if (part.type === 'raw') {
        const credits = creditsOfRaw(part.rawValue);
        if (credits !== undefined) out.credits_used = credits;
      } else if (part.type === 'tool-call') {
        out.toolCalls.push({ id: part.toolCallId, name: part.toolName, args: part.input });
      } else if (part.type === 'finish') {
        out.finish = part.finishReason;
        out.usage = part.totalUsage;
      } else if (part.type === 'error') {
        out.errorParts.push(errorFields(part.error));
      }
    }
  } catch (err) {
    out.error = errorFields(err);
  }
  return out;
}

async function aiEmbed(task) {
  const { embedding } = aiModel(task);
  const res = await embed({ model: embedding, value: 'hello world', maxRetries: 0 });
  // the gateway's credits_used is in the HTTP body the SDK keeps
  return { dimensions: res.embedding.length, usage: res.usage, credits_used: res.response?.body?.credits_used };
}

// ---------------------------------------------------------------------------------------------- LangChain

function chatAnthropic(task) {
  // the Anthropic SDK underneath adds /v1/messages to the origin
  return new ChatAnthropic({ model: task.model, apiKey: task.apiKey, anthropicApiUrl: task.baseURL.replace(/\/v1\/?$/, ''), maxRetries: 0, streamUsage: true, maxTokens: 256 });
}

function chatOpenAI(task) {
  return new ChatOpenAI({
    model: task.model,
    apiKey: task.apiKey,
    configuration: { baseURL: task.baseURL },
    maxRetries: 0,
    streamUsage: true,
    // each chunk keeps the gateway's raw chunk, where credits_used is
    __includeRawResponse: true,
  });
}

async function langchainStream(task, { tools = false, abortAfterFirst = false } = {}) {
  const controller = new AbortController();
  const start = performance.now();
  const out = { deltas: [], usage: undefined, credits_used: undefined, finish: undefined, toolCalls: [], error: undefined };
  let llm = task.client === 'langchain-anthropic' ? chatAnthropic(task) : chatOpenAI(task);
  if (tools) llm = llm.bindTools([{ type: 'function', function: WEATHER }]);
  let whole;
  try {
    const stream = await llm.stream(PROMPT, { signal: controller.signal });
    for await (const chunk of stream) {
      whole = whole === undefined ? chunk : whole.concat(chunk);
      const text = typeof chunk.content === 'string' ? chunk.content : Array.isArray(chunk.content) ? chunk.content.map((c) => (typeof c?.text === 'string' ? c.text : '')).join('') : '';
      if (text) {
        out.deltas.push({ text, at: performance.now() - start });
        if (abortAfterFirst) controller.abort();
      }
      if (chunk.usage_metadata) out.usage = chunk.usage_metadata;
      const finish = chunk.response_metadata?.finish_reason ?? chunk.response_metadata?.stop_reason;
      if (finish) out.finish = finish;
      const credits = chunk.additional_kwargs?.__raw_response?.credits_used;
      if (credits !== undefined) out.credits_used = credits;
    }
  } catch (err) {
    out.error = errorFields(err);
  }
  out.toolCalls = (whole?.tool_calls ?? []).map((c) => ({ id: c.id, name: c.name, args: c.args }));
  return out;
}

async function langchainEmbed(task) {
  const embeddings = new OpenAIEmbeddings({ model: task.model, apiKey: task.apiKey, configuration: { baseURL: task.baseURL }, maxRetries: 0 });
  const vector = await embeddings.embedQuery('hello world');
  return { dimensions: vector.length, usage: undefined, credits_used: undefined };
}

// ------------------------------------------------------------------------------------------------- the loop

function safeJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

async function run(task) {
  const sdk = task.client === 'openai7' ? OpenAI7 : task.client === 'openai6' ? OpenAI6 : undefined;
  const streamOf = sdk
    ? (options) => openaiStream(sdk, task, options)
    : task.client === 'langchain' || task.client === 'langchain-anthropic'
      ? (options) => langchainStream(task, options)
      : task.client.startsWith('ai-')
        ? (options) => aiStream(task, options)
        : undefined;
  if (!streamOf) throw new Error(`unknown client ${task.client}`);
  switch (task.op) {
    case 'stream':
    case 'error':
      return streamOf({});
    case 'tools':
      return streamOf({ tools: true });
    case 'abort':
      return streamOf({ abortAfterFirst: true });
    case 'embed':
      return sdk ? openaiEmbed(sdk, task) : task.client === 'langchain' ? langchainEmbed(task) : aiEmbed(task);
    default:
      throw new Error(`unknown op ${task.op}`);
  }
}

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  let task;
  try {
    task = JSON.parse(line);
  } catch {
    return;
  }
  run(task).then(
    (result) => process.stdout.write(JSON.stringify({ id: task.id, ok: true, result }) + '\n'),
    (err) => process.stdout.write(JSON.stringify({ id: task.id, ok: false, error: errorFields(err) }) + '\n'),
  );
});
lines.on('close', () => process.exit(0));
process.stdout.write(JSON.stringify({ ready: true, versions: process.versions.node }) + '\n');
