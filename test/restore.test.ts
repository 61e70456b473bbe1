/**
 * A device whose data directory is restored from a backup, or copied to another machine, must
 * never write a position of its own log (or a device-owned version) that a partner already holds
 * with other contents; the changes the backup lacks come back from its partners. Real nodes,
 * real data directories on disk, copied with `fs.cpSync` while the node is stopped.
 */
import { cpSync, rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import type { Library, SyncNode } from '../src/index.js';
import { makeTempDir, removeTempDirs } from './helpers/child-process.js';
import { shareLibrary, startNode, stopAllNodes, stopNode, waitFor, waitForConvergence } from './helpers/cluster.js';

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

function record(notes: Map<string, string>, prefix: string, ids: string[]): void {
  ids.forEach((id, i) => notes.set(id, `${prefix}-${i}`));
}

describe('a data directory restored from a backup', () => {
  it('loses nothing: the writes the backup lacks come back, and new writes reach the partner', async () => {
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

    // B writes five more notes (and a device-owned row) that reach A, then is lost.
    b = await startNode(bDir);
    let libB = b.library(id);
    record(notes, 'after-backup', await writeNotes(libB, 'after-backup', 5));
    await libB.upsert('volume', { id: 'vol-2', path: '/lost', bytes: 2 });
    await waitFor(() => holdsAll(libA!, notes), 'A holds the writes made after the backup');
    await waitForConvergence([libA!, libB]);
    await stopNode(b);

    // B's data directory is replaced by the backup; B starts and writes at once.
    rmSync(bDir, { recursive: true, force: true });
    cpSync(backup, bDir, { recursive: true });
    b = await startNode(bDir);
    libB = b.library(id);
    record(notes, 'after-restore', await writeNotes(libB, 'after-restore', 5));
    await libB.upsert('volume', { id: 'vol-3', path: '/restored', bytes: 3 });

    await waitFor(async () => (await holdsAll(libA!, notes)) && (await holdsAll(libB, notes)), 'every note on both devices', 30_000);
    await waitFor(async () => (await libA!.get('volume', 'vol-3')) !== undefined, 'the restored device-owned row on A', 30_000);
    await waitForConvergence([libA!, libB]);
    await expectNotes([libA!, libB], notes);
    for (const lib of [libA!, libB]) {
      expect((await lib.list('volume')).map((v) => v.id).sort()).toEqual(['vol-1', 'vol-2', 'vol-3']);
    }
    // The restored device wrote to a fresh writer and holds its old writer's whole log again.
    expect(libB.writer()).not.toBe(writerInBackup);
    expect(libB.versionVector()).toEqual(libA!.versionVector());
    expect(libB.ownedVector()).toEqual(libA!.ownedVector());

    // Writes after the first contact reach A too.
    record(notes, 'after-contact', await writeNotes(libB, 'after-contact', 5));
    await waitFor(() => holdsAll(libA!, notes), 'the notes written after contact on A');
    await waitForConvergence([libA!, libB]);
    await expectNotes([libA!, libB], notes);
  });
});
