/**
 * Issue 13, migration: libraries written by protocol 1.2 (test/fixtures/pre-2.0, two devices
 * sharing one library) open with the 2.0 code. Their history was never signed, so each device
 * adopts what it holds as trusted: the rows stay as they are, the log drops the unsigned runs and
 * holds every origin as a pruned prefix (it cannot relay them to anyone). The two devices then
 * sync signed changes both ways, and a device that joins afterwards receives the history by
 * snapshot: all three digests are equal.
 *
 * Libraries written by protocol 2.1 (test/fixtures/v2.1: signed runs, device-owned rows not
 * signed yet) open with the 3.0 code: each device signs its own rows as they are, keeps the other
 * device's (adopted as trusted) but serves none of them until it holds them signed, pulled again
 * from their owner; a device that joins later from either one gets every row, signed.
 *
 * The in-memory network and SQLite files copied from the fixtures.
 */
import { cp } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { defineModel, type Library } from '../src/index.js';
import { engineOf } from '../src/library/library.js';
import { makeTempDir, removeTempDirs } from './helpers/child-process.js';
import { startNode, stopAllNodes, stopNode, useMemoryTransport, waitFor, waitForConvergence } from './helpers/cluster.js';

useMemoryTransport();

afterEach(async () => {
  await stopAllNodes();
  await removeTempDirs();
});

const FIXTURE = join(import.meta.dirname, 'fixtures', 'pre-2.0');
const FIXTURE_2_1 = join(import.meta.dirname, 'fixtures', 'v2.1');
const LIBRARY_2_1 = '8bcc4505-68d9-46a7-b2ed-60d2b0506406';
/** What the 2.1 fixture's devices held when they were stopped (both alike). */
const DIGEST_2_1 = '8ed7e303eae90a094b63d2c293718f8d3cfe02bbaa7b3991b1cdc83a7a96fde6';
const LIBRARY = '87707bfb-0075-4b3e-90b1-d23f74c0e166';
const note = defineModel({ name: 'note', ownership: 'shared', conflict: 'lww', fields: { title: 'text', body: { type: 'text', nullable: true } } });
const setting = defineModel({ name: 'setting', ownership: 'device', fields: { value: 'text' } });
const models = [note, setting];

async function copyOfFixture(device: 'a' | 'b', fixture = FIXTURE): Promise<string> {
  const dir = await makeTempDir('lsync-upgrade-');
  await cp(join(fixture, device), dir, { recursive: true });
  return dir;
}

/** The rows the fixture's script wrote, as `lib.list` returns them. */
function expectFixtureRows(lib: Library) {
  const notes = [
    ...Array.from({ length: 300 }, (_, i) => ({ id: `a-${i}`, title: `a ${i}`, body: null })),
    ...Array.from({ length: 200 }, (_, i) => ({ id: `b-${i}`, title: `b ${i}`, body: 'from b' })),
  ].sort((x, y) => (x.id < y.id ? -1 : 1));
  return Promise.all([
    expect(lib.list('note', { limit: 1_000 })).resolves.toEqual(notes),
    expect(lib.list('setting', { limit: 10 })).resolves.toEqual([
      { id: 'theme-a', value: 'dark' },
      { id: 'theme-b', value: 'light' },
    ]),
  ]);
}

