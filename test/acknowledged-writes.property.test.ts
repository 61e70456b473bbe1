/**
 * Invariant 3 as a property, through every path that stores a clock from elsewhere (issue 10,
 * item 1): three devices with wall clocks skewed at random (within the drift bound) write the
 * same records and pass each other snapshots, log chunks and device-owned rows in random order,
 * with restarts in between. Then device X catches up with everyone and writes.
 *
 * Checked throughout: no device ever stores a clock at or above what it would issue next, and
 * every write's HLC is above that of every write it had received (its version vectors say which),
 * device-owned writes included. Checked at the end: once X's writes reached every replica, the
 * digests are equal AND every record X wrote reads, on every replica, as X's write returned it
 * (digests alone cannot show a write that lost everywhere).
 */
import fc from 'fast-check';
import { afterAll, expect, test } from 'vitest';
import { defineModel, NotFoundError, type VersionVector } from '../src/index.js';
import { removeTempDirs } from './helpers/child-process.js';
import {
  type ClockedDevice as Device,
  ManualClock,
  restartClockedDevice as restart,
  startClockedDevice,
  stopAllNodes,
  stopNode,
  useMemoryTransport,
} from './helpers/cluster.js';
import { engineOf } from '../src/library/library.js';

useMemoryTransport();

const MODELS = [
  defineModel({ name: 'note', ownership: 'shared', conflict: 'lww', fields: { title: 'text', n: 'integer' } }),
  defineModel({
    name: 'task',
    ownership: 'shared',
    conflict: 'lww-field',
    fields: { title: 'text', prio: { type: 'integer', nullable: true } },
  }),
  defineModel({
    name: 'tag',
    ownership: 'shared',
    conflict: 'union',
    naturalKey: ['name'],
    fields: { name: 'text', color: { type: 'text', nullable: true } },
  }),
  defineModel({ name: 'disk', ownership: 'device', fields: { label: 'text' } }),
];

const T = 1_750_000_000_000;
const MAX_DRIFT = 60_000;
/** Skews and forward steps together stay within the drift bound, so no batch is refused. */
const MAX_SKEW = 40_000;
const MAX_TICK = 1_500;
const BIG = { maxRecords: 100_000, maxBytes: 1 << 30 };
const X = 2;

afterAll(async () => {
  await stopAllNodes();
  await removeTempDirs();
});

// ---------------------------------------------------------------------------------------------
// Programs

type Write =
  | { k: 'note'; op: 'upsert' | 'update' | 'delete'; r: number }
  | { k: 'task'; op: 'upsert' | 'update' | 'delete'; r: number }
  | { k: 'tag'; op: 'upsert' | 'update' | 'delete'; r: number }
  | { k: 'disk'; op: 'upsert' | 'update' | 'delete'; r: number };

type Step =
  | { k: 'write'; d: number; w: Write }
  | { k: 'snapshot' | 'chunks' | 'owned'; from: number; to: number }
  | { k: 'tick'; d: number; ms: number }
  | { k: 'restart'; d: number };

const deviceArb = fc.nat({ max: 2 });
const writeArb: fc.Arbitrary<Write> = fc.record({
  k: fc.constantFrom('note', 'task', 'tag', 'disk'),
  op: fc.constantFrom('upsert', 'update', 'delete'),
  r: fc.nat({ max: 1 }),
}) as fc.Arbitrary<Write>;
const pairArb = fc
  .record({ k: fc.constantFrom('snapshot' as const, 'chunks' as const, 'owned' as const), from: deviceArb, to: deviceArb })
  .filter((s) => s.from !== s.to);
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ k: fc.constant('write' as const), d: deviceArb, w: writeArb }) },
  { weight: 6, arbitrary: pairArb },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('tick' as const), d: deviceArb, ms: fc.integer({ min: 1, max: MAX_TICK }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('restart' as const), d: deviceArb }) },
);
const programArb = fc.record({
  // X is often the device furthest behind: the case where a write can lose.
  skews: fc.tuple(fc.nat({ max: MAX_SKEW }), fc.nat({ max: MAX_SKEW }), fc.oneof(fc.constant(0), fc.nat({ max: MAX_SKEW }))),
  // Ticks are bounded in number (at most 12 × MAX_TICK ahead) by the step count.
  steps: fc.array(stepArb, { minLength: 4, maxLength: 12 }),
  xCatchUp: fc.array(fc.constantFrom('snapshot' as const, 'chunks' as const), { minLength: 2, maxLength: 2 }),
  xWrites: fc.array(writeArb, { minLength: 2, maxLength: 5 }),
  restartXBeforeWriting: fc.boolean(),
  spread: fc.array(fc.constantFrom('snapshot' as const, 'chunks' as const), { minLength: 2, maxLength: 2 }),
});

