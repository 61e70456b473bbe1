/**
 * Peer log reads, acks and pruning through a real node and SQLite file: reads after a version
 * vector bounded by records and bytes (also across stored chunk boundaries), several origins,
 * acks that only move forward, pruning that waits for every listed partner (one that never
 * acked holds it back) and reports what it removed.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { createSyncNode, defineModel, type Library, type SyncNode, type VersionVector } from '../src/index.js';
import type { LogEntry } from '../src/peer-log/types.js';
import { engineOf } from '../src/library/library.js';

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

async function device(libraryId?: string): Promise<{ node: SyncNode; lib: Library }> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-peer-log-'));
  dirs.push(dataDir);
  const node = await createSyncNode({ dataDir, models: [Note], listen: [] });
  nodes.push(node);
  const lib = await node.createLibrary({ name: 'log', id: libraryId });
  return { node, lib };
}

/** `count` shared writes: one large transaction (several stored chunks), then single writes. */
async function writeNotes(lib: Library, count: number, body: string | null = null): Promise<void> {
  const inTransaction = Math.floor(count * 0.8);
  await lib.transaction(async (tx) => {
    for (let i = 0; i < inTransaction; i++) await tx.upsert('note', { title: `t${i}`, body });
  });
  for (let i = inTransaction; i < count; i++) await lib.upsert('note', { title: `t${i}`, body });
}

/** Pages through the log with `limits`, advancing the vector past each page. */
async function readAll(lib: Library, limits: { maxRecords: number; maxBytes: number }) {
  const pages: LogEntry[][] = [];
  let vector: VersionVector = {};
  for (;;) {
    const page = await engineOf(lib).entriesAfter(vector, limits);
    expect(page.pruned).toEqual([]);
    pages.push(page.entries);
    vector = { ...vector };
    for (const e of page.entries) vector[e.origin] = e.seq;
    if (!page.hasMore) break;
    expect(page.entries.length).toBeGreaterThan(0);
  }
  return pages;
}

describe('reading the log after a version vector', () => {
  test('pages bounded by records return every entry once, in dense per-origin order', async () => {
    const { node, lib } = await device();
    await writeNotes(lib, 700);
    const pages = await readAll(lib, { maxRecords: 100, maxBytes: 1 << 30 });
    expect(pages).toHaveLength(7);
    for (const page of pages) expect(page.length).toBe(100);
    const seqs = pages.flat().map((e) => e.seq);
    expect(seqs).toEqual(Array.from({ length: 700 }, (_, i) => i + 1));
    expect(new Set(pages.flat().map((e) => e.origin))).toEqual(new Set([node.deviceId]));
    expect(await engineOf(lib).logSize()).toBe(700);
  });

  test('pages bounded by bytes stay under the bound, but always carry at least one entry', async () => {
    const { lib } = await device();
    await writeNotes(lib, 60, 'x'.repeat(1_000));
    const pages = await readAll(lib, { maxRecords: 1_000, maxBytes: 10_000 });
    // Each entry carries 1 000 bytes of body, so a page of 10 000 bytes holds at most 9 of them.
    for (const page of pages) {
      expect(page.length).toBeGreaterThanOrEqual(1);
      expect(page.length).toBeLessThanOrEqual(9);
    }
    expect(pages.flat().map((e) => e.seq)).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));

    const single = await engineOf(lib).entriesAfter({}, { maxRecords: 1_000, maxBytes: 10 });
    expect(single.entries.map((e) => e.seq)).toEqual([1]);
    expect(single.hasMore).toBe(true);
  });

  test('entries of several origins: relayed entries keep their origin, seq and clock', async () => {
    const a = await device();
    const b = await device(a.lib.id);
    await writeNotes(a.lib, 300);
    await writeNotes(b.lib, 40);
    const fromA = (await engineOf(a.lib).entriesAfter({}, { maxRecords: 10_000, maxBytes: 1 << 30 })).entries;
    expect(await engineOf(b.lib).applyRemote(fromA)).toEqual({ applied: 300, duplicates: 0, gaps: [], refused: 0 });

    const all = await engineOf(b.lib).entriesAfter({}, { maxRecords: 10_000, maxBytes: 1 << 30 });
    const ofA = all.entries.filter((e) => e.origin === a.node.deviceId);
    const ofB = all.entries.filter((e) => e.origin === b.node.deviceId);
    expect(ofA).toEqual(fromA);
    expect(ofB.map((e) => e.seq)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));

    // A vector that holds all of A's entries and 30 of B's asks only for B's last 10.
    const rest = await engineOf(b.lib).entriesAfter({ [a.node.deviceId]: 300, [b.node.deviceId]: 30 }, { maxRecords: 10_000, maxBytes: 1 << 30 });
    expect(rest.entries.map((e) => [e.origin, e.seq])).toEqual(
      Array.from({ length: 10 }, (_, i) => [b.node.deviceId, 31 + i]),
    );
    expect(rest.hasMore).toBe(false);
    expect(await b.lib.digest()).not.toBe(await a.lib.digest());
    expect(await engineOf(a.lib).applyRemote(rest.entries.concat(ofB.slice(0, 30)))).toMatchObject({ applied: 40 });
    expect(await a.lib.digest()).toBe(await b.lib.digest());
  });
});

