// The chat page: POSTs a streaming chat completion and reads it with readGatewayStream (lib/stream-reader.ts,
// served as /stream-reader.js from its browser build). No framework.

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const els = {
  form: $('form'), key: $('key'), model: $('model'), prompt: $('prompt'), tools: $('tools'), send: $('send'), stop: $('stop'),
  output: $('output'), toolcalls: $('toolcalls'), credits: $('credits'), creditsNote: $('credits-note'), ttft: $('ttft'),
  balance: $('balance'), used: $('used'), error: $('error'), status: $('status'),
};

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

const params = new URLSearchParams(location.search);
els.key.value = params.get('key') ?? '';
if (params.get('model')) els.model.value = params.get('model');

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

/** GET /v1/credits → { balance, used }, shown in the stats; null when the key is refused. */
async function refreshBalance() {
  const key = els.key.value.trim();
  if (!key) return null;
  try {
    const res = await fetch('/v1/credits', { headers: { Authorization: `Bearer ${key}` }, cache: 'no-store' });
    if (!res.ok) return null;
    const { data } = await res.json();
    els.balance.textContent = String(round(data.balance));
    els.used.textContent = String(round(data.used));
    return data;
  } catch {
    return null;
  }
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

function renderToolCalls(calls) {
  // an answer made only of tool calls: no "answer streams here" placeholder
  els.output.classList.toggle('tools-only', els.output.textContent === '');
  els.toolcalls.replaceChildren(
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

function setBusy(busy) {
  els.send.disabled = busy;
  els.stop.disabled = !busy;
  els.output.classList.toggle('streaming', busy);
}

/**
 * After a Stop (or a mid-stream failure) the gateway settles what was produced a moment later: poll
 * GET /v1/generation?id=<X-Generation-Id> until this generation's record is there, and show its charge.
 */
async function chargeAfterStop(generationId, note) {
  const key = els.key.value.trim();
  for (let i = 0; i < 20 && generationId; i++) {
    await new Promise((r) => setTimeout(r, 150));
    const res = await fetch(`/v1/generation?id=${encodeURIComponent(generationId)}`, { headers: { Authorization: `Bearer ${key}` }, cache: 'no-store' });
    if (res.ok) {
      const { data } = await res.json();
      els.credits.textContent = String(round(data.credits_used));
      els.creditsNote.textContent = note;
      break;
    }
  }
  await refreshBalance();
}

async function send(event) {
  event.preventDefault();
  if (controller) return;
  const { readGatewayStream, GatewayStreamError } = await reader;
  const key = els.key.value.trim();
  const body = {
    model: els.model.value.trim() || 'mock-1',
    stream: true,
    messages: [{ role: 'user', content: els.prompt.value }],
    ...(els.tools.checked ? { tools: [WEATHER_TOOL] } : {}),
  };
  for (const el of [els.output, els.toolcalls, els.error, els.credits, els.ttft, els.creditsNote]) el.textContent = '';
  els.output.classList.remove('tools-only');
  await refreshBalance();
  let generationId = null;

  controller = new AbortController();
  const signal = controller.signal;
  setBusy(true);
  setStatus('streaming', 'waiting for the first token…');
  const started = performance.now();
  let firstAt = null;
  const first = () => {
    if (firstAt !== null) return;
    firstAt = performance.now();
    els.ttft.textContent = String(Math.round(firstAt - started));
    setStatus('streaming', 'streaming…');
  };
  try {
    const res = await fetch('/v1/chat/completions', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${key}` },
      body: JSON.stringify(body),
      signal,
    });
    generationId = res.headers.get('X-Generation-Id');
    if (!res.ok) {
      showError(`HTTP ${res.status}: ${await httpErrorMessage(res)}`);
      setStatus('error', `error ${res.status}`);
      return;
    }
    const result = await readGatewayStream(res.body, {
      onText(_delta, text) {
        first();
        els.output.textContent = text;
      },
      onToolCalls(calls) {
        first();
        renderToolCalls(calls);
      },
    });
    if (result.creditsUsed !== undefined) els.credits.textContent = String(result.creditsUsed);
    else els.creditsNote.textContent = 'The gateway sent no credits chunk for this answer.';
    if (result.done) setStatus('done', `done · finish_reason ${result.finishReason ?? 'none'}`);
    else {
      setStatus('error', 'ended early');
      showError('The stream ended without [DONE]: the answer may be incomplete.');
    }
    await refreshBalance();
  } catch (err) {
    if (signal.aborted) {
      setStatus('stopped', 'stopped');
      controller = null;
      setBusy(false);
      await chargeAfterStop(generationId, 'Stopped: charged only for the tokens produced before Stop (read from GET /v1/generation).');
      return;
    }
    if (err instanceof GatewayStreamError) {
      showError(`The stream failed mid-answer: ${err.message} (${err.code})`);
      setStatus('error', 'failed mid-stream');
      await chargeAfterStop(generationId, 'Failed mid-stream: charged for the tokens produced before the failure (read from GET /v1/generation).');
    } else {
      showError(`Request failed: ${err instanceof Error ? err.message : String(err)}`);
      setStatus('error', 'network error');
    }
  } finally {
    controller = null;
    setBusy(false);
  }
}

els.form.addEventListener('submit', (e) => void send(e));
els.stop.addEventListener('click', () => controller?.abort());
els.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.metaKey || e.ctrlKey)) els.form.requestSubmit();
});
void refreshBalance();
