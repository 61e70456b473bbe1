/**
 * Convergence (DESIGN.md invariant 1): replicas that receive the same set of changes hold
 * byte-identical digests, whatever the delivery order, duplication, batch split or restarts.
 *
 * fast-check generates change programs on three devices (real nodes, real SQLite files) that
 * share one library: row-LWW, field-LWW and union records, inserts, updates and deletes of the
 * *same* records on several devices, partial syncs between the devices in between (so later
 * writes build on each other's changes), wall clocks that move both ways, restarts. Then every
 * signed run of every device's log is delivered to fresh replicas in random order, with random
 * duplicates and random batch splits, re-delivering what a gap (or a run whose author is not
 * known yet) held back, and all replicas and all devices (after catching up) must have the
 * same digest.
 *
 * Since protocol 2.0 the log travels as signed runs, applied whole: deliveries here shuffle,
 * duplicate and split batches of runs (never cut a run). Each device opens its replica of the
 * shared library with `createLibrary({ name, id })` and `introduce`s itself before it writes:
 * its own member row is then the first run of its origin, by which every receiver checks its
 * runs' signatures. The shared id matters for `union` models, whose record ids are derived from
 * the library id.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterEach, expect, test } from 'vitest';
import {
  createSyncNode,
  defineModel,
  type Library,
  NotFoundError,
  type SyncNode,
  type VersionVector,
} from '../src/index.js';
import { type Chunk, decodeChunk } from '../src/peer-log/chunk.js';
import { packRun } from '../src/peer-log/signed-runs.js';
import { MEMBERS_MODEL } from '../src/models/system.js';
import { engineOf } from '../src/library/library.js';
import { introduce, runsOf } from './helpers/log-copy.js';

const note = defineModel({
  name: 'note',
  ownership: 'shared',
  conflict: 'lww',
  fields: { title: 'text', body: { type: 'text', nullable: true }, n: 'integer' },
});
const task = defineModel({
  name: 'task',
  ownership: 'shared',
  conflict: 'lww-field',
  fields: {
    title: 'text',
    done: 'boolean',
    prio: { type: 'integer', nullable: true },
    meta: { type: 'json', nullable: true },
  },
});
const tag = defineModel({
  name: 'tag',
  ownership: 'shared',
  conflict: 'union',
  naturalKey: ['name'],
  fields: { name: 'text', color: { type: 'text', nullable: true }, count: { type: 'integer', nullable: true } },
});
const MODELS = [note, task, tag];
const MODEL_NAMES = ['note', 'tag', 'task'];

const T = 1_750_000_000_000;
const DRIFT = 3_600_000;

class ManualClock {
  constructor(public ms: number) {}
  readonly read = (): number => this.ms;
}

// ---------------------------------------------------------------------------------------------
// Nodes and temp dirs

const liveNodes = new Set<SyncNode>();
const liveDirs = new Set<string>();

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lsync-apply-'));
  liveDirs.add(dir);
  return dir;
}

async function startNode(dataDir: string, wall: ManualClock): Promise<SyncNode> {
  const node = await createSyncNode({ dataDir, models: MODELS, listen: [], wallClock: wall.read, maxClockDriftMs: DRIFT });
  liveNodes.add(node);
  return node;
}

async function stopNode(node: SyncNode): Promise<void> {
  liveNodes.delete(node);
  await node.stop();
}

async function cleanup(): Promise<void> {
  for (const node of [...liveNodes]) await stopNode(node);
  for (const dir of liveDirs) fs.rmSync(dir, { recursive: true, force: true });
  liveDirs.clear();
}

afterEach(cleanup);

/**
 * A new device holding its own replica of library `libraryId`. A device that will write
 * introduces itself first (its member row opens its log); a replica that only receives need not.
 */
async function joinLibrary(dataDir: string, libraryId: string, wall: ManualClock, writes: boolean): Promise<Device> {
  const node = await startNode(dataDir, wall);
  const lib = await node.createLibrary({ name: 'shared', id: libraryId });
  if (writes) await introduce(lib);
  return { dataDir, wall, node, lib };
}

interface Device {
  dataDir: string;
  wall: ManualClock;
  node: SyncNode;
  lib: Library;
}

