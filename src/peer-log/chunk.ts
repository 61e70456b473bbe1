import { HLC_TIME_LENGTH } from '../hlc/hlc.js';
import type { ChangeOp, StoredValues } from '../models/types.js';
import { ProtocolError } from '../errors.js';
import { pack, unpackEach } from '../util/msgpack.js';
import type { LogEntry, PrunedOrigin } from './types.js';

/**
 * The peer log is stored in chunks: one SQLite row holds a contiguous run of one origin's
 * entries. Writing a 1 000-change transaction then costs a few row inserts for the log instead
 * of 1 000, which is what lets a logged write cost little more than the row write itself.
 *
 * A chunk is a concatenation of msgpack tuples `[seq, hlcTime, model, id, op, fields | null]`,
 * one per entry, so each entry's exact size is known when reading (`unpackEach`). It is made
 * with one encoder call: a msgpack array is its header followed by its elements back to back,
 * so packing the run as an array and dropping the header gives the concatenation. The HLC was
 * issued by the origin (checked on receipt), so only its time part is kept.
 */
export const MAX_CHUNK_ENTRIES = 256;
/** Bound on a chunk's estimated size (see `estimateSize`). */
export const MAX_CHUNK_BYTES = 512 * 1024;

/** Bytes a run costs on the wire besides its entries (origin, seqs, prev, signature, framing), rounded up. */
export const CHUNK_OVERHEAD_BYTES = 192;

type StoredEntry = [number, string, string, string, ChangeOp, StoredValues | null];

/** A run of one origin's entries in the chunk encoding, before it is signed. */
export interface RunBody {
  origin: string;
  firstSeq: number;
  lastSeq: number;
  entries: Uint8Array;
}

/**
 * A stored or received run, signed by its origin's author (`signed-runs.ts`): `prev` is the id
 * of the origin's run before it, `sig` the author's Ed25519 signature of this run's id, and
 * `author` the PeerId whose key made it.
 */
export interface Chunk extends RunBody {
  prev: Uint8Array;
  sig: Uint8Array;
  author: string;
}

/**
 * How a partner's head of an origin (the position its log ends at and the id of the run ending
 * there) stands against this device's log:
 * - `same`: the run ending there is held here; runs commit to the ones before them, so the
 *   partner holds this device's history of the origin through that position;
 * - `beyond`: this device does not hold the position yet;
 * - `unheld`: the position was pruned here, so nothing is known;
 * - `contradicted`: the run held at that position has other boundaries or another id (a fork).
 */
export type HeadComparison = { kind: 'same' } | { kind: 'beyond' } | { kind: 'unheld' } | { kind: 'contradicted'; run: Chunk };

/** `EntriesAfterResult` in stored form: runs of one origin's entries, not decoded. */
export interface ChunksAfterResult {
  chunks: Chunk[];
  /** Entries in `chunks`. */
  entries: number;
  hasMore: boolean;
  pruned: PrunedOrigin[];
}

/** Splits entries (grouped by origin, seq ascending) into runs within the size bounds. */
export function encodeChunks(entries: readonly LogEntry[]): RunBody[] {
  const chunks: RunBody[] = [];
  let run: StoredEntry[] = [];
  let runOrigin = '';
  let firstSeq = 0;
  let lastSeq = 0;
  let runBytes = 0;
  const close = () => {
    if (run.length === 0) return;
    chunks.push({ origin: runOrigin, firstSeq, lastSeq, entries: withoutArrayHeader(pack(run)) });
    run = [];
    runBytes = 0;
  };
  for (const e of entries) {
    const size = estimateSize(e);
    if (
      e.origin !== runOrigin ||
      e.seq !== lastSeq + 1 ||
      run.length >= MAX_CHUNK_ENTRIES ||
      (run.length > 0 && runBytes + size > MAX_CHUNK_BYTES)
    ) {
      close();
      runOrigin = e.origin;
      firstSeq = e.seq;
    }
    run.push([e.seq, e.hlc.slice(0, HLC_TIME_LENGTH), e.model, e.id, e.op, e.fields]);
    lastSeq = e.seq;
    runBytes += size;
  }
  close();
  return chunks;
}

/** msgpack array headers: fixarray (1 byte), array 16 (3 bytes), array 32 (5 bytes). */
function withoutArrayHeader(packed: Uint8Array): Uint8Array {
  const first = packed[0]!;
  const header = first >= 0x90 && first <= 0x9f ? 1 : first === 0xdc ? 3 : first === 0xdd ? 5 : -1;
  if (header < 0) throw new Error(`internal: expected a msgpack array, got type byte ${first}`);
  return packed.subarray(header);
}

/**
 * At least the encoded size of an entry (a UTF-16 unit takes at most 3 bytes of UTF-8), for run
 * bounds: a run of several entries then takes at most `MAX_CHUNK_BYTES`, and a run of one entry
 * what that entry takes, so every run fits a page (`MAX_RUN_BYTES` in protocol/messages.ts).
 */
function estimateSize(e: LogEntry): number {
  let size = 96 + 3 * (e.id.length + e.model.length);
  if (e.fields === null) return size;
  for (const key in e.fields) {
    const value = e.fields[key];
    size += 3 * key.length + 2;
    if (typeof value === 'string') size += 3 * value.length + 5;
    else if (value instanceof Uint8Array) size += value.byteLength + 5;
    else size += 9;
  }
  return size;
}

export interface DecodedEntry {
  entry: LogEntry;
  /** Where the entry's tuple starts and ends in the chunk's bytes. */
  start: number;
  end: number;
}

/**
 * Decodes a chunk, stored or received from a peer. Checks the framing: each tuple has six
 * elements with the expected seq (`firstSeq`, `firstSeq + 1` … `lastSeq`, nothing more or less)
 * and string clock, model and id; a chunk that fails is a `ProtocolError`. What the values mean
 * (known model, valid id, clock, op and fields) is checked where entries are applied.
 */
export function decodeChunk(chunk: RunBody): DecodedEntry[] {
  const { origin, firstSeq, lastSeq } = chunk;
  const decoded: DecodedEntry[] = [];
  try {
    unpackEach(chunk.entries, (value, start, end) => {
      const seq = firstSeq + decoded.length;
      if (!Array.isArray(value) || value.length !== 6) throw new Error(`entry ${seq} is not a 6-tuple`);
      const [storedSeq, hlcTime, model, id, op, fields] = value as StoredEntry;
      if (storedSeq !== seq) throw new Error(`expected seq ${seq}, found ${String(storedSeq)}`);
      if (typeof hlcTime !== 'string' || typeof model !== 'string' || typeof id !== 'string') {
        throw new Error(`entry ${seq}: clock, model and id must be strings`);
      }
      decoded.push({ entry: { origin, seq, hlc: hlcTime + origin, model, id, op, fields }, start, end });
    });
  } catch (err) {
    throw new ProtocolError(`malformed log chunk of ${origin} (${firstSeq}..${lastSeq}): ${(err as Error).message}`);
  }
  if (decoded.length !== lastSeq - firstSeq + 1) {
    throw new ProtocolError(`log chunk of ${origin} claims ${firstSeq}..${lastSeq} but holds ${decoded.length} entries`);
  }
  return decoded;
}
