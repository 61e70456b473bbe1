import { Packr } from 'msgpackr';

/**
 * The one msgpack configuration used for stored log fields and the wire. Records (msgpackr's
 * shared-structure extension) are off so every encoding is self-contained and identical for
 * identical values.
 *
 * Decoding accepts plain msgpack only: msgpackr always understands its extensions (records,
 * whose structures a later value may reuse, and its other extension types) whatever the
 * options, so `checkPlain` refuses every extension type first. Without extensions a msgpack
 * value depends on nothing before it, so any run of whole values cut from valid bytes decodes
 * on its own: that is what lets a log chunk be stored as received and sliced later.
 */
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

export function pack(value: unknown): Uint8Array {
  return packr.pack(value);
}

export function unpack(bytes: Uint8Array): unknown {
  checkPlain(bytes);
  return packr.unpack(bytes);
}

/** Decodes a concatenation of msgpack values, giving each value with its byte range. */
export function unpackEach(bytes: Uint8Array, each: (value: unknown, start: number, end: number) => void): void {
  checkPlain(bytes);
  packr.unpackMultiple(bytes, (value: unknown, start?: number, end?: number) => {
    each(value, start ?? 0, end ?? 0);
  });
}

/**
 * Walks the msgpack tokens of `bytes` (string and binary payloads are skipped, not read) and
 * throws unless they are complete values of the plain msgpack types: nil, booleans, integers,
 * floats, strings, binary, arrays and maps. Iterative, so nesting depth costs no stack.
 */
export function checkPlain(bytes: Uint8Array): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const end = bytes.byteLength;
  let pos = 0;
  // Values still to be read: every value is at least one byte, so more than the bytes left
  // means the input is truncated (and keeps a forged element count from growing this).
  let pending = 0;
  const expect = (values: number) => {
    pending += values;
    if (pending > end - pos) throw new Error('msgpack value is truncated');
  };
  const skip = (length: number) => {
    pos += length;
    if (pos > end) throw new Error('msgpack value is truncated');
  };
  while (pos < end) {
    const t = bytes[pos++]!;
    if (pending > 0) pending -= 1;
    if (t <= 0x7f || t >= 0xe0) continue; // fixint
    if (t <= 0x8f) expect(2 * (t & 0x0f));
    else if (t <= 0x9f) expect(t & 0x0f);
    else if (t <= 0xbf) skip(t & 0x1f);
    else {
      const header = HEADER_BYTES[t - 0xc0]!;
      if (header < 0) throw new Error(`msgpack type 0x${t.toString(16)} is not allowed (extension types are refused)`);
      skip(header);
      switch (t) {
        case 0xc4:
        case 0xd9:
          skip(view.getUint8(pos - 1));
          break;
        case 0xc5:
        case 0xda:
          skip(view.getUint16(pos - 2));
          break;
        case 0xc6:
        case 0xdb:
          skip(view.getUint32(pos - 4));
          break;
        case 0xdc:
          expect(view.getUint16(pos - 2));
          break;
        case 0xdd:
          expect(view.getUint32(pos - 4));
          break;
        case 0xde:
          expect(2 * view.getUint16(pos - 2));
          break;
        case 0xdf:
          expect(2 * view.getUint32(pos - 4));
          break;
      }
    }
  }
  if (pending > 0) throw new Error('msgpack value is truncated');
}

/**
 * For type bytes 0xc0 … 0xdf: the bytes after the type byte that hold the value or the length
 * of what follows; -1 for a type plain msgpack does not use here (0xc1, the extension types).
 */
const HEADER_BYTES: readonly number[] = [
  0, -1, 0, 0, // 0xc0 nil, 0xc1 never used, 0xc2 false, 0xc3 true
  1, 2, 4, // 0xc4-0xc6 bin 8/16/32 (length)
  -1, -1, -1, // 0xc7-0xc9 ext 8/16/32
  4, 8, // 0xca float 32, 0xcb float 64
  1, 2, 4, 8, // 0xcc-0xcf uint
  1, 2, 4, 8, // 0xd0-0xd3 int
  -1, -1, -1, -1, -1, // 0xd4-0xd8 fixext
  1, 2, 4, // 0xd9-0xdb str 8/16/32 (length)
  2, 4, // 0xdc-0xdd array 16/32 (count)
  2, 4, // 0xde-0xdf map 16/32 (count)
];
