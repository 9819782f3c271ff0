import { type IncomingMessage, type ServerResponse } from 'node:http';
import { ANSWER_MS, FIRST_TOKEN_MS, Json, MAX_CHOICES, MAX_INPUTS, MISBEHAVE_AT, MockHttpError, answerLater, isObject, newId, nowSeconds, optionalBoolean, optionalInteger, readObject, requireModel, sendRateLimited, textInputs } from './http';
import { answerWords, gap } from './words';

/** `POST /v1/completions` (legacy): `max_tokens` 16 by default, `n`, `echo`, usage with `stream_options.include_usage`. */

export async function handleCompletions(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const body = await readObject(req);
  const model = requireModel(body);
  const prompts = textInputs(body.prompt, 'prompt');
  const maxTokens = optionalInteger(body, 'max_tokens', 0, 1_000_000) ?? 16;
  const n = optionalInteger(body, 'n', 1, MAX_CHOICES) ?? 1;
  const stream = optionalBoolean(body, 'stream') ?? false;
  const echo = optionalBoolean(body, 'echo') ?? false;
  if (body.stream_options !== undefined && body.stream_options !== null && !isObject(body.stream_options)) {
    throw new MockHttpError(400, "Invalid type for 'stream_options': expected an object.", 'stream_options', 'invalid_type');
  }
  if (prompts.length * n > MAX_INPUTS) throw new MockHttpError(400, `Invalid 'n': at most ${MAX_INPUTS} choices in all.`, 'n', 'invalid_value');
  if (model === 'mock-429') return sendRateLimited(res, model);

  const choices = prompts.flatMap((prompt, p) =>
    Array.from({ length: n }, (_, j) => {
      const words = answerWords(prompt.text);
      const kept = words.slice(0, maxTokens);
      return { index: p * n + j, echo: echo ? prompt.text : '', words: kept, finish_reason: kept.length < words.length ? 'length' : 'stop' };
    }),
  );
  const promptTokens = prompts.reduce((sum, prompt) => sum + prompt.tokens, 0);
  const completionTokens = choices.reduce((sum, choice) => sum + choice.words.length, 0);
  const usage = { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
  const base = { id: newId('cmpl-mock', 12), object: 'text_completion', created: nowSeconds(), model, system_fingerprint: 'fp_mock' };

  if (!stream) {
    answerLater(res, model, ANSWER_MS, () => ({
      status: 200,
      body: {
        ...base,
        choices: choices.map((choice) => ({ text: choice.echo + choice.words.map((word) => ` ${word}`).join(''), index: choice.index, logprobs: null, finish_reason: choice.finish_reason })),
        ...(model === 'mock-no-usage' ? {} : { usage }),
      },
    }));
    return;
  }

  const includeUsage = isObject(body.stream_options) && body.stream_options.include_usage === true && model !== 'mock-no-usage';
  // word k of every choice, then word k+1 of every choice (as OpenAI interleaves n > 1)
  const pieces: Array<{ index: number; text: string }> = [];
  for (const choice of choices) if (choice.echo) pieces.push({ index: choice.index, text: choice.echo });
  const longest = Math.max(0, ...choices.map((choice) => choice.words.length));
  for (let k = 0; k < longest; k++) for (const choice of choices) if (k < choice.words.length) pieces.push({ index: choice.index, text: ` ${choice.words[k]}` });
  const chunk = (choice: Json): Json => ({ ...base, choices: [choice], ...(includeUsage ? { usage: null } : {}) });

  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.write(': mock provider keep-alive\n\n');
  const send = (obj: unknown): boolean => res.write(`data: ${JSON.stringify(obj)}\n\n`);
  let i = 0;
  let timer: NodeJS.Timeout | undefined;
  const step = (): void => {
    if (i < pieces.length) {
      if (i === MISBEHAVE_AT) {
        if (model === 'mock-error') {
          res.destroy();
          return;
        }
        if (model === 'mock-stall') return;
        if (model === 'mock-garbage') res.write('data: {"choices": [{"text": "oops\n\n');
      }
      const piece = pieces[i]!;
      send(chunk({ text: piece.text, index: piece.index, logprobs: null, finish_reason: null }));
      timer = setTimeout(step, gap(i++, model === 'mock-slow'));
      return;
    }
    for (const choice of choices) send(chunk({ text: '', index: choice.index, logprobs: null, finish_reason: choice.finish_reason }));
    if (includeUsage) send({ ...base, choices: [], usage });
    res.end('data: [DONE]\n\n');
  };
  timer = setTimeout(step, FIRST_TOKEN_MS);
  res.on('close', () => clearTimeout(timer));
  req.on('error', () => clearTimeout(timer));
}

