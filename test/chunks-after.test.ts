/**
 * `lib.chunksAfter(vector, limits)` (src/peer-log/log-store.ts): the log read in stored form,
 * which is what goes on the wire. Since protocol 2.0 the log is stored and served as signed
 * runs, whole. Against a real node and SQLite file:
 *
 * - stored runs are handed out as they are: the very bytes, `prev` and signature of the
 *   `sync_log` rows (checked against the file with a separate connection), without decoding;
 * - a run is never cut: a vector inside a stored run is reported in `pruned` (no honest holder
 *   has such a position), and a page ends before a run that does not fit its limits;
 * - a page always carries its first run, over the limits if need be; `hasMore` and `pruned`
 *   as for `entriesAfter`;
 * - the decoded runs equal `entriesAfter`, and applied page by page on another replica they
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
import { startNode, stopAllNodes, useMemoryTransport } from './helpers/cluster.js';
import { engineOf } from '../src/library/library.js';
import { copyRuns, introduce } from './helpers/log-copy.js';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { deviceSignatures } from '../src/node/native-signatures.js';
import { verifyRun } from '../src/peer-log/signed-runs.js';

useMemoryTransport();

/** Any device's check of a run's signature: the key is the one the run's author PeerId names. */
const STRANGER = deviceSignatures(await generateKeyPair('Ed25519'));

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
  prev: Buffer;
  sig: Buffer;
}

/**
 * A node (no listening) whose library holds one 1 000-entry transaction of its own; `introduced`:
 * after its member row (seq 1), so that other replicas can check its runs.
 */
async function writtenLibrary(introduced = false): Promise<{ node: SyncNode; lib: Library; dataDir: string; ids: string[] }> {
  const dataDir = await makeTempDir('lsync-chunks-');
  const node = await startNode(dataDir, { listen: [] });
  const lib = await node.createLibrary({ name: 'chunks' });
  if (introduced) await introduce(lib);
  const base = introduced ? 1 : 0;
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
  expect(lib.versionVector()).toEqual({ [node.deviceId]: base + ROWS });
  expect(await engineOf(lib).logSize()).toBe(base + ROWS);
  return { node, lib, dataDir, ids };
}

/** The `sync_log` rows as stored in the library's SQLite file, read over a separate connection. */
function storedChunks(dataDir: string, lib: Library): StoredChunk[] {
  const db = new Database(join(dataDir, 'libraries', `${lib.id}.sqlite`), { readonly: true, fileMustExist: true });
  try {
    return db.prepare('SELECT origin, first_seq, last_seq, entries, prev, sig FROM sync_log ORDER BY origin, last_seq').all() as StoredChunk[];
  } finally {
    db.close();
  }
}

const bytes = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength);
const ranges = (chunks: readonly Chunk[]) => chunks.map((c) => [c.firstSeq, c.lastSeq]);
const decoded = (chunks: readonly Chunk[]): LogEntry[] => chunks.flatMap((c) => decodeChunk(c).map((d) => d.entry));
/** Bytes a result counts against maxBytes. */
const cost = (chunks: readonly Chunk[]) => chunks.reduce((n, c) => n + c.entries.byteLength + CHUNK_OVERHEAD_BYTES, 0);

/**
 * Asserts `chunk` is stored run `stored`, whole: same bounds, bytes and prev, and the stored
 * signature, or where the write's run was not signed yet when the file was read (signatures
 * are stored later: `own-run-signatures.ts`), one that verifies.
 */