// ---------------------------------------------------------------------------------------------
// Writes, with what each knew when it was made

/** A write as the writer's log or owned rows record it, and the vectors the writer held before. */
interface MadeWrite {
  device: string;
  /** `seq` in the writer's log (shared models) or the writer's owned version (device-owned). */
  kind: 'shared' | 'owned';
  position: number;
  hlc: string;
  knewShared: VersionVector;
  knewOwned: VersionVector;
}

/** Runs one write; undefined when it does not apply (update or delete of a missing row). */
async function write(d: Device, w: Write, label: string): Promise<{ model: string; id: string; row: unknown } | undefined> {
  const lib = d.lib;
  const id = w.k === 'disk' ? `disk-${d.node.deviceId.slice(0, 8)}-${w.r}` : `${w.k}-${w.r}`;
  try {
    switch (w.k) {
      case 'note':
        if (w.op === 'upsert') return { model: 'note', id, row: await lib.upsert('note', { id, title: label, n: 1 }) };
        if (w.op === 'update') return { model: 'note', id, row: await lib.update('note', id, { title: label }) };
        await lib.delete('note', id);
        return { model: 'note', id, row: undefined };
      case 'task':
        if (w.op === 'upsert') return { model: 'task', id, row: await lib.upsert('task', { id, title: label, prio: null }) };
        if (w.op === 'update') return { model: 'task', id, row: await lib.update('task', id, { prio: label.length }) };
        await lib.delete('task', id);
        return { model: 'task', id, row: undefined };
      case 'tag': {
        const name = `tag-${w.r}`;
        if (w.op === 'upsert') {
          const row = await lib.upsert('tag', { name, color: label });
          return { model: 'tag', id: row.id, row };
        }
        const held = (await lib.list('tag', { limit: 10 })).find((t) => t.name === name);
        if (!held) return undefined;
        if (w.op === 'update') return { model: 'tag', id: held.id, row: await lib.update('tag', held.id, { color: label }) };
        await lib.delete('tag', held.id);
        return { model: 'tag', id: held.id, row: undefined };
      }
      case 'disk':
        if (w.op === 'upsert') return { model: 'disk', id, row: await lib.upsert('disk', { id, label }) };
        if (w.op === 'update') return { model: 'disk', id, row: await lib.update('disk', id, { label }) };
        await lib.delete('disk', id);
        return { model: 'disk', id, row: undefined };
    }
  } catch (err) {
    if (err instanceof NotFoundError) return undefined;
    throw err;
  }
}

/** The clock and position of the write `d` just made. */
async function lastWrite(d: Device, kind: 'shared' | 'owned', knewShared: VersionVector, knewOwned: VersionVector): Promise<MadeWrite> {
  const self = d.node.deviceId;
  if (kind === 'shared') {
    const seq = d.lib.versionVector()[self]!;
    const page = await engineOf(d.lib).entriesAfter({ ...d.lib.versionVector(), [self]: seq - 1 }, BIG);
    expect(page.entries).toHaveLength(1);
    return { device: self, kind, position: seq, hlc: page.entries[0]!.hlc, knewShared, knewOwned };
  }
  const version = engineOf(d.lib).ownedVector()[self]!;
  const page = await engineOf(d.lib).ownedAfter(self, version - 1, BIG);
  expect(page.rows).toHaveLength(1);
  return { device: self, kind, position: version, hlc: page.rows[0]!.hlc, knewShared, knewOwned };
}

/** Whether `later`'s writer had received `earlier` when it wrote. */
function received(later: MadeWrite, earlier: MadeWrite): boolean {
  const knew = earlier.kind === 'shared' ? later.knewShared : later.knewOwned;
  return (knew[earlier.device] ?? 0) >= earlier.position;
}

// ---------------------------------------------------------------------------------------------
// Transfers

async function transfer(kind: 'snapshot' | 'chunks' | 'owned', from: Device, to: Device): Promise<void> {
  if (kind === 'owned') {
    const have = engineOf(to.lib).ownedVector();
    for (const [owner, through] of Object.entries(engineOf(from.lib).ownedVector())) {
      if (owner === to.node.deviceId || through <= (have[owner] ?? 0)) continue;
      const page = await engineOf(from.lib).ownedAfter(owner, have[owner] ?? 0, BIG);
      await engineOf(to.lib).applyRemoteOwned(page, { owner, from: page.from, to: page.to });
    }
    return;
  }
  if (kind === 'chunks') {
    const page = await engineOf(from.lib).chunksAfter(to.lib.versionVector(), BIG);
    if (page.chunks.length > 0) await engineOf(to.lib).applyRemoteChunks(page.chunks);
    // What the sender no longer holds as a log comes by snapshot, as a partner would serve it.
    if (page.pruned.length === 0) return;
  }
  const page = await engineOf(from.lib).snapshotAfter(null, BIG);
  const vector = from.lib.versionVector();
  await engineOf(to.lib).applySnapshot(page.rows, { vector, proofs: await engineOf(from.lib).snapshotProofs(vector, {}), next: null });
}

