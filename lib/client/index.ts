/**
 * `infery-stream/client`: what a browser or any fetch-based client needs to read a gateway stream, with no Node
 * import anywhere below it, so it bundles for browsers as it is.
 */
export { readGatewayStream, GatewayStreamError } from './stream-reader';
export type { GatewayStreamResult, GatewayStreamHandlers, GatewayUsage, ToolCall } from './stream-reader';
