/**
 * Corpus recording for the fuzz harness: a `Transport` that passes everything to another one and
 * hands every frame sent on its streams (both those it opens and those it accepts) to `record`.
 */
import type { FrameStream, Transport } from '../src/protocol/transport.js';

export function recordingTransport(inner: Transport, record: (frame: Uint8Array) => void): Transport {
  const recorded = (stream: FrameStream): FrameStream => ({
    remotePeer: stream.remotePeer,
    send: (frame) => {
      record(frame);
      return stream.send(frame);
    },
    frames: () => stream.frames(),
    close: () => stream.close(),
    abort: (reason) => stream.abort(reason),
  });
  return new Proxy(inner, {
    get(target, key, receiver) {
      if (key === 'handle') return (handler: (stream: FrameStream) => void) => target.handle((stream) => handler(recorded(stream)));
      if (key === 'openStream') return async (peer: string, signal?: AbortSignal) => recorded(await target.openStream(peer, signal));
      const value = Reflect.get(target, key, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}
