/**
 * A device whose data directory is restored from a backup, or copied to another machine, must
 * never write a position of its own log (or a device-owned version) that a partner already holds
 * with other contents; the changes the backup lacks come back from its partners. Real nodes,
 * real data directories on disk, copied with `fs.cpSync` while the node is stopped.
 */
import { cpSync, rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import type { Library, SessionErrorEvent, SyncError, SyncNode } from '../src/index.js';
import { makeTempDir, removeTempDirs } from './helpers/child-process.js';
import { type ClusterNodeOptions, fastSync, shareLibrary, startNode, startNodeWithKey, stopAllNodes, stopNode, useMemoryTransport, waitFor, waitForConvergence } from './helpers/cluster.js';
import { keyWhere } from './helpers/raw-peer.js';
import { engineOf } from '../src/library/library.js';
import { prunableThrough } from './helpers/log-copy.js';

useMemoryTransport();

afterEach(async () => {
  await stopAllNodes();
  await removeTempDirs();
});

/** Writes `count` notes titled `${prefix}-i` and returns their ids (each write acknowledged). */
async function writeNotes(lib: Library, prefix: string, count: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) ids.push((await lib.upsert('note', { title: `${prefix}-${i}`, body: null })).id);
  return ids;
}

/** Every acknowledged note is on every library, with the title it was written with. */
async function expectNotes(libs: Library[], notes: Map<string, string>): Promise<void> {
  for (const lib of libs) {
    for (const [id, title] of notes) expect((await lib.get('note', id))?.title, `${id} on ${lib.deviceId}`).toBe(title);
  }
}

async function holdsAll(lib: Library, notes: Map<string, string>): Promise<boolean> {
  for (const [id, title] of notes) if ((await lib.get('note', id))?.title !== title) return false;
  return true;
}

/**
 * Waits until every library holds every note and row `vol-1` at `bytes`, then until the digests
 * agree, and checks that every library holds the same vectors.
 */
async function expectConvergedWith(libs: Library[], notes: Map<string, string>, bytes: number): Promise<void> {
  await waitFor(async () => {
    for (const lib of libs) if (!(await holdsAll(lib, notes)) || (await lib.get('volume', 'vol-1'))?.bytes !== bytes) return false;
    return true;
  }, 'every note and the newest vol-1 everywhere', 30_000);
  await waitForConvergence(libs);
  await expectNotes(libs, notes);
  for (const lib of libs) {
    expect(lib.versionVector()).toEqual(libs[0]!.versionVector());
    expect(engineOf(lib).ownedVector()).toEqual(engineOf(libs[0]!).ownedVector());
  }
}

function record(notes: Map<string, string>, prefix: string, ids: string[]): void {
  ids.forEach((id, i) => notes.set(id, `${prefix}-${i}`));
}

