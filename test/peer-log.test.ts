/**
 * Peer log reads, acks and pruning through a real node and SQLite file: reads after a version
 * vector bounded by records and bytes, in whole signed runs (a page never cuts a run, and always
 * carries its first one), several origins, acks that only move forward, pruning that waits for
 * every listed partner (one that never acked holds it back) and reports what it removed.
 *
 * Replicas made with `createLibrary({ id })` are not members of each other: a device that writes
 * for another to receive `introduce`s itself first (its member row opens its log, seq 1).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, test } from 'vitest';
import type { PrivateKey } from '@libp2p/interface';
import { defineModel, type Library, type SyncNode, type VersionVector } from '../src/index.js';
import { createSyncNodeSigningWith } from '../src/node/sync-node.js';
import { deviceSignatures } from '../src/node/native-signatures.js';
import { packRun, signRun } from '../src/peer-log/signed-runs.js';
import type { LogEntry } from '../src/peer-log/types.js';
import { engineOf } from '../src/library/library.js';
import { type Chunk, decodeChunk, encodeChunks, MAX_CHUNK_ENTRIES } from '../src/peer-log/chunk.js';
import { copyRuns, EVERY_RUN, introduce, lastRunsSize, runsOf } from './helpers/log-copy.js';

const Note = defineModel({
  name: 'note',
  ownership: 'shared',
  conflict: 'lww-field',
  fields: { title: 'text', body: { type: 'text', nullable: true } },
});

const PARTNER_1 = '11111111-1111-4111-8111-111111111111';
const PARTNER_2 = '22222222-2222-4222-8222-222222222222';

const nodes: SyncNode[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const node of nodes.splice(0)) await node.stop();
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

/** A node with its own replica of the library, and its libp2p key (which signs its runs). */
/** A device with a replica of `libraryId` (a new library if none); `legacyId`: a pre-2.0 random device id. */
async function device(libraryId?: string, legacyId?: string): Promise<{ node: SyncNode; lib: Library; key: PrivateKey }> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-peer-log-'));
  dirs.push(dataDir);
  if (legacyId !== undefined) fs.writeFileSync(path.join(dataDir, 'node.json'), JSON.stringify({ deviceId: legacyId }));
  let key: PrivateKey | undefined;
  const node = await createSyncNodeSigningWith({ dataDir, models: [Note], listen: [] }, (k) => {
    key = k;
    return deviceSignatures(k);
  });
  nodes.push(node);
  const lib = await node.createLibrary({ name: 'log', id: libraryId });
  return { node, lib, key: key! };
}

/** `count` shared writes: one large transaction (several stored chunks), then single writes. */
async function writeNotes(lib: Library, count: number, body: string | null = null): Promise<void> {
  const inTransaction = Math.floor(count * 0.8);
  await lib.transaction(async (tx) => {
    for (let i = 0; i < inTransaction; i++) await tx.upsert('note', { title: `t${i}`, body });
  });
  for (let i = inTransaction; i < count; i++) await lib.upsert('note', { title: `t${i}`, body });
}

/**
 * Pages through the log with `limits`, advancing the vector past each page. Each page's runs are
 * stored runs, whole (checked against the log read without limits), and `entriesAfter` decodes
 * the same page.
 */
async function readAll(lib: Library, limits: { maxRecords: number; maxBytes: number }) {
  const stored = new Set((await runsOf(lib)).map((c) => `${c.origin}#${c.firstSeq}..${c.lastSeq}`));
  const pages: Chunk[][] = [];
  let vector: VersionVector = {};
  for (;;) {
    const page = await engineOf(lib).chunksAfter(vector, limits);
    expect(page.pruned).toEqual([]);
    for (const c of page.chunks) expect(stored.has(`${c.origin}#${c.firstSeq}..${c.lastSeq}`), 'a whole stored run').toBe(true);
    const decoded = await engineOf(lib).entriesAfter(vector, limits);
    expect(decoded.entries).toEqual(entriesOf(page.chunks));
    expect(decoded.hasMore).toBe(page.hasMore);
    pages.push(page.chunks);
    vector = { ...vector };
    for (const c of page.chunks) vector[c.origin] = c.lastSeq;
    if (!page.hasMore) break;
    expect(page.chunks.length).toBeGreaterThan(0);
  }
  return pages;
}

