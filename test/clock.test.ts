/**
 * HLC behaviour through a real node (real SQLite files): monotonicity when the wall clock jumps
 * backwards, across restarts (persisted high-water mark), and the drift guard on remote input.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import {
  ClockDriftError,
  createSyncNode,
  decodeHlc,
  defineModel,
  encodeHlc,
  type Library,
  type SyncNode,
} from '../src/index.js';
import { type Chunk, decodeChunk } from '../src/peer-log/chunk.js';
import type { LogEntry } from '../src/peer-log/types.js';
import { engineOf } from '../src/library/library.js';
import { isWriterOf } from '../src/library/writers.js';
import { copyRuns, introduce, runsOf } from './helpers/log-copy.js';
import { keyedDevice, signedOwnedRows } from './helpers/signed-runs.js';

const note = defineModel({
  name: 'note',
  ownership: 'shared',
  conflict: 'lww',
  fields: { title: 'text', body: { type: 'text', nullable: true } },
});
const card = defineModel({
  name: 'card',
  ownership: 'shared',
  conflict: 'lww-field',
  fields: { title: 'text', stars: { type: 'integer', nullable: true } },
});
const volume = defineModel({
  name: 'volume',
  ownership: 'device',
  fields: { label: 'text' },
});
const MODELS = [note, card, volume];

const T = 1_750_000_000_000;
const BIG = { maxRecords: 100_000, maxBytes: 1 << 30 };

/** A wall clock the test moves by hand. */
class ManualClock {
  constructor(public ms: number) {}
  readonly read = (): number => this.ms;
}

const dirs: string[] = [];
const nodes: SyncNode[] = [];

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lsync-clock-'));
  dirs.push(dir);
  return dir;
}

async function startNode(
  dataDir: string,
  wall: ManualClock,
  maxClockDriftMs?: number,
): Promise<SyncNode> {
  const node = await createSyncNode({
    dataDir,
    models: MODELS,
    listen: [],
    wallClock: wall.read,
    ...(maxClockDriftMs === undefined ? {} : { maxClockDriftMs }),
  });
  nodes.push(node);
  return node;
}