async function restart(device: Device): Promise<void> {
  const id = device.lib.id;
  await stopNode(device.node);
  device.node = await startNode(device.dataDir, device.wall);
  device.lib = device.node.library(id);
}

// ---------------------------------------------------------------------------------------------
// Programs

const NOTE_IDS = ['n0', 'n1'];
const TASK_IDS = ['t0', 't1'];
const TAG_NAMES = ['red', 'green'];

type Write =
  | { k: 'upsertNote'; r: number; title: string; body: string | null; n: number }
  | { k: 'updateNote'; r: number; title: string }
  | { k: 'deleteNote'; r: number }
  | { k: 'upsertTask'; r: number; title: string; done: boolean; prio: number | null }
  | { k: 'updateTask'; r: number; patch: Record<string, unknown> }
  | { k: 'deleteTask'; r: number }
  | { k: 'upsertTag'; name: number; color: string | null }
  | { k: 'updateTag'; name: number; patch: Record<string, unknown> }
  | { k: 'deleteTag'; name: number };

type Step =
  | { k: 'write'; d: number; w: Write }
  | { k: 'txn'; d: number; ws: Write[]; abort: boolean }
  | { k: 'sync'; from: number; to: number; max: number }
  | { k: 'tick'; d: number; delta: number }
  | { k: 'restart'; d: number };

const device = fc.nat({ max: 2 });
// Few records, so that devices write the same ones and conflicts are the rule, not the exception.
const rec = fc.nat({ max: 1 });
const word = fc.constantFrom('a', 'b', 'c', 'zz', '');
const smallInt = fc.integer({ min: -3, max: 3 });
const jsonMeta = fc.option(fc.dictionary(fc.constantFrom('x', 'y', 'z'), fc.integer({ min: 0, max: 9 }), { maxKeys: 2, noNullPrototype: true }), {
  nil: null,
});

const writeArb: fc.Arbitrary<Write> = fc.oneof(
  fc.record({ k: fc.constant('upsertNote' as const), r: rec, title: word, body: fc.option(word, { nil: null }), n: smallInt }),
  fc.record({ k: fc.constant('updateNote' as const), r: rec, title: word }),
  fc.record({ k: fc.constant('deleteNote' as const), r: rec }),
  fc.record({
    k: fc.constant('upsertTask' as const),
    r: rec,
    title: word,
    done: fc.boolean(),
    prio: fc.option(smallInt, { nil: null }),
  }),
  fc.record({
    k: fc.constant('updateTask' as const),
    r: rec,
    patch: fc
      .record(
        { title: word, done: fc.boolean(), prio: fc.option(smallInt, { nil: null }), meta: jsonMeta },
        { requiredKeys: [] },
      )
      .filter((p) => Object.keys(p).length > 0),
  }),
  fc.record({ k: fc.constant('deleteTask' as const), r: rec }),
  fc.record({ k: fc.constant('upsertTag' as const), name: rec, color: fc.option(word, { nil: null }) }),
  fc.record({
    k: fc.constant('updateTag' as const),
    name: rec,
    patch: fc
      .record({ color: fc.option(word, { nil: null }), count: fc.option(smallInt, { nil: null }) }, { requiredKeys: [] })
      .filter((p) => Object.keys(p).length > 0),
  }),
  fc.record({ k: fc.constant('deleteTag' as const), name: rec }),
);

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 10, arbitrary: fc.record({ k: fc.constant('write' as const), d: device, w: writeArb }) },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant('txn' as const),
      d: device,
      ws: fc.array(writeArb, { minLength: 1, maxLength: 3 }),
      abort: fc.boolean(),
    }),
  },
  {
    weight: 4,
    arbitrary: fc
      .record({ k: fc.constant('sync' as const), from: device, to: device, max: fc.integer({ min: 1, max: 20 }) })
      .filter((s) => s.from !== s.to),
  },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('tick' as const), d: device, delta: fc.integer({ min: -3_000, max: 3_000 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('restart' as const), d: device }) },
);

interface Writer {
  upsert(model: string, row: Record<string, unknown>): Promise<{ id: string }>;
  update(model: string, id: string, partial: Record<string, unknown>): Promise<unknown>;
  delete(model: string, id: string): Promise<void>;
}

class Aborted extends Error {}

