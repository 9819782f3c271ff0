import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { createParser, type EventSourceMessage, type EventSourceParser } from 'eventsource-parser';
import { InferyError } from '../base/errors';
import type { Generation } from '../core/generation';
import type { ResolvedOptions } from '../options/resolved';
import type { UpstreamCall } from '../services/upstream/upstream';
import { carriesKey, redact } from '../services/upstream/upstream-headers';
import type { StreamDialect } from './surface';
import { sendUnbufferedHead, setUnbufferedHeaders } from './unbuffered-head';

const HEARTBEAT = ': keep-alive\n\n';
/** How long a finished upstream response may take to end before its socket is dropped instead of reused. */
const RELEASE_GRACE_MS = 2_000;

/** Where the last blank line (an SSE event boundary) in `text` ends, or -1. */
function lastBoundaryEnd(text: string): number {
  let end = -1;
  for (const sep of ['\n\n', '\n\r\n', '\r\r']) {
    const at = text.lastIndexOf(sep);
    if (at !== -1) end = Math.max(end, at + sep.length);
  }
  return end;
}

/** Sets and sends the SSE headers that keep compression(), nginx and other proxies from holding events back. */
export function writeStreamHead(res: ServerResponse): void {
  setStreamHead(res);
  res.flushHeaders();
}

/** {@link writeStreamHead} without sending: the headers leave with the first write. */
function setStreamHead(res: ServerResponse): void {
  res.statusCode = 200;
  res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
  setUnbufferedHeaders(res);
}

/**
 * Relays one upstream SSE stream to the client, event by event, for any API: its {@link StreamDialect} reads
 * each event and writes the API's own ending and error events. The relay owns every way a stream can end: the
 * provider's end (meter, then the closing: credits and terminator), client gone (abort upstream, meter as
 * cancelled), upstream error, idle timeout or bad event (error event, abort upstream, meter what was produced).
 * Each path goes through `detach()`, which removes every listener and timer the relay added.
 */
export class StreamRelay<Account> {
  /**
   * `streaming`: relaying. `draining`: the client left after every choice finished; reading on (bounded by
   * `usageGraceTimeout`) for the provider's usage, writing nothing. `finishing`/`done`: settled or settling.
   */
  private state: 'streaming' | 'draining' | 'finishing' | 'done' = 'streaming';
  private paused = false;
  private pausedAt = 0;
  private readonly startedAt = Date.now();
  private lastUpstreamAt = Date.now();
  private lastWriteAt = Date.now();
  /** Characters received since the last event boundary (a blank line), to bound one upstream event. */
  private eventChars = 0;
  private endedWithNewline = false;
  private timer: NodeJS.Timeout | undefined;
  /** Sends the headers alone when no event came in the turn of the loop the upstream answered in. */
  private headTimer: NodeJS.Immediate | undefined;
  /**
   * Events of the upstream read being parsed, written together when it is parsed: one socket write per upstream
   * read, never more than one per event, and nothing held past the read (or, when the read ends the stream,
   * past the meter: then they go out with the closing).
   */
  private batch: string | undefined;
  private readonly parser: EventSourceParser;

  constructor(
    private readonly gen: Generation<Account>,
    private readonly upstream: Readable,
    private readonly call: Pick<UpstreamCall, 'abort'>,
    private readonly res: ServerResponse,
    private readonly opts: ResolvedOptions<Account>,
    private readonly dialect: StreamDialect,
  ) {
    this.parser = createParser({ onEvent: this.onEvent });
  }

  /**
   * Sets the headers and starts relaying. The headers go out with the first event, in one socket write, or by
   * themselves at the end of this turn of the event loop when no event came in it.
   */
  start(): void {
    setStreamHead(this.res);
    this.headTimer = setImmediate(this.flushHead);
    this.upstream.setEncoding('utf8');
    this.upstream.on('data', this.onData);
    this.upstream.on('end', this.onUpstreamEnd);
    this.upstream.on('close', this.onUpstreamClose);
    this.upstream.on('error', this.onUpstreamClose);
    this.res.on('close', this.onClientClose);
    this.arm();
  }

  /** Feeds the parser; an event that grows past `maxEventBytes` ends the stream before it is buffered further. */
  private readonly onData = (text: string): void => {
    const boundary = lastBoundaryEnd(text);
    if (boundary !== -1) this.eventChars = text.length - boundary;
    else if (this.endedWithNewline && (text.startsWith('\n') || text.startsWith('\r'))) this.eventChars = text.length - 1;
    else this.eventChars += text.length;
    this.endedWithNewline = text.endsWith('\n') || text.endsWith('\r');
    if (this.eventChars > this.opts.maxEventBytes) {
      this.fail(
        new InferyError(502, 'upstream_event_too_large', `The upstream provider sent a stream event larger than ${this.opts.maxEventBytes} bytes.`, {
          type: 'upstream_error',
        }),
      );
      return;
    }
    this.batch = '';
    this.parser.feed(text);
    const batch = this.batch;
    this.batch = undefined;
    if (batch) this.write(batch, this.lastUpstreamAt);
  };