const entriesOf = (chunks: readonly Chunk[]): LogEntry[] => chunks.flatMap((c) => decodeChunk(c).map((d) => d.entry));
const sizeOf = (chunks: readonly Chunk[]): number => chunks.reduce((n, c) => n + c.lastSeq - c.firstSeq + 1, 0);
/** A run's wire tuple as bytes (bounds, entries, prev and signature), compared by content. */
const wire = (c: Chunk): Buffer => Buffer.from(packRun(c));
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('reading the log after a version vector', () => {
  test('pages bounded by records return every entry once, in dense per-origin order, in whole runs', async () => {
    const { node, lib } = await device();
    await writeNotes(lib, 700);
    // The 560-write transaction is stored as runs of 256, 256 and 48; then 140 runs of one.
    expect(MAX_CHUNK_ENTRIES).toBe(256);
    const pages = await readAll(lib, { maxRecords: 100, maxBytes: 1 << 30 });
    // A run over the limit goes alone, whole; then runs while they fit: 48 + 52 of one, then 88
    // (the first two runs of each page).
    expect(pages.map((p) => p.map((c) => [c.firstSeq, c.lastSeq]).slice(0, 2))).toEqual([
      [[1, 256]],
      [[257, 512]],
      [[513, 560], [561, 561]],
      [[613, 613], [614, 614]],
    ]);
    expect(pages.map(sizeOf)).toEqual([256, 256, 100, 88]);
    // Every page of more than one run stays within the limit.
    for (const page of pages) if (page.length > 1) expect(sizeOf(page)).toBeLessThanOrEqual(100);
    const entries = pages.flatMap(entriesOf);
    expect(entries.map((e) => e.seq)).toEqual(range(1, 700));
    expect(new Set(entries.map((e) => e.origin))).toEqual(new Set([node.deviceId]));
    expect(await engineOf(lib).logSize()).toBe(700);
  });

  test('pages bounded by bytes stay under the bound, but always carry at least their first run', async () => {
    const { lib } = await device();
    await writeNotes(lib, 60, 'x'.repeat(1_000));
    const pages = await readAll(lib, { maxRecords: 1_000, maxBytes: 10_000 });
    // The 48-write transaction is one run of about 48 000 bytes: over the bound, it goes whole
    // and alone. Then runs of one entry of 1 000 bytes each: at most 9 fit 10 000 bytes.
    expect(pages[0]!.map((c) => [c.firstSeq, c.lastSeq])).toEqual([[1, 48]]);
    for (const page of pages.slice(1)) {
      expect(page.length).toBeGreaterThanOrEqual(1);
      expect(sizeOf(page)).toBeLessThanOrEqual(9);
      expect(page.reduce((n, c) => n + c.entries.byteLength, 0)).toBeLessThanOrEqual(10_000);
    }
    expect(pages.length).toBeGreaterThan(2);
    expect(pages.flatMap(entriesOf).map((e) => e.seq)).toEqual(range(1, 60));

    // A bound no entry fits: the first run, whole, and more to come.
    const single = await engineOf(lib).entriesAfter({}, { maxRecords: 1_000, maxBytes: 10 });
    expect(single.entries.map((e) => e.seq)).toEqual(range(1, 48));
    expect(single.hasMore).toBe(true);
    const next = await engineOf(lib).entriesAfter({ [single.entries[0]!.origin]: 48 }, { maxRecords: 1, maxBytes: 10 });
    expect(next.entries.map((e) => e.seq)).toEqual([49]);
    expect(next.hasMore).toBe(true);
  });

  test('entries of several origins: relayed runs keep their origin, seq, clock and signature', async () => {
    const a = await device();
    const b = await device(a.lib.id);
    await introduce(a.lib);
    await introduce(b.lib);
    await writeNotes(a.lib, 300);
    await writeNotes(b.lib, 40);
    const A = a.node.deviceId;
    const B = b.node.deviceId;
    // Each log opens with its device's member row (seq 1), then the transaction, then singles.
    expect(a.lib.versionVector()).toEqual({ [A]: 301 });
    expect((await runsOf(b.lib)).slice(0, 3).map((c) => [c.firstSeq, c.lastSeq])).toEqual([[1, 1], [2, 33], [34, 34]]);
    const fromA = (await engineOf(a.lib).entriesAfter({}, EVERY_RUN)).entries;
    expect(await copyRuns(a.lib, b.lib)).toEqual({ applied: 301, duplicates: 0, gaps: [], refused: 0, forks: [], withheld: 0, forkedRuns: [] });

    const all = await engineOf(b.lib).entriesAfter({}, EVERY_RUN);
    const ofA = all.entries.filter((e) => e.origin === A);
    const ofB = all.entries.filter((e) => e.origin === B);
    expect(ofA).toEqual(fromA);
    expect(ofB.map((e) => e.seq)).toEqual(range(1, 41));
    // Held as A signed them: same bounds, bytes, prev and signature.
    expect((await runsOf(b.lib)).filter((c) => c.origin === A).map(wire)).toEqual((await runsOf(a.lib)).map(wire));

    // A vector that holds all of A's entries and B's through its transaction asks only for B's last 8.
    const rest = await engineOf(b.lib).chunksAfter({ [A]: 301, [B]: 33 }, EVERY_RUN);
    expect(entriesOf(rest.chunks).map((e) => [e.origin, e.seq])).toEqual(range(34, 41).map((seq) => [B, seq]));
    expect(rest.hasMore).toBe(false);
    expect(await b.lib.digest()).not.toBe(await a.lib.digest());
    // Tail first, then the prefix, in one batch: applied in order, all of it.
    const prefix = (await runsOf(b.lib)).filter((c) => c.origin === B && c.lastSeq <= 33);
    expect(await engineOf(a.lib).applyRemoteChunks([...rest.chunks, ...prefix])).toMatchObject({ applied: 41, duplicates: 0, gaps: [], forks: [] });
    expect(await a.lib.digest()).toBe(await b.lib.digest());
  });
});

