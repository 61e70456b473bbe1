/**
 * Partner acks are kept in memory by the replicator (src/replication/replicator.ts) and written
 * to SQLite only before pruning and on stop. The in-memory network, real SQLite files.
 *
 * 1. After three nodes sync, what each partner acknowledged is in memory (status) but not yet
 *    stored; a node stopped and restarted from its data directory, with its partners stopped,
 *    still shows every partner's acknowledged vector, so they were all saved on stop.
 * 2. Restarted with pruning on and the partner still away, a node prunes exactly what the
 *    partner acknowledged before the stop, and keeps what was written after the partner left.
 */
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Library, SyncNode, VersionVector } from '../src/index.js';
import { makeTempDir, removeTempDirs } from './helpers/child-process.js';
import { fastSync, shareLibrary, startNode, stopAllNodes, stopNode, useMemoryTransport, waitFor, waitForConvergence } from './helpers/cluster.js';
import { engineOf } from '../src/library/library.js';
import { prunableThrough } from './helpers/log-copy.js';

useMemoryTransport();

afterEach(async () => {
  await stopAllNodes();
  await removeTempDirs();
});

const EVERYTHING = { maxRecords: 1_000_000, maxBytes: 1 << 30 };
/** Pruning (the other moment acks are saved) never runs while this is in force. */
const noPruning = { ...fastSync, pruneIntervalMs: 3_600_000 };

async function partner(lib: Library, device: string) {
  const p = (await lib.status()).partners.find((x) => x.device === device);
  expect(p, `partner ${device} in status`).toBeDefined();
  return p!;
}

function covers(acked: VersionVector, wanted: VersionVector): boolean {
  return Object.entries(wanted).every(([origin, seq]) => (acked[origin] ?? 0) >= seq);
}

/** The `sync_acks` rows of a stopped node's library file, read directly. */
function storedAcks(dataDir: string, library: string): Map<string, VersionVector> {
  const db = new Database(join(dataDir, 'libraries', `${library}.sqlite`), { readonly: true, fileMustExist: true });
  try {
    const acks = new Map<string, VersionVector>();
    for (const r of db.prepare('SELECT partner, origin, seq FROM sync_acks').all() as Array<{ partner: string; origin: string; seq: number }>) {
      acks.set(r.partner, { ...acks.get(r.partner), [r.origin]: r.seq });
    }
    return acks;
  } finally {
    db.close();
  }
}

async function writeNotes(lib: Library, prefix: string, transactions: number, perTransaction: number): Promise<void> {
  for (let t = 0; t < transactions; t++) {
    await lib.transaction(async (tx) => {
      for (let i = 0; i < perTransaction; i++) await tx.upsert('note', { id: `${prefix}-${t}-${i}`, title: `${prefix} ${t} ${i}`, body: null });
    });
  }
}

/** A and B share a library, both write, they converge and each has the other's full ack. */
async function syncedPair(dirA: string, dirB: string) {
  const a = await startNode(dirA, { sync: noPruning });
  const b = await startNode(dirB, { sync: noPruning });
  const [libA, libB] = (await shareLibrary(a, [b])) as [Library, Library];
  await writeNotes(libA, 'a', 3, 120);
  await writeNotes(libB, 'b', 2, 50);
  await libB.upsert('volume', { id: 'vol-b', path: '/b', bytes: 1 });
  await waitForConvergence([libA, libB]);
  const vector = libA.versionVector();
  expect(libB.versionVector()).toEqual(vector);
  await waitFor(async () => covers((await partner(libA, b.deviceId)).acked, vector), "A to hold B's ack of everything");
  await waitFor(async () => covers((await partner(libB, a.deviceId)).acked, vector), "B to hold A's ack of everything");
  return { a, b, libA, libB, vector };
}

