// A Next.js route handler (app/api/chat/route.js) that streams through the gateway to the browser's useChat,
// with credits_used in the message's metadata when the answer ends.
import { createOpenAI } from '@ai-sdk/openai';
import { convertToModelMessages, streamText } from 'ai';

const gateway = createOpenAI({ baseURL: process.env.GATEWAY_URL, apiKey: process.env.GATEWAY_KEY });

export async function POST(req) {
  const { messages } = await req.json();
  let creditsUsed;
  const result = streamText({
    model: gateway.chat('mock-1'),
    messages: await convertToModelMessages(messages),
    include: { rawChunks: true },
    abortSignal: req.signal, // the browser leaves: the gateway cancels the upstream and meters what was produced
    onChunk: ({ chunk }) => {
      if (chunk.type === 'raw' && chunk.rawValue?.credits_used !== undefined) creditsUsed = chunk.rawValue.credits_used;
    },
  });
  return result.toUIMessageStreamResponse({
    messageMetadata: ({ part }) => (part.type === 'finish' ? { credits_used: creditsUsed } : undefined),
  });
}