describe('applying received runs', () => {
  test('held runs are duplicates, the rest applied whole, and a run across a held boundary is a fork', async () => {
    const a = await device();
    await introduce(a.lib);
    await writeNotes(a.lib, 300);
    const A = a.node.deviceId;
    const runs = await runsOf(a.lib);
    // The member row, the 240-write transaction (one run), then 60 runs of one.
    expect(runs.slice(0, 3).map((c) => [c.firstSeq, c.lastSeq])).toEqual([[1, 1], [2, 241], [242, 242]]);
    const b = await device(a.lib.id);
    expect(await engineOf(b.lib).applyRemoteChunks(runs.slice(0, 2))).toMatchObject({ applied: 241, duplicates: 0, gaps: [], forks: [] });

    // A run A signed over 200..260, across the end of what C holds (241): A signed two runs for
    // positions 200..241, a fork of its log. C keeps its log as it is and records the fork; it
    // applies the other run (its changes through 260) off the log, and its log takes no more.
    const c = await device(a.lib.id);
    await engineOf(c.lib).applyRemoteChunks(runs.slice(0, 2));
    const entries = (await engineOf(a.lib).entriesAfter({ [A]: 1 }, EVERY_RUN)).entries.filter((e) => e.seq >= 200 && e.seq <= 260);
    const [body] = encodeChunks(entries);
    const across = signRun(deviceSignatures(a.key), a.lib.id, body!, runs[1]!.prev).chunk;
    expect(across).toMatchObject({ firstSeq: 200, lastSeq: 260 });
    const digest = await c.lib.digest();
    // Relayed on: the other run, and C's run it contradicts (a partner holding `across` lacks it).
    const forked = await engineOf(c.lib).applyRemoteChunks([across]);
    expect(forked).toMatchObject({ applied: 61, forks: [{ origin: A, seq: 200 }] });
    expect(forked.forkedRuns.map(wire)).toEqual([across, runs[1]!].map(wire));
    expect(c.lib.versionVector()).toEqual({ [A]: 241 });
    expect(await engineOf(c.lib).logSize()).toBe(241);
    expect(await c.lib.digest()).not.toBe(digest);
    expect(await engineOf(c.lib).applyRemoteChunks(runs.slice(2))).toMatchObject({ applied: 0, refused: 60 });

    // Every run: the two held are duplicates, the rest applied; the same log as A's.
    expect(await engineOf(b.lib).applyRemoteChunks(runs)).toEqual({ applied: 60, duplicates: 241, gaps: [], refused: 0, forks: [], withheld: 0, forkedRuns: [] });
    const seqs = (await engineOf(b.lib).entriesAfter({}, EVERY_RUN)).entries.filter((e) => e.origin === A).map((e) => e.seq);
    expect(seqs).toEqual(range(1, 301));
    expect(await engineOf(b.lib).logSize()).toBe(301);
    expect((await runsOf(b.lib)).map(wire)).toEqual(runs.map(wire));
    expect(await b.lib.digest()).toBe(await a.lib.digest());
  });

  test('a run after a gap is not applied and leaves the log untouched', async () => {
    const a = await device();
    await introduce(a.lib);
    await writeNotes(a.lib, 300);
    const runs = await runsOf(a.lib);
    const b = await device(a.lib.id);
    // B holds A's member row (so it knows A's key), then gets everything but the next run.
    expect(await engineOf(b.lib).applyRemoteChunks(runs.slice(0, 1))).toMatchObject({ applied: 1 });
    const result = await engineOf(b.lib).applyRemoteChunks(runs.slice(2));
    expect(result.applied).toBe(0);
    expect(result.gaps).toEqual([{ origin: a.node.deviceId, heldSeq: 1, firstReceivedSeq: runs[2]!.firstSeq }]);
    expect(await engineOf(b.lib).logSize()).toBe(1);
  });

  test("a key-derived device's runs are checked by its key alone; a pre-2.0 device's wait for its member row", async () => {
    // A key-derived id: its PeerId, named in each run, derives it. No member row is needed.
    const a = await device();
    await writeNotes(a.lib, 20);
    const b = await device(a.lib.id);
    expect(await engineOf(b.lib).applyRemoteChunks(await runsOf(a.lib))).toEqual({ applied: 20, duplicates: 0, gaps: [], refused: 0, forks: [], withheld: 0, forkedRuns: [] });

    // A random (pre-2.0) id: only its member row binds its PeerId, so its runs wait for it. Its
    // creator writes that row first, at the library's creation.
    const legacy = await device(undefined, randomUUID());
    await writeNotes(legacy.lib, 20);
    const all = await runsOf(legacy.lib);
    expect(all[0]).toMatchObject({ firstSeq: 1, lastSeq: 1 });
    const c = await device(legacy.lib.id);
    expect(await engineOf(c.lib).applyRemoteChunks(all.slice(1))).toEqual({ applied: 0, duplicates: 0, gaps: [], refused: 0, forks: [], withheld: 20, forkedRuns: [] });
    expect(await engineOf(c.lib).logSize()).toBe(0);
    expect(c.lib.versionVector()).toEqual({});
    // With the run that holds the row, in one batch, all of them apply.
    expect(await engineOf(c.lib).applyRemoteChunks(all)).toEqual({ applied: 21, duplicates: 0, gaps: [], refused: 0, forks: [], withheld: 0, forkedRuns: [] });
    expect(await c.lib.digest()).toBe(await legacy.lib.digest());
  });
});

