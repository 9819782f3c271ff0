import type { ServerResponse } from 'node:http';

/**
 * Sends a streaming response's headers at once, with what keeps every layer from holding events back:
 * `Cache-Control: no-transform` for compression() and well-behaved proxies, `X-Accel-Buffering: no` for nginx
 * (see FINDINGS.md), no `Content-Length`, and no Nagle delay on the socket. Used by the chat relays and the
 * pass-through of event streams.
 */
export function sendUnbufferedHead(res: ServerResponse): void {
  setUnbufferedHeaders(res);
  res.flushHeaders();
}

/**
 * {@link sendUnbufferedHead} without sending: the headers go out with the first write, in the same socket
 * write (the stream relay flushes them by themselves only when no event came in the same turn of the loop).
 */
export function setUnbufferedHeaders(res: ServerResponse): void {
  res.removeHeader('Content-Length');
  res.setHeader('Cache-Control', 'no-cache, no-transform');
  res.setHeader('X-Accel-Buffering', 'no');
  res.socket?.setNoDelay(true);
}
