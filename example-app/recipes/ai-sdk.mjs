// The Vercel AI SDK: streamText through the gateway; credits_used arrives as a raw chunk.
import { createOpenAI } from '@ai-sdk/openai';
import { streamText } from 'ai';

const gateway = createOpenAI({ baseURL: process.env.GATEWAY_URL, apiKey: process.env.GATEWAY_KEY });
const result = streamText({
  model: gateway.chat('mock-1'), // or gateway.responses('mock-1'): credits_used is then in rawValue.response
  prompt: 'Write a haiku about TCP',
  include: { rawChunks: true },
  onError: ({ error }) => console.error(`\nthe stream failed: ${error.message}`), // a mid-stream failure too
});
for await (const part of result.stream) {
  if (part.type === 'text-delta') process.stdout.write(part.text);
  if (part.type === 'raw' && part.rawValue?.credits_used !== undefined) console.log(`\ncredits_used: ${part.rawValue.credits_used}`);
}
