// LangChain's ChatOpenAI: stream with usage; credits_used from a whole (invoke) answer's raw response.
import { ChatOpenAI } from '@langchain/openai';

const llm = new ChatOpenAI({
  model: 'mock-1',
  apiKey: process.env.GATEWAY_KEY,
  configuration: { baseURL: process.env.GATEWAY_URL },
  streamUsage: true, // the gateway always reports usage: usage_metadata on the last chunk
  __includeRawResponse: true, // keeps the gateway's JSON in additional_kwargs.__raw_response
});
for await (const chunk of await llm.stream('Write a haiku about TCP')) {
  process.stdout.write(chunk.content);
  if (chunk.usage_metadata) console.log(`\ntokens: ${chunk.usage_metadata.total_tokens}`);
}
// ChatOpenAI drops stream chunks without choices, the gateway's credits chunk among them; a whole answer has it
const answer = await llm.invoke('Write a haiku about TCP');
console.log(`credits_used: ${answer.additional_kwargs.__raw_response.credits_used}`);
