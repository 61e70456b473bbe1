/**
 * `lib.chunksAfter(vector, limits)` (src/peer-log/log-store.ts): the log read in stored form,
 * which is what goes on the wire. Against a real node and SQLite file:
 *
 * - on chunk boundaries, stored chunks are handed out as they are: the very bytes of the
 *   `sync_log` rows (checked against the file with a separate connection), without decoding;
 * - a vector or limit inside a chunk cuts it: the part is a slice of the stored bytes;
 * - at least one entry always; `hasMore` and `pruned` as for `entriesAfter`;
 * - the decoded chunks equal `entriesAfter`, and applied page by page on another replica they
 *   give equal digests.
 */
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Library, SyncNode, VersionVector } from '../src/index.js';
import type { LogEntry, ReadLimits } from '../src/peer-log/types.js';
import * as chunkModule from '../src/peer-log/chunk.js';
import { CHUNK_OVERHEAD_BYTES, type Chunk, decodeChunk, MAX_CHUNK_ENTRIES } from '../src/peer-log/chunk.js';
import { makeTempDir, removeTempDirs } from './helpers/child-process.js';
import { startNode, stopAllNodes } from './helpers/cluster.js';
import { engineOf } from '../src/library/library.js';

// The real decodeChunk, wrapped so a test can count how often the log store decodes.
vi.mock('../src/peer-log/chunk.js', async (importOriginal) => {
  const original = await importOriginal<typeof import('../src/peer-log/chunk.js')>();
  return { ...original, decodeChunk: vi.fn(original.decodeChunk) };
});
/** `chunksAfter`, and how many chunks it decoded meanwhile. */
async function chunksAfterCounted(lib: Library, after: VersionVector, limits: ReadLimits) {
  const calls = vi.mocked(chunkModule.decodeChunk).mock.calls;
  const before = calls.length;
  const result = await engineOf(lib).chunksAfter(after, limits);
  return { result, decodes: calls.length - before };
}

afterEach(async () => {
  await stopAllNodes();
  await removeTempDirs();
});

const BIG: ReadLimits = { maxRecords: 1_000_000, maxBytes: 1 << 30 };
const ROWS = 1_000;

interface StoredChunk {
  origin: string;
  first_seq: number;
  last_seq: number;
  entries: Buffer;
}

/** A node (no listening) whose library holds one 1 000-entry transaction of its own. */
async function writtenLibrary(): Promise<{ node: SyncNode; lib: Library; dataDir: string; ids: string[] }> {
  const dataDir = await makeTempDir('lsync-chunks-');
  const node = await startNode(dataDir, { listen: [] });
  const lib = await node.createLibrary({ name: 'chunks' });
  const ids: string[] = [];
  await lib.transaction(async (tx) => {
    for (let i = 0; i < ROWS; i++) {
      // Every kind of entry: upserts of each conflict rule, partial updates, deletes.
      if (i % 10 === 9) {
        await tx.delete('note', ids[i - 3]!);
        ids.push(ids[i - 3]!);
      } else if (i % 10 === 8) {
        await tx.update('profile', ids[i - 1]!, { score: i, color: null });
        ids.push(ids[i - 1]!);
      } else if (i % 10 === 7) {
        ids.push((await tx.upsert('profile', { id: `p-${i}`, name: `name ${i}`, color: 'red', score: null })).id as string);
      } else if (i % 10 === 5) {
        ids.push((await tx.upsert('tag', { label: `label ${i}` })).id as string);
      } else {
        ids.push((await tx.upsert('note', { id: `n-${i}`, title: `title ${i}`, body: i % 3 === 0 ? null : 'x'.repeat(i % 50) })).id as string);
      }
    }
  });
  expect(lib.versionVector()).toEqual({ [node.deviceId]: ROWS });
  expect(await engineOf(lib).logSize()).toBe(ROWS);
  return { node, lib, dataDir, ids };
}

/** The `sync_log` rows as stored in the library's SQLite file, read over a separate connection. */
function storedChunks(dataDir: string, lib: Library): StoredChunk[] {
  const db = new Database(join(dataDir, 'libraries', `${lib.id}.sqlite`), { readonly: true, fileMustExist: true });
  try {
    return db.prepare('SELECT origin, first_seq, last_seq, entries FROM sync_log ORDER BY origin, last_seq').all() as StoredChunk[];
  } finally {
    db.close();
  }
}