describe('a data directory restored from a backup', () => {
  it.each([
    { when: 'at once', meetFirst: false },
    { when: 'after meeting its partner', meetFirst: true },
  ])('loses nothing when it writes $when: the writes the backup lacks come back, new writes reach the partner', async ({ meetFirst }) => {
    const a = await startNode();
    const bDir = await makeTempDir('lsync-restore-b-');
    let b: SyncNode = await startNode(bDir);
    const [libA, firstB] = await shareLibrary(a, [b]);
    const id = libA!.id;
    const notes = new Map<string, string>();
    record(notes, 'before-backup', await writeNotes(firstB!, 'before-backup', 3));
    await firstB!.upsert('volume', { id: 'vol-1', path: '/backup', bytes: 1 });
    await waitForConvergence([libA!, firstB!]);
    const writerInBackup = firstB!.writer();

    // The backup: B's whole data directory, copied while B is stopped.
    await stopNode(b);
    const backup = await makeTempDir('lsync-restore-backup-');
    cpSync(bDir, backup, { recursive: true });

    // B writes five more notes (and a device-owned row) that reach A, then is lost. It met A
    // first, so they extend the writer the backup holds: the positions the restored copy must
    // not write again.
    b = await startNode(bDir);
    let libB = b.library(id);
    await libB.synced();
    record(notes, 'after-backup', await writeNotes(libB, 'after-backup', 5));
    expect(libB.writer()).toBe(writerInBackup);
    await libB.upsert('volume', { id: 'vol-2', path: '/lost', bytes: 2 });
    await waitFor(() => holdsAll(libA!, notes), 'A holds the writes made after the backup');
    await waitForConvergence([libA!, libB]);
    await stopNode(b);

    // B's data directory is replaced by the backup; B starts and writes (at once, or once it
    // has met A: then A's hello shows it holds more of B's writer, which B retires).
    rmSync(bDir, { recursive: true, force: true });
    cpSync(backup, bDir, { recursive: true });
    b = await startNode(bDir);
    libB = b.library(id);
    if (meetFirst) await libB.synced();
    record(notes, 'after-restore', await writeNotes(libB, 'after-restore', 5));
    await libB.upsert('volume', { id: 'vol-3', path: '/restored', bytes: 3 });

    await waitFor(async () => (await holdsAll(libA!, notes)) && (await holdsAll(libB, notes)), 'every note on both devices', 30_000);
    await waitFor(async () => (await libA!.get('volume', 'vol-3')) !== undefined, 'the restored device-owned row on A', 30_000);
    await waitForConvergence([libA!, libB]);
    await expectNotes([libA!, libB], notes);
    for (const lib of [libA!, libB]) {
      expect((await lib.list('volume')).map((v) => v.id).sort()).toEqual(['vol-1', 'vol-2', 'vol-3']);
    }
    // The restored device's changes went to a fresh writer (written before meeting A, or after
    // A's hello showed it holds more of the old one), and it holds every writer's log as far as
    // A does again.
    expect(libB.writer()).not.toBe(writerInBackup);
    expect(libB.versionVector()).toEqual(libA!.versionVector());
    expect(engineOf(libB).ownedVector()).toEqual(engineOf(libA!).ownedVector());

    // Writes after the first contact reach A too.
    record(notes, 'after-contact', await writeNotes(libB, 'after-contact', 5));
    await waitFor(() => holdsAll(libA!, notes), 'the notes written after contact on A');
    await waitForConvergence([libA!, libB]);
    await expectNotes([libA!, libB], notes);
  });
});

describe('a data directory restored from a backup, when the partner pruned its log', () => {
  it('takes the tail of its retired writer from a snapshot, and its new writes reach the partner', async () => {
    const a = await startNode();
    const bDir = await makeTempDir('lsync-restore-pruned-b-');
    let b: SyncNode = await startNode(bDir);
    // B keeps its address across restarts (its PeerId on the memory network), so its member row
    // needs no refresh: nothing writes to a fresh writer before the catch-up meets the retired one.
    const [libA, firstB] = await shareLibrary(a, [b]);
    const id = libA!.id;
    const notes = new Map<string, string>();
    record(notes, 'before-backup', await writeNotes(firstB!, 'before-backup', 3));
    await waitForConvergence([libA!, firstB!]);
    const writerInBackup = firstB!.writer();
    await stopNode(b);
    const backup = await makeTempDir('lsync-restore-pruned-backup-');
    cpSync(bDir, backup, { recursive: true });

    b = await startNode(bDir);
    let libB = b.library(id);
    await libB.synced();
    record(notes, 'after-backup', await writeNotes(libB, 'after-backup', 5));
    await waitFor(() => holdsAll(libA!, notes), 'A holds the writes made after the backup');
    // B acknowledged its own writes: A prunes them (all but the run the writer ends at), so the
    // restored copy cannot pull them as log.
    const prunable = (await prunableThrough(libA!))[writerInBackup]!;
    await waitFor(async () => ((await engineOf(libA!).prunedVector())[writerInBackup] ?? 0) >= prunable, "A to prune B's writer");
    await stopNode(b);

    // Restored, B meets A before it writes: A's hello retires the writer, whose tail is pruned.
    rmSync(bDir, { recursive: true, force: true });
    cpSync(backup, bDir, { recursive: true });
    b = await startNode(bDir);
    libB = b.library(id);
    await waitFor(() => holdsAll(libB, notes), 'the writes the backup lacks on the restored device', 30_000);
    record(notes, 'after-restore', await writeNotes(libB, 'after-restore', 5));
    await waitFor(() => holdsAll(libA!, notes), 'the notes written after the restore on A', 30_000);
    await waitForConvergence([libA!, libB]);
    await expectNotes([libA!, libB], notes);
    expect(libB.writer()).not.toBe(writerInBackup);
    expect(libB.versionVector()).toEqual(libA!.versionVector());
  });
});