afterEach(async () => {
  for (const node of nodes.splice(0)) await node.stop();
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

async function allEntries(lib: Library): Promise<LogEntry[]> {
  const result = await engineOf(lib).entriesAfter({}, BIG);
  expect(result.hasMore).toBe(false);
  return result.entries;
}

/**
 * A second replica of `lib`'s library on `node` that writes its own member row first
 * (`introduce`), so `lib` takes the runs it signs.
 */
async function writerOf(node: SyncNode, lib: Library, name: string): Promise<Library> {
  const writer = await node.createLibrary({ name, id: lib.id });
  await introduce(writer);
  return writer;
}

/** The one entry a run of one entry holds. */
function onlyEntry(run: Chunk): LogEntry {
  const entries = decodeChunk(run).map((d) => d.entry);
  expect(entries).toHaveLength(1);
  return entries[0]!;
}

async function state(lib: Library) {
  return {
    digest: await lib.digest(),
    vector: lib.versionVector(),
    logSize: await engineOf(lib).logSize(),
    clock: engineOf(lib).clockHighWater(),
  };
}

function expectStrictlyIncreasing(hlcs: string[]): void {
  for (let i = 1; i < hlcs.length; i++) {
    if (!(hlcs[i]! > hlcs[i - 1]!)) expect.fail(`HLC #${i} ${hlcs[i]} is not above #${i - 1} ${hlcs[i - 1]}`);
  }
}

describe('wall clock jumping backwards', () => {
  test('writes after a backwards jump get HLCs strictly above all earlier ones', async () => {
    const wall = new ManualClock(T);
    const node = await startNode(tempDir(), wall);
    const lib = await node.createLibrary({ name: 'jump' });
    const highWaters: string[] = [];

    const a = await lib.upsert('note', { title: 'a' });
    highWaters.push(engineOf(lib).clockHighWater());
    await lib.upsert('card', { title: 'b' });
    highWaters.push(engineOf(lib).clockHighWater());

    wall.ms = T - 3_600_000; // one hour back
    await lib.update('note', a.id, { title: 'a2' });
    highWaters.push(engineOf(lib).clockHighWater());
    await lib.upsert('volume', { label: 'disk' }); // device-owned: no log entry, still a clock tick
    highWaters.push(engineOf(lib).clockHighWater());
    await lib.transaction(async (tx) => {
      await tx.upsert('note', { title: 'c' });
      await tx.upsert('note', { title: 'd' });
    });
    highWaters.push(engineOf(lib).clockHighWater());

    wall.ms = 0; // epoch
    await lib.delete('note', a.id);
    highWaters.push(engineOf(lib).clockHighWater());

    wall.ms = T + 10; // forward again, past the old high-water mark
    await lib.upsert('card', { title: 'e' });
    highWaters.push(engineOf(lib).clockHighWater());

    const entries = await allEntries(lib);
    expect(entries.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    const hlcs = entries.map((e) => e.hlc);
    expectStrictlyIncreasing(hlcs);
    expectStrictlyIncreasing(highWaters);
    expect(engineOf(lib).clockHighWater()).toBe(hlcs[hlcs.length - 1]);

    const decoded = hlcs.map(decodeHlc);
    // While the wall clock is behind, l stays at the high-water wall time and c counts up.
    expect(decoded.slice(0, 6).map((h) => h.wallMs)).toEqual([T, T, T, T, T, T]);
    expect(decoded.slice(0, 6).map((h) => h.counter)).toEqual([0, 1, 2, 4, 5, 6]);
    // Once the wall clock is ahead again, it follows the wall clock with counter 0.
    expect(decoded[6]).toMatchObject({ wallMs: T + 10, counter: 0, deviceId: node.deviceId });
  });

  test('remote changes received are also below every later local write', async () => {
    const wallA = new ManualClock(T);
    const wallB = new ManualClock(T + 30_000); // B runs 30 s ahead (within the drift bound)
    const nodeA = await startNode(tempDir(), wallA);
    const nodeB = await startNode(tempDir(), wallB);
    const libA = await nodeA.createLibrary({ name: 'a' });
    const libB = await writerOf(nodeB, libA, 'b');

    await libA.upsert('note', { title: 'local' });
    await libB.upsert('note', { title: 'remote' });
    // B's member row (its introduction) and its note.
    const remote = await allEntries(libB);
    expect(remote.map((e) => e.model)).toEqual(['sync_members', 'note']);
    expect((await copyRuns(libB, libA)).applied).toBe(2);
    expect(engineOf(libA).clockHighWater() > remote[1]!.hlc).toBe(true);

    wallA.ms = T - 1_000;
    await libA.upsert('note', { title: 'after' });
    const mine = (await allEntries(libA)).filter((e) => e.origin === nodeA.deviceId);
    expect(mine).toHaveLength(2);
    expect(mine[1]!.hlc > remote[1]!.hlc).toBe(true);
    expect(mine[1]!.hlc > mine[0]!.hlc).toBe(true);
  });
});

describe('restart', () => {
  test('the first write after a restart with a wall clock far in the past is above every stored HLC', async () => {
    const dataDir = tempDir();
    const wall = new ManualClock(T + 600_000);
    let node = await startNode(dataDir, wall);
    const lib = await node.createLibrary({ name: 'restart' });
    const libId = lib.id;
    const first = await lib.upsert('note', { title: 'x' });
    await lib.update('note', first.id, { title: 'y' });
    await lib.upsert('card', { title: 'z', stars: 3 });
    await lib.upsert('volume', { label: 'v' });
    const storedBefore = (await allEntries(lib)).map((e) => e.hlc);
    const highWater = engineOf(lib).clockHighWater();
    expect(storedBefore.every((h) => h <= highWater)).toBe(true);
    await node.stop();

    for (let round = 1; round <= 3; round++) {
      wall.ms = T - 10 * 365 * 86_400_000; // ten years earlier
      node = await startNode(dataDir, wall);
      const reopened = node.library(libId);
      const stored = (await allEntries(reopened)).map((e) => e.hlc);
      const maxStored = stored.reduce((m, h) => (h > m ? h : m), highWater);
      // The clock resumes at the persisted mark, before any write.
      expect(engineOf(reopened).clockHighWater() >= maxStored).toBe(true);
      await reopened.upsert('note', { title: `after restart ${round}` });
      const after = await allEntries(reopened);
      expect(after).toHaveLength(stored.length + 1);
      const newest = after[after.length - 1]!;
      expect(newest.seq).toBe(stored.length + 1);
      expect(newest.hlc > maxStored).toBe(true);
      expect(decodeHlc(newest.hlc).wallMs).toBeGreaterThanOrEqual(T + 600_000);
      await node.stop();
    }
  });

  test('a received remote HLC is persisted: after a restart, writes are above it', async () => {
    const dataDirA = tempDir();
    const wallA = new ManualClock(T);
    const wallB = new ManualClock(T + 50_000);
    let nodeA = await startNode(dataDirA, wallA);
    const nodeB = await startNode(tempDir(), wallB);
    const libA = await nodeA.createLibrary({ name: 'a' });
    const libB = await writerOf(nodeB, libA, 'b');
    await libA.upsert('note', { title: 'mine' });
    await libB.upsert('note', { title: 'theirs' });
    const remote = await allEntries(libB);
    expect((await copyRuns(libB, libA)).applied).toBe(remote.length); // the last thing A does before stopping
    const remoteHlc = remote[remote.length - 1]!.hlc;
    const libId = libA.id;
    await nodeA.stop();

    wallA.ms = T - 86_400_000;
    nodeA = await startNode(dataDirA, wallA);
    const reopened = nodeA.library(libId);
    expect(engineOf(reopened).clockHighWater() > remoteHlc).toBe(true);
    await reopened.upsert('note', { title: 'later' });
    // B is a member A has not met since the restart, so A's write goes to a fresh writer of its
    // device (docs/architecture.md, "A log position is never reused"): its clock still counts.
    const mine = (await allEntries(reopened)).filter((e) => isWriterOf(e.origin, nodeA.deviceId));
    expect(mine).toHaveLength(2);
    const later = mine.find((e) => e.fields?.title === 'later')!;
    expect(later.seq).toBe(later.origin === nodeA.deviceId ? 2 : 1);
    expect(later.hlc > remoteHlc).toBe(true);
  });

  test('one clock per device: a write in one library after restart is above the HLCs of another', async () => {
    const dataDir = tempDir();
    const wall = new ManualClock(T);
    let node = await startNode(dataDir, wall);
    const lib1 = await node.createLibrary({ name: 'one' });
    const lib2 = await node.createLibrary({ name: 'two' });
    await lib2.upsert('note', { title: 'early' });
    wall.ms = T + 100_000;
    await lib1.upsert('note', { title: 'late' });
    const top = (await allEntries(lib1))[0]!.hlc;
    const ids = [lib1.id, lib2.id];
    await node.stop();

    wall.ms = T - 1_000_000;
    node = await startNode(dataDir, wall);
    const reopened2 = node.library(ids[1]!);
    await reopened2.upsert('note', { title: 'after restart' });
    const entries = await allEntries(reopened2);
    expect(entries).toHaveLength(2);
    expect(entries[1]!.hlc > top).toBe(true);
  });
});

describe('drift guard', () => {
  const MAX_DRIFT = 10_000;

  /** Node A (local, wall T, drift bound 10 s) and a writer node B whose wall clock we steer. */
  async function setup() {
    const wallA = new ManualClock(T);
    const wallB = new ManualClock(T);
    const nodeA = await startNode(tempDir(), wallA, MAX_DRIFT);
    const nodeB = await startNode(tempDir(), wallB, MAX_DRIFT);
    const libA = await nodeA.createLibrary({ name: 'local' });
    const libB = await writerOf(nodeB, libA, 'writer');
    // A knows B's member row, so it would take B's runs but for their clocks.
    expect((await copyRuns(libB, libA)).applied).toBe(1);
    // Some local state so that the digest is not the empty digest.
    await libA.upsert('note', { title: 'local' });
    await libA.upsert('volume', { label: 'local disk' });
    return { wallA, wallB, nodeA, nodeB, libA, libB };
  }

  /** B's runs A lacks, one write each. */
  async function newRuns(libB: Library, libA: Library): Promise<Chunk[]> {
    const runs = await runsOf(libB, libA.versionVector());
    for (const run of runs) onlyEntry(run);
    return runs;
  }

  async function expectDrift(lib: Library, runs: Chunk[], remoteWallMs: number, localWallMs: number) {
    let thrown: unknown;
    try {
      await engineOf(lib).applyRemoteChunks(runs);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(ClockDriftError);
    expect(thrown).toMatchObject({ code: 'CLOCK_DRIFT', remoteWallMs, localWallMs, maxDriftMs: MAX_DRIFT });
  }

  test('an entry far in the future is refused; clock, digest, vector and log are untouched', async () => {
    const { wallB, libA, libB } = await setup();
    wallB.ms = T + 5_000; // within the bound
    await libB.upsert('note', { title: 'near' });
    wallB.ms = T + 3_600_000; // an hour ahead
    await libB.upsert('note', { title: 'far' });
    const [near, far] = await newRuns(libB, libA);
    expect(decodeHlc(onlyEntry(far!).hlc).wallMs).toBe(T + 3_600_000);

    const before = await state(libA);
    // The whole batch is refused, including the valid entry that precedes the bad one.
    await expectDrift(libA, [near!, far!], T + 3_600_000, T);
    expect(await state(libA)).toEqual(before);
    await expectDrift(libA, [far!], T + 3_600_000, T);
    expect(await state(libA)).toEqual(before);

    // Within the bound: accepted, and the clock moves above the remote value.
    const result = await engineOf(libA).applyRemoteChunks([near!]);
    expect(result).toEqual({ applied: 1, duplicates: 0, gaps: [], refused: 0, forks: [], withheld: 0, forkedRuns: [] });
    const afterNear = await state(libA);
    expect(afterNear.logSize).toBe(before.logSize + 1);
    expect(afterNear.vector[near!.origin]).toBe(near!.lastSeq);
    expect(afterNear.digest).not.toBe(before.digest);
    expect(afterNear.clock > onlyEntry(near!).hlc).toBe(true);

    // The far entry, now next in sequence, is still refused and changes nothing.
    await expectDrift(libA, [far!], T + 3_600_000, T);
    expect(await state(libA)).toEqual(afterNear);

    // A local write is still stamped from the un-advanced clock (not an hour ahead).
    await libA.upsert('note', { title: 'local 2' });
    expect(decodeHlc(engineOf(libA).clockHighWater()).wallMs).toBe(T + 5_000);
  });

  test('the bound is inclusive: exactly maxClockDriftMs ahead is accepted, one ms more is refused', async () => {
    const { wallB, libA, libB } = await setup();
    wallB.ms = T + MAX_DRIFT;
    await libB.upsert('note', { title: 'edge' });
    wallB.ms = T + MAX_DRIFT + 1;
    await libB.upsert('note', { title: 'past the edge' });
    const [edge, past] = await newRuns(libB, libA);
    expect(decodeHlc(onlyEntry(edge!).hlc)).toMatchObject({ wallMs: T + MAX_DRIFT, counter: 0 });
    expect(decodeHlc(onlyEntry(past!).hlc)).toMatchObject({ wallMs: T + MAX_DRIFT + 1, counter: 0 });

    const before = await state(libA);
    await expectDrift(libA, [edge!, past!], T + MAX_DRIFT + 1, T);
    expect(await state(libA)).toEqual(before);
    expect(await engineOf(libA).applyRemoteChunks([edge!])).toEqual({ applied: 1, duplicates: 0, gaps: [], refused: 0, forks: [], withheld: 0, forkedRuns: [] });
    expect(decodeHlc(engineOf(libA).clockHighWater())).toMatchObject({ wallMs: T + MAX_DRIFT, counter: 1 });
  });

  test('the guard is relative to local wall time: the same entry is accepted once local time catches up', async () => {
    const { wallA, wallB, libA, libB } = await setup();
    wallB.ms = T + 3_600_000;
    await libB.upsert('note', { title: 'far' });
    const [far] = await newRuns(libB, libA);
    const before = await state(libA);
    await expectDrift(libA, [far!], T + 3_600_000, T);
    expect(await state(libA)).toEqual(before);

    wallA.ms = T + 3_600_000 - MAX_DRIFT;
    expect((await engineOf(libA).applyRemoteChunks([far!])).applied).toBe(1);
    expect(engineOf(libA).clockHighWater() > onlyEntry(far!).hlc).toBe(true);
  });

  test('device-owned rows with a future HLC are refused the same way', async () => {
    const { libA } = await setup();
    const { key, device: owner } = await keyedDevice();
    const row = (wallMs: number) => ({
      model: 'volume',
      id: `vol-${wallMs}`,
      owner,
      version: 1,
      hlc: encodeHlc({ wallMs, counter: 0, deviceId: owner }),
      deleted: false,
      values: { label: 'theirs' },
    });
    const before = await state(libA);
    let thrown: unknown;
    try {
      await engineOf(libA).applyRemoteOwned(signedOwnedRows(key, libA.id, [row(T + 1_000), row(T + 3_600_000)]));
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(ClockDriftError);
    expect(await state(libA)).toEqual(before);
    expect(await libA.get('volume', `vol-${T + 1_000}`)).toBeUndefined();

    expect(await engineOf(libA).applyRemoteOwned(signedOwnedRows(key, libA.id, [row(T + 1_000)]))).toEqual({ applied: 1, stale: 0, advanced: false, withheld: 0 });
    expect(await libA.get('volume', `vol-${T + 1_000}`)).toEqual({ id: `vol-${T + 1_000}`, label: 'theirs' });
    expect(engineOf(libA).clockHighWater() > row(T + 1_000).hlc).toBe(true);
  });
});