describe('a library written by protocol 1.2', () => {
  it('keeps its rows, holds its unsigned history as a pruned prefix, and syncs signed changes from then on', async () => {
    const a = await startNode(await copyOfFixture('a'), { models });
    const libA = a.library(LIBRARY);
    await expectFixtureRows(libA);
    // Every origin held is adopted as pruned through what was held: the log holds none of it.
    const adopted = await engineOf(libA).prunedVector();
    expect(adopted).toEqual(libA.versionVector());
    expect(Object.keys(adopted).length).toBe(2);
    expect(await engineOf(libA).logSize()).toBe(0);

    const b = await startNode(await copyOfFixture('b'), { models, bootstrap: [a.multiaddrs()[0]!] });
    const libB = b.library(LIBRARY);
    await expectFixtureRows(libB);
    await libA.upsert('note', { id: 'after-a', title: 'signed by a', body: null });
    await libB.upsert('note', { id: 'after-b', title: 'signed by b', body: null });
    await waitFor(async () => (await libA.get('note', 'after-b')) !== undefined && (await libB.get('note', 'after-a')) !== undefined, 'both new writes to cross');
    await waitForConvergence([libA, libB]);

    // A device that joins now cannot get the unsigned history from any log: it takes a snapshot.
    const c = await startNode(undefined, { models });
    const libC = await c.joinLibrary(await libA.createInvite());
    await libC.synced();
    await waitForConvergence([libA, libB, libC]);
    expect(await libC.get('note', 'a-299')).toEqual({ id: 'a-299', title: 'a 299', body: null });
    expect((await libC.syncHistory()).some((run) => run.kind === 'backfill' && run.outcome === 'done')).toBe(true);
  });
});

describe('a library written by protocol 2.1', () => {
  const ALL = { maxRecords: 1_000, maxBytes: 1 << 20 };

  it('signs its own device-owned rows, serves another device\'s only once it holds them signed, and a later device gets them all', async () => {
    const a = await startNode(await copyOfFixture('a', FIXTURE_2_1), { models });
    const libA = a.library(LIBRARY_2_1);
    // Nothing changed in the data: the digest leaves certificates out.
    expect(await libA.digest()).toBe(DIGEST_2_1);
    const settings = await libA.list('setting', { limit: 100 });
    expect(settings).toHaveLength(39 + 19);
    const ownRows = await engineOf(libA).ownedAfter(a.deviceId, 0, ALL);
    // 40 rows of A's (one a tombstone), each with its certificate, at the versions they had.
    expect(ownRows.rows).toHaveLength(40);
    expect(ownRows.author).toBe(a.peerId);
    expect(ownRows.rows.every((row) => row.cert.byteLength > 0)).toBe(true);
    // B's rows stay, adopted, but A cannot prove them: its cursor for B starts again.
    const others = Object.keys(engineOf(libA).ownedVector()).filter((owner) => owner !== a.deviceId);
    expect(others).toEqual([]);

    const b = await startNode(await copyOfFixture('b', FIXTURE_2_1), { models, bootstrap: [a.multiaddrs()[0]!] });
    const libB = b.library(LIBRARY_2_1);
    await waitFor(
      () => engineOf(libA).ownedVector()[b.deviceId] !== undefined && engineOf(libB).ownedVector()[a.deviceId] !== undefined,
      'each device to pull the other one\'s rows again, signed',
    );
    await waitForConvergence([libA, libB]);
    const bRowsOnA = await engineOf(libA).ownedAfter(b.deviceId, 0, ALL);
    expect(bRowsOnA.rows).toHaveLength(20);
    expect(bRowsOnA.author).toBe(b.peerId);

    // A device that joins from A alone, B away, gets B's rows signed from A.
    await stopNode(b);
    const c = await startNode(undefined, { models });
    const libC = await c.joinLibrary(await libA.createInvite());
    await libC.synced();
    await waitForConvergence([libA, libC]);
    expect(await libC.list('setting', { limit: 100 })).toEqual(settings);
    expect(engineOf(libC).ownedVector()[b.deviceId]).toBe(engineOf(libA).ownedVector()[b.deviceId]);
  });

  it('signs its own rows of a device-owned model that the first 3.0 open did not register, when a later one does', async () => {
    const dir = await copyOfFixture('a', FIXTURE_2_1);
    const first = await startNode(dir, { models: [note] });
    expect(await first.library(LIBRARY_2_1).list('note', { limit: 1 })).toHaveLength(1);
    await stopNode(first);
    const a = await startNode(dir, { models });
    const own = await engineOf(a.library(LIBRARY_2_1)).ownedAfter(a.deviceId, 0, ALL);
    expect(own.rows).toHaveLength(40);
    expect(own.rows.every((row) => row.cert.byteLength > 0)).toBe(true);
  });
});