describe('a restored device reached only through a relay', () => {
  it("C, which never meets the restored A, gets A's new writer and its device-owned rows through B", async () => {
    // A and C do not listen: neither can reach the other; B relays.
    const b = await startNode();
    const aDir = await makeTempDir('lsync-restore-relay-a-');
    let a: SyncNode = await startNode(aDir, { listen: [] });
    const c = await startNode(undefined, { listen: [] });
    const [libB, firstA, libC] = (await shareLibrary(b, [a, c])) as [Library, Library, Library];
    const id = libB.id;
    await waitFor(async () => (await libC.members()).length === 3, 'C knows every member');
    const notes = new Map<string, string>();
    record(notes, 'before-backup', await writeNotes(firstA, 'before-backup', 3));
    await firstA.upsert('volume', { id: 'vol-1', path: '/backup', bytes: 1 });
    await waitForConvergence([libB, firstA, libC]);
    const writerInBackup = firstA.writer();
    await stopNode(a);
    const backup = await makeTempDir('lsync-restore-relay-backup-');
    cpSync(aDir, backup, { recursive: true });

    // After the backup A writes notes, updates its row and adds one; all of it reaches C.
    a = await startNode(aDir, { listen: [] });
    let libA = a.library(id);
    await libA.synced();
    record(notes, 'after-backup', await writeNotes(libA, 'after-backup', 5));
    await libA.update('volume', 'vol-1', { bytes: 2 });
    await libA.upsert('volume', { id: 'vol-2', path: '/lost', bytes: 2 });
    await waitFor(async () => (await holdsAll(libC, notes)) && (await libC.get('volume', 'vol-2')) !== undefined, 'C holds the writes after the backup');
    await stopNode(a);

    // Restored, A writes at once: a note and the row the backup holds at an older state.
    rmSync(aDir, { recursive: true, force: true });
    cpSync(backup, aDir, { recursive: true });
    a = await startNode(aDir, { listen: [] });
    libA = a.library(id);
    record(notes, 'after-restore', await writeNotes(libA, 'after-restore', 5));
    await libA.update('volume', 'vol-1', { bytes: 3 });

    const libs = [libA, libB, libC];
    await expectConvergedWith(libs, notes, 3);
    for (const lib of libs) {
      expect(await lib.list('volume')).toEqual([
        { id: 'vol-1', path: '/backup', bytes: 3 },
        { id: 'vol-2', path: '/lost', bytes: 2 },
      ]);
    }
    expect(libA.writer()).not.toBe(writerInBackup);
    expect(libC.versionVector()[libA.writer()]).toBe(5);

    // A later write of A still reaches C.
    record(notes, 'later', await writeNotes(libA, 'later', 2));
    await waitFor(() => holdsAll(libC, notes), 'the later notes on C');
    await waitForConvergence(libs);
  });
});

describe('a data directory restored twice from one backup, while a partner is away', () => {
  it('each run writes to a writer of its own, and the partner that comes back converges with every write', async () => {
    const b = await startNode();
    const aDir = await makeTempDir('lsync-restore-twice-a-');
    const cDir = await makeTempDir('lsync-restore-twice-c-');
    let a: SyncNode = await startNode(aDir);
    let c: SyncNode = await startNode(cDir);
    const [libB, firstA] = (await shareLibrary(b, [a, c])) as [Library, Library, Library];
    const id = libB.id;
    const notes = new Map<string, string>();
    record(notes, 'before-backup', await writeNotes(firstA, 'before-backup', 3));
    await firstA.upsert('volume', { id: 'vol-1', path: '/backup', bytes: 1 });
    await waitForConvergence([libB, firstA, c.library(id)]);
    await stopNode(a);
    const backup = await makeTempDir('lsync-restore-twice-backup-');
    cpSync(aDir, backup, { recursive: true });

    a = await startNode(aDir);
    await a.library(id).synced();
    record(notes, 'after-backup', await writeNotes(a.library(id), 'after-backup', 5));
    await a.library(id).update('volume', 'vol-1', { bytes: 2 });
    await waitFor(() => holdsAll(c.library(id), notes), 'C holds the writes after the backup');
    await waitForConvergence([libB, a.library(id), c.library(id)]);
    await stopNode(c);
    await stopNode(a);

    // Two restores of the same backup: the first writes at once, the second once it met B.
    const writers: string[] = [];
    for (const [run, meetFirst] of [false, true].entries()) {
      rmSync(aDir, { recursive: true, force: true });
      cpSync(backup, aDir, { recursive: true });
      a = await startNode(aDir);
      const libA = a.library(id);
      if (meetFirst) await libA.synced();
      record(notes, `restore${run}`, await writeNotes(libA, `restore${run}`, 2));
      await libA.update('volume', 'vol-1', { bytes: 3 + run });
      writers.push(libA.writer());
      await waitFor(() => holdsAll(libB, notes), `B holds the notes of restore ${run}`, 30_000);
      await waitFor(async () => (await libB.get('volume', 'vol-1'))?.bytes === 3 + run, `B holds the row of restore ${run}`, 30_000);
      if (run === 0) await stopNode(a);
    }
    expect(new Set(writers).size).toBe(2);

    c = await startNode(cDir);
    await expectConvergedWith([a.library(id), libB, c.library(id)], notes, 4);
  });
});

