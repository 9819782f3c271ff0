/**
 * Prompt and answer text in the shapes of the OpenTelemetry GenAI conventions (1.41.0: `gen_ai.input.messages`,
 * `gen_ai.output.messages`, `gen_ai.system_instructions`, each a JSON string on the span), from each API's own
 * request body. Only for `otelObserver({ captureContent })`: the text is the customer's. Every text is cut so
 * that each attribute holds at most `maxChars` characters of it.
 */

type Json = Record<string, unknown>;
/** One part of a message, as the conventions' JSON schemas have them. */
type Part =
  | { type: 'text'; content: string }
  | { type: 'tool_call'; id?: string; name?: string; arguments?: unknown }
  | { type: 'tool_call_response'; id?: string; response: unknown }
  | { type: string; [key: string]: unknown };
interface Message {
  role: string;
  parts: Part[];
  finish_reason?: string;
}

/** The messages and system instructions of a request, converted, each with its own budget of text characters. */
export interface ConvertedInput {
  messages: Message[];
  system: Part[];
}

/**
 * Cuts every text to what is left of a budget of characters. Each part costs at least one, so a request of
 * thousands of empty messages is converted no further than a long text would be: the work is bounded by the budget.
 */
class Budget {
  truncated = false;
  constructor(private left: number) {}
  /** True (and the conversion marked truncated) once the budget is spent: stop adding parts. */
  spent(): boolean {
    if (this.left > 0) return false;
    this.truncated = true;
    return true;
  }
  /** Charges a part with no text (an image, a file). */
  part(): void {
    this.left = Math.max(0, this.left - 1);
  }
  text(value: unknown): string {
    const text = typeof value === 'string' ? value : value === undefined || value === null ? '' : JSON.stringify(value);
    if (this.left > 0 && text.length <= this.left) {
      this.left -= Math.max(1, text.length);
      return text;
    }
    this.truncated = true;
    const cut = text.slice(0, Math.max(0, this.left));
    this.left = 0;
    return cut;
  }
}

const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value);
const str = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);

/** Parts of a content that is a string or an array of typed blocks (chat, Responses and Messages blocks alike). */
function partsOf(content: unknown, budget: Budget): Part[] {
  if (typeof content === 'string') return [{ type: 'text', content: budget.text(content) }];
  if (!Array.isArray(content)) return [];
  const parts: Part[] = [];
  for (const block of content as unknown[]) {
    if (budget.spent()) break;
    if (!isObject(block)) continue;
    const type = str(block.type) ?? 'text';
    if (typeof block.text === 'string') parts.push({ type: 'text', content: budget.text(block.text) });
    else if (type === 'tool_use') parts.push({ type: 'tool_call', id: str(block.id), name: str(block.name), arguments: budget.text(block.input) });
    else if (type === 'tool_result') parts.push({ type: 'tool_call_response', id: str(block.tool_use_id), response: budget.text(block.content) });
    // images, audio, files: their kind only, never their bytes or URLs
    else {
      budget.part();
      parts.push({ type: type.replace(/^input_/, '') });
    }
  }
  return parts;
}

/** Chat Completions: `messages`, tool calls and tool results included. */
function chatInput(body: Json, budget: Budget, _system: Budget): ConvertedInput {
  const messages: Message[] = [];
  for (const m of Array.isArray(body.messages) ? (body.messages as unknown[]) : []) {
    if (budget.spent()) break;
    if (!isObject(m)) continue;
    const role = str(m.role) ?? 'user';
    if (role === 'tool') {
      messages.push({ role, parts: [{ type: 'tool_call_response', id: str(m.tool_call_id), response: budget.text(m.content) }] });
      continue;
    }
    const parts = partsOf(m.content, budget);
    for (const call of Array.isArray(m.tool_calls) ? (m.tool_calls as unknown[]) : []) {
      if (!isObject(call)) continue;
      const fn = isObject(call.function) ? call.function : {};
      parts.push({ type: 'tool_call', id: str(call.id), name: str(fn.name), arguments: budget.text(fn.arguments) });
    }
    messages.push({ role, parts });
  }
  return { messages, system: [] };
}

