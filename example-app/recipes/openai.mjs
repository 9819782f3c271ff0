// The official openai SDK (Node): stream a chat completion, then read the gateway's credits_used.
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: process.env.GATEWAY_URL, apiKey: process.env.GATEWAY_KEY });
const stream = await client.chat.completions.create({
  model: 'mock-1',
  messages: [{ role: 'user', content: 'Write a haiku about TCP' }],
  stream: true,
});
for await (const chunk of stream) {
  process.stdout.write(chunk.choices[0]?.delta?.content ?? '');
  // the gateway's usage chunk (second-to-last, `choices: []`) carries credits_used beside usage
  if ('credits_used' in chunk) console.log(`\ncredits_used: ${chunk.credits_used}`);
}
