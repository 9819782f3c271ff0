import { type IncomingMessage, type ServerResponse } from 'node:http';
import { answerFor, completionId, gap, promptTokens, toolCallFor } from './words';

/** `POST /v1/chat/completions`: the streamed chunks (usage only with `stream_options.include_usage`) and the JSON completion. */

export function streamCompletion(req: IncomingMessage, res: ServerResponse, body: Record<string, unknown>, model: string): void {
  const id = completionId();
  const created = Math.floor(Date.now() / 1000);
  const base = { id, object: 'chat.completion.chunk', created, model, system_fingerprint: 'fp_mock' };
  const includeUsage = (body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true && model !== 'mock-no-usage';
  const tool = toolCallFor(body);
  const pieces: Array<Record<string, unknown>> = [];
  pieces.push({ role: 'assistant', content: '' });
  let completionTokens = 0;
  if (tool) {
    pieces.push({ tool_calls: [{ index: 0, id: 'call_mock0', type: 'function', function: { name: tool.name, arguments: '' } }] });
    for (let i = 0; i < tool.args.length; i += 6) {
      pieces.push({ tool_calls: [{ index: 0, function: { arguments: tool.args.slice(i, i + 6) } }] });
      completionTokens += 1;
    }
  } else {
    const words = answerFor(body).split(' ');
    words.forEach((word, i) => pieces.push({ content: i === 0 ? word : ` ${word}` }));
    completionTokens = words.length;
  }
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.write(': mock provider keep-alive\n\n');
  let i = 0;
  let timer: NodeJS.Timeout | undefined;
  const send = (obj: unknown): boolean => res.write(`data: ${JSON.stringify(obj)}\n\n`);
  const step = (): void => {
    if (i < pieces.length) {
      if (model === 'mock-error' && i === 4) {
        res.destroy();
        return;
      }
      if (model === 'mock-garbage' && i === 4) res.write('data: {"choices": [{"delta": {"content": "oops\n\n');
      if (model === 'mock-stall' && i === 4) return;
      send({ ...base, choices: [{ index: 0, delta: pieces[i], logprobs: null, finish_reason: null }], ...(includeUsage ? { usage: null } : {}) });
      timer = setTimeout(step, gap(i++, model === 'mock-slow'));
      return;
    }
    send({ ...base, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: tool ? 'tool_calls' : 'stop' }], ...(includeUsage ? { usage: null } : {}) });
    if (includeUsage) {
      const prompt = promptTokens(body);
      send({ ...base, choices: [], usage: { prompt_tokens: prompt, completion_tokens: completionTokens, total_tokens: prompt + completionTokens } });
    }
    res.end('data: [DONE]\n\n');
  };
  timer = setTimeout(step, 150); // time to first token
  res.on('close', () => clearTimeout(timer));
  req.on('error', () => clearTimeout(timer));
}

export function completion(body: Record<string, unknown>, model: string): Record<string, unknown> {
  const tool = toolCallFor(body);
  const text = tool ? null : answerFor(body);
  const prompt = promptTokens(body);
  const completionTokens = tool ? Math.ceil(tool.args.length / 6) : (text ?? '').split(' ').length;
  return {
    id: completionId(),
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [
      {
        index: 0,
        message: tool
          ? { role: 'assistant', content: null, tool_calls: [{ id: 'call_mock0', type: 'function', function: { name: tool.name, arguments: tool.args } }] }
          : { role: 'assistant', content: text },
        finish_reason: tool ? 'tool_calls' : 'stop',
      },
    ],
    ...(model === 'mock-no-usage' ? {} : { usage: { prompt_tokens: prompt, completion_tokens: completionTokens, total_tokens: prompt + completionTokens } }),
  };
}