  private readonly flushHead = (): void => {
    this.headTimer = undefined;
    if (!this.res.headersSent && !this.res.destroyed) this.res.flushHeaders();
  };

  /** What the current upstream read relayed so far, no longer to be written by it. */
  private takeBatch(): string {
    const batch = this.batch ?? '';
    if (this.batch !== undefined) this.batch = '';
    return batch;
  }

  private readonly onEvent = (event: EventSourceMessage): void => {
    if (this.state !== 'streaming' && this.state !== 'draining') return;
    // only data events are upstream activity: comments, partial events and keep-alive events do not keep a stream alive
    const lastActivity = this.lastUpstreamAt;
    this.lastUpstreamAt = Date.now();
    // a provider that echoes the gateway's key in an event never gets it to the client
    const key = this.gen.upstreamKey;
    const data = carriesKey(event.data, key) ? redact(event.data, key) : event.data;
    const step = this.dialect.read(this.gen as Generation<unknown>, event, data);
    switch (step.kind) {
      case 'done':
        void this.complete('completed');
        return;
      case 'final':
        void this.complete(step.outcome, step.error);
        return;
      case 'fail':
        this.fail(step.error);
        return;
      case 'relay':
        if (this.state === 'draining') {
          // the client is gone: the usage is all that was still awaited
          if (this.gen.providerUsage) void this.complete('completed');
          return;
        }
        if (step.keepAlive) this.lastUpstreamAt = lastActivity;
        // an event the dialect holds back (the Messages API's final message_delta): nothing to write yet
        if (step.text === '') return;
        if (this.batch !== undefined) this.batch += step.text;
        else this.write(step.text, this.lastUpstreamAt);
    }
  };

  /** Writes to the client; on backpressure stops reading the upstream until the client drains. */
  private write(text: string, now: number): void {
    const res = this.res;
    if (res.writableEnded || res.destroyed) return;
    this.lastWriteAt = now;
    if (!res.write(text) && !this.paused) {
      this.paused = true;
      this.pausedAt = Date.now();
      this.upstream.pause();
      res.once('drain', this.onDrain);
      this.arm();
    }
  }

  private readonly onDrain = (): void => {
    if (this.state !== 'streaming') return;
    this.paused = false;
    // Time spent waiting for a slow client is not upstream silence.
    this.lastUpstreamAt = Date.now();
    this.upstream.resume();
    this.arm();
  };

  /**
   * One timer for every deadline, re-armed when it fires or the state changes, not on every chunk: the total
   * `maxDuration`; while relaying, the idle timeout and the heartbeat; while the client is not reading, the
   * `writeTimeout`.
   */
  private arm(): void {
    clearTimeout(this.timer);
    if (this.state !== 'streaming') return;
    const endAt = this.startedAt + this.opts.maxDuration;
    let at: number;
    if (this.paused) at = Math.min(endAt, this.pausedAt + this.opts.writeTimeout);
    else {
      const idleAt = this.lastUpstreamAt + this.opts.idleTimeout;
      const beatAt = this.opts.heartbeatInterval > 0 ? this.lastWriteAt + this.opts.heartbeatInterval : Infinity;
      at = Math.min(endAt, idleAt, beatAt);
    }
    this.timer = setTimeout(this.onTimer, Math.max(0, at - Date.now()));
  }

  private readonly onTimer = (): void => {
    if (this.state !== 'streaming') return;
    const now = Date.now();
    if (now - this.startedAt >= this.opts.maxDuration) {
      this.fail(
        new InferyError(504, 'max_duration_exceeded', `The generation ran longer than ${this.opts.maxDuration} ms and was ended.`, { type: 'upstream_error' }),
      );
      return;
    }
    if (this.paused) {
      if (now - this.pausedAt >= this.opts.writeTimeout) {
        // the client accepted nothing for writeTimeout: treat it as gone (its close event settles the generation)
        this.opts.logger?.info({ reqId: this.gen.reqId, generationId: this.gen.generationId }, 'infery-stream client stopped reading; treated as gone');
        this.res.destroy();
        return;
      }
      this.arm();
      return;
    }
    if (now - this.lastUpstreamAt >= this.opts.idleTimeout) {
      this.fail(
        new InferyError(504, 'upstream_timeout', `The upstream provider sent nothing for ${this.opts.idleTimeout} ms.`, { type: 'upstream_error' }),
      );
      return;
    }
    if (this.opts.heartbeatInterval > 0 && now - this.lastWriteAt >= this.opts.heartbeatInterval) this.write(HEARTBEAT, now);
    this.arm();
  };

