/**
 * `gen_ai.provider.name` (OpenTelemetry GenAI conventions) from an upstream's host: the well-known values for the
 * providers whose API hosts are known, else the dialect the upstream speaks (`openai` for any OpenAI-compatible
 * server, `anthropic`).
 */
const BY_HOST: ReadonlyArray<readonly [RegExp, string]> = [
  [/(^|\.)api\.openai\.com$/, 'openai'],
  [/\.openai\.azure\.com$/, 'azure.ai.openai'],
  [/(\.services\.ai\.azure\.com|\.inference\.ai\.azure\.com|\.models\.ai\.azure\.com)$/, 'azure.ai.inference'],
  [/(^|\.)api\.anthropic\.com$/, 'anthropic'],
  [/^bedrock-runtime(-fips)?\.[a-z0-9-]+\.amazonaws\.com$/, 'aws.bedrock'],
  [/^generativelanguage\.googleapis\.com$/, 'gcp.gemini'],
  [/(^|-)aiplatform\.googleapis\.com$/, 'gcp.vertex_ai'],
  [/(^|\.)api\.groq\.com$/, 'groq'],
  [/(^|\.)api\.mistral\.ai$/, 'mistral_ai'],
  [/(^|\.)api\.deepseek\.com$/, 'deepseek'],
  [/(^|\.)api\.x\.ai$/, 'x_ai'],
  [/(^|\.)api\.perplexity\.ai$/, 'perplexity'],
  [/(^|\.)api\.cohere\.(com|ai)$/, 'cohere'],
  [/(^|\.)ml\.cloud\.ibm\.com$/, 'ibm.watsonx.ai'],
];

/** The provider name for an upstream at `host` speaking `api`. */
export function providerNameOf(host: string, api: 'openai' | 'anthropic'): string {
  const lower = host.toLowerCase();
  for (const [pattern, name] of BY_HOST) if (pattern.test(lower)) return name;
  return api;
}