describe('partner acks', () => {
  it('are saved on stop: a restarted node shows its absent partners’ acknowledged vectors', async () => {
    const dirs = await Promise.all(['a', 'b', 'c'].map((n) => makeTempDir(`lsync-ack-${n}-`)));
    const nodes = await Promise.all(dirs.map((dir) => startNode(dir, { sync: noPruning })));
    const [a, b, c] = nodes as [SyncNode, SyncNode, SyncNode];
    const libs = (await shareLibrary(a, [b, c])) as [Library, Library, Library];
    const libraryId = libs[0].id;
    await writeNotes(libs[0], 'a', 3, 120);
    await writeNotes(libs[1], 'b', 2, 50);
    await writeNotes(libs[2], 'c', 1, 30);
    await libs[1].upsert('volume', { id: 'vol-b', path: '/b', bytes: 1 });
    await waitForConvergence(libs);
    const vector = libs[0].versionVector();
    // Every node holds every partner's ack of everything, in memory.
    const acked = new Map<string, Map<string, VersionVector>>();
    for (const [i, lib] of libs.entries()) {
      const byPartner = new Map<string, VersionVector>();
      for (const other of nodes.filter((_, j) => j !== i)) {
        await waitFor(async () => covers((await partner(lib, other.deviceId)).acked, vector), `node ${i} to hold ${other.deviceId}'s ack`);
        byPartner.set(other.deviceId, (await partner(lib, other.deviceId)).acked);
        expect(byPartner.get(other.deviceId)).toEqual(vector);
        // Held in memory only so far: no pruning ran, so nothing was written to sync_acks yet.
        // (This is what makes the checks after the restart depend on the save at stop.)
        expect((await engineOf(lib).acks()).get(other.deviceId)).toBeUndefined();
      }
      acked.set(nodes[i]!.deviceId, byPartner);
    }

    // A stops while B and C are still up; its file then holds both partners' acks.
    await stopNode(a);
    expect(storedAcks(dirs[0]!, libraryId)).toEqual(acked.get(a.deviceId));
    await stopNode(b);
    await stopNode(c);
    expect(storedAcks(dirs[1]!, libraryId)).toEqual(acked.get(b.deviceId));
    expect(storedAcks(dirs[2]!, libraryId)).toEqual(acked.get(c.deviceId));

    // Each node, restarted alone, shows its offline partners' acks (read back from storage).
    for (const [i, dir] of dirs.entries()) {
      const node = await startNode(dir, { sync: noPruning });
      const lib = node.library(libraryId);
      for (const [device, vectorAcked] of acked.get(node.deviceId)!) {
        const seen = await partner(lib, device);
        expect(seen.connected, `node ${i} sees ${device}`).toBe(false);
        expect(seen.state).not.toBe('live');
        expect(seen.acked).toEqual(vectorAcked);
        expect(seen.beyondRetention).toBe(false);
      }
      expect(await engineOf(lib).acks()).toEqual(acked.get(node.deviceId));
      await stopNode(node);
    }
  });

  it('saved on stop, they let a restarted node prune exactly what the absent partner acknowledged', async () => {
    const dirA = await makeTempDir('lsync-ack-a-');
    const dirB = await makeTempDir('lsync-ack-b-');
    const { a, b, libA, vector } = await syncedPair(dirA, dirB);
    const libraryId = libA.id;
    const ackedByB = (await partner(libA, b.deviceId)).acked;
    expect(ackedByB).toEqual(vector);

    // B leaves; A writes on (more than one stored chunk), then stops.
    await stopNode(b);
    await writeNotes(libA, 'after', 2, 300);
    const written = libA.versionVector();
    expect(written[a.deviceId]! - vector[a.deviceId]!).toBe(600);
    expect(await engineOf(libA).logSize()).toBeGreaterThanOrEqual(Object.values(written).reduce((n, s) => n + s, 0));
    await stopNode(a);

    // A restarts with pruning on; B stays away.
    const a2 = await startNode(dirA, { sync: { ...fastSync, pruneIntervalMs: 200 } });
    const libA2 = a2.library(libraryId);
    let passes = 0;
    const prune = engineOf(libA2).prune.bind(engineOf(libA2));
    engineOf(libA2).prune = async (...args) => {
      const deleted = await prune(...args);
      passes += 1;
      return deleted;
    };
    // Of an origin B holds whole, the run it ends at stays (fork evidence at the head).
    const through = await prunableThrough(libA2);
    const expected = Object.fromEntries(Object.entries(vector).map(([origin, seq]) => [origin, Math.min(seq, through[origin]!)]));
    await waitFor(async () => covers(await engineOf(libA2).prunedVector(), expected), 'A to prune what B acknowledged');
    const from = passes;
    await waitFor(() => passes >= from + 3, 'three more prune passes');

    // Exactly B's acknowledged position: every origin's entries through it are gone (whole
    // chunks, and B's ack ends on chunk boundaries here), none after it.
    const held = libA2.versionVector();
    expect(await engineOf(libA2).prunedVector()).toEqual(expected);
    const remaining = Object.entries(held).reduce((n, [origin, seq]) => n + seq - (expected[origin] ?? 0), 0);
    expect(await engineOf(libA2).logSize()).toBe(remaining);
    const forB = await engineOf(libA2).entriesAfter(ackedByB, EVERYTHING);
    expect(forB.pruned).toEqual([]);
    expect(forB.hasMore).toBe(false);
    const ids = new Set(forB.entries.map((e) => e.id));
    for (let t = 0; t < 2; t++) for (let i = 0; i < 300; i++) expect(ids.has(`after-${t}-${i}`)).toBe(true);
    const seenFromA = await partner(libA2, b.deviceId);
    expect(seenFromA.acked).toEqual(ackedByB);
    expect(seenFromA.beyondRetention).toBe(false);

    // B comes back (at its old address, where A knows to find it) and catches up from what was kept.
    const b2: SyncNode = await startNode(dirB, { sync: noPruning });
    await waitForConvergence([libA2, b2.library(libraryId)]);
    expect(await b2.library(libraryId).get('note', 'after-1-299')).toBeDefined();
  });
});