/** Runs one write; a write to a record that is not live on that device is skipped. */
async function runWrite(w: Write, writer: Writer, tagIds: Map<string, string>): Promise<void> {
  const skipMissing = async (p: Promise<unknown>): Promise<void> => {
    try {
      await p;
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
    }
  };
  switch (w.k) {
    case 'upsertNote':
      await writer.upsert('note', { id: NOTE_IDS[w.r], title: w.title, body: w.body, n: w.n });
      return;
    case 'updateNote':
      return skipMissing(writer.update('note', NOTE_IDS[w.r]!, { title: w.title }));
    case 'deleteNote':
      return skipMissing(writer.delete('note', NOTE_IDS[w.r]!));
    case 'upsertTask':
      await writer.upsert('task', { id: TASK_IDS[w.r], title: w.title, done: w.done, prio: w.prio });
      return;
    case 'updateTask':
      return skipMissing(writer.update('task', TASK_IDS[w.r]!, w.patch));
    case 'deleteTask':
      return skipMissing(writer.delete('task', TASK_IDS[w.r]!));
    case 'upsertTag': {
      const name = TAG_NAMES[w.name]!;
      const row = await writer.upsert('tag', { name, color: w.color, count: null });
      // Every device derives the same id for the same natural key.
      const known = tagIds.get(name);
      if (known !== undefined) expect(row.id).toBe(known);
      tagIds.set(name, row.id);
      return;
    }
    case 'updateTag': {
      const id = tagIds.get(TAG_NAMES[w.name]!);
      if (id !== undefined) await skipMissing(writer.update('tag', id, w.patch));
      return;
    }
    case 'deleteTag': {
      const id = tagIds.get(TAG_NAMES[w.name]!);
      if (id !== undefined) await skipMissing(writer.delete('tag', id));
      return;
    }
  }
}

async function runStep(step: Step, devices: Device[], tagIds: Map<string, string>): Promise<void> {
  switch (step.k) {
    case 'write':
      return runWrite(step.w, devices[step.d]!.lib, tagIds);
    case 'txn': {
      const lib = devices[step.d]!.lib;
      const before = { vector: lib.versionVector(), digest: await lib.digest() };
      const learned = new Map(tagIds);
      try {
        await lib.transaction(async (tx) => {
          for (const w of step.ws) await runWrite(w, tx, learned);
          if (step.abort) throw new Aborted();
        });
        for (const [k, v] of learned) tagIds.set(k, v);
      } catch (err) {
        if (!(err instanceof Aborted)) throw err;
        expect(lib.versionVector()).toEqual(before.vector);
        expect(await lib.digest()).toBe(before.digest);
      }
      return;
    }
    case 'sync': {
      const from = devices[step.from]!.lib;
      const to = devices[step.to]!.lib;
      const before = to.versionVector();
      const page = await engineOf(from).chunksAfter(before, { maxRecords: step.max, maxBytes: 1 << 20 });
      // The receiver holds whole runs only, so its vector is on run boundaries of the sender.
      expect(page.pruned).toEqual([]);
      expect(page.entries).toBe(entriesOf(page.chunks));
      const result = await engineOf(to).applyRemoteChunks(page.chunks);
      // chunksAfter hands out gap-free prefixes of whole runs after the vector: nothing is
      // held back behind a gap, and nothing is held already. Every device's id is key-derived,
      // so each run names the key that may sign it and none is left out.
      expect(result).toMatchObject({ gaps: [], forks: [], refused: 0, duplicates: 0, withheld: 0 });
      expect(result.applied).toBe(entriesOf(page.chunks));
      expect(result.applied).toBe(advance(before, to.versionVector()));
      return;
    }
    case 'tick': {
      const wall = devices[step.d]!.wall;
      wall.ms = Math.max(0, wall.ms + step.delta);
      return;
    }
    case 'restart':
      return restart(devices[step.d]!);
  }
}