/** Every clock `d` stores (shared rows, owned rows) is below the mark its clock issues from. */
async function expectClockCoversStored(d: Device, after: string): Promise<void> {
  const mark = engineOf(d.lib).clockHighWater();
  const shared = (await engineOf(d.lib).snapshotAfter(null, BIG)).rows.flatMap(({ state }) => [
    state.hlc,
    ...[state.upsertHlc, state.deleteHlc].filter((h): h is string => h !== null),
    ...Object.values(state.fieldHlcs ?? {}),
  ]);
  const owned: string[] = [];
  for (const owner of Object.keys(engineOf(d.lib).ownedVector())) {
    for (const row of (await engineOf(d.lib).ownedAfter(owner, 0, BIG)).rows) owned.push(row.hlc);
  }
  for (const hlc of [...shared, ...owned]) {
    if (hlc > mark) expect.fail(`after ${after}: ${d.node.deviceId} stores ${hlc} above its clock's mark ${mark}`);
  }
}

function holdsAtLeast(a: VersionVector, b: VersionVector): boolean {
  return Object.entries(b).every(([origin, seq]) => (a[origin] ?? 0) >= seq);
}

// ---------------------------------------------------------------------------------------------

test('every acknowledged write, after snapshots, chunks and owned rows from skewed devices, is the visible winner everywhere', async () => {
  await fc.assert(
    fc.asyncProperty(programArb, async (program) => {
      const walls = program.skews.map((skew) => new ManualClock(T + skew));
      const options = { models: MODELS, maxClockDriftMs: MAX_DRIFT };
      const first = await startClockedDevice(walls[0]!, options);
      const devices = [
        first,
        await startClockedDevice(walls[1]!, options, first.lib.id),
        await startClockedDevice(walls[2]!, options, first.lib.id),
      ];
      const made: MadeWrite[] = [];
      let label = 0;
      const run = async (d: Device, w: Write) => {
        const knewShared = d.lib.versionVector();
        const knewOwned = engineOf(d.lib).ownedVector();
        const done = await write(d, w, `w${label++}`);
        if (done) made.push(await lastWrite(d, w.k === 'disk' ? 'owned' : 'shared', knewShared, knewOwned));
        return done;
      };
      try {
        for (const [index, step] of program.steps.entries()) {
          if (step.k === 'write') await run(devices[step.d]!, step.w);
          else if (step.k === 'tick') walls[step.d]!.ms += step.ms;
          else if (step.k === 'restart') await restart(devices[step.d]!);
          else await transfer(step.k, devices[step.from]!, devices[step.to]!);
          for (const d of devices) await expectClockCoversStored(d, `step ${index} ${JSON.stringify(step)}`);
        }

        // X catches up with both others, then writes.
        const x = devices[X]!;
        for (const [i, kind] of program.xCatchUp.entries()) {
          await transfer(kind, devices[i]!, x);
          await transfer('owned', devices[i]!, x);
        }
        for (const d of devices) expect(holdsAtLeast(x.lib.versionVector(), d.lib.versionVector())).toBe(true);
        if (program.restartXBeforeWriting) await restart(x);
        const expected = new Map<string, { model: string; id: string; row: unknown }>();
        for (const w of program.xWrites) {
          const done = await run(x, w);
          if (done) expected.set(`${done.model}/${done.id}`, done);
          await expectClockCoversStored(x, `X's write ${JSON.stringify(w)}`);
        }

        // Every write is above every write its writer had received.
        for (const later of made) {
          for (const earlier of made) {
            if (later !== earlier && received(later, earlier) && !(later.hlc > earlier.hlc)) {
              expect.fail(`write ${later.hlc} was made after receiving ${earlier.hlc}, but is not above it`);
            }
          }
        }

        // X's writes reach the others; then all agree, and on X's records X's writes won.
        for (const [i, kind] of program.spread.entries()) {
          await transfer(kind, x, devices[i]!);
          await transfer('owned', x, devices[i]!);
        }
        const digests = await Promise.all(devices.map((d) => d.lib.digest()));
        expect(new Set(digests).size).toBe(1);
        for (const { model, id, row } of expected.values()) {
          for (const d of devices) expect(await d.lib.get(model, id)).toEqual(row);
        }
      } finally {
        for (const d of devices) await stopNode(d.node);
      }
    }),
    { numRuns: 60 },
  );
});