  private readonly onUpstreamEnd = (): void => {
    if (this.state === 'draining') {
      void this.complete();
      return;
    }
    if (this.state !== 'streaming') return;
    if (this.gen.finishReason !== null) {
      // Some providers end the stream after the finish chunk without sending [DONE].
      void this.complete();
      return;
    }
    this.fail(new InferyError(502, 'upstream_connection_lost', 'The upstream provider ended the stream before the generation finished.', { type: 'upstream_error' }));
  };

  private readonly onUpstreamClose = (): void => {
    if (this.upstream.readableEnded) return;
    if (this.state === 'draining') {
      // the generation had finished; only the usage was missing: bill the estimate
      void this.complete();
      return;
    }
    if (this.state !== 'streaming') return;
    this.fail(new InferyError(502, 'upstream_connection_lost', 'The connection to the upstream provider was lost mid-stream.', { type: 'upstream_error' }));
  };

  private readonly onClientClose = (): void => {
    if (this.state !== 'streaming' || this.res.writableFinished) return;
    if (this.gen.generationFinished) {
      this.drain();
      return;
    }
    this.state = 'done';
    this.detach();
    this.call.abort();
    this.opts.logger?.info(
      { reqId: this.gen.reqId, generationId: this.gen.generationId },
      'infery-stream client disconnected; upstream request aborted',
    );
    void this.gen.finish('cancelled');
  };

  /**
   * The client left after every choice sent its `finish_reason`: the generation is complete and is billed at
   * the provider's usage, so keep reading for it, for at most `usageGraceTimeout`, without writing.
   */
  private drain(): void {
    if (this.gen.providerUsage) {
      // the usage came already: nothing left to wait for
      this.state = 'draining';
      void this.complete();
      return;
    }
    this.state = 'draining';
    clearTimeout(this.timer);
    clearImmediate(this.headTimer);
    this.res.off('close', this.onClientClose);
    this.res.off('drain', this.onDrain);
    if (this.paused) {
      this.paused = false;
      this.upstream.resume();
    }
    this.timer = setTimeout(() => {
      this.call.abort();
      void this.complete();
    }, this.opts.usageGraceTimeout);
    this.opts.logger?.info(
      { reqId: this.gen.reqId, generationId: this.gen.generationId },
      'infery-stream client disconnected after the finish; reading on for the provider usage',
    );
  }

  /** The generation ended at the provider: meter it, then write the dialect's closing (credits, terminator). */
  private async complete(outcome: 'completed' | 'failed' = 'completed', error?: InferyError): Promise<void> {
    if (this.state !== 'streaming' && this.state !== 'draining') return;
    this.state = 'finishing';
    // events of the read that ended the stream go out with the closing, in one write
    const pending = this.takeBatch();
    this.detach();
    this.release();
    const credits = await this.gen.finish(outcome, error);
    this.state = 'done';
    this.write(pending + this.dialect.closing(this.gen as Generation<unknown>, credits), Date.now());
    this.res.end();
  }

  /**
   * Ends the stream with the dialect's error event, closes it and meters what was produced: the upstream failed after
   * streaming began, or the gateway is shutting down. Does nothing once the stream is finishing.
   */
  fail(err: InferyError): void {
    if (this.state === 'draining') {
      // the generation had finished before the client left: bill it as completed with what is known
      this.call.abort();
      void this.complete();
      return;
    }
    if (this.state !== 'streaming') return;
    const paused = this.paused;
    this.state = 'done';
    const pending = this.takeBatch();
    this.detach();
    this.call.abort();
    this.write(pending + this.dialect.errorEvent(this.gen as Generation<unknown>, err), Date.now());
    this.res.end();
    if (paused) this.dropIfStillUnread();
    void this.gen.finish('failed', err);
  }

  /** A client that was not reading when the stream failed gets `writeTimeout` to take the rest, then is dropped. */
  private dropIfStillUnread(): void {
    const res = this.res;
    const timer = setTimeout(() => res.destroy(), this.opts.writeTimeout);
    timer.unref();
    res.once('close', () => clearTimeout(timer));
  }

  /** Lets a finished upstream response end so its keep-alive socket is reused; drops it if it lingers. */
  private release(): void {
    const upstream = this.upstream;
    if (upstream.readableEnded || upstream.destroyed) return;
    const timer = setTimeout(() => this.call.abort(), RELEASE_GRACE_MS);
    timer.unref();
    upstream.once('close', () => clearTimeout(timer));
    upstream.resume();
  }

  private detach(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    clearImmediate(this.headTimer);
    this.headTimer = undefined;
    this.upstream.off('data', this.onData);
    this.upstream.off('end', this.onUpstreamEnd);
    this.upstream.off('close', this.onUpstreamClose);
    this.upstream.off('error', this.onUpstreamClose);
    this.res.off('close', this.onClientClose);
    this.res.off('drain', this.onDrain);
  }
}
