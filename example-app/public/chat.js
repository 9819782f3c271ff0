// The chat page: a multi-turn conversation streamed from POST /v1/chat/completions, from POST /v1/responses
// (the Responses API) or from POST /v1/messages (Anthropic's Messages API), chosen with the API toggle, and read with readGatewayStream (lib/client/stream-reader.ts, served
// as /stream-reader.js from its browser build). The assistant's Markdown is rendered with marked and sanitised
// with DOMPurify (served from node_modules as /vendor/*.js). No framework.

import { marked } from '/vendor/marked.js';
import DOMPurify from '/vendor/purify.js';

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const els = {
  form: $('form'), key: $('key'), modelSlot: $('model-slot'), prompt: $('prompt'), tools: $('tools'), send: $('send'), stop: $('stop'),
  newChat: $('new-chat'), transcript: $('transcript'), credits: $('credits'), creditsNote: $('credits-note'), ttft: $('ttft'),
  total: $('total'), balance: $('balance'), used: $('used'), error: $('error'), status: $('status'), elapsed: $('elapsed'),
  endpoint: $('endpoint'),
};
/** The model control: a <select> of GET /v1/models, or a text field when that call fails. */
const modelControl = () => /** @type {HTMLInputElement | HTMLSelectElement} */ (document.getElementById('model'));

/** The one tool offered when the checkbox is ticked. */
const WEATHER_TOOL = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather for a city.',
    parameters: {
      type: 'object',
      properties: { location: { type: 'string', description: 'City name' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
      required: ['location'],
    },
  },
};

/** The same tool in the Responses API's shape (name and parameters at the top level). */
const RESPONSES_WEATHER_TOOL = { type: 'function', ...WEATHER_TOOL.function };
const MESSAGES_WEATHER_TOOL = { name: WEATHER_TOOL.function.name, description: WEATHER_TOOL.function.description, input_schema: WEATHER_TOOL.function.parameters };
/** The Messages API requires a cap: what the page asks for (the gateway holds its worst case). */
const MESSAGES_MAX_TOKENS = 1024;

// ---- Markdown, sanitised ----------------------------------------------------------------------------------

marked.use({ gfm: true, breaks: false });
// Every link opens in a new tab without handing the page to it.
DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.hasAttribute('href')) {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer');
  }
});
// No images, media or frames either: a model's answer must not make the browser fetch URLs it chose (a prompt
// injection could leak the conversation through an image URL).
const PURIFY = {
  RETURN_DOM_FRAGMENT: true,
  FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select', 'img', 'picture', 'source', 'video', 'audio', 'iframe', 'object', 'embed', 'svg', 'math'],
  FORBID_ATTR: ['style', 'srcset', 'background', 'poster'],
};

/** Renders `markdown` into `el`: marked, then DOMPurify (no script, no event handlers, no javascript: URLs). */
function renderMarkdown(el, markdown) {
  const html = marked.parse(markdown, { async: false });
  el.replaceChildren(DOMPurify.sanitize(html, PURIFY));
}

// ---- The key: a field kept in sessionStorage, never in the URL ----------------------------------------------

const KEY_STORAGE = 'infery-stream.key';
const params = new URLSearchParams(location.search);
const keyFromUrl = params.get('key');
if (keyFromUrl !== null) {
  // The example app's banner prints /?key=…: move it into the field and sessionStorage, out of the address bar.
  if (keyFromUrl) sessionStorage.setItem(KEY_STORAGE, keyFromUrl);
  params.delete('key');
  const rest = params.toString();
  history.replaceState(history.state, '', `${location.pathname}${rest ? `?${rest}` : ''}${location.hash}`);
}
els.key.value = sessionStorage.getItem(KEY_STORAGE) ?? '';
const wantedModel = params.get('model');
const currentKey = () => els.key.value.trim();

// ---- The API: Chat Completions, Responses or Messages, a toggle kept in sessionStorage ----------------------