const bytes = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength);
const ranges = (chunks: readonly Chunk[]) => chunks.map((c) => [c.firstSeq, c.lastSeq]);
const decoded = (chunks: readonly Chunk[]): LogEntry[] => chunks.flatMap((c) => decodeChunk(c).map((d) => d.entry));
/** Bytes a result counts against maxBytes. */
const cost = (chunks: readonly Chunk[]) => chunks.reduce((n, c) => n + c.entries.byteLength + CHUNK_OVERHEAD_BYTES, 0);

/** Byte offsets of each entry in a stored chunk (entry seq → [start, end)). */
function offsets(stored: StoredChunk): Map<number, [number, number]> {
  const origin = stored.origin;
  return new Map(
    decodeChunk({ origin, firstSeq: stored.first_seq, lastSeq: stored.last_seq, entries: stored.entries }).map((d) => [
      d.entry.seq,
      [d.start, d.end],
    ]),
  );
}

/** Asserts `chunk` is stored chunk `stored`, or the slice of its bytes holding the chunk's seqs. */
function expectSliceOf(chunk: Chunk, stored: StoredChunk): void {
  expect(chunk.origin).toBe(stored.origin);
  expect(chunk.firstSeq).toBeGreaterThanOrEqual(stored.first_seq);
  expect(chunk.lastSeq).toBeLessThanOrEqual(stored.last_seq);
  const at = offsets(stored);
  const start = at.get(chunk.firstSeq)![0];
  const end = at.get(chunk.lastSeq)![1];
  expect(bytes(chunk.entries)).toEqual(stored.entries.subarray(start, end));
}