/** The Responses API: `instructions` and `input` (a string or a list of items). */
function responsesInput(body: Json, budget: Budget, systemBudget: Budget): ConvertedInput {
  const system = typeof body.instructions === 'string' ? [{ type: 'text' as const, content: systemBudget.text(body.instructions) }] : [];
  const messages: Message[] = [];
  if (typeof body.input === 'string') messages.push({ role: 'user', parts: [{ type: 'text', content: budget.text(body.input) }] });
  for (const item of Array.isArray(body.input) ? (body.input as unknown[]) : []) {
    if (budget.spent()) break;
    if (!isObject(item)) continue;
    if (item.type === 'function_call') messages.push({ role: 'assistant', parts: [{ type: 'tool_call', id: str(item.call_id), name: str(item.name), arguments: budget.text(item.arguments) }] });
    else if (item.type === 'function_call_output') messages.push({ role: 'tool', parts: [{ type: 'tool_call_response', id: str(item.call_id), response: budget.text(item.output) }] });
    else if (item.role !== undefined) messages.push({ role: str(item.role) ?? 'user', parts: partsOf(item.content, budget) });
  }
  return { messages, system };
}

/** The Messages API: `system` and `messages` of content blocks. */
function messagesInput(body: Json, budget: Budget, systemBudget: Budget): ConvertedInput {
  const system = partsOf(body.system, systemBudget);
  const messages: Message[] = [];
  for (const m of Array.isArray(body.messages) ? (body.messages as unknown[]) : []) {
    if (budget.spent()) break;
    if (!isObject(m)) continue;
    messages.push({ role: str(m.role) ?? 'user', parts: partsOf(m.content, budget) });
  }
  return { messages, system };
}

/** Legacy completions: the `prompt` (a string or a list of them) as one user message each. */
function completionsInput(body: Json, budget: Budget): ConvertedInput {
  const messages: Message[] = [];
  for (const prompt of Array.isArray(body.prompt) ? (body.prompt as unknown[]) : [body.prompt]) {
    if (budget.spent()) break;
    if (typeof prompt === 'string') messages.push({ role: 'user', parts: [{ type: 'text', content: budget.text(prompt) }] });
  }
  return { messages, system: [] };
}

const BY_ROUTE: Record<string, (body: Json, budget: Budget, system: Budget) => ConvertedInput> = {
  '/chat/completions': chatInput,
  '/responses': responsesInput,
  '/messages': messagesInput,
  '/completions': completionsInput,
};

/**
 * The span attributes for a generation's prompt and answer: `gen_ai.input.messages`, `gen_ai.system_instructions`
 * (when the API has them apart), `gen_ai.output.messages` (each choice's text, with its finish reason), and
 * `infery.content_truncated` when a text was cut. Embeddings carry no messages.
 */
export function contentAttributes(route: string, request: Readonly<Json>, output: readonly string[], finishReason: string | null, truncated: boolean, maxChars: number): Record<string, string | boolean> {
  const convert = BY_ROUTE[route];
  if (!convert) return {};
  const inputBudget = new Budget(maxChars);
  const systemBudget = new Budget(maxChars);
  const input = convert(request as Json, inputBudget, systemBudget);
  const outputBudget = new Budget(maxChars);
  const answers: Message[] = output.map((text) => ({
    role: 'assistant',
    parts: text === '' ? [] : [{ type: 'text', content: outputBudget.text(text) }],
    ...(finishReason !== null ? { finish_reason: finishReason } : {}),
  }));
  const out: Record<string, string | boolean> = { 'gen_ai.input.messages': JSON.stringify(input.messages) };
  if (input.system.length > 0) out['gen_ai.system_instructions'] = JSON.stringify(input.system);
  if (answers.length > 0) out['gen_ai.output.messages'] = JSON.stringify(answers);
  if (truncated || inputBudget.truncated || systemBudget.truncated || outputBudget.truncated) out['infery.content_truncated'] = true;
  return out;
}