describe('acks and pruning', () => {
  test('a partner that never acked holds pruning back; acks only move forward', async () => {
    const { node, lib } = await device();
    await writeNotes(lib, 600);
    const me = node.deviceId;

    await engineOf(lib).recordAck(PARTNER_1, { [me]: 600 });
    expect(await engineOf(lib).prune([PARTNER_1, PARTNER_2])).toBe(0);
    expect(await engineOf(lib).logSize()).toBe(600);

    await engineOf(lib).recordAck(PARTNER_1, { [me]: 10 }); // stale ack: ignored
    expect((await engineOf(lib).acks()).get(PARTNER_1)).toEqual({ [me]: 600 });

    // PARTNER_2 holds 300: entries up to 300 may go. The log is stored in chunks and pruned in
    // whole chunks, so what goes is a prefix ending at or before 300, never past it.
    await engineOf(lib).recordAck(PARTNER_2, { [me]: 300 });
    const deleted = await engineOf(lib).prune([PARTNER_1, PARTNER_2]);
    expect(deleted).toBeGreaterThan(0);
    expect(deleted).toBeLessThanOrEqual(300);
    expect(await engineOf(lib).logSize()).toBe(600 - deleted);

    const remaining = await engineOf(lib).entriesAfter({ [me]: deleted }, { maxRecords: 10_000, maxBytes: 1 << 30 });
    expect(remaining.pruned).toEqual([]);
    expect(remaining.entries.map((e) => e.seq)).toEqual(Array.from({ length: 600 - deleted }, (_, i) => deleted + 1 + i));

    // Asking from before what was pruned is reported, not silently answered with a gap.
    const tooOld = await engineOf(lib).entriesAfter({}, { maxRecords: 10_000, maxBytes: 1 << 30 });
    expect(tooOld.pruned).toEqual([{ origin: me, requestedAfter: 0, prunedThrough: deleted }]);
    expect(tooOld.entries).toEqual([]);

    // Pruning never changes the rows, and keeps the run the origin ends at (fork evidence).
    const digest = await lib.digest();
    await engineOf(lib).recordAck(PARTNER_2, { [me]: 600 });
    const kept = await lastRunsSize(lib);
    expect(await engineOf(lib).prune([PARTNER_1, PARTNER_2])).toBe(600 - deleted - kept);
    expect(await engineOf(lib).logSize()).toBe(kept);
    expect(await lib.digest()).toBe(digest);
    expect(lib.versionVector()).toEqual({ [me]: 600 });

    // New writes continue the sequence after pruning.
    await lib.upsert('note', { title: 'after' });
    const next = await engineOf(lib).entriesAfter({ [me]: 600 }, { maxRecords: 10, maxBytes: 1 << 20 });
    expect(next.entries.map((e) => e.seq)).toEqual([601]);
  });

  test('with no partners to wait for, everything acknowledged is everything', async () => {
    const { lib } = await device();
    await writeNotes(lib, 50);
    const kept = await lastRunsSize(lib);
    expect(kept).toBeGreaterThan(0);
    expect(await engineOf(lib).prune([])).toBe(50 - kept);
    expect(await engineOf(lib).logSize()).toBe(kept);
  });
});
