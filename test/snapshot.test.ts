/**
 * Snapshots at the library level (no network): merging a partner's rows by state must give
 * exactly what replaying both sets of changes gives, for every conflict rule, tombstones of
 * models with required fields included; merging what is already held changes nothing.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Library, SyncNode } from '../src/index.js';
import type { Chunk } from '../src/peer-log/chunk.js';
import { removeTempDirs } from './helpers/child-process.js';
import { startNode, stopAllNodes, useMemoryTransport } from './helpers/cluster.js';
import { engineOf } from '../src/library/library.js';
import type { LibraryEngine } from '../src/library/engine.js';
import { checkpointValue } from '../src/library/snapshot.js';
import { introduce, runsOf } from './helpers/log-copy.js';

useMemoryTransport();

afterEach(async () => {
  await stopAllNodes();
  await removeTempDirs();
});

const EVERYTHING = { maxRecords: 100_000, maxBytes: 1 << 30 };

async function replicaOf(id: string): Promise<{ node: SyncNode; lib: Library }> {
  const node = await startNode();
  return { node, lib: await node.createLibrary({ name: 'snap', id }) };
}

/** The signed runs `lib` holds of `origin`. */
async function ownRuns(lib: Library, origin: string): Promise<Chunk[]> {
  return (await runsOf(lib)).filter((run) => run.origin === origin);
}

/** Concurrent histories on two devices touching the same records under every rule. */
async function divergentWriters() {
  const x = await startNode();
  const libX = await x.createLibrary({ name: 'snap' });
  const y = await replicaOf(libX.id);
  // Each writes its own member row first, so a third replica takes the runs of both.
  await introduce(libX);
  await introduce(y.lib);
  for (const [lib, tag] of [[libX, 'x'], [y.lib, 'y']] as const) {
    await lib.upsert('note', { id: 'shared-note', title: `note by ${tag}`, body: null });
    await lib.upsert('note', { id: `gone-${tag}`, title: 'to delete', body: null });
    await lib.delete('note', `gone-${tag}`);
    await lib.upsert('profile', { id: 'p1', name: `p by ${tag}`, color: null, score: null });
    await lib.update('profile', 'p1', tag === 'x' ? { color: 'red' } : { score: 7 });
    await lib.upsert('profile', { id: `p-${tag}`, name: 'short-lived', color: 'blue', score: 1 });
    await lib.delete('profile', `p-${tag}`);
    await lib.upsert('tag', { label: 'common' });
    await lib.upsert('tag', { label: `only-${tag}` });
  }
  // A delete on one side of a row the other keeps updating.
  await libX.delete('profile', 'p1');
  await y.lib.update('profile', 'p1', { color: 'green' });
  return { x: { node: x, lib: libX }, y };
}