/**
 * Two live copies of one data directory are two nodes with one PeerId: libp2p lets them run side
 * by side, the memory network names each peer once. These stay on libp2p.
 */
const onLibp2p: ClusterNodeOptions = { transport: 'libp2p' };

describe('two devices started from copies of one data directory', () => {
  it('one copy is refused with DEVICE_FORKED; the other converges with every acknowledged write', async () => {
    const aDir = await makeTempDir('lsync-clone-a-');
    let a = await startNode(aDir, onLibp2p);
    const aListen = a.multiaddrs().map((addr) => addr.slice(0, addr.indexOf('/p2p/')));
    // The copies share a PeerId that sorts below A's, so they open the sessions to A.
    const bDir = await makeTempDir('lsync-clone-b-');
    const b = await startNodeWithKey(await keyWhere((id) => id < a.peerId), bDir, onLibp2p);
    const [firstA, firstB] = await shareLibrary(a, [b]);
    const id = firstA!.id;
    const notes = new Map<string, string>();
    record(notes, 'before-copy', await writeNotes(firstB!, 'before-copy', 3));
    await waitForConvergence([firstA!, firstB!]);
    await stopNode(b);
    const copyDir = await makeTempDir('lsync-clone-copy-');
    cpSync(bDir, copyDir, { recursive: true });

    // Both copies start and write while A is away, so neither has met a partner yet.
    await stopNode(a);
    const copies = [await startNode(bDir, onLibp2p), await startNode(copyDir, onLibp2p)];
    const written = new Map<SyncNode, Map<string, string>>();
    for (const [n, copy] of copies.entries()) {
      const own = new Map<string, string>();
      record(own, `copy${n}`, await writeNotes(copy.library(id), `copy${n}`, 5));
      await copy.library(id).upsert('volume', { id: `vol-copy${n}`, path: `/copy${n}`, bytes: n });
      written.set(copy, own);
    }
    const errors = new Map<SyncNode, SessionErrorEvent[]>(copies.map((c) => [c, []]));
    for (const copy of copies) copy.on('session-error', (e) => errors.get(copy)!.push(e));
    a = await startNode(aDir, { listen: aListen, ...onLibp2p });
    const libA = a.library(id);

    const forked = async (copy: SyncNode) => (await copy.library(id).status()).error?.code === 'DEVICE_FORKED';
    await waitFor(async () => (await forked(copies[0]!)) || (await forked(copies[1]!)), 'one copy refused', 30_000);
    const refused = (await forked(copies[0]!)) ? copies[0]! : copies[1]!;
    const kept = refused === copies[0] ? copies[1]! : copies[0]!;
    const refusedStatus = await refused.library(id).status();
    expect(refusedStatus.state).toBe('error');
    expect(refusedStatus.error!.message).toContain(refused.deviceId);
    expect(refusedStatus.error!.message).toMatch(/cop(y|ies) of (this|its) data directory run/);
    expect(errors.get(refused)!.some((e) => (e.error as SyncError).code === 'DEVICE_FORKED')).toBe(true);

    // A and the copy that goes on converge, with every note either acknowledged before the
    // copy was made, or since on the copy that goes on.
    const libKept = kept.library(id);
    for (const [noteId, title] of written.get(kept)!) notes.set(noteId, title);
    await waitFor(async () => (await holdsAll(libA, notes)) && (await holdsAll(libKept, notes)), 'the kept copy and A to hold every note', 30_000);
    await waitForConvergence([libA, libKept]);
    await expectNotes([libA, libKept], notes);
    expect(await forked(kept)).toBe(false);
    expect((await libA.get('volume', `vol-copy${copies.indexOf(kept)}`))?.path).toBe(`/copy${copies.indexOf(kept)}`);

    // It keeps syncing; the refused copy no longer does.
    const later = await writeNotes(libKept, 'later', 2);
    record(notes, 'later', later);
    const refusedLater = await writeNotes(refused.library(id), 'refused-later', 1);
    await waitFor(() => holdsAll(libA, notes), 'the later notes on A');
    await waitForConvergence([libA, libKept]);
    expect(await libA.get('note', refusedLater[0]!)).toBeUndefined();
    expect((await refused.library(id).status()).partners.every((p) => p.state !== 'live')).toBe(true);
  });
});