// ---------------------------------------------------------------------------------------------
// Delivery

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffle<T>(items: T[], rnd: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** Entries in `runs`. */
function entriesOf(runs: readonly Chunk[]): number {
  return runs.reduce((n, c) => n + c.lastSeq - c.firstSeq + 1, 0);
}

/** Entries by which a vector moved. */
function advance(before: VersionVector, after: VersionVector): number {
  return Object.keys(after).reduce((n, o) => n + after[o]! - (before[o] ?? 0), 0);
}

function missing(pool: readonly Chunk[], vector: VersionVector): Chunk[] {
  return pool.filter((c) => c.lastSeq > (vector[c.origin] ?? 0));
}

/**
 * Delivers the runs of `pool` to `device` in random order, with random duplicates, in random
 * batches, re-delivering whatever is still missing (held back behind a gap) until nothing is. Optionally restarts the device
 * after a random batch of the first round.
 */
async function deliver(target: Device, pool: readonly Chunk[], expected: VersionVector, rnd: () => number, restartAt?: number) {
  let rounds = 0;
  let batchNo = 0;
  for (;;) {
    const remaining = missing(pool, target.lib.versionVector());
    if (remaining.length === 0) break;
    rounds += 1;
    if (rounds > pool.length + 2) expect.fail('delivery made no progress');
    const withDuplicates = remaining.flatMap((c) => (rnd() < 0.3 ? [c, c] : rnd() < 0.05 ? [c, c, c] : [c]));
    // Runs the device already holds may come again too.
    const stale = pool.filter(() => rnd() < 0.1);
    const order = shuffle([...withDuplicates, ...stale], rnd);
    for (let start = 0; start < order.length; ) {
      const size = 1 + Math.floor(rnd() * 8);
      const batch = order.slice(start, start + size);
      start += size;
      const before = target.lib.versionVector();
      const result = await engineOf(target.lib).applyRemoteChunks(batch);
      const after = target.lib.versionVector();
      expect(result.applied).toBe(advance(before, after));
      expect(result.applied + result.duplicates).toBeLessThanOrEqual(entriesOf(batch));
      // Honest authors never fork, and whole runs never overlap at another boundary.
      expect(result.forks).toEqual([]);
      expect(result.refused).toBe(0);
      for (const gap of result.gaps) expect(gap.heldSeq).toBe(after[gap.origin] ?? 0);
      batchNo += 1;
      if (batchNo === restartAt) await restart(target);
    }
  }
  expect(target.lib.versionVector()).toEqual(expected);
}

async function dump(lib: Library): Promise<Record<string, unknown[]>> {
  const out: Record<string, unknown[]> = {};
  for (const model of MODEL_NAMES) out[model] = await lib.list(model, { limit: 10_000 });
  return out;
}

// ---------------------------------------------------------------------------------------------

test(
  'replicas that receive the same changes in any order, with duplicates and restarts, have equal digests',
  async () => {
    let runs = 0;
    let nonTrivial = 0;
    await fc.assert(
      fc.asyncProperty(
        // At least 8 steps: with 3, only about a third of the programs wrote on two devices, and
        // the check below that enough do failed about once in 30 suites.
        fc.array(stepArb, { minLength: 8, maxLength: 40 }),
        fc.tuple(fc.integer({ min: -2_000, max: 2_000 }), fc.integer({ min: -2_000, max: 2_000 })),
        fc.integer(),
        async (steps, [offsetB, offsetC], seed) => {
          runs += 1;
          try {
            const rnd = mulberry32(seed);
            // Three devices sharing one library.
            const wallA = new ManualClock(T);
            const dirA = tempDir();
            const nodeA = await startNode(dirA, wallA);
            const libA = await nodeA.createLibrary({ name: 'shared' });
            await introduce(libA);
            const devices: Device[] = [
              { dataDir: dirA, wall: wallA, node: nodeA, lib: libA },
              await joinLibrary(tempDir(), libA.id, new ManualClock(T + offsetB), true),
              await joinLibrary(tempDir(), libA.id, new ManualClock(T + offsetC), true),
            ];
            expect(new Set(devices.map((d) => d.node.deviceId)).size).toBe(3);
            // Each device's log opens with its own member row, before anything it writes.
            for (const d of devices) {
              const [first] = await runsOf(d.lib);
              expect(first).toMatchObject({ origin: d.node.deviceId, firstSeq: 1 });
              expect(decodeChunk(first!).map((e) => [e.entry.model, e.entry.id])).toContainEqual([MEMBERS_MODEL.name, d.node.deviceId]);
            }

            const tagIds = new Map<string, string>();
            for (const step of steps) await runStep(step, devices, tagIds);

            // Every run every device holds (overlapping: a natural source of duplicates). A run
            // relayed is stored as its author signed it, so every copy of it is the same bytes.
            const pool: Chunk[] = [];
            for (const d of devices) pool.push(...(await runsOf(d.lib)));
            const expected: VersionVector = {};
            for (const c of pool) expected[c.origin] = Math.max(expected[c.origin] ?? 0, c.lastSeq);
            const byPlace = new Map<string, Chunk>();
            for (const c of pool) {
              const key = `${c.origin}#${c.firstSeq}`;
              const seen = byPlace.get(key);
              if (seen) expect(Buffer.from(packRun(seen))).toEqual(Buffer.from(packRun(c)));
              else byPlace.set(key, c);
            }
            const canonical = [...byPlace.values()].sort((a, b) => (a.origin < b.origin ? -1 : a.origin > b.origin ? 1 : a.firstSeq - b.firstSeq));
            // The distinct runs tile each origin from 1 to its last seq, without overlap.
            for (const origin of Object.keys(expected)) {
              let next = 1;
              for (const c of canonical.filter((r) => r.origin === origin)) {
                expect(c.firstSeq).toBe(next);
                next = c.lastSeq + 1;
              }
              expect(next).toBe(expected[origin]! + 1);
            }
            const distinct = entriesOf(canonical);
            expect(distinct).toBe(Object.values(expected).reduce((a, b) => a + b, 0));
            // Programs in which at least two devices wrote something besides their member row.
            const writers = new Set(
              canonical.flatMap((c) => decodeChunk(c).filter((e) => e.entry.model !== MEMBERS_MODEL.name).map((e) => e.entry.origin)),
            );
            if (writers.size > 1) nonTrivial += 1;

            // Fresh replicas: one gets everything in canonical order in one batch, two get random
            // orders, duplicates and splits (one restarts half-way), one origin by origin.
            const replicas: Device[] = [];
            for (let i = 0; i < 4; i++) replicas.push(await joinLibrary(tempDir(), libA.id, new ManualClock(T), false));
            const first = await engineOf(replicas[0]!.lib).applyRemoteChunks(canonical);
            expect(first.applied).toBe(distinct);
            expect(first).toMatchObject({ duplicates: 0, gaps: [], forks: [], refused: 0 });
            expect(replicas[0]!.lib.versionVector()).toEqual(expected);
            // Another: origin by origin, in reverse origin order, one batch per origin: each run
            // names its key-derived author, so no origin waits for a member row of another.
            const reverse = replicas[3]!;
            for (const origin of Object.keys(expected).sort().reverse()) {
              const result = await engineOf(reverse.lib).applyRemoteChunks(canonical.filter((c) => c.origin === origin));
              expect(result).toMatchObject({ applied: expected[origin], duplicates: 0, gaps: [], forks: [], refused: 0, withheld: 0 });
            }
            expect(reverse.lib.versionVector()).toEqual(expected);
            await deliver(replicas[1]!, pool, expected, rnd);
            await deliver(replicas[2]!, pool, expected, rnd, 1 + Math.floor(rnd() * 4));

            // The devices themselves catch up too.
            for (const d of devices) await deliver(d, pool, expected, rnd);

            const everyone = [...replicas, ...devices];
            const reference = await dump(replicas[0]!.lib);
            const referenceDigest = await replicas[0]!.lib.digest();
            for (const d of everyone) {
              expect(await dump(d.lib)).toEqual(reference);
              expect(await d.lib.digest()).toBe(referenceDigest);
              expect(d.lib.versionVector()).toEqual(expected);
              expect(await engineOf(d.lib).logSize()).toBe(distinct);
            }
            // And digests survive a restart unchanged.
            await restart(replicas[1]!);
            expect(await replicas[1]!.lib.digest()).toBe(referenceDigest);
          } finally {
            await cleanup();
          }
        },
      ),
      { numRuns: 30 },
    );
    expect(runs).toBeGreaterThanOrEqual(25);
    // The generator must actually produce multi-device histories, or the property says little.
    expect(nonTrivial).toBeGreaterThan(5);
  },
  120_000,
);