describe('chunksAfter', () => {
  it('hands out stored chunks as they are when the vector is on a chunk boundary', async () => {
    const { node, lib, dataDir, ids } = await writtenLibrary();
    const origin = node.deviceId;
    const stored = storedChunks(dataDir, lib);
    // The 1 000-entry transaction is stored as chunks of at most MAX_CHUNK_ENTRIES.
    expect(MAX_CHUNK_ENTRIES).toBe(256);
    expect(stored.map((s) => [s.origin, s.first_seq, s.last_seq])).toEqual([
      [origin, 1, 256],
      [origin, 257, 512],
      [origin, 513, 768],
      [origin, 769, 1000],
    ]);

    const { result: all, decodes } = await chunksAfterCounted(lib, {}, BIG);
    // Whole stored chunks need no decoding.
    expect(decodes).toBe(0);
    expect(ranges(all.chunks)).toEqual([
      [1, 256],
      [257, 512],
      [513, 768],
      [769, 1000],
    ]);
    expect(all.chunks.map((c) => c.origin)).toEqual(stored.map(() => origin));
    all.chunks.forEach((c, i) => expect(bytes(c.entries)).toEqual(stored[i]!.entries));
    expect(all).toMatchObject({ entries: ROWS, hasMore: false, pruned: [] });

    // Decoded, they are exactly entriesAfter's entries: the transaction's writes in order.
    const viaEntries = await engineOf(lib).entriesAfter({}, BIG);
    expect(viaEntries.hasMore).toBe(false);
    expect(decoded(all.chunks)).toEqual(viaEntries.entries);
    expect(viaEntries.entries.map((e) => e.id)).toEqual(ids);
    expect(viaEntries.entries.map((e) => e.seq)).toEqual(Array.from({ length: ROWS }, (_, i) => i + 1));
    expect(new Set(viaEntries.entries.map((e) => e.op))).toEqual(new Set(['upsert', 'update', 'delete']));

    // A vector on a later boundary: the remaining stored chunks, as they are.
    const { result: fromBoundary, decodes: boundaryDecodes } = await chunksAfterCounted(lib, { [origin]: 512 }, BIG);
    expect(boundaryDecodes).toBe(0);
    expect(ranges(fromBoundary.chunks)).toEqual([
      [513, 768],
      [769, 1000],
    ]);
    fromBoundary.chunks.forEach((c, i) => expect(bytes(c.entries)).toEqual(stored[i + 2]!.entries));
    expect(fromBoundary).toMatchObject({ entries: 488, hasMore: false, pruned: [] });

    // Nothing after the end (or past it).
    expect(await engineOf(lib).chunksAfter({ [origin]: ROWS }, BIG)).toEqual({ chunks: [], entries: 0, hasMore: false, pruned: [] });
    expect(await engineOf(lib).chunksAfter({ [origin]: ROWS + 50 }, BIG)).toEqual({ chunks: [], entries: 0, hasMore: false, pruned: [] });
  });

  it('cuts the chunk a vector falls inside: the part is a slice of the stored bytes', async () => {
    const { node, lib, dataDir } = await writtenLibrary();
    const origin = node.deviceId;
    const stored = storedChunks(dataDir, lib);

    const { result: inside, decodes } = await chunksAfterCounted(lib, { [origin]: 100 }, BIG);
    expect(ranges(inside.chunks)).toEqual([
      [101, 256],
      [257, 512],
      [513, 768],
      [769, 1000],
    ]);
    // Only the chunk that was cut had to be decoded (to find where seq 101 starts).
    expect(decodes).toBe(1);
    expectSliceOf(inside.chunks[0]!, stored[0]!);
    // The cut keeps the stored tail: same bytes as the stored chunk from entry 101 on.
    expect(bytes(inside.chunks[0]!.entries)).toEqual(stored[0]!.entries.subarray(offsets(stored[0]!).get(101)![0]));
    inside.chunks.slice(1).forEach((c, i) => expect(bytes(c.entries)).toEqual(stored[i + 1]!.entries));
    expect(inside).toMatchObject({ entries: 900, hasMore: false, pruned: [] });
    expect(decoded(inside.chunks)).toEqual((await engineOf(lib).entriesAfter({ [origin]: 100 }, BIG)).entries);
    expect(decoded(inside.chunks)[0]!.seq).toBe(101);

    // One entry short of a boundary, and in the last chunk.
    const last = await engineOf(lib).chunksAfter({ [origin]: 255 }, BIG);
    expect(ranges(last.chunks)).toEqual([
      [256, 256],
      [257, 512],
      [513, 768],
      [769, 1000],
    ]);
    expectSliceOf(last.chunks[0]!, stored[0]!);
    const tail = await engineOf(lib).chunksAfter({ [origin]: 999 }, BIG);
    expect(ranges(tail.chunks)).toEqual([[1000, 1000]]);
    expectSliceOf(tail.chunks[0]!, stored[3]!);
    expect(decoded(tail.chunks)).toEqual((await engineOf(lib).entriesAfter({ [origin]: 999 }, BIG)).entries);
  });

  it('cuts where the limits fall, never returns nothing, and reports hasMore', async () => {
    const { node, lib, dataDir } = await writtenLibrary();
    const origin = node.deviceId;
    const stored = storedChunks(dataDir, lib);
    const same = async (after: VersionVector, limits: ReadLimits) => {
      const chunks = await engineOf(lib).chunksAfter(after, limits);
      const entries = await engineOf(lib).entriesAfter(after, limits);
      expect(decoded(chunks.chunks)).toEqual(entries.entries);
      expect(chunks.entries).toBe(entries.entries.length);
      expect(chunks.hasMore).toBe(entries.hasMore);
      expect(chunks.pruned).toEqual(entries.pruned);
      return chunks;
    };

    // maxRecords 300: the first stored chunk whole, then the first 44 entries of the second.
    const r300 = await same({}, { maxRecords: 300, maxBytes: 1 << 30 });
    expect(r300.entries).toBe(300);
    expect(ranges(r300.chunks)).toEqual([
      [1, 256],
      [257, 300],
    ]);
    expect(bytes(r300.chunks[0]!.entries)).toEqual(stored[0]!.entries);
    expectSliceOf(r300.chunks[1]!, stored[1]!);
    expect(bytes(r300.chunks[1]!.entries)).toEqual(stored[1]!.entries.subarray(0, offsets(stored[1]!).get(300)![1]));
    expect(r300.hasMore).toBe(true);

    // From inside a chunk, 300 records span the cut and a limit inside the next chunk.
    const inside300 = await same({ [origin]: 100 }, { maxRecords: 300, maxBytes: 1 << 30 });
    expect(ranges(inside300.chunks)).toEqual([
      [101, 256],
      [257, 400],
    ]);
    expect(inside300.entries).toBe(300);
    inside300.chunks.forEach((c, i) => expectSliceOf(c, stored[i]!));
    expect(inside300.hasMore).toBe(true);

    // A limit exactly at a chunk boundary: whole chunk, more to come.
    const exact = await same({}, { maxRecords: 256, maxBytes: 1 << 30 });
    expect(ranges(exact.chunks)).toEqual([[1, 256]]);
    expect(exact.hasMore).toBe(true);
    // The last 300 records fit a limit of 300 exactly: nothing more.
    const end = await same({ [origin]: 700 }, { maxRecords: 300, maxBytes: 1 << 30 });
    expect(end.entries).toBe(300);
    expect(end.hasMore).toBe(false);

    // A byte limit too small for any entry still moves one entry.
    const one = await same({}, { maxRecords: 1_000, maxBytes: 1 });
    expect(ranges(one.chunks)).toEqual([[1, 1]]);
    expectSliceOf(one.chunks[0]!, stored[0]!);
    expect(one.hasMore).toBe(true);
    const lastOne = await same({ [origin]: 999 }, { maxRecords: 1_000, maxBytes: 1 });
    expect(ranges(lastOne.chunks)).toEqual([[1000, 1000]]);
    expect(lastOne.hasMore).toBe(false);

    // A byte limit inside the second chunk: the first whole, the second cut at the last entry
    // that fits; one more entry would not have fitted.
    const maxBytes = stored[0]!.entries.byteLength + CHUNK_OVERHEAD_BYTES + CHUNK_OVERHEAD_BYTES + 5_000;
    const byBytes = await same({}, { maxRecords: 1_000, maxBytes });
    expect(byBytes.chunks).toHaveLength(2);
    expect(byBytes.chunks[0]!.lastSeq).toBe(256);
    expectSliceOf(byBytes.chunks[1]!, stored[1]!);
    expect(cost(byBytes.chunks)).toBeLessThanOrEqual(maxBytes);
    const cutAt = byBytes.chunks[1]!.lastSeq;
    expect(cutAt).toBeGreaterThan(257);
    expect(cutAt).toBeLessThan(512);
    const [nextStart, nextEnd] = offsets(stored[1]!).get(cutAt + 1)!;
    expect(cost(byBytes.chunks) + (nextEnd - nextStart)).toBeGreaterThan(maxBytes);
    expect(byBytes.hasMore).toBe(true);
  });

  it('several origins in origin order; hasMore for origins past the limit; pruned origins skipped', async () => {
    const { node, lib } = await writtenLibrary();
    const origin = node.deviceId;
    // A second origin's 300 entries, applied as received from another device.
    const other = await startNode(undefined, { listen: [] });
    const otherLib = await other.createLibrary({ name: 'copy', id: lib.id });
    await otherLib.transaction(async (tx) => {
      for (let i = 0; i < 300; i++) await tx.upsert('note', { id: `o-${i}`, title: `other ${i}`, body: null });
    });
    await engineOf(lib).applyRemote((await engineOf(otherLib).entriesAfter({}, BIG)).entries);
    const sorted = [origin, other.deviceId].sort();
    const size = { [origin]: ROWS, [other.deviceId]: 300 };

    const all = await engineOf(lib).chunksAfter({}, BIG);
    expect(all.chunks.map((c) => c.origin)).toEqual(sorted.flatMap((o) => (size[o] === ROWS ? [o, o, o, o] : [o, o])));
    expect(all).toMatchObject({ entries: ROWS + 300, hasMore: false, pruned: [] });
    expect(decoded(all.chunks)).toEqual((await engineOf(lib).entriesAfter({}, BIG)).entries);

    // A record limit reached inside the first origin: the second is not started, hasMore.
    const firstOnly = await engineOf(lib).chunksAfter({}, { maxRecords: size[sorted[0]!]! - 10, maxBytes: 1 << 30 });
    expect(new Set(firstOnly.chunks.map((c) => c.origin))).toEqual(new Set([sorted[0]]));
    expect(firstOnly.hasMore).toBe(true);
    // Reached inside the second: the first whole, the second cut.
    const limit = size[sorted[0]!]! + 20;
    const both = await engineOf(lib).chunksAfter({}, { maxRecords: limit, maxBytes: 1 << 30 });
    expect(both.entries).toBe(limit);
    expect(both.chunks.at(-1)).toMatchObject({ origin: sorted[1], firstSeq: 1, lastSeq: 20 });
    expect(both.hasMore).toBe(true);
    // An origin the reader holds entirely adds nothing.
    const onlyOther = await engineOf(lib).chunksAfter({ [origin]: ROWS }, BIG);
    expect(new Set(onlyOther.chunks.map((c) => c.origin))).toEqual(new Set([other.deviceId]));
    expect(onlyOther.entries).toBe(300);

    // A partner acked 300 of each: whole chunks only are pruned (1..256 here, all 300 there).
    await engineOf(lib).recordAck('11111111-1111-4111-8111-111111111111', { [origin]: 300, [other.deviceId]: 300 });
    expect(await engineOf(lib).prune(['11111111-1111-4111-8111-111111111111'])).toBe(256 + 300);
    const pruned = await engineOf(lib).chunksAfter({}, BIG);
    expect(pruned.pruned).toEqual(
      [
        { origin, requestedAfter: 0, prunedThrough: 256 },
        { origin: other.deviceId, requestedAfter: 0, prunedThrough: 300 },
      ].sort((x, y) => (x.origin < y.origin ? -1 : 1)),
    );
    expect(pruned.chunks).toEqual([]);
    expect(pruned.hasMore).toBe(false);
    expect(pruned.pruned).toEqual((await engineOf(lib).entriesAfter({}, BIG)).pruned);
    // Behind the pruned point of one origin only: that origin is reported, the other still read.
    const mixed = await engineOf(lib).chunksAfter({ [origin]: 256 }, BIG);
    expect(mixed.pruned).toEqual([{ origin: other.deviceId, requestedAfter: 0, prunedThrough: 300 }]);
    expect(ranges(mixed.chunks)).toEqual([
      [257, 512],
      [513, 768],
      [769, 1000],
    ]);
    expect(new Set(mixed.chunks.map((c) => c.origin))).toEqual(new Set([origin]));
    expect(mixed.hasMore).toBe(false);
    const behind = await engineOf(lib).chunksAfter({ [origin]: 100, [other.deviceId]: 300 }, BIG);
    expect(behind.pruned).toEqual([{ origin, requestedAfter: 100, prunedThrough: 256 }]);
    expect(behind.chunks).toEqual([]);
    // After the pruned point: what is left, from the next stored chunk on.
    const rest = await engineOf(lib).chunksAfter({ [origin]: 256, [other.deviceId]: 300 }, BIG);
    expect(rest.pruned).toEqual([]);
    expect(ranges(rest.chunks)).toEqual([
      [257, 512],
      [513, 768],
      [769, 1000],
    ]);
    expect(rest.entries).toBe(ROWS - 256);
  });

  it('decoded pages round-trip through applyRemote on another replica', async () => {
    const { lib } = await writtenLibrary();
    const other = await startNode(undefined, { listen: [] });
    const copy = await other.createLibrary({ name: 'copy', id: lib.id });
    const after: VersionVector = {};
    let pages = 0;
    for (;;) {
      const page = await engineOf(lib).chunksAfter(after, { maxRecords: 300, maxBytes: 1 << 30 });
      if (page.chunks.length === 0) break;
      pages += 1;
      const result = await engineOf(copy).applyRemote(decoded(page.chunks));
      expect(result).toMatchObject({ applied: page.entries, duplicates: 0, gaps: [] });
      for (const c of page.chunks) after[c.origin] = c.lastSeq;
      if (!page.hasMore) break;
    }
    expect(pages).toBe(4);
    expect(copy.versionVector()).toEqual(lib.versionVector());
    expect(await copy.digest()).toBe(await lib.digest());
    // The copy's log holds the same entries, so it can relay them.
    expect((await engineOf(copy).entriesAfter({}, BIG)).entries).toEqual((await engineOf(lib).entriesAfter({}, BIG)).entries);
  });
});