describe('snapshots', () => {
  it('merging a partner snapshot equals replaying both histories, under every rule', async () => {
    const { x, y } = await divergentWriters();
    const fromX = await ownRuns(x.lib, x.node.deviceId);
    const fromY = await ownRuns(y.lib, y.node.deviceId);
    const both = await replicaOf(x.lib.id);
    const replayed = await engineOf(both.lib).applyRemoteChunks([...fromX, ...fromY]);
    const written = [...fromX, ...fromY].reduce((n, run) => n + run.lastSeq - run.firstSeq + 1, 0);
    expect(replayed).toMatchObject({ applied: written, gaps: [], forks: [], refused: 0 });
    expect(both.lib.versionVector()).toMatchObject({
      [x.node.deviceId]: x.lib.versionVector()[x.node.deviceId],
      [y.node.deviceId]: y.lib.versionVector()[y.node.deviceId],
    });

    // X merges Y's current rows (tombstones of the required-field note included).
    const page = await engineOf(y.lib).snapshotAfter(null, EVERYTHING);
    expect(page.next).toBeNull();
    expect(page.rows.some((r) => r.model === 'note' && r.state.deleted)).toBe(true);
    const counts = { added: 0, updated: 0, deleted: 0 };
    await engineOf(x.lib).applySnapshot(page.rows, { vector: {}, proofs: [], next: null }, counts);
    expect(await x.lib.digest()).toBe(await both.lib.digest());
    expect(counts.added).toBeGreaterThan(0);

    // And the other way round.
    await engineOf(y.lib).applySnapshot((await ownSnapshot(both.lib)).rows, { vector: {}, proofs: [], next: null });
    expect(await y.lib.digest()).toBe(await both.lib.digest());
  });

  it('merging rows already held writes nothing and reports nothing', async () => {
    const { x } = await divergentWriters();
    const changes: string[] = [];
    x.lib.on('change', (e) => changes.push(`${e.model}/${e.id}`));
    const digest = await x.lib.digest();
    const counts = { added: 0, updated: 0, deleted: 0 };
    await engineOf(x.lib).applySnapshot((await ownSnapshot(x.lib)).rows, { vector: {}, proofs: [], next: null }, counts);
    expect(counts).toEqual({ added: 0, updated: 0, deleted: 0 });
    expect(changes).toEqual([]);
    expect(await x.lib.digest()).toBe(digest);
  });

  it('pages bounded by records cover every row once; the last page adopts the vector as pruned', async () => {
    const { x } = await divergentWriters();
    const target = await replicaOf(x.lib.id);
    const vector = x.lib.versionVector();
    const proofs = await engineOf(x.lib).snapshotProofs(vector, {});
    let after = null as Awaited<ReturnType<LibraryEngine['snapshotAfter']>>['next'];
    let pages = 0;
    do {
      const page = await engineOf(x.lib).snapshotAfter(after, { maxRecords: 2, maxBytes: 1 << 20 });
      expect(page.rows.length).toBeLessThanOrEqual(2);
      await engineOf(target.lib).applySnapshot(page.rows, { vector, proofs, next: page.next });
      const stored = await engineOf(target.lib).snapshotCheckpoint();
      expect(stored && checkpointValue(stored)).toEqual(page.next === null ? undefined : checkpointValue({ vector, proofs, next: page.next }));
      after = page.next;
      pages += 1;
    } while (after !== null);
    expect(pages).toBeGreaterThan(3);
    expect(await target.lib.digest()).toBe(await x.lib.digest());
    expect(target.lib.versionVector()).toEqual(vector);
    expect(await engineOf(target.lib).prunedVector()).toEqual(vector);
    // It holds the proofs of what it adopted, so it can serve the same snapshot in turn.
    const proven = await engineOf(target.lib).snapshotProofs(vector, {});
    expect(checkpointValue({ vector, proofs: proven, next: null })).toBe(checkpointValue({ vector, proofs, next: null }));
    // Proofs are kept per origin until it moves on: asked again after a write, they prove the new position.
    await x.lib.upsert('note', { id: 'after-snapshot', title: 'later', body: null });
    const later = x.lib.versionVector();
    expect((await engineOf(x.lib).snapshotProofs(later, {})).map((p) => [p.origin, p.lastSeq])).toEqual(Object.entries(later));
  });

  it('refuses a snapshot row that breaks its model, and applies nothing of the page', async () => {
    const { x, y } = await divergentWriters();
    const page = await engineOf(y.lib).snapshotAfter(null, EVERYTHING);
    const digest = await x.lib.digest();
    const live = page.rows.find((r) => r.model === 'note' && !r.state.deleted)!;
    const broken = { ...live, state: { ...live.state, values: { ...live.state.values, title: null } } };
    await expect(engineOf(x.lib).applySnapshot([...page.rows, broken], { vector: {}, proofs: [], next: null })).rejects.toMatchObject({ code: 'VALIDATION' });
    const tag = page.rows.find((r) => r.model === 'tag' && !r.state.deleted)!;
    const forgedTag = { ...tag, state: { ...tag.state, values: { label: 'not-the-key' } } };
    await expect(engineOf(x.lib).applySnapshot([forgedTag], { vector: {}, proofs: [], next: null })).rejects.toMatchObject({ code: 'VALIDATION' });
    expect(await x.lib.digest()).toBe(digest);
  });
});

function ownSnapshot(lib: Library) {
  return engineOf(lib).snapshotAfter(null, EVERYTHING);
}