describe("a position of this device's writer that a copy wrote too", () => {
  it('changes nothing at the hello; the signed run shows the fork: both changes are applied, and the next write goes to a fresh writer', async () => {
    const dir = await makeTempDir('lsync-writers-');
    const first = await startNode(dir, { listen: [], ...onLibp2p });
    const lib = await first.createLibrary({ name: 'writers' });
    const id = lib.id;
    // Alone in its library, the device writes to its device id from the start.
    await lib.upsert('note', { id: 'n1', title: 'common', body: null });
    expect(lib.writer()).toBe(first.deviceId);
    await stopNode(first);
    const copyDir = await makeTempDir('lsync-writers-copy-');
    cpSync(dir, copyDir, { recursive: true });

    // Both copies append position 2 of the same writer, with different changes.
    const original = await startNode(dir, { listen: [], ...onLibp2p });
    const copy = await startNode(copyDir, { listen: [], ...onLibp2p });
    const [libO, libC] = [original.library(id), copy.library(id)];
    await libO.upsert('note', { id: 'n2-original', title: 'original', body: null });
    await libC.upsert('note', { id: 'n2-copy', title: 'copy', body: null });
    expect(libO.writer()).toBe(libC.writer());
    // A hello holding as much of the writer as the copy: nothing to decide from positions.
    expect(await engineOf(libC).checkOwnWriters(libO.versionVector())).toBe('unchanged');
    expect(libC.writer()).toBe(copy.deviceId);
    // The original's run at position 2, signed by the same key: the copy's writer forked.
    const [run] = (await engineOf(libO).chunksAfter({ [original.deviceId]: 1 }, { maxRecords: 10, maxBytes: 1 << 20 })).chunks;
    expect((await engineOf(libC).applyRemoteChunks([run!])).forks).toMatchObject([{ origin: copy.deviceId, seq: 2 }]);
    expect((await libC.status()).forks).toMatchObject([{ origin: copy.deviceId, seq: 2 }]);
    expect((await libC.status()).error).toBeNull();
    // Both branches are applied, and the forked writer is retired: the copy's next change goes to
    // a fresh writer.
    expect(await libC.get('note', 'n2-original')).toEqual({ id: 'n2-original', title: 'original', body: null });
    expect(await libC.get('note', 'n2-copy')).toEqual({ id: 'n2-copy', title: 'copy', body: null });
    await libC.upsert('note', { id: 'n3', title: 'after the fork', body: null });
    expect(libC.writer()).not.toBe(copy.deviceId);
    expect(libC.versionVector()[copy.deviceId]).toBe(2);
    // The original holds its own position 2 alike on itself: nothing to report.
    expect(await engineOf(libO).checkOwnWriters(libO.versionVector())).toBe('unchanged');
  });
});

