/**
 * Unit tests of the log chunk framing (src/peer-log/chunk.ts). Chunks arrive from peers
 * (`changes`, `shared-page`) as opaque bytes with a claimed origin and seq range, so
 * `decodeChunk` must refuse anything that is not exactly the claimed run of 6-tuples with a
 * `ProtocolError`. Valid chunks are built with `encodeChunks`; corrupt ones by packing tuples
 * by hand (the hand-built form is first checked to equal `encodeChunks` byte for byte, so each
 * corruption differs from a valid chunk only where intended).
 */
import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../src/errors.js';
import { encodeHlc } from '../src/hlc/index.js';
import { HLC_TIME_LENGTH } from '../src/hlc/hlc.js';
import { decodeChunk, encodeChunks, MAX_CHUNK_ENTRIES, type RunBody } from '../src/peer-log/chunk.js';
import type { LogEntry } from '../src/peer-log/types.js';
import { pack, unpack } from '../src/util/msgpack.js';

const ORIGIN = '0b7e7a3c-1f7d-4c55-9a1e-6f1d2c3b4a59';
const OTHER = 'f3a1d2c4-5b6e-4f70-8a91-b2c3d4e5f601';
const T0 = 1_760_000_000_000;

function entry(origin: string, seq: number, overrides: Partial<LogEntry> = {}): LogEntry {
  return {
    origin,
    seq,
    hlc: encodeHlc({ wallMs: T0 + seq, counter: seq % 7, deviceId: origin }),
    model: 'note',
    id: `note-${seq}`,
    op: 'upsert',
    fields: { title: `title ${seq}`, body: seq % 2 === 0 ? null : 'body ✓' },
    ...overrides,
  };
}

/** A mix of ops and field types, seqs `from..to` of `origin`. */
function run(origin: string, from: number, to: number): LogEntry[] {
  const out: LogEntry[] = [];
  for (let seq = from; seq <= to; seq++) {
    if (seq % 5 === 0) out.push(entry(origin, seq, { op: 'delete', fields: null }));
    else if (seq % 5 === 1) out.push(entry(origin, seq, { model: 'profile', op: 'update', fields: { score: seq, color: null } }));
    else if (seq % 5 === 2) out.push(entry(origin, seq, { model: 'blob', fields: { data: Buffer.from([seq & 0xff, 0, 255]) } }));
    else out.push(entry(origin, seq));
  }
  return out;
}

/** The stored tuple of an entry, as the chunk format defines it. */
function tuple(e: LogEntry): unknown[] {
  return [e.seq, e.hlc.slice(0, HLC_TIME_LENGTH), e.model, e.id, e.op, e.fields];
}