function expectStored(chunk: Chunk, stored: StoredChunk, library: string): void {
  expect([chunk.origin, chunk.firstSeq, chunk.lastSeq]).toEqual([stored.origin, stored.first_seq, stored.last_seq]);
  expect(bytes(chunk.entries)).toEqual(stored.entries);
  expect(bytes(chunk.prev)).toEqual(stored.prev);
  if (stored.sig.byteLength > 0) expect(bytes(chunk.sig)).toEqual(stored.sig);
  expect(() => verifyRun(STRANGER, library, chunk)).not.toThrow();
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
    all.chunks.forEach((c, i) => expectStored(c, stored[i]!, lib.id));
    // Signed runs, chained: the first follows GENESIS, each next one the run before it.
    expect(bytes(all.chunks[0]!.prev)).toEqual(Buffer.alloc(32));
    expect(new Set(all.chunks.map((c) => bytes(c.prev).toString('hex'))).size).toBe(4);
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
    fromBoundary.chunks.forEach((c, i) => expectStored(c, stored[i + 2]!, lib.id));
    expect(fromBoundary).toMatchObject({ entries: 488, hasMore: false, pruned: [] });

    // Nothing after the end (or past it).
    expect(await engineOf(lib).chunksAfter({ [origin]: ROWS }, BIG)).toEqual({ chunks: [], entries: 0, hasMore: false, pruned: [] });
    expect(await engineOf(lib).chunksAfter({ [origin]: ROWS + 50 }, BIG)).toEqual({ chunks: [], entries: 0, hasMore: false, pruned: [] });
  });

  it('never cuts a run: a vector inside a stored run gets that run whole (its holder is on a fork)', async () => {
    const { node, lib } = await writtenLibrary();
    const origin = node.deviceId;
    for (const [at, first] of [[100, 1], [255, 1], [257, 257], [999, 769]] as const) {
      const { result, decodes } = await chunksAfterCounted(lib, { [origin]: at }, BIG);
      expect(result.chunks[0], `after ${at}`).toMatchObject({ origin, firstSeq: first });
      expect(result.chunks[0]!.lastSeq).toBeGreaterThan(at);
      expect(result.chunks.at(-1)!.lastSeq).toBe(ROWS);
      expect(result).toMatchObject({ entries: ROWS - first + 1, hasMore: false, pruned: [] });
      // Served as stored, without decoding.
      expect(decodes).toBe(0);
    }
  });

  it('ends a page before a run that does not fit, always carries its first run, and reports hasMore', async () => {
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
      expect(chunks.pruned).toEqual([]);
      // Only whole stored runs, as stored.
      for (const c of chunks.chunks) expectStored(c, stored.find((s) => s.first_seq === c.firstSeq)!, lib.id);
      return chunks;
    };

    // maxRecords 300: the first run (256), not the second (it would make 512).
    const r300 = await same({}, { maxRecords: 300, maxBytes: 1 << 30 });
    expect(ranges(r300.chunks)).toEqual([[1, 256]]);
    expect(r300.entries).toBe(256);
    expect(r300.hasMore).toBe(true);
    const next300 = await same({ [origin]: 256 }, { maxRecords: 300, maxBytes: 1 << 30 });
    expect(ranges(next300.chunks)).toEqual([[257, 512]]);
    expect(next300.hasMore).toBe(true);

    // A limit exactly at a run boundary: whole runs, more to come.
    const exact = await same({}, { maxRecords: 256, maxBytes: 1 << 30 });
    expect(ranges(exact.chunks)).toEqual([[1, 256]]);
    expect(exact.hasMore).toBe(true);
    const two = await same({}, { maxRecords: 512, maxBytes: 1 << 30 });
    expect(ranges(two.chunks)).toEqual([[1, 256], [257, 512]]);
    expect(two.hasMore).toBe(true);
    // The last run (232 entries) fits a limit of 232 exactly: nothing more.
    const end = await same({ [origin]: 768 }, { maxRecords: 232, maxBytes: 1 << 30 });
    expect(ranges(end.chunks)).toEqual([[769, 1000]]);
    expect(end.hasMore).toBe(false);

    // A limit smaller than any run still moves one run, whole.
    const fewRecords = await same({}, { maxRecords: 10, maxBytes: 1 << 30 });
    expect(ranges(fewRecords.chunks)).toEqual([[1, 256]]);
    expect(fewRecords.hasMore).toBe(true);
    const one = await same({}, { maxRecords: 1_000, maxBytes: 1 });
    expect(ranges(one.chunks)).toEqual([[1, 256]]);
    expect(one.hasMore).toBe(true);
    const lastOne = await same({ [origin]: 768 }, { maxRecords: 1_000, maxBytes: 1 });
    expect(ranges(lastOne.chunks)).toEqual([[769, 1000]]);
    expect(lastOne.hasMore).toBe(false);

    // A byte limit one short of two runs: the first alone; exactly two runs: both.
    const twoRuns = stored[0]!.entries.byteLength + stored[1]!.entries.byteLength + 2 * CHUNK_OVERHEAD_BYTES;
    const short = await same({}, { maxRecords: 1_000, maxBytes: twoRuns - 1 });
    expect(ranges(short.chunks)).toEqual([[1, 256]]);
    expect(short.hasMore).toBe(true);
    const fits = await same({}, { maxRecords: 1_000, maxBytes: twoRuns });
    expect(ranges(fits.chunks)).toEqual([[1, 256], [257, 512]]);
    expect(cost(fits.chunks)).toBe(twoRuns);
    expect(fits.hasMore).toBe(true);
  });

  it('several origins in origin order; hasMore for origins past the limit; pruned origins skipped', async () => {
    const { node, lib } = await writtenLibrary();
    const origin = node.deviceId;
    // A second origin: its member row, then 300 entries, applied as received from that device.
    const other = await startNode(undefined, { listen: [] });
    const otherLib = await other.createLibrary({ name: 'copy', id: lib.id });
    await introduce(otherLib);
    await otherLib.transaction(async (tx) => {
      for (let i = 0; i < 300; i++) await tx.upsert('note', { id: `o-${i}`, title: `other ${i}`, body: null });
    });
    expect(await copyRuns(otherLib, lib)).toMatchObject({ applied: 301, gaps: [], forks: [] });
    const sorted = [origin, other.deviceId].sort();
    const size = { [origin]: ROWS, [other.deviceId]: 301 };
    const runCount = { [origin]: 4, [other.deviceId]: 3 };

    const all = await engineOf(lib).chunksAfter({}, BIG);
    expect(all.chunks.map((c) => c.origin)).toEqual(sorted.flatMap((o) => Array(runCount[o]).fill(o)));
    expect(ranges(all.chunks.filter((c) => c.origin === other.deviceId))).toEqual([[1, 1], [2, 257], [258, 301]]);
    expect(all).toMatchObject({ entries: ROWS + 301, hasMore: false, pruned: [] });
    expect(decoded(all.chunks)).toEqual((await engineOf(lib).entriesAfter({}, BIG)).entries);

    // A record limit reached inside the first origin: the second is not started, hasMore.
    const firstOnly = await engineOf(lib).chunksAfter({}, { maxRecords: size[sorted[0]!]! - 10, maxBytes: 1 << 30 });
    expect(new Set(firstOnly.chunks.map((c) => c.origin))).toEqual(new Set([sorted[0]]));
    expect(firstOnly.hasMore).toBe(true);
    // Room for the second origin's first run: the first whole, that run whole, hasMore.
    const secondFirst = all.chunks.find((c) => c.origin === sorted[1])!;
    const secondFirstSize = secondFirst.lastSeq - secondFirst.firstSeq + 1;
    const both = await engineOf(lib).chunksAfter({}, { maxRecords: size[sorted[0]!]! + secondFirstSize, maxBytes: 1 << 30 });
    expect(both.entries).toBe(size[sorted[0]!]! + secondFirstSize);
    expect(both.chunks.at(-1)).toMatchObject({ origin: sorted[1], firstSeq: 1, lastSeq: secondFirst.lastSeq });
    expect(both.hasMore).toBe(true);
    // One entry less: the second origin's first run is not cut, so none of it comes.
    const notCut = await engineOf(lib).chunksAfter({}, { maxRecords: size[sorted[0]!]! + secondFirstSize - 1, maxBytes: 1 << 30 });
    expect(new Set(notCut.chunks.map((c) => c.origin))).toEqual(new Set([sorted[0]]));
    expect(notCut.entries).toBe(size[sorted[0]!]);
    expect(notCut.hasMore).toBe(true);
    // An origin the reader holds entirely adds nothing.
    const onlyOther = await engineOf(lib).chunksAfter({ [origin]: ROWS }, BIG);
    expect(new Set(onlyOther.chunks.map((c) => c.origin))).toEqual(new Set([other.deviceId]));
    expect(onlyOther.entries).toBe(301);

    // A partner acked 300 of each: whole runs only are pruned (1..256 here, 1..257 there).
    await engineOf(lib).recordAck('11111111-1111-4111-8111-111111111111', { [origin]: 300, [other.deviceId]: 300 });
    expect(await engineOf(lib).prune(['11111111-1111-4111-8111-111111111111'])).toBe(256 + 257);
    const pruned = await engineOf(lib).chunksAfter({}, BIG);
    expect(pruned.pruned).toEqual(
      [
        { origin, requestedAfter: 0, prunedThrough: 256 },
        { origin: other.deviceId, requestedAfter: 0, prunedThrough: 257 },
      ].sort((x, y) => (x.origin < y.origin ? -1 : 1)),
    );
    expect(pruned.chunks).toEqual([]);
    expect(pruned.hasMore).toBe(false);
    expect(pruned.pruned).toEqual((await engineOf(lib).entriesAfter({}, BIG)).pruned);
    // Behind the pruned point of one origin only: that origin is reported, the other still read.
    const mixed = await engineOf(lib).chunksAfter({ [origin]: 256 }, BIG);
    expect(mixed.pruned).toEqual([{ origin: other.deviceId, requestedAfter: 0, prunedThrough: 257 }]);
    expect(ranges(mixed.chunks)).toEqual([
      [257, 512],
      [513, 768],
      [769, 1000],
    ]);
    expect(new Set(mixed.chunks.map((c) => c.origin))).toEqual(new Set([origin]));
    expect(mixed.hasMore).toBe(false);
    const behind = await engineOf(lib).chunksAfter({ [origin]: 100, [other.deviceId]: 301 }, BIG);
    expect(behind.pruned).toEqual([{ origin, requestedAfter: 100, prunedThrough: 256 }]);
    expect(behind.chunks).toEqual([]);
    // After the pruned point: what is left, from the next stored run on.
    const rest = await engineOf(lib).chunksAfter({ [origin]: 256, [other.deviceId]: 257 }, BIG);
    expect(rest.pruned).toEqual([]);
    expect(ranges(rest.chunks)).toEqual(
      sorted.flatMap((o) => (o === origin ? [[257, 512], [513, 768], [769, 1000]] : [[258, 301]])),
    );
    expect(rest.entries).toBe(ROWS - 256 + 301 - 257);
  });

  it('pages round-trip through applyRemoteChunks on another replica', async () => {
    const { node, lib } = await writtenLibrary(true);
    const other = await startNode(undefined, { listen: [] });
    const copy = await other.createLibrary({ name: 'copy', id: lib.id });
    const after: VersionVector = {};
    const sizes: number[] = [];
    for (;;) {
      const page = await engineOf(lib).chunksAfter(after, { maxRecords: 300, maxBytes: 1 << 30 });
      if (page.chunks.length === 0) break;
      sizes.push(page.entries);
      const result = await engineOf(copy).applyRemoteChunks(page.chunks);
      expect(result).toEqual({ applied: page.entries, duplicates: 0, gaps: [], refused: 0, forks: [], withheld: 0, forkedRuns: [] });
      for (const c of page.chunks) after[c.origin] = c.lastSeq;
      expect(copy.versionVector()).toEqual(after);
      if (!page.hasMore) break;
    }
    // The member row and the first 256 of the transaction, then one run a page.
    expect(sizes).toEqual([257, 256, 256, 232]);
    expect(copy.versionVector()).toEqual({ [node.deviceId]: ROWS + 1 });
    expect(copy.versionVector()).toEqual(lib.versionVector());
    expect(await copy.digest()).toBe(await lib.digest());
    // The copy's log holds the same runs, as signed, so it can relay them.
    expect((await engineOf(copy).entriesAfter({}, BIG)).entries).toEqual((await engineOf(lib).entriesAfter({}, BIG)).entries);
    const runs = async (l: Library) => (await engineOf(l).chunksAfter({}, BIG)).chunks.map((c) => [ranges([c]), bytes(c.entries), bytes(c.prev), bytes(c.sig)]);
    expect(await runs(copy)).toEqual(await runs(lib));
  });
});