describe('a restored device whose writer a partner confirmed that lacked its lost tail', () => {
  const pruning = { sync: { ...fastSync, pruneIntervalMs: 10 } };
  it.each([
    { written: 2, cStays: true, how: 'with C: the partners find the fork by their heads' },
    { written: 2, cStays: false, how: 'B and D alone, their last positions other runs' },
    { written: 1, cStays: false, how: 'B and D alone, B holding more of the writer D appends to' },
  ])('writes at the lost positions, yet every member ends with both, $how', async ({ written, cStays }) => {
    // Simulator seed 44815's class: C confirms the restored writer (it holds no more of it than
    // the backup), so D's next write takes the position of a write only B holds. Until 3.0, D
    // then refused every session with B (DEVICE_FORKED): without C, the two stayed apart.
    // Pruning runs all the time: a partner's claim to hold a position (its hello) once let a
    // device prune its own run at the first forked position, and the fork could not be proven.
    const dDir = await makeTempDir('lsync-restore-fork-d-');
    const bDir = await makeTempDir('lsync-restore-fork-b-');
    let d: SyncNode = await startNode(dDir, pruning);
    let b: SyncNode = await startNode(bDir, pruning);
    const cDir = await makeTempDir('lsync-restore-fork-c-');
    const c = await startNode(cDir, pruning);
    const [libD0] = await shareLibrary(d, [b, c]);
    const id = libD0!.id;
    const notes = new Map<string, string>();
    record(notes, 'before-backup', await writeNotes(libD0!, 'before-backup', 2));
    await waitForConvergence([libD0!, b.library(id), c.library(id)]);
    await stopNode(d);
    const backup = await makeTempDir('lsync-restore-fork-backup-');
    cpSync(dDir, backup, { recursive: true });

    // The lost tail: written while C is away, it reaches B alone.
    await stopNode(c);
    d = await startNode(dDir, pruning);
    await d.library(id).synced();
    record(notes, 'lost-tail', await writeNotes(d.library(id), 'lost-tail', 2));
    await waitFor(() => holdsAll(b.library(id), notes), 'B to hold the lost tail');
    await stopNode(d);
    await stopNode(b);

    // D is restored; C, back, confirms its writer, and D writes at the lost positions.
    rmSync(dDir, { recursive: true, force: true });
    cpSync(backup, dDir, { recursive: true });
    const c2 = await startNode(cDir, pruning);
    d = await startNode(dDir, pruning);
    const libD = d.library(id);
    await libD.synced();
    const writer = libD.writer();
    const restoredAt = libD.versionVector()[writer]!;
    const afterRestore = new Map<string, string>();
    record(afterRestore, 'after-restore', await writeNotes(libD, 'after-restore', written));
    expect(libD.writer()).toBe(writer);
    const libC = c2.library(id);
    await waitFor(() => holdsAll(libC, afterRestore), 'C to hold the writes after the restore');
    for (const [note, title] of afterRestore) notes.set(note, title);
    if (!cStays) await stopNode(c2);
    const libs = cStays ? [libD, libC] : [libD];

    // B is back: it holds D's writer as far or further, with other runs at D's last positions.
    b = await startNode(bDir, pruning);
    const libB = b.library(id);
    libs.push(libB);
    const holdAll = async () => (await Promise.all(libs.map((lib) => holdsAll(lib, notes)))).every(Boolean);
    await waitFor(holdAll, 'every note on every device', 30_000);
    await waitForConvergence(libs);
    await expectNotes(libs, notes);
    // A fork of D's writer, proven by runs D signed: reported, and D writes to a fresh writer.
    for (const lib of [libD, libB]) await waitFor(async () => (await lib.status()).forks.some((f) => f.origin === writer), 'the fork reported');
    expect((await libD.status()).error).toBeNull();
    // Past the backup, B and D hold other histories of the writer: neither counts the other's
    // claim to hold those positions as an ack, so neither may prune its own runs there.
    const ackedWriter = async (lib: Library, partnerDevice: string) => (await lib.status()).partners.find((p) => p.device === partnerDevice)!.acked[writer] ?? 0;
    expect(await ackedWriter(libD, b.deviceId)).toBeLessThanOrEqual(restoredAt);
    expect(await ackedWriter(libB, d.deviceId)).toBeLessThanOrEqual(restoredAt);
    record(notes, 'after-fork', await writeNotes(libD, 'after-fork', 1));
    expect(libD.writer()).not.toBe(writer);
    await waitFor(holdAll, 'the write after the fork on every device');
    await waitForConvergence(libs);
  });
});
