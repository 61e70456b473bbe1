/**
 * Invariant 3 through snapshots (issue 10, item 1), without network: a device whose wall clock is
 * behind the clocks of rows it received in a partner's snapshot must still stamp its next write
 * above them, also after a restart right after the snapshot, so that a write that resolved is the
 * visible winner on every replica. Digests alone cannot show the loss (the replicas agree on the
 * old value), so each test reads the written row on both devices.
 */
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeHlc, type Library } from '../src/index.js';
import { removeTempDirs } from './helpers/child-process.js';
import {
  type ClockedDevice,
  ManualClock,
  restartClockedDevice,
  startClockedDevice,
  startNode,
  stopAllNodes,
  stopNode,
  useMemoryTransport,
} from './helpers/cluster.js';
import { engineOf } from '../src/library/library.js';
import { copyRuns, introduce } from './helpers/log-copy.js';

useMemoryTransport();

afterEach(async () => {
  await stopAllNodes();
  await removeTempDirs();
});

const T = 1_750_000_000_000;
const SKEW_MS = 5_000;
const EVERYTHING = { maxRecords: 100_000, maxBytes: 1 << 30 };

/** B merges A's whole snapshot, as its last page (A's vector held as pruned). */
async function applyWholeSnapshot(from: Library, to: Library): Promise<void> {
  const page = await engineOf(from).snapshotAfter(null, EVERYTHING);
  expect(page.next).toBeNull();
  const vector = from.versionVector();
  await engineOf(to).applySnapshot(page.rows, { vector, proofs: await engineOf(from).snapshotProofs(vector, {}), next: null });
}

/**
 * A applies B's own changes (what a push would bring: B's signed runs, which A checks by the
 * member row B wrote first, `introduce`), then both must agree.
 */
async function deliverOwnChanges(from: ClockedDevice, to: ClockedDevice): Promise<void> {
  const entries = (await engineOf(from.lib).entriesAfter(to.lib.versionVector(), EVERYTHING)).entries;
  expect(entries.length).toBeGreaterThan(0);
  expect(entries.every((e) => e.origin === from.node.deviceId)).toBe(true);
  const result = await copyRuns(from.lib, to.lib);
  expect(result).toMatchObject({ applied: entries.length, gaps: [], forks: [], refused: 0 });
  expect(await to.lib.digest()).toBe(await from.lib.digest());
}

interface Scenario {
  rule: string;
  /** A's write, whose clock is ahead of B's wall clock. */
  seed: (lib: Library) => Promise<{ model: string; id: string }>;
  /** B's write of that row; resolves to what B must then read on every replica. */
  write: (lib: Library, id: string) => Promise<Record<string, unknown> | undefined>;
}

const scenarios: Scenario[] = [
  {
    rule: 'lww',
    seed: async (lib) => ({ model: 'note', id: (await lib.upsert('note', { title: 'from A', body: 'a' })).id }),
    write: (lib, id) => lib.update('note', id, { title: 'from B' }),
  },
  {
    rule: 'lww (blind upsert)',
    seed: async (lib) => ({ model: 'note', id: (await lib.upsert('note', { title: 'from A', body: 'a' })).id }),
    write: (lib, id) => lib.upsert('note', { id, title: 'from B', body: null }),
  },
  {
    rule: 'lww-field',
    seed: async (lib) => ({
      model: 'profile',
      id: (await lib.upsert('profile', { name: 'A', color: 'red', score: 1 })).id,
    }),
    write: (lib, id) => lib.update('profile', id, { color: 'blue' }),
  },
  {
    rule: 'union',
    seed: async (lib) => ({ model: 'tag', id: (await lib.upsert('tag', { label: 'shared' })).id }),
    write: async (lib, id) => {
      await lib.delete('tag', id);
      return undefined;
    },
  },
];

describe('a write after a snapshot whose clocks are ahead of the wall clock', () => {
  for (const restartAfterSnapshot of [false, true]) {
    for (const scenario of scenarios) {
      it(`${scenario.rule}: wins on both devices${restartAfterSnapshot ? ', across a restart right after the snapshot' : ''}`, async () => {
        const a = await startClockedDevice(new ManualClock(T + SKEW_MS));
        const b = await startClockedDevice(new ManualClock(T), {}, a.lib.id);
        // B's member row first (stamped at B's own wall clock, before the snapshot), so A takes its runs.
        await introduce(b.lib);
        const { model, id } = await scenario.seed(a.lib);
        await applyWholeSnapshot(a.lib, b.lib);
        if (restartAfterSnapshot) await restartClockedDevice(b);

        const written = await scenario.write(b.lib, id);
        expect(await b.lib.get(model, id)).toEqual(written);
        // Every clock B stores now is below what it will issue next.
        const stored = (await engineOf(b.lib).snapshotAfter(null, EVERYTHING)).rows.map((r) => r.state.hlc);
        expect(stored.every((hlc) => hlc <= engineOf(b.lib).clockHighWater())).toBe(true);

        await deliverOwnChanges(b, a);
        expect(await a.lib.get(model, id)).toEqual(written);
      });
    }
  }
});

describe('the invariant is checked where the row is written', () => {
  /**
   * A data directory written before this check existed may hold a row whose clock is above the
   * persisted high-water mark. A local write of that row must fail, not resolve and lose.
   */
  async function rowAboveHighWater(model: 'note' | 'profile', fields: Record<string, unknown>) {
    const d = await startClockedDevice(new ManualClock(T));
    const row = await d.lib.upsert(model, fields);
    const libId = d.lib.id;
    await stopNode(d.node);
    const future = encodeHlc({ wallMs: T + SKEW_MS, counter: 0, deviceId: '7b7b7b7b-1111-4111-8111-111111111111' });
    const db = new Database(join(d.dataDir, 'libraries', `${libId}.sqlite`), { fileMustExist: true });
    try {
      db.prepare(`UPDATE "${model}" SET _hlc = ? WHERE id = ?`).run(future, row.id);
    } finally {
      db.close();
    }
    d.node = await startNode(d.dataDir, { wallClock: d.wall.read });
    d.lib = d.node.library(libId);
    return { lib: d.lib, row, digest: await d.lib.digest(), vector: d.lib.versionVector() };
  }

  const internal = { code: 'INTERNAL', message: expect.stringMatching(/^internal: /) };

  it('an lww update, an lww blind upsert and a lww-field update fail loudly and change nothing', async () => {
    const note = await rowAboveHighWater('note', { title: 'stored', body: null });
    await expect(note.lib.update('note', note.row.id, { title: 'lost?' })).rejects.toMatchObject(internal);
    await expect(note.lib.upsert('note', { id: note.row.id, title: 'lost?', body: null })).rejects.toMatchObject(internal);
    expect(await note.lib.get('note', note.row.id)).toEqual(note.row);
    expect(await note.lib.digest()).toBe(note.digest);
    expect(note.lib.versionVector()).toEqual(note.vector);

    const profile = await rowAboveHighWater('profile', { name: 'stored', color: null, score: null });
    await expect(profile.lib.update('profile', profile.row.id, { color: 'lost?' })).rejects.toMatchObject(internal);
    expect(await profile.lib.get('profile', profile.row.id)).toEqual(profile.row);
    expect(await profile.lib.digest()).toBe(profile.digest);
  });
});