const API_STORAGE = 'infery-stream.api';
const APIS = {
  chat: { path: '/v1/chat/completions', label: 'Chat Completions' },
  responses: { path: '/v1/responses', label: 'Responses' },
  messages: { path: '/v1/messages', label: 'Messages' },
};
/** @returns {'chat' | 'responses' | 'messages'} the API the next message goes to */
const currentApi = () => {
  const value = /** @type {HTMLInputElement | null} */ (document.querySelector('input[name="api"]:checked'))?.value;
  return value === 'responses' || value === 'messages' ? value : 'chat';
};
function apiChanged() {
  const api = currentApi();
  sessionStorage.setItem(API_STORAGE, api);
  els.endpoint.textContent = `POST ${APIS[api].path}`;
}
{
  const stored = sessionStorage.getItem(API_STORAGE);
  const radio = /** @type {HTMLInputElement | null} */ (document.getElementById(`api-${stored}`));
  if (stored && stored in APIS && radio) radio.checked = true;
  els.endpoint.textContent = `POST ${APIS[currentApi()].path}`;
}
for (const radio of document.querySelectorAll('input[name="api"]')) radio.addEventListener('change', apiChanged);

// ---- State ------------------------------------------------------------------------------------------------

/** The conversation sent as `messages`: earlier user and assistant turns. */
let conversation = [];
/** Bumped by "New chat", so an answer still ending does not write into the new conversation. */
let chatId = 0;
/** @type {AbortController | null} */
let controller = null;
/** @type {Promise<typeof import('../../lib/client/stream-reader')> } */
const reader = import('/stream-reader.js');
reader.catch(async () => {
  const res = await fetch('/stream-reader.js').catch(() => null);
  const why = res && !res.ok ? await res.text() : 'it did not load';
  showError(`Cannot load /stream-reader.js: ${why}`);
  els.send.disabled = true;
});

function setStatus(state, text = state) {
  els.status.dataset.state = state;
  els.status.textContent = text;
}

function showError(message) {
  els.error.textContent = message;
}

const round = (n) => Math.round(n * 1000) / 1000;
const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;
const auth = () => ({ Authorization: `Bearer ${currentKey()}` });

/** GET /v1/credits → { balance, used }, shown in the stats; null when the key is refused. */
async function refreshBalance() {
  if (!currentKey()) return null;
  try {
    const res = await fetch('/v1/credits', { headers: auth(), cache: 'no-store' });
    if (!res.ok) {
      els.balance.textContent = '';
      els.used.textContent = '';
      return null;
    }
    const { data } = await res.json();
    els.balance.textContent = String(round(data.balance));
    els.used.textContent = String(round(data.used));
    return data;
  } catch {
    return null;
  }
}

/** Models listed by GET /v1/models that cannot chat: embedding models (`text-embedding-3-small`, `mock-embed`, …). */
const notForChat = (id) => /embed/i.test(id);

/** GET /v1/models (with the key) into the select, without embedding models; a text field when the call fails. */
async function loadModels() {
  const previous = modelControl().value || wantedModel || '';
  let ids = null;
  if (currentKey()) {
    try {
      const res = await fetch('/v1/models', { headers: auth(), cache: 'no-store' });
      if (res.ok) {
        const body = await res.json();
        ids = Array.isArray(body?.data) ? body.data.map((m) => m?.id).filter((id) => typeof id === 'string' && id && !notForChat(id)) : null;
      }
    } catch {
      ids = null;
    }
  }
  let control;
  if (ids && ids.length > 0) {
    control = document.createElement('select');
    for (const id of ids) control.append(new Option(id, id));
    if (previous && !ids.includes(previous)) control.append(new Option(previous, previous));
    control.value = previous || ids[0];
  } else {
    control = document.createElement('input');
    control.type = 'text';
    control.placeholder = 'model id';
    control.title = 'GET /v1/models failed: type a model id';
    control.value = previous;
  }
  control.id = 'model';
  els.modelSlot.replaceChildren(control);
}

async function keyChanged() {
  const key = currentKey();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  els.balance.textContent = '';
  els.used.textContent = '';
  await Promise.all([loadModels(), refreshBalance()]);
}

/** The message of an OpenAI-shaped error body, or the raw text. */
async function httpErrorMessage(res) {
  const text = await res.text().catch(() => '');
  try {
    const { error } = JSON.parse(text);
    if (error && typeof error.message === 'string') return `${error.message}${error.code ? ` (${error.code})` : ''}`;
  } catch {
    // not JSON
  }
  return text.trim() || res.statusText;
}

// ---- The transcript ---------------------------------------------------------------------------------------

