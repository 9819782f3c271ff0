// The chat page: a multi-turn conversation streamed from POST /v1/chat/completions and read with
// readGatewayStream (lib/stream-reader.ts, served as /stream-reader.js from its browser build). The assistant's
// Markdown is rendered with marked and sanitised with DOMPurify (served from node_modules as /vendor/*.js).
// No framework.

import { marked } from '/vendor/marked.js';
import DOMPurify from '/vendor/purify.js';

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const els = {
  form: $('form'), key: $('key'), modelSlot: $('model-slot'), prompt: $('prompt'), tools: $('tools'), send: $('send'), stop: $('stop'),
  newChat: $('new-chat'), transcript: $('transcript'), credits: $('credits'), creditsNote: $('credits-note'), ttft: $('ttft'),
  total: $('total'), balance: $('balance'), used: $('used'), error: $('error'), status: $('status'), elapsed: $('elapsed'),
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

// ---- State ------------------------------------------------------------------------------------------------

/** The conversation sent as `messages`: earlier user and assistant turns. */
let conversation = [];
/** Bumped by "New chat", so an answer still ending does not write into the new conversation. */
let chatId = 0;
/** @type {AbortController | null} */
let controller = null;
/** @type {Promise<typeof import('../../lib/stream-reader')> } */
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

/** GET /v1/models (with the key) into the select; a text field when the call fails. */
async function loadModels() {
  const previous = modelControl().value || wantedModel || '';
  let ids = null;
  if (currentKey()) {
    try {
      const res = await fetch('/v1/models', { headers: auth(), cache: 'no-store' });
      if (res.ok) {
        const body = await res.json();
        ids = Array.isArray(body?.data) ? body.data.map((m) => m?.id).filter((id) => typeof id === 'string' && id) : null;
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

/** Appends the user's turn and an empty assistant turn; the latter's parts carry the ids #output and #toolcalls. */
function startTurn(prompt) {
  for (const id of ['output', 'toolcalls']) document.getElementById(id)?.removeAttribute('id');
  turnElement('user', 'You').content.textContent = prompt;
  const { turn, head, content } = turnElement('assistant', 'Assistant');
  const meta = document.createElement('span');
  meta.className = 'meta';
  head.append(meta);
  content.id = 'output';
  const toolcalls = document.createElement('div');
  toolcalls.className = 'toolcalls';
  toolcalls.id = 'toolcalls';
  turn.append(toolcalls);
  turn.scrollIntoView({ block: 'nearest' });
  return { turn, meta, output: content, toolcalls };
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
async function chargeAfterStop(generationId, note) {
  for (let i = 0; i < 20 && generationId; i++) {
    await new Promise((r) => setTimeout(r, 150));
    const res = await fetch(`/v1/generation?id=${encodeURIComponent(generationId)}`, { headers: auth(), cache: 'no-store' });
    if (res.ok) {
      const { data } = await res.json();
      // the balance first, so the charge and the balance appear together (the record exists: it is settled)
      await refreshBalance();
      els.credits.textContent = String(round(data.credits_used));
      els.creditsNote.textContent = note;
      return;
    }
  }
  await refreshBalance();
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
  const body = {
    model: modelControl().value.trim(),
    stream: true,
    messages: [...conversation, userMessage],
    ...(els.tools.checked ? { tools: [WEATHER_TOOL] } : {}),
  };
  clearAnswerStats();
  const view = startTurn(prompt);
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
    const res = await fetch('/v1/chat/completions', {
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
    const result = await readGatewayStream(res.body, {
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
    });
    text = result.text ?? text;
    calls = result.toolCalls ?? calls;
    finish(result.done ? 'done' : 'ended-early', true);
    if (result.creditsUsed !== undefined) els.credits.textContent = String(result.creditsUsed);
    else els.creditsNote.textContent = 'The gateway sent no credits chunk for this answer.';
    if (result.done) setStatus('done', `done · finish_reason ${result.finishReason ?? 'none'}`);
    else {
      view.meta.textContent = 'incomplete';
      setStatus('error', 'ended early');
      showError('The stream ended without [DONE]: the answer may be incomplete.');
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
      await chargeAfterStop(generationId, 'Stopped: charged only for the tokens produced before Stop (read from GET /v1/generation).');
      return;
    }
    finish('failed', true);
    view.meta.textContent = 'failed';
    if (err instanceof GatewayStreamError) {
      showError(`The stream failed mid-answer: ${err.message} (${err.code})`);
      setStatus('error', 'failed mid-stream');
      await chargeAfterStop(generationId, 'Failed mid-stream: charged for the tokens produced before the failure (read from GET /v1/generation).');
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
els.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.metaKey || e.ctrlKey)) els.form.requestSubmit();
});
void loadModels();
void refreshBalance();
