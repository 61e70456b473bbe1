import { Packr } from 'msgpackr';

/**
 * The one msgpack configuration used for stored log fields and (later) the wire. Records
 * (msgpackr's shared-structure extension) are off so every encoding is self-contained and
 * identical for identical values.
 */
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

export function pack(value: unknown): Uint8Array {
  return packr.pack(value);
}

export function unpack(bytes: Uint8Array): unknown {
  return packr.unpack(bytes);
}

/** Decodes a concatenation of msgpack values, giving each value with its byte range. */
export function unpackEach(bytes: Uint8Array, each: (value: unknown, start: number, end: number) => void): void {
  packr.unpackMultiple(bytes, (value: unknown, start?: number, end?: number) => {
    each(value, start ?? 0, end ?? 0);
  });
}