describe('applying received chunks', () => {
  test('a chunk partly held is applied from its first new entry; every entry is logged once', async () => {
    const a = await device();
    await writeNotes(a.lib, 300);
    const chunks = (await engineOf(a.lib).chunksAfter({}, { maxRecords: 10_000, maxBytes: 1 << 30 })).chunks;
    expect(chunks[0]!.firstSeq).toBe(1);
    expect(chunks[0]!.lastSeq).toBeGreaterThan(100);
    const b = await device(a.lib.id);
    const first100 = (await engineOf(a.lib).entriesAfter({}, { maxRecords: 100, maxBytes: 1 << 30 })).entries;
    await engineOf(b.lib).applyRemote(first100);
    // The first chunk (100 of its entries held), then the rest: the same log as A's.
    expect(await engineOf(b.lib).applyRemoteChunks(chunks)).toMatchObject({ applied: 200, duplicates: 100, gaps: [], refused: 0 });
    const seqs = (await engineOf(b.lib).entriesAfter({}, { maxRecords: 10_000, maxBytes: 1 << 30 })).entries
      .filter((e) => e.origin === a.node.deviceId)
      .map((e) => e.seq);
    expect(seqs).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    expect(await engineOf(b.lib).logSize()).toBe(300);
    expect(await b.lib.digest()).toBe(await a.lib.digest());
  });

  test('a chunk after a gap is not applied and leaves the log untouched', async () => {
    const a = await device();
    await writeNotes(a.lib, 300);
    const chunks = (await engineOf(a.lib).chunksAfter({}, { maxRecords: 10_000, maxBytes: 1 << 30 })).chunks;
    const b = await device(a.lib.id);
    const result = await engineOf(b.lib).applyRemoteChunks(chunks.slice(1));
    expect(result.applied).toBe(0);
    expect(result.gaps).toEqual([{ origin: a.node.deviceId, heldSeq: 0, firstReceivedSeq: chunks[1]!.firstSeq }]);
    expect(await engineOf(b.lib).logSize()).toBe(0);
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

    // Pruning never changes the rows.
    const digest = await lib.digest();
    await engineOf(lib).recordAck(PARTNER_2, { [me]: 600 });
    expect(await engineOf(lib).prune([PARTNER_1, PARTNER_2])).toBe(600 - deleted);
    expect(await engineOf(lib).logSize()).toBe(0);
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
    expect(await engineOf(lib).prune([])).toBe(50);
    expect(await engineOf(lib).logSize()).toBe(0);
  });
});
