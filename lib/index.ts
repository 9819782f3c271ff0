export { inferyStream } from './middleware';
export type { InferyStreamMiddleware, GatewayHandler, GatewayErrorHandler, GatewayRequest, NextFunction } from './middleware';
export type { Options, UpstreamOptions, PreflightContext, Logger } from './options';
export { InferyOptionsError } from './options';
export type { MeterEvent } from './metering';
export type { Usage } from './usage';
export { InferyError } from './errors';
export type { OpenAIErrorBody } from './errors';
export { bearerToken } from './auth';