function turnElement(role, label) {
  const turn = document.createElement('div');
  turn.className = `turn ${role}`;
  const head = document.createElement('div');
  head.className = 'role';
  head.append(label);
  const content = document.createElement('div');
  content.className = 'content';
  turn.append(head, content);
  els.transcript.append(turn);
  return { turn, head, content };
}

/**
 * Appends the user's turn and an empty assistant turn; the latter's parts carry the ids #output and #toolcalls.
 * The assistant's head names the endpoint that answered, then its outcome (`meta`) and its charge (`cost`).
 */
function startTurn(prompt, api) {
  for (const id of ['output', 'toolcalls']) document.getElementById(id)?.removeAttribute('id');
  turnElement('user', 'You').content.textContent = prompt;
  const { turn, head, content } = turnElement('assistant', 'Assistant');
  turn.dataset.api = api;
  const via = document.createElement('span');
  via.className = 'via';
  via.textContent = APIS[api].path;
  via.title = `Answered by POST ${APIS[api].path} (${APIS[api].label} API)`;
  const meta = document.createElement('span');
  meta.className = 'meta';
  const cost = document.createElement('span');
  cost.className = 'cost';
  head.append(via, meta, cost);
  content.id = 'output';
  const toolcalls = document.createElement('div');
  toolcalls.className = 'toolcalls';
  toolcalls.id = 'toolcalls';
  turn.append(toolcalls);
  turn.scrollIntoView({ block: 'nearest' });
  return { turn, meta, cost, output: content, toolcalls };
}

/** Shows what an answer cost: in the stats (this answer) and in its turn's head. */
function showCredits(view, credits) {
  els.credits.textContent = String(credits);
  view.cost.textContent = `· ${credits} credits`;
}

function renderToolCalls(view, calls) {
  // an answer made only of tool calls: no "(no text)" placeholder
  view.output.classList.toggle('tools-only', view.output.textContent === '');
  view.toolcalls.replaceChildren(
    ...calls.map((call) => {
      const box = document.createElement('div');
      box.className = 'toolcall';
      box.dataset.index = String(call.index);
      const name = document.createElement('div');
      name.className = 'name';
      name.textContent = `${call.function.name || '…'}()`;
      const args = document.createElement('pre');
      args.className = 'arguments';
      args.textContent = call.function.arguments;
      box.append(name, args);
      return box;
    }),
  );
}

/**
 * Records the assistant's turn in `conversation`: its text, and its tool calls each answered with a note that this
 * page runs no tools (so the next request is a valid conversation).
 */
function rememberAnswer(text, calls) {
  const named = calls.filter((c) => c.function.name);
  if (named.length > 0) {
    const toolCalls = named.map((c, i) => ({ id: c.id || `call_page_${conversation.length}_${i}`, type: 'function', function: { name: c.function.name, arguments: c.function.arguments || '{}' } }));
    conversation.push({ role: 'assistant', content: text || null, tool_calls: toolCalls });
    for (const call of toolCalls) conversation.push({ role: 'tool', tool_call_id: call.id, content: JSON.stringify({ error: 'This demo page does not run tools.' }) });
  } else if (text) {
    conversation.push({ role: 'assistant', content: text });
  }
}

/**
 * The conversation (chat messages) as the Messages API's: the assistant's tool calls as `tool_use` blocks, the
 * tool answers as `tool_result` blocks of a user turn (consecutive ones joined, as the API wants turns to alternate).
 */
function toAnthropicMessages(messages) {
  const out = [];
  const push = (role, blocks) => {
    const last = out[out.length - 1];
    if (last && last.role === role) last.content.push(...blocks);
    else out.push({ role, content: blocks });
  };
  for (const m of messages) {
    if (m.role === 'tool') {
      push('user', [{ type: 'tool_result', tool_use_id: m.tool_call_id, content: m.content }]);
      continue;
    }
    const blocks = typeof m.content === 'string' && m.content !== '' ? [{ type: 'text', text: m.content }] : [];
    for (const call of m.tool_calls ?? []) {
      let input = {};
      try {
        input = JSON.parse(call.function.arguments || '{}');
      } catch {
        // arguments that are not JSON go as a string field
        input = { arguments: call.function.arguments };
      }
      blocks.push({ type: 'tool_use', id: call.id, name: call.function.name, input });
    }
    if (blocks.length > 0) push(m.role === 'assistant' ? 'assistant' : 'user', blocks);
  }
  return out;
}

