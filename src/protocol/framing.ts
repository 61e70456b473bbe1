import { ProtocolError } from '../errors.js';

/** Limits of one stream's frames, checked on each length prefix before its payload is buffered. */
export interface FrameLimits {
  /** Largest first non-empty frame: the handshake (`hello`, `join` or their replies). */
  firstFrameBytes: number;
  /** Largest frame after it. */
  frameBytes: number;
}

/** An unsigned LEB128 varint of a frame length never needs more bytes than this. */
const MAX_PREFIX_BYTES = 10;

/**
 * Splits a byte stream into its length-prefixed frames (unsigned varint byte length, then that
 * many bytes; docs/protocol.md, "Transport"). A prefix over the limit, or one that does not end
 * within 10 bytes, is a `ProtocolError` as soon as its bytes arrive, so a peer can make the
 * reader hold at most one frame's limit (plus the chunk in hand). Until a stream's first
 * non-empty frame is complete the limit is the small handshake one: a peer that is not (yet)
 * known to be a member can never make this node buffer a large frame.
 */
export class FrameDecoder {
  private readonly parts: Uint8Array[] = [];
  private buffered = 0;
  private handshakeDone = false;

  constructor(private readonly limits: FrameLimits) {}

  /** Takes the next bytes of the stream; yields every frame they complete (empty frames skipped). */
  *push(chunk: Uint8Array): Generator<Uint8Array> {
    if (chunk.byteLength > 0) {
      this.parts.push(chunk);
      this.buffered += chunk.byteLength;
    }
    for (;;) {
      const prefix = this.readPrefix();
      if (!prefix || this.buffered < prefix.bytes + prefix.length) return;
      this.take(prefix.bytes);
      const frame = this.take(prefix.length);
      if (frame.byteLength === 0) continue;
      this.handshakeDone = true;
      yield frame;
    }
  }

  /** The length prefix at the front, once all its bytes are buffered. */
  private readPrefix(): { length: number; bytes: number } | undefined {
    const limit = this.handshakeDone ? this.limits.frameBytes : this.limits.firstFrameBytes;
    let length = 0;
    let bytes = 0;
    for (const part of this.parts) {
      for (let i = 0; i < part.byteLength; i++) {
        const byte = part[i]!;
        length += (byte & 0x7f) * 2 ** (7 * bytes);
        bytes += 1;
        // Continuation bytes only ever add to the length: refuse as early as possible.
        if (length > limit) {
          const what = this.handshakeDone ? 'frame' : 'first frame (handshake)';
          throw new ProtocolError(`${what} of ${byte < 0x80 ? '' : 'at least '}${length} bytes exceeds the limit of ${limit}`);
        }
        if (byte < 0x80) return { length, bytes };
        if (bytes === MAX_PREFIX_BYTES) throw new ProtocolError(`malformed length prefix (more than ${MAX_PREFIX_BYTES} bytes)`);
      }
    }
    return undefined;
  }

  /** Removes the first `n` buffered bytes (all buffered already) and returns them contiguous. */
  private take(n: number): Uint8Array {
    this.buffered -= n;
    if (n === 0) return new Uint8Array(0);
    const first = this.parts[0]!;
    if (first.byteLength >= n) {
      if (first.byteLength === n) this.parts.shift();
      else this.parts[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const part = this.parts[0]!;
      const used = Math.min(part.byteLength, n - at);
      out.set(part.subarray(0, used), at);
      at += used;
      if (used === part.byteLength) this.parts.shift();
      else this.parts[0] = part.subarray(used);
    }
    return out;
  }
}

/**
 * `frame` with its length prefix, as it goes on the wire: for transports that carry frames
 * whole (the in-memory one) and still hold them to the reader's limits through `FrameDecoder`.
 */
export function lengthPrefixed(frame: Uint8Array): Uint8Array {
  const prefix: number[] = [];
  let rest = frame.byteLength;
  while (rest >= 0x80) {
    prefix.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  prefix.push(rest);
  const out = new Uint8Array(prefix.length + frame.byteLength);
  out.set(prefix);
  out.set(frame, prefix.length);
  return out;
}
