import type { Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface';
import { StreamClosedError } from '@libp2p/utils';
import { encodeUint8Array, encodingLength } from 'uint8-varint';
import { describeError, NetworkError, ProtocolError, type SyncError, toSyncError } from '../errors.js';
import { FrameDecoder, type FrameLimits } from '../protocol/framing.js';
import type { FrameStream } from '../protocol/transport.js';

/**
 * Bytes of whole frames a stream end holds for its reader before it pauses the stream. While
 * paused, yamux sends the remote no window updates, so the remote's sends wait once the window
 * it was granted is used up. A reader that lags holds a bounded amount, somewhat more than this:
 * `resume()` hands over libp2p's read buffer (up to a window) at once, and the window granted on
 * resuming may fill before the next pause: about this, two receive windows
 * (`STREAM_WINDOW_BYTES`) and a frame being assembled.
 */
const READ_AHEAD_BYTES = 1024 * 1024;

/**
 * The largest yamux receive window of a stream, and the stream's read buffer. Yamux grows a
 * window from 256 KiB while data flows faster than a few round trips (its default limit is
 * 16 MiB). What the remote sends after a pause, at most one window, lands in the stream's read
 * buffer, which libp2p resets the stream beyond (4 MiB by default): with the default window,
 * pausing a fast stream on a link with some latency would reset it.
 */
export const STREAM_WINDOW_BYTES = 4 * 1024 * 1024;

/** The yamux stream options of every connection (`Libp2pTransport.start`). */
export const YAMUX_STREAM_OPTIONS = { maxStreamWindowSize: STREAM_WINDOW_BYTES, maxReadBufferLength: STREAM_WINDOW_BYTES } as const;

/**
 * Varint-length-prefixed frames over a libp2p message stream. Every error that leaves it is a
 * `SyncError`: libp2p's own (a reset, `StreamClosedError` with no message, a refused write)
 * become a `NetworkError` that names the peer, the operation and the libp2p error; a broken
 * length prefix is a `ProtocolError`.
 *
 * It listens to the stream from the moment it is made, not from the first `frames()`: the
 * stream's events (the remote's close or reset) fire once, and a reader that begins later must
 * still see them. What arrives waits, decoded, for `frames()`; more than READ_AHEAD_BYTES of it
 * pauses the stream until the reader catches up (libp2p's own iterator takes every message as
 * it arrives, so the frames of a slow reader would pile up in its memory).
 */
export class Libp2pFrameStream implements FrameStream {
  private readonly decoder: FrameDecoder;
  /** Whole frames received and not yet taken by `frames()`, oldest first. */
  private readonly unread: Uint8Array[] = [];
  private unreadBytes = 0;
  /** Why reading failed (a reset, a local abort, broken framing): thrown after `unread`. */
  private failure: SyncError | undefined;
  /** Wakes a `frames()` waiting for a frame or the end. */
  private wake: (() => void) | undefined;
  /**
   * Set while this side's `resume()` runs. libp2p's `resume()` hands over what it buffered
   * (calling `received` back) before it tells yamux to send window updates again: a pause asked
   * for inside it would be undone, and the remote granted window with the stream paused.
   */
  private resuming = false;

  constructor(
    private readonly stream: Stream,
    readonly remotePeer: string,
    limits: FrameLimits,
  ) {
    this.decoder = new FrameDecoder(limits);
    stream.addEventListener('message', (evt: StreamMessageEvent) => this.received(evt.data.subarray()));
    stream.addEventListener('remoteCloseWrite', () => this.notify());
    stream.addEventListener('close', (evt: StreamCloseEvent) => {
      if (evt.error !== undefined) this.fail(this.error('reading', evt.error));
      this.notify();
    });
    // Negotiating the protocol read from the stream before this end existed: a reset then was
    // only an event.
    if (stream.status === 'reset' || stream.status === 'aborted') this.fail(this.error('reading', `the stream was ${stream.status}`));
  }

  async send(frame: Uint8Array): Promise<void> {
    if (this.stream.status !== 'open') throw new NetworkError(`cannot send to ${this.remotePeer}: the sync stream is ${this.stream.status}`);
    const prefix = encodingLength(frame.byteLength);
    const framed = new Uint8Array(prefix + frame.byteLength);
    encodeUint8Array(frame.byteLength, framed);
    framed.set(frame, prefix);
    try {
      if (!this.stream.send(framed)) await this.drained();
    } catch (err) {
      throw this.error('sending', err);
    }
  }

  async *frames(): AsyncIterable<Uint8Array> {
    for (;;) {
      const frame = this.unread.shift();
      if (frame !== undefined) {
        this.unreadBytes -= frame.byteLength;
        this.resumeIfCaughtUp();
        yield frame;
        continue;
      }
      if (this.failure !== undefined) throw this.failure;
      if (this.remoteEnded()) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  async close(): Promise<void> {
    await this.stream.close().catch((err: unknown) => this.stream.abort(this.error('closing', err)));
  }

  abort(reason: Error): void {
    this.stream.abort(reason);
  }

  /** Decodes what arrived; pauses the stream when the reader has fallen READ_AHEAD_BYTES behind. */
  private received(chunk: Uint8Array): void {
    if (this.failure !== undefined) return;
    try {
      for (const frame of this.decoder.push(chunk)) {
        this.unread.push(frame);
        this.unreadBytes += frame.byteLength;
      }
    } catch (err) {
      // Oversize or malformed length prefix: the peer broke the framing.
      this.fail(new ProtocolError(`bad frame from ${this.remotePeer}: ${describeError(err)}`));
    }
    if (!this.resuming) this.pauseIfBehind();
    this.notify();
  }

  private resumeIfCaughtUp(): void {
    if (this.unreadBytes >= READ_AHEAD_BYTES || this.stream.readStatus !== 'paused') return;
    this.resuming = true;
    try {
      this.stream.resume();
    } catch (err) {
      // The connection closed under a paused stream: yamux cannot send the window update.
      this.fail(this.error('reading', err));
      this.notify();
      return;
    } finally {
      this.resuming = false;
    }
    // What the pause held back may have put the reader behind again.
    this.pauseIfBehind();
  }

  private pauseIfBehind(): void {
    if (this.unreadBytes >= READ_AHEAD_BYTES && this.stream.readStatus === 'readable') this.stream.pause();
  }

  /**
   * Whether no more frames will come: the remote closed its end (or the connection closed) and
   * libp2p holds nothing more to hand over.
   */
  private remoteEnded(): boolean {
    return this.stream.remoteWriteStatus === 'closed' && this.stream.readBufferLength === 0;
  }

  private fail(error: SyncError): void {
    this.failure ??= error;
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /**
   * Resolves at the stream's next 'drain', rejects when it closes first. Not `Stream.onDrain()`:
   * it keeps the promise of its first wait, so after one drain it resolves at once, and a
   * sender would no longer wait for its reader.
   */
  private drained(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onDrain = (): void => {
        this.stream.removeEventListener('close', onClose);
        resolve();
      };
      const onClose = (evt: StreamCloseEvent): void => {
        this.stream.removeEventListener('drain', onDrain);
        reject(evt.error ?? new StreamClosedError('the stream closed before it drained'));
      };
      this.stream.addEventListener('drain', onDrain, { once: true });
      this.stream.addEventListener('close', onClose, { once: true });
    });
  }

  /**
   * The typed error for a failed stream operation. A `SyncError` passes as it is: it is this
   * node's own (the framing check, or the reason this side gave when it aborted the stream).
   */
  private error(operation: string, err: unknown): SyncError {
    return toSyncError(err, (cause) => new NetworkError(`sync stream with ${this.remotePeer} failed while ${operation}: ${cause}`));
  }
}