/**
 * The conversation (chat messages) as Responses API input items: user and assistant messages with string
 * content, an assistant's tool calls as function_call items, the tool answers as function_call_output items.
 */
function toResponsesInput(messages) {
  const input = [];
  for (const m of messages) {
    if (m.role === 'tool') {
      input.push({ type: 'function_call_output', call_id: m.tool_call_id, output: m.content });
      continue;
    }
    if (typeof m.content === 'string' && m.content !== '') input.push({ role: m.role, content: m.content });
    for (const call of m.tool_calls ?? []) input.push({ type: 'function_call', call_id: call.id, name: call.function.name, arguments: call.function.arguments });
  }
  return input;
}

function clearAnswerStats() {
  for (const el of [els.error, els.credits, els.ttft, els.total, els.creditsNote, els.elapsed]) el.textContent = '';
}

function setBusy(busy) {
  els.send.disabled = busy;
  els.stop.disabled = !busy;
}

/**
 * After a Stop (or a mid-stream failure) the gateway settles what was produced a moment later: poll
 * GET /v1/generation?id=<X-Generation-Id> until this generation's record is there, and show its charge.
 */
async function chargeAfterStop(generationId, note, view) {
  for (let i = 0; i < 20 && generationId; i++) {
    await new Promise((r) => setTimeout(r, 150));
    const res = await fetch(`/v1/generation?id=${encodeURIComponent(generationId)}`, { headers: auth(), cache: 'no-store' });
    if (res.ok) {
      const { data } = await res.json();
      // the balance first, so the charge and the balance appear together (the record exists: it is settled)
      await refreshBalance();
      showCredits(view, round(data.credits_used));
      els.creditsNote.textContent = note;
      return;
    }
  }
  await refreshBalance();
}

// ---- Reading the two kinds of stream into one answer ------------------------------------------------------------

/**
 * @typedef {import('../../lib/client/stream-reader').ToolCall} ToolCall
 * @typedef {{ onText(delta: string, text: string): void, onToolCalls(calls: ToolCall[]): void }} AnswerHandlers
 * @typedef {object} Answer what a stream produced, whichever the API
 * @property {string} text
 * @property {ToolCall[]} calls
 * @property {'done' | 'incomplete' | 'failed' | 'ended-early'} outcome `failed`: the response said so (response.failed)
 * @property {string} summary for the status line, e.g. `finish_reason stop` or `status completed`
 * @property {number} [creditsUsed] the gateway's charge for it, when the stream carried it
 * @property {string} [error] why it failed (outcome `failed`)
 */

/** A Chat Completions stream: `choices[0].delta`, the gateway's usage chunk with `credits_used`, then `[DONE]`. */
async function readChatStream(readGatewayStream, stream, handlers) {
  const result = await readGatewayStream(stream, handlers);
  return /** @type {Answer} */ ({
    text: result.text,
    calls: result.toolCalls,
    outcome: result.done ? 'done' : 'ended-early',
    summary: `finish_reason ${result.finishReason ?? 'none'}`,
    creditsUsed: result.creditsUsed,
  });
}

/**
 * A Messages API stream: typed events (`message_start`, `content_block_start` / `_delta` / `_stop`, `ping`), the
 * final `message_delta` with the stop reason and the gateway's `credits_used`, then `message_stop`. A mid-stream
 * `event: error` makes readGatewayStream throw a GatewayStreamError.
 */
