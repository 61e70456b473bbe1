import { ENCODED_HLC_LENGTH } from '../hlc/hlc.js';
import type { ChangeOp, StoredValues } from '../models/types.js';
import { concatBytes, pack, unpackEach } from '../util/msgpack.js';
import type { LogEntry } from './types.js';

/**
 * The peer log is stored in chunks: one SQLite row holds a contiguous run of one origin's
 * entries. Writing a 1 000-change transaction then costs a few row inserts for the log instead
 * of 1 000, which is what lets a logged write cost little more than the row write itself.
 *
 * A chunk is a concatenation of msgpack tuples `[seq, hlcTime, model, id, op, fields | null]`,
 * one per entry, so each entry is encoded once and its exact size is known when reading. The
 * HLC was issued by the origin (checked on receipt), so only its time part is kept.
 */
export const MAX_CHUNK_ENTRIES = 256;
export const MAX_CHUNK_BYTES = 512 * 1024;

/** Bytes an entry costs on the wire besides its encoded tuple (origin, framing), rounded up. */
export const ENTRY_OVERHEAD_BYTES = 48;

const HLC_TIME_LENGTH = ENCODED_HLC_LENGTH - 36;

type StoredEntry = [number, string, string, string, ChangeOp, StoredValues | null];

export interface Chunk {
  origin: string;
  firstSeq: number;
  lastSeq: number;
  entries: Uint8Array;
}

/** Splits entries (grouped by origin, seq ascending) into chunks within the size bounds. */
export function encodeChunks(entries: readonly LogEntry[]): Chunk[] {
  const chunks: Chunk[] = [];
  let parts: Uint8Array[] = [];
  let runOrigin = '';
  let firstSeq = 0;
  let lastSeq = 0;
  let runBytes = 0;
  const close = () => {
    if (parts.length === 0) return;
    chunks.push({ origin: runOrigin, firstSeq, lastSeq, entries: concatBytes(parts, runBytes) });
    parts = [];
    runBytes = 0;
  };
  for (const e of entries) {
    const encoded = pack([e.seq, e.hlc.slice(0, HLC_TIME_LENGTH), e.model, e.id, e.op, e.fields] satisfies StoredEntry);
    if (
      e.origin !== runOrigin ||
      e.seq !== lastSeq + 1 ||
      parts.length >= MAX_CHUNK_ENTRIES ||
      runBytes + encoded.byteLength > MAX_CHUNK_BYTES
    ) {
      close();
      runOrigin = e.origin;
      firstSeq = e.seq;
    }
    parts.push(encoded);
    lastSeq = e.seq;
    runBytes += encoded.byteLength;
  }
  close();
  return chunks;
}

export interface DecodedEntry {
  entry: LogEntry;
  /** Bytes the entry takes on the wire: its encoded tuple plus a fixed overhead. */
  size: number;
}

export function decodeChunk(origin: string, bytes: Uint8Array): DecodedEntry[] {
  const decoded: DecodedEntry[] = [];
  unpackEach(bytes, (value, size) => {
    const [seq, hlcTime, model, id, op, fields] = value as StoredEntry;
    decoded.push({ entry: { origin, seq, hlc: hlcTime + origin, model, id, op, fields }, size: ENTRY_OVERHEAD_BYTES + size });
  });
  return decoded;
}