/** The same bytes as a Buffer, so Uint8Array and Buffer views compare by content. */
function bytesOf(b: Uint8Array): Buffer {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

function concat(parts: Uint8Array[]): Uint8Array {
  return Buffer.concat(parts);
}

/** A run body (unsigned: `decodeChunk` checks framing only) whose bytes are the given values, each packed on its own and concatenated. */
function crafted(firstSeq: number, lastSeq: number, values: unknown[], origin = ORIGIN): RunBody {
  return { origin, firstSeq, lastSeq, entries: concat(values.map((v) => pack(v))) };
}

function decodeError(chunk: RunBody): ProtocolError {
  let thrown: unknown;
  try {
    decodeChunk(chunk);
  } catch (err) {
    thrown = err;
  }
  expect(thrown, 'decodeChunk must throw').toBeInstanceOf(ProtocolError);
  const err = thrown as ProtocolError;
  expect(err.code).toBe('PROTOCOL');
  // The message names the chunk, so a peer's bad chunk can be told apart in logs.
  expect(err.message).toContain(chunk.origin);
  return err;
}

describe('encodeChunks and decodeChunk', () => {
  it('round-trip entries exactly, with each tuple at its byte range', () => {
    const entries = [...run(ORIGIN, 1, 40), ...run(OTHER, 7, 12)];
    const chunks = encodeChunks(entries);
    expect(chunks.map((c) => [c.origin, c.firstSeq, c.lastSeq])).toEqual([
      [ORIGIN, 1, 40],
      [OTHER, 7, 12],
    ]);
    const decoded = chunks.flatMap((c) => decodeChunk(c));
    expect(decoded.map((d) => d.entry)).toEqual(entries);
    for (const c of chunks) {
      const parts = decodeChunk(c);
      // Ranges tile the chunk: back to back, from 0 to the end.
      expect(parts[0]!.start).toBe(0);
      expect(parts.at(-1)!.end).toBe(c.entries.byteLength);
      for (let i = 1; i < parts.length; i++) expect(parts[i]!.start).toBe(parts[i - 1]!.end);
      // Each range holds exactly that entry's tuple.
      for (const p of parts) expect(unpack(c.entries.subarray(p.start, p.end))).toEqual(tuple(p.entry));
    }
  });

  it('split runs at MAX_CHUNK_ENTRIES, at an origin change and at a seq jump', () => {
    const entries = [...run(ORIGIN, 1, MAX_CHUNK_ENTRIES * 2 + 3), ...run(ORIGIN, 600, 601), ...run(OTHER, 1, 2)];
    const chunks = encodeChunks(entries);
    expect(chunks.map((c) => [c.origin, c.firstSeq, c.lastSeq])).toEqual([
      [ORIGIN, 1, MAX_CHUNK_ENTRIES],
      [ORIGIN, MAX_CHUNK_ENTRIES + 1, MAX_CHUNK_ENTRIES * 2],
      [ORIGIN, MAX_CHUNK_ENTRIES * 2 + 1, MAX_CHUNK_ENTRIES * 2 + 3],
      [ORIGIN, 600, 601],
      [OTHER, 1, 2],
    ]);
    expect(chunks.flatMap((c) => decodeChunk(c).map((d) => d.entry))).toEqual(entries);
  });

  it('the hand-built form used below equals encodeChunks byte for byte', () => {
    const entries = run(ORIGIN, 5, 9);
    const [chunk] = encodeChunks(entries);
    expect(bytesOf(crafted(5, 9, entries.map(tuple)).entries)).toEqual(bytesOf(chunk!.entries));
  });

  it('decodes a chunk that is a view into a larger buffer (as a received frame is)', () => {
    const entries = run(ORIGIN, 3, 8);
    const [chunk] = encodeChunks(entries);
    const frame = concat([new Uint8Array([0xde, 0xad, 0xbe]), chunk!.entries, new Uint8Array([0xef])]);
    const view = frame.subarray(3, 3 + chunk!.entries.byteLength);
    expect(view.byteOffset).toBe(frame.byteOffset + 3);
    expect(view.buffer.byteLength).toBeGreaterThan(view.byteLength);
    expect(decodeChunk({ ...chunk!, entries: view }).map((d) => d.entry)).toEqual(entries);
    // The framing of a tail of a run's bytes decodes on its own (no run travels cut since
    // signed runs, but the framing does not depend on where the bytes start).
    const parts = decodeChunk(chunk!);
    const tail = chunk!.entries.subarray(parts[2]!.start);
    expect(decodeChunk({ origin: ORIGIN, firstSeq: 5, lastSeq: 8, entries: tail }).map((d) => d.entry)).toEqual(entries.slice(2));
  });
});

describe('decodeChunk refuses malformed chunks with a ProtocolError', () => {
  const good = run(ORIGIN, 1, 4).map(tuple);

  it('garbage and truncated bytes', () => {
    decodeError({ origin: ORIGIN, firstSeq: 1, lastSeq: 1, entries: new Uint8Array([0xc1, 0xc1, 0xc1]) });
    decodeError({ origin: ORIGIN, firstSeq: 1, lastSeq: 2, entries: crypto.getRandomValues(new Uint8Array(64)).fill(0xff, 0, 1) });
    // A valid chunk cut short in its last tuple, and one followed by a stray byte.
    const valid = crafted(1, 4, good);
    decodeError({ ...valid, entries: valid.entries.subarray(0, valid.entries.byteLength - 3) });
    decodeError({ ...valid, entries: concat([valid.entries, new Uint8Array([0xd9])]) });
    // Nothing at all where one entry is claimed.
    decodeError({ origin: ORIGIN, firstSeq: 1, lastSeq: 1, entries: new Uint8Array(0) });
  });

  it('a value that is not a 6-element array', () => {
    const [first, ...rest] = good as [unknown[], ...unknown[][]];
    for (const bad of [first.slice(0, 5), [...first, 'extra'], [], 42, 'string!', { 0: 1, 1: 'x' }, null]) {
      decodeError(crafted(1, 4, [bad, ...rest]));
      // Also when the bad value is not the first one.
      decodeError(crafted(1, 4, [first, rest[0], bad, rest[2]]));
    }
  });

  it('a seq that is not firstSeq + i', () => {
    const at = (i: number, seq: unknown) => good.map((t, j) => (j === i ? [seq, ...t.slice(1)] : t));
    decodeError(crafted(1, 4, at(0, 2))); // first tuple claims seq 2
    decodeError(crafted(1, 4, at(2, 2))); // a repeated seq in the middle
    decodeError(crafted(1, 4, at(3, 5))); // a skipped seq at the end
    decodeError(crafted(1, 4, at(1, '2'))); // the right number as a string
    decodeError(crafted(1, 4, at(1, 2.5)));
    // A valid run of seqs 1..4 claimed as 2..5.
    decodeError(crafted(2, 5, good));
  });

  it('a clock, model or id that is not a string', () => {
    for (const index of [1, 2, 3]) {
      for (const value of [12345, null, new Uint8Array([1, 2]), ['note'], { s: 'x' }]) {
        const bad = good.map((t, j) => (j === 1 ? t.map((v, k) => (k === index ? value : v)) : t));
        decodeError(crafted(1, 4, bad));
      }
    }
  });

  it('a count of entries other than lastSeq - firstSeq + 1', () => {
    // Fewer entries than claimed (their seqs are right as far as they go).
    const fewer = decodeError(crafted(1, 5, good));
    expect(fewer.message).toMatch(/1\.\.5/);
    decodeError(crafted(1, 2, good.slice(0, 1)));
    // More entries than claimed, with seqs continuing correctly past lastSeq.
    decodeError(crafted(1, 3, good));
    decodeError(crafted(1, 1, good.slice(0, 2)));
    // Valid entries of a chunk from encodeChunks under a range claiming one entry less.
    const [chunk] = encodeChunks(run(ORIGIN, 10, 20));
    expect(() => decodeChunk(chunk!)).not.toThrow();
    decodeError({ ...chunk!, lastSeq: 19 });
    decodeError({ ...chunk!, lastSeq: 21 });
  });
});