async function readMessagesStream(readGatewayStream, stream, handlers) {
  let text = '';
  /** @type {Map<number, ToolCall>} tool_use blocks by index */
  const calls = new Map();
  let final = null;
  let stopped = false;
  let lastBlock = null;
  const callList = () => [...calls.values()].sort((a, b) => a.index - b.index).map((c) => ({ ...c, function: { ...c.function } }));
  await readGatewayStream(stream, {
    onChunk(event) {
      if (event.type === 'content_block_start' && event.content_block?.type === 'tool_use') {
        calls.set(event.index, { index: event.index, id: event.content_block.id, type: 'function', function: { name: event.content_block.name ?? '', arguments: '' } });
        handlers.onToolCalls(callList());
      } else if (event.type === 'content_block_delta' && event.delta?.type === 'text_delta' && typeof event.delta.text === 'string' && event.delta.text !== '') {
        if (lastBlock !== null && lastBlock !== event.index && text !== '') text += '\n\n';
        lastBlock = event.index;
        text += event.delta.text;
        handlers.onText(event.delta.text, text);
      } else if (event.type === 'content_block_delta' && event.delta?.type === 'input_json_delta') {
        const call = calls.get(event.index);
        if (!call || typeof event.delta.partial_json !== 'string') return;
        call.function.arguments += event.delta.partial_json;
        handlers.onToolCalls(callList());
      } else if (event.type === 'message_delta') final = event;
      else if (event.type === 'message_stop') stopped = true;
    },
  });
  const answer = /** @type {Answer} */ ({ text, calls: callList(), outcome: stopped ? 'done' : 'ended-early', summary: `stop_reason ${final?.delta?.stop_reason ?? 'none'}` });
  if (typeof final?.credits_used === 'number') answer.creditsUsed = final.credits_used;
  if (final?.delta?.stop_reason === 'max_tokens') answer.outcome = stopped ? 'incomplete' : answer.outcome;
  return answer;
}

const TERMINAL_EVENTS = new Set(['response.completed', 'response.incomplete', 'response.failed', 'response.cancelled']);

/**
 * A Responses API stream: typed events (`event: response.output_text.delta`, …), no `[DONE]`; the final
 * response.completed / .incomplete / .failed carries the response with its usage and the gateway's
 * `credits_used`. readGatewayStream parses the events and hands each one to `onChunk`; a mid-stream
 * `event: error` makes it throw a GatewayStreamError, as a chat stream's error event does.
 */
async function readResponsesStream(readGatewayStream, stream, handlers) {
  let text = '';
  /** The output item and content part the last text came from: a new part starts a new paragraph. */
  let lastPart = null;
  /** @type {Map<number, ToolCall>} function_call items by output_index */
  const calls = new Map();
  /** @type {{ type: string, response: any } | null} */
  let final = null;
  const callList = () => [...calls.values()].sort((a, b) => a.index - b.index).map((c) => ({ ...c, function: { ...c.function } }));
  const addText = (event) => {
    if (typeof event.delta !== 'string' || event.delta === '') return;
    const part = `${event.output_index ?? 0}:${event.content_index ?? 0}`;
    if (lastPart !== null && part !== lastPart && text !== '') text += '\n\n';
    lastPart = part;
    text += event.delta;
    handlers.onText(event.delta, text);
  };
  const callAt = (event) => calls.get(typeof event.output_index === 'number' ? event.output_index : -1);

  await readGatewayStream(stream, {
    onChunk(event) {
      switch (event.type) {
        case 'response.output_text.delta':
        case 'response.refusal.delta':
          addText(event);
          break;
        case 'response.output_item.added':
        case 'response.output_item.done': {
          const item = event.item;
          if (item?.type !== 'function_call' || typeof event.output_index !== 'number') break;
          const call = calls.get(event.output_index) ?? { index: event.output_index, type: 'function', function: { name: '', arguments: '' } };
          if (typeof item.call_id === 'string' && item.call_id) call.id = item.call_id;
          if (typeof item.name === 'string' && item.name) call.function.name = item.name;
          if (typeof item.arguments === 'string' && item.arguments.length >= call.function.arguments.length) call.function.arguments = item.arguments;
          calls.set(event.output_index, call);
          handlers.onToolCalls(callList());
          break;
        }
        case 'response.function_call_arguments.delta': {
          const call = callAt(event);
          if (!call || typeof event.delta !== 'string') break;
          call.function.arguments += event.delta;
          handlers.onToolCalls(callList());
          break;
        }
        case 'response.function_call_arguments.done': {
          const call = callAt(event);
          if (!call || typeof event.arguments !== 'string') break;
          call.function.arguments = event.arguments;
          handlers.onToolCalls(callList());
          break;
        }
        default:
          if (TERMINAL_EVENTS.has(event.type)) final = { type: event.type, response: event.response ?? {} };
      }
    },
  });

  const answer = /** @type {Answer} */ ({ text, calls: callList(), outcome: 'ended-early', summary: 'no final event' });
  if (!final) return answer;
  const response = final.response;
  if (typeof response.credits_used === 'number') answer.creditsUsed = response.credits_used;
  const status = typeof response.status === 'string' ? response.status : final.type.slice('response.'.length);
  if (final.type === 'response.completed') {
    answer.outcome = 'done';
    answer.summary = `status ${status}`;
  } else if (final.type === 'response.incomplete') {
    answer.outcome = 'incomplete';
    answer.summary = `incomplete: ${response.incomplete_details?.reason ?? 'no reason given'}`;
  } else {
    answer.outcome = 'failed';
    answer.summary = status;
    const error = response.error;
    answer.error = `The response ${status === 'cancelled' ? 'was cancelled' : 'failed'}: ${error?.message ?? 'no reason given'}${error?.code ? ` (${error.code})` : ''}`;
  }
  return answer;
}

