/**
 * The length-prefixed frame reader (src/protocol/framing.ts): frames split anywhere, and the
 * limits checked on the prefix, before the payload arrives: the small handshake limit for a
 * stream's first non-empty frame, the frame limit after it.
 */
import { encodeUint8Array, encodingLength } from 'uint8-varint';
import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../src/errors.js';
import { decodeMessage, encodeMessage } from '../src/protocol/codec.js';
import { FrameDecoder } from '../src/protocol/framing.js';
import { MAX_HANDSHAKE_FRAME_BYTES, MAX_POSITION, MAX_VECTOR_ORIGINS, type Message } from '../src/protocol/messages.js';

const limits = { firstFrameBytes: 100, frameBytes: 1_000 };

function framed(...payloads: Uint8Array[]): Uint8Array {
  const parts = payloads.flatMap((p) => {
    const prefix = new Uint8Array(encodingLength(p.byteLength));
    encodeUint8Array(p.byteLength, prefix);
    return [...prefix, ...p];
  });
  return new Uint8Array(parts);
}

function fill(length: number, value: number): Uint8Array {
  return new Uint8Array(length).fill(value);
}

describe('FrameDecoder', () => {
  it('yields the same frames however the bytes are split, skipping empty frames', () => {
    const payloads = [fill(100, 1), new Uint8Array(0), fill(1_000, 2), fill(1, 3), fill(300, 4)];
    const bytes = framed(...payloads);
    const expected = payloads.filter((p) => p.byteLength > 0).map((p) => [...p]);
    for (const size of [1, 2, 3, 7, 128, 129, 1_000, bytes.byteLength]) {
      const decoder = new FrameDecoder(limits);
      const frames: number[][] = [];
      for (let at = 0; at < bytes.byteLength; at += size) {
        for (const frame of decoder.push(bytes.subarray(at, at + size))) frames.push([...frame]);
      }
      expect(frames, `chunks of ${size} bytes`).toEqual(expected);
    }
  });

  it('refuses a first frame over the handshake limit from its prefix alone, before any payload', () => {
    const prefix = framed(fill(101, 0)).subarray(0, encodingLength(101));
    const decoder = new FrameDecoder(limits);
    expect(() => [...decoder.push(prefix)]).toThrow(ProtocolError);
    expect(() => [...new FrameDecoder(limits).push(prefix)]).toThrow(/first frame \(handshake\) of 101 bytes exceeds the limit of 100/);
  });

  it('allows frames up to the frame limit after the first one, and refuses larger ones', () => {
    const decoder = new FrameDecoder(limits);
    expect([...decoder.push(framed(fill(10, 1), fill(1_000, 2)))].map((f) => f.byteLength)).toEqual([10, 1_000]);
    expect(() => [...decoder.push(framed(fill(1_001, 3)).subarray(0, 2))]).toThrow(/^frame of 1001 bytes exceeds the limit of 1000/);
  });

  it('keeps the handshake limit after empty frames, also ones with a padded prefix', () => {
    const emptyFrames = new Uint8Array([0x00, 0x80, 0x00, 0x00]);
    const decoder = new FrameDecoder(limits);
    expect([...decoder.push(emptyFrames)]).toEqual([]);
    expect(() => [...decoder.push(framed(fill(101, 0)).subarray(0, 2))]).toThrow(/first frame \(handshake\)/);
  });

  it('refuses a prefix that does not end within 10 bytes, and one that only grows past the limit', () => {
    expect(() => [...new FrameDecoder(limits).push(fill(10, 0x80))]).toThrow(/malformed length prefix/);
    // A continuation byte worth 127: the length is over 100 whatever follows.
    expect(() => [...new FrameDecoder(limits).push(new Uint8Array([0xff]))]).toThrow(/at least 127 bytes exceeds the limit of 100/);
  });
});

describe('the handshake frame limit', () => {
  const uuid = (i: number) => `${i.toString(16).padStart(8, '0')}-0000-4000-8000-000000000000`;
  // The largest position a vector may hold (it encodes in as many bytes as any larger integer).
  const fullVector = (entries: number) => Object.fromEntries(Array.from({ length: entries }, (_, i) => [uuid(i), MAX_POSITION]));

  it('holds a hello with two full vectors, and a join with every address', () => {
    const hello: Message = {
      t: 'hello',
      v: [Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
      library: uuid(1),
      device: uuid(2),
      shared: fullVector(MAX_VECTOR_ORIGINS),
      owned: fullVector(MAX_VECTOR_ORIGINS),
    };
    const join: Message = {
      t: 'join',
      v: [1, 0],
      library: uuid(1),
      invite: uuid(3),
      proof: new Uint8Array(32),
      device: uuid(2),
      addrs: Array.from({ length: 32 }, () => '/'.repeat(512)),
    };
    for (const message of [hello, join]) {
      const frame = encodeMessage(message);
      expect(frame.byteLength).toBeLessThanOrEqual(MAX_HANDSHAKE_FRAME_BYTES);
      expect(decodeMessage(frame).t).toBe(message.t);
    }
  });

  it('is kept by refusing a vector with more entries than the limit', () => {
    const ack = (entries: number): Message => ({ t: 'ack', library: uuid(1), batch: null, shared: fullVector(entries), owned: {} });
    expect(decodeMessage(encodeMessage(ack(MAX_VECTOR_ORIGINS))).t).toBe('ack');
    expect(() => decodeMessage(encodeMessage(ack(MAX_VECTOR_ORIGINS + 1)))).toThrow(/too many origins in a vector/);
  });
});
