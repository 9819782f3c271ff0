import type { ServerResponse } from 'node:http';

/**
 * Sends a streaming response's headers at once, with what keeps every layer from holding events back:
 * `Cache-Control: no-transform` for compression() and well-behaved proxies, `X-Accel-Buffering: no` for nginx
 * (see FINDINGS.md), no `Content-Length`, and no Nagle delay on the socket. Used by the chat relays and the
 * pass-through of event streams.
 */
export function sendUnbufferedHead(res: ServerResponse): void {
  res.removeHeader('Content-Length');
  res.setHeader('Cache-Control', 'no-cache, no-transform');
  res.setHeader('X-Accel-Buffering', 'no');
  res.flushHeaders();
  res.socket?.setNoDelay(true);
}