async function send(event) {
  event.preventDefault();
  if (controller) return;
  const prompt = els.prompt.value;
  if (!prompt.trim()) {
    els.prompt.focus();
    return;
  }
  const { readGatewayStream, GatewayStreamError } = await reader;
  const userMessage = { role: 'user', content: prompt };
  const chat = chatId;
  const api = currentApi();
  const model = modelControl().value.trim();
  const messages = [...conversation, userMessage];
  // The conversation is kept as chat messages and sent whole each time in the chosen API's shape, so one
  // conversation can switch API between turns. Responses: stateless, no previous_response_id, nothing stored.
  const body =
    api === 'responses'
      ? { model, stream: true, store: false, input: toResponsesInput(messages), ...(els.tools.checked ? { tools: [RESPONSES_WEATHER_TOOL] } : {}) }
      : api === 'messages'
        ? { model, stream: true, max_tokens: MESSAGES_MAX_TOKENS, messages: toAnthropicMessages(messages), ...(els.tools.checked ? { tools: [MESSAGES_WEATHER_TOOL] } : {}) }
        : { model, stream: true, messages, ...(els.tools.checked ? { tools: [WEATHER_TOOL] } : {}) };
  clearAnswerStats();
  const view = startTurn(prompt, api);
  els.prompt.value = '';
  let generationId = null;

  controller = new AbortController();
  const signal = controller.signal;
  setBusy(true);
  view.output.classList.add('streaming');
  setStatus('streaming', 'waiting for the first token…');

  // Elapsed time, every 100 ms, until the answer ends.
  const started = performance.now();
  let firstAt = null;
  const tick = () => {
    const now = performance.now();
    els.elapsed.textContent = firstAt === null ? `${seconds(now - started)} waiting` : `${seconds(now - started)} · first token ${Math.round(firstAt - started)} ms`;
  };
  tick();
  const timer = setInterval(tick, 100);

  // The answer is re-rendered as Markdown at most once per animation frame.
  let text = '';
  let calls = [];
  let frame = 0;
  const render = () => {
    frame = 0;
    renderMarkdown(view.output, text);
  };
  const flush = () => {
    if (frame) cancelAnimationFrame(frame);
    render();
  };
  const first = () => {
    if (firstAt !== null) return;
    firstAt = performance.now();
    els.ttft.textContent = String(Math.round(firstAt - started));
    setStatus('streaming', 'streaming…');
  };
  /** Ends the turn: final render, the times, the conversation. `keep`: the turn stays in `conversation`. */
  const finish = (outcome, keep) => {
    clearInterval(timer);
    flush();
    view.output.classList.remove('streaming');
    view.turn.dataset.outcome = outcome;
    const total = Math.round(performance.now() - started);
    els.total.textContent = String(total);
    els.elapsed.textContent = firstAt === null ? `total ${seconds(total)}, no token` : `first token ${Math.round(firstAt - started)} ms · total ${seconds(total)}`;
    if (keep && chat === chatId) {
      conversation.push(userMessage);
      rememberAnswer(text, calls);
    }
  };

  try {
    await refreshBalance();
    const res = await fetch(APIS[api].path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...auth() },
      body: JSON.stringify(body),
      signal,
    });
    generationId = res.headers.get('X-Generation-Id');
    if (!res.ok) {
      finish('error', false);
      // Nothing was answered: take the turn back out and give the prompt back.
      view.turn.previousElementSibling?.remove();
      view.turn.remove();
      if (!els.prompt.value) els.prompt.value = prompt;
      showError(`HTTP ${res.status}: ${await httpErrorMessage(res)}`);
      setStatus('error', `error ${res.status}`);
      return;
    }
    /** @type {AnswerHandlers} */
    const handlers = {
      onText(_delta, whole) {
        first();
        text = whole;
        if (!frame) frame = requestAnimationFrame(render);
      },
      onToolCalls(toolCalls) {
        first();
        calls = toolCalls;
        renderToolCalls(view, toolCalls);
      },
    };
    const readStream = api === 'responses' ? readResponsesStream : api === 'messages' ? readMessagesStream : readChatStream;
    const answer = await readStream(readGatewayStream, res.body, handlers);
    text = answer.text ?? text;
    calls = answer.calls ?? calls;
    if (answer.outcome === 'failed') {
      // response.failed: what arrived stays, as after a mid-stream error
      finish('failed', true);
      view.meta.textContent = 'failed';
      showError(answer.error ?? 'The response failed.');
      setStatus('error', 'failed mid-stream');
      if (answer.creditsUsed !== undefined) showCredits(view, answer.creditsUsed);
      else await chargeAfterStop(generationId, 'Failed: charged for the tokens produced before the failure (read from GET /v1/generation).', view);
      await refreshBalance();
      return;
    }
    finish(answer.outcome === 'ended-early' ? 'ended-early' : 'done', true);
    if (answer.creditsUsed !== undefined) showCredits(view, answer.creditsUsed);
    else els.creditsNote.textContent = api === 'chat' ? 'The gateway sent no credits chunk for this answer.' : 'The final event carried no credits_used for this answer.';
    if (answer.outcome === 'done') setStatus('done', `done · ${answer.summary}`);
    else if (answer.outcome === 'incomplete') {
      view.meta.textContent = 'incomplete';
      setStatus('done', `done · ${answer.summary}`);
    } else {
      view.meta.textContent = 'incomplete';
      setStatus('error', 'ended early');
      showError(
        api === 'responses'
          ? 'The stream ended without response.completed: the answer may be incomplete.'
          : api === 'messages'
            ? 'The stream ended without message_stop: the answer may be incomplete.'
            : 'The stream ended without [DONE]: the answer may be incomplete.',
      );
    }
    await refreshBalance();
  } catch (err) {
    if (signal.aborted) {
      // What arrived stays in the transcript and in the conversation.
      finish('stopped', true);
      view.meta.textContent = 'stopped';
      setStatus('stopped', 'stopped');
      controller = null;
      setBusy(false);
      await chargeAfterStop(generationId, 'Stopped: charged only for the tokens produced before Stop (read from GET /v1/generation).', view);
      return;
    }
    finish('failed', true);
    view.meta.textContent = 'failed';
    if (err instanceof GatewayStreamError) {
      showError(`The stream failed mid-answer: ${err.message} (${err.code})`);
      setStatus('error', 'failed mid-stream');
      await chargeAfterStop(generationId, 'Failed mid-stream: charged for the tokens produced before the failure (read from GET /v1/generation).', view);
    } else {
      showError(`Request failed: ${err instanceof Error ? err.message : String(err)}`);
      setStatus('error', 'network error');
    }
  } finally {
    clearInterval(timer);
    controller = null;
    setBusy(false);
  }
}

function newChat() {
  controller?.abort();
  chatId++;
  conversation = [];
  els.transcript.replaceChildren();
  clearAnswerStats();
  setStatus('idle');
  els.prompt.focus();
}

els.form.addEventListener('submit', (e) => void send(e));
els.stop.addEventListener('click', () => controller?.abort());
els.newChat.addEventListener('click', newChat);
els.key.addEventListener('change', () => void keyChanged());
// Enter sends, Shift+Enter starts a new line, as in the chat apps people know (not while an IME composes a word)
els.prompt.addEventListener('keydown', (e) => {
  if (e.key !== 'Enter' || e.shiftKey || e.isComposing) return;
  e.preventDefault();
  els.form.requestSubmit();
});
void loadModels();
void refreshBalance();
