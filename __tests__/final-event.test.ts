import { addToResponse } from '../lib/surfaces/responses/final-event';

/** The Responses API's final event gets fields inside its `response` object without being re-serialised. */
describe('addToResponse', () => {
  const parse = (text: string) => JSON.parse(text) as { response?: Record<string, unknown>; [k: string]: unknown };

  test('adds the fields inside the top-level response object, after what the provider sent (so they win)', () => {
    const data = '{"type":"response.completed","sequence_number":9,"response":{"id":"resp_1","usage":null,"output":[{"content":[{"text":"a \\"response\\": {} } tricky"}]}]}}';
    const out = parse(addToResponse(data, { usage: { input_tokens: 1 }, credits_used: 0.5 }));
    expect(out.response).toMatchObject({ id: 'resp_1', usage: { input_tokens: 1 }, credits_used: 0.5 });
    expect(out.type).toBe('response.completed');
    expect(out.sequence_number).toBe(9);
  });

  test('a "response" key nested deeper, or inside a string, is not the one changed', () => {
    const data = '{"type":"x","meta":{"response":{"deep":true}},"note":"\\"response\\":{","response":{"id":"r"}}';
    const out = parse(addToResponse(data, { credits_used: 2 }));
    expect(out.response).toEqual({ id: 'r', credits_used: 2 });
    expect((out.meta as { response: object }).response).toEqual({ deep: true });
  });

  test('duplicate top-level response objects: the fields go into the last, the one JSON readers keep', () => {
    const data = '{"type":"response.completed","response":{"id":"a","credits_used":0},"response":{"id":"b","credits_used":0}}';
    expect(parse(addToResponse(data, { credits_used: 7 })).response).toEqual({ id: 'b', credits_used: 7 });
  });

  test('an empty response object, whitespace and escapes', () => {
    expect(parse(addToResponse('{ "response" : { } }', { credits_used: 1 })).response).toEqual({ credits_used: 1 });
    expect(parse(addToResponse('{"a":"\\\\","response":{"b":"\\\\\\""}}', { credits_used: 1 })).response).toEqual({ b: '\\"', credits_used: 1 });
  });

  test('without a response object the fields go at the top level; a response that is not an object is left alone', () => {
    expect(parse(addToResponse('{"type":"response.completed"}', { credits_used: 3 }))).toEqual({ type: 'response.completed', credits_used: 3 });
    expect(parse(addToResponse('{"response":"text","x":[1,{"response":{}}]}', { credits_used: 3 }))).toEqual({ response: 'text', x: [1, { response: {} }], credits_used: 3 });
  });

  test('deeply nested provider JSON is scanned, not parsed: linear and safe', () => {
    const deep = `${'['.repeat(50_000)}${']'.repeat(50_000)}`;
    const data = `{"type":"response.completed","response":{"output":${deep},"id":"r"}}`;
    const out = addToResponse(data, { credits_used: 1 });
    expect(out.endsWith(',"credits_used":1}}')).toBe(true);
  });
});

describe('the Responses surface refuses what it cannot meter or prove', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { responses } = require('../lib/surfaces/responses/responses') as typeof import('../lib/surfaces/responses/responses');
  test('conversation → 400 conversation_not_supported; background → 400 unless allowed', () => {
    expect(() => responses.validate({ model: 'm', input: 'hi', conversation: 'conv_1' }, { allowBackground: false })).toThrow(/conversation/);
    expect(() => responses.validate({ model: 'm', input: 'hi', background: true }, { allowBackground: false })).toThrow(/Background/);
    expect(responses.validate({ model: 'm', input: 'hi', background: true }, { allowBackground: true })).toEqual({ model: 'm', stream: false });
    expect(() => responses.validate({ model: 'm' }, { allowBackground: false })).toThrow(/input/);
  });
});
