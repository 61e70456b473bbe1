/**
 * Input validation, ownership, transaction atomicity, remote batch atomicity, duplicate, gap and
 * overlap handling of applyRemoteChunks, and the conflict-rule semantics of deletes, field-level
 * LWW and union (src/models/merge.ts). Every refused operation must leave digest, version vector
 * and log size exactly as they were.
 *
 * Two devices in one library: the second opens its replica with `createLibrary({ name, id })`;
 * `union` record ids are derived from the library id, so union convergence needs the shared id.
 * A device whose runs others take writes its own member row first (`introduce`); bad input is
 * signed with the author's own key (`signedTuples`), so what refuses it is the check under test,
 * not the signature check.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chunksOf } from '../src/replication/session.js';
import { afterEach, describe, expect, test } from 'vitest';
import type { PrivateKey } from '@libp2p/interface';
import {
  type ChangeEvent,
  ClockDriftError,
  DEFAULT_MAX_CLOCK_DRIFT_MS,
  defineModel,
  encodeHlc,
  type Library,
  NotFoundError,
  OwnershipError,
  ProtocolError,
  type SyncNode,
  ValidationError,
} from '../src/index.js';
import type { LogEntry } from '../src/peer-log/types.js';
import { type Chunk, encodeChunks, type RunBody } from '../src/peer-log/chunk.js';
import { deviceSignatures } from '../src/node/native-signatures.js';
import { createSyncNodeSigningWith } from '../src/node/sync-node.js';
import { runId, signRun } from '../src/peer-log/signed-runs.js';
import { pack } from '../src/util/msgpack.js';
import { engineOf } from '../src/library/library.js';
import { introduce, runsOf } from './helpers/log-copy.js';
import { keyedDevice, signedOwnedRows, signedTuples } from './helpers/signed-runs.js';

const item = defineModel({
  name: 'item',
  ownership: 'shared',
  conflict: 'lww',
  fields: {
    title: 'text',
    count: 'integer',
    ratio: 'real',
    flag: 'boolean',
    data: 'json',
    bin: 'blob',
    note: { type: 'text', nullable: true },
  },
});
const doc = defineModel({
  name: 'doc',
  ownership: 'shared',
  conflict: 'lww-field',
  fields: {
    title: 'text',
    body: { type: 'text', nullable: true },
    stars: { type: 'integer', nullable: true },
  },
});
const tag = defineModel({
  name: 'tag',
  ownership: 'shared',
  conflict: 'union',
  naturalKey: ['name'],
  fields: { name: 'text', color: { type: 'text', nullable: true } },
});
const volume = defineModel({
  name: 'volume',
  ownership: 'device',
  fields: { label: 'text', size: 'integer' },
});
const MODELS = [item, doc, tag, volume];

const T = 1_750_000_000_000;
const BIG = { maxRecords: 100_000, maxBytes: 1 << 30 };

class ManualClock {
  constructor(public ms: number) {}
  readonly read = (): number => this.ms;
}

const dirs: string[] = [];
const nodes: SyncNode[] = [];

afterEach(async () => {
  for (const node of nodes.splice(0)) await node.stop();
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lsync-validation-'));
  dirs.push(dir);
  return dir;
}

interface Device {
  node: SyncNode;
  lib: Library;
  wall: ManualClock;
  events: ChangeEvent[];
  /** The node's libp2p key, which signs its runs. */
  key: PrivateKey;
}

async function startDevice(wallMs: number, libraryId: string | undefined, introduced: boolean): Promise<Device> {
  const wall = new ManualClock(wallMs);
  let key: PrivateKey | undefined;
  const node = await createSyncNodeSigningWith({ dataDir: tempDir(), models: MODELS, listen: [], wallClock: wall.read }, (k) => {
    key = k;
    return deviceSignatures(k);
  });
  nodes.push(node);
  const lib = await node.createLibrary({ name: 'main', ...(libraryId === undefined ? {} : { id: libraryId }) });
  // Its member row, before any write: the others check its runs by it.
  if (introduced) await introduce(lib);
  const events: ChangeEvent[] = [];
  lib.on('change', (e) => events.push(e));
  return { node, lib, wall, events, key: key! };
}

/** A device with a new library; `introduced`: it wrote its member row first, so others take its runs. */
async function newDevice(wallMs = T, introduced = false): Promise<Device> {
  return startDevice(wallMs, undefined, introduced);
}

/** A second device with its own replica of library `libraryId`, introduced (its member row written first). */
async function joinDevice(libraryId: string, wallMs = T): Promise<Device> {
  return startDevice(wallMs, libraryId, true);
}

/** Per origin, the id of the last of `runs` (stored runs of `library`, in seq order): the `prev` of the run after it. */
function headsOf(device: Device, runs: readonly Chunk[]): Map<string, Uint8Array> {
  const signatures = deviceSignatures(device.key);
  const heads = new Map<string, Uint8Array>();
  for (const run of runs) heads.set(run.origin, runId(signatures, device.lib.id, run, run.prev));
  return heads;
}

/** `entries` (valid or not) as runs signed by `device`, following its stored runs `after`. */
function signedAs(device: Device, entries: readonly LogEntry[], after: readonly Chunk[]): Chunk[] {
  return chunksOf(signedTuples(device.key, device.lib.id, entries, headsOf(device, after)));
}

/** One run body signed by `device`, following its stored runs `after`. */
function signedRun(device: Device, run: RunBody, after: readonly Chunk[]): Chunk {
  const prev = headsOf(device, after).get(run.origin);
  if (!prev) throw new Error(`no run of ${run.origin} to follow`);
  return signRun(deviceSignatures(device.key), device.lib.id, run, prev).chunk;
}

/** A run with its bytes as plain `Uint8Array`s (stored ones come back as Buffers), to compare runs by content. */
function plain(run: Chunk): Chunk {
  const { origin, firstSeq, lastSeq, author } = run;
  return { origin, firstSeq, lastSeq, entries: new Uint8Array(run.entries), prev: new Uint8Array(run.prev), sig: new Uint8Array(run.sig), author };
}

const NOTHING_ELSE = { duplicates: 0, gaps: [], refused: 0, forks: [], withheld: 0, forkedRuns: [] };

const validItem = () => ({
  title: 'hello',
  count: 3,
  ratio: 0.25,
  flag: true,
  data: { b: [1, 'x', null], a: { z: true } },
  bin: new Uint8Array([0, 1, 255]),
});

async function snapshot(lib: Library) {
  return { digest: await lib.digest(), vector: lib.versionVector(), logSize: await engineOf(lib).logSize() };
}

/** Runs a failing operation and checks that it changed nothing. */
async function expectRefused(
  device: Device,
  run: () => Promise<unknown>,
  errorClass: new (...args: never[]) => Error,
  options: { clock?: boolean } = {},
): Promise<Error> {
  const before = await snapshot(device.lib);
  const clockBefore = engineOf(device.lib).clockHighWater();
  const eventsBefore = device.events.length;
  let thrown: unknown;
  try {
    await run();
  } catch (err) {
    thrown = err;
  }
  expect(thrown, 'operation should have been refused').toBeInstanceOf(errorClass);
  expect(await snapshot(device.lib)).toEqual(before);
  expect(device.events.length).toBe(eventsBefore);
  if (options.clock) expect(engineOf(device.lib).clockHighWater()).toBe(clockBefore);
  return thrown as Error;
}

async function allEntries(lib: Library): Promise<LogEntry[]> {
  const page = await engineOf(lib).entriesAfter({}, BIG);
  expect(page.hasMore).toBe(false);
  return page.entries;
}

/** Sends `to` everything `from` has that `to` lacks (its signed runs). */
async function sync(from: Device, to: Device): Promise<void> {
  const page = await engineOf(from.lib).chunksAfter(to.lib.versionVector(), BIG);
  expect(page.hasMore).toBe(false);
  const result = await engineOf(to.lib).applyRemoteChunks(page.chunks);
  expect(result.gaps).toEqual([]);
  expect(result.forks).toEqual([]);
}

/** A device with some state in every model, so digests are not trivially equal. */
async function seeded(introduced = false): Promise<Device & { itemId: string; docId: string; tagId: string; volumeId: string }> {
  const d = await newDevice(T, introduced);
  const i = await d.lib.upsert('item', validItem());
  const dc = await d.lib.upsert('doc', { title: 'doc', body: 'text', stars: 2 });
  const tg = await d.lib.upsert('tag', { name: 'red', color: 'ff0000' });
  const v = await d.lib.upsert('volume', { label: 'disk', size: 100 });
  return { ...d, itemId: i.id, docId: dc.id, tagId: tg.id, volumeId: v.id };
}

// ---------------------------------------------------------------------------------------------

describe('local write validation', () => {
  test('a valid row roundtrips every field type exactly; omitted nullable fields are null', async () => {
    const d = await newDevice();
    const row = await d.lib.upsert('item', validItem());
    const expected = { id: row.id, ...validItem(), note: null };
    expect(row).toEqual(expected);
    const got = await d.lib.get('item', row.id);
    expect(got).toEqual(expected);
    expect(got!.bin).toBeInstanceOf(Uint8Array);
    expect(got!.flag).toBe(true);
  });

  const wrongTypes: Array<[string, unknown]> = [
    ['title', 5],
    ['title', true],
    ['title', new Uint8Array([1])],
    ['count', 1.5],
    ['count', '1'],
    ['count', 2 ** 53],
    ['count', true],
    ['count', 10n],
    ['ratio', '0.5'],
    ['ratio', Number.NaN],
    ['ratio', Number.POSITIVE_INFINITY],
    ['flag', 1],
    ['flag', 'true'],
    ['data', new Date(0)],
    ['data', { a: Number.NaN }],
    ['data', [1, Number.POSITIVE_INFINITY]],
    ['data', new Map([['a', 1]])],
    ['data', () => 1],
    ['data', 1n],
    ['bin', 'AAE='],
    ['bin', [0, 1]],
    ['bin', new ArrayBuffer(2)],
    ['note', 7],
    // Lone surrogates (half of a character): msgpack and SQLite would store U+FFFD instead.
    ['title', 'emoji cut \uD83D'],
    ['title', '\uDE00 low half first'],
    ['note', `${'x'.repeat(100)}\uD83D`],
  ];

  test.each(wrongTypes)('upsert with a wrong type for %s (%s) is a ValidationError and writes nothing', async (field, value) => {
    const d = await seeded();
    await expectRefused(d, () => d.lib.upsert('item', { ...validItem(), [field]: value }), ValidationError);
    // the same through update of an existing row
    await expectRefused(d, () => d.lib.update('item', d.itemId, { [field]: value }), ValidationError);
  });

  test('text with a lone surrogate, in a shared or a device-owned row or an id, is a ValidationError naming it', async () => {
    const d = await seeded();
    await expectRefused(d, () => d.lib.upsert('volume', { label: 'disk \uD83D', size: 1 }), ValidationError);
    await expect(d.lib.upsert('item', { ...validItem(), title: 'cut \uD83D' })).rejects.toThrow(/lone surrogate/);
    await expectRefused(d, () => d.lib.upsert('item', { ...validItem(), id: 'id-\uD83D' }), ValidationError);
    await expectRefused(d, () => d.lib.upsert('volume', { id: 'vol-\uDE00', label: 'disk', size: 1 }), ValidationError);
    // A whole character (a surrogate pair) is text like any.
    expect(await d.lib.upsert('item', { ...validItem(), title: 'whole \uD83D\uDE00' })).toMatchObject({ title: 'whole \u{1F600}' });
  });

  test('unknown field, missing required field and null for a non-nullable field are ValidationErrors', async () => {
    const d = await seeded();
    await expectRefused(d, () => d.lib.upsert('item', { ...validItem(), colour: 'red' }), ValidationError);
    await expectRefused(d, () => d.lib.update('item', d.itemId, { colour: 'red' }), ValidationError);
    await expectRefused(d, () => d.lib.update('doc', d.docId, { title: 'ok', colour: 'red' }), ValidationError);
    for (const field of ['title', 'count', 'ratio', 'flag', 'data', 'bin']) {
      const row: Record<string, unknown> = validItem();
      delete row[field];
      await expectRefused(d, () => d.lib.upsert('item', row), ValidationError);
      await expectRefused(d, () => d.lib.upsert('item', { ...validItem(), [field]: null }), ValidationError);
      await expectRefused(d, () => d.lib.upsert('item', { ...validItem(), [field]: undefined }), ValidationError);
      await expectRefused(d, () => d.lib.update('item', d.itemId, { [field]: null }), ValidationError);
    }
    await expectRefused(d, () => d.lib.upsert('doc', { body: 'no title' }), ValidationError);
    await expectRefused(d, () => d.lib.update('doc', d.docId, { title: null }), ValidationError);
    await expectRefused(d, () => d.lib.upsert('volume', { label: 'no size' }), ValidationError);
    await expectRefused(d, () => d.lib.update('volume', d.volumeId, { size: null }), ValidationError);
  });

  test('rows that are not objects and invalid ids are ValidationErrors', async () => {
    const d = await seeded();
    for (const row of [null, [], 'row', 42]) {
      await expectRefused(d, () => d.lib.upsert('item', row as never), ValidationError);
    }
    for (const id of ['', 'x'.repeat(257), 42, null]) {
      await expectRefused(d, () => d.lib.upsert('item', { ...validItem(), id }), ValidationError);
      await expectRefused(d, () => d.lib.update('doc', id as string, { title: 'x' }), ValidationError);
      await expectRefused(d, () => d.lib.delete('doc', id as string), ValidationError);
    }
  });

  test('an empty update is a ValidationError for every kind of model', async () => {
    const d = await seeded();
    await expectRefused(d, () => d.lib.update('item', d.itemId, {}), ValidationError);
    await expectRefused(d, () => d.lib.update('doc', d.docId, {}), ValidationError);
    await expectRefused(d, () => d.lib.update('tag', d.tagId, {}), ValidationError);
    await expectRefused(d, () => d.lib.update('volume', d.volumeId, {}), ValidationError);
  });

  test('an unknown model is a NotFoundError for every operation', async () => {
    const d = await seeded();
    await expectRefused(d, () => d.lib.upsert('nope', { title: 'x' }), NotFoundError);
    await expectRefused(d, () => d.lib.update('nope', d.itemId, { title: 'x' }), NotFoundError);
    await expectRefused(d, () => d.lib.delete('nope', d.itemId), NotFoundError);
    await expectRefused(d, () => d.lib.get('nope', d.itemId), NotFoundError);
    await expectRefused(d, () => d.lib.list('nope'), NotFoundError);
  });

  test('update or delete of a record that does not exist (or was deleted) is a NotFoundError', async () => {
    const d = await seeded();
    const patches: Record<string, Record<string, unknown>> = {
      item: { title: 'x' },
      doc: { title: 'x' },
      tag: { color: 'x' },
      volume: { label: 'x' },
    };
    for (const [model, patch] of Object.entries(patches)) {
      await expectRefused(d, () => d.lib.update(model, 'missing', patch), NotFoundError);
      await expectRefused(d, () => d.lib.delete(model, 'missing'), NotFoundError);
    }
    await d.lib.delete('doc', d.docId);
    await expectRefused(d, () => d.lib.update('doc', d.docId, { title: 'x' }), NotFoundError);
    await expectRefused(d, () => d.lib.delete('doc', d.docId), NotFoundError);
  });

  test('union: the natural key cannot change, and an explicit id must match the derived one', async () => {
    const d = await seeded();
    await expectRefused(d, () => d.lib.update('tag', d.tagId, { name: 'blue' }), ValidationError);
    await expectRefused(d, () => d.lib.upsert('tag', { id: 'my-own-id', name: 'blue', color: null }), ValidationError);
    await expectRefused(d, () => d.lib.upsert('tag', { id: d.tagId, name: 'blue', color: null }), ValidationError);
    // Naming the key with its current value is allowed and changes only the other fields.
    expect(await d.lib.update('tag', d.tagId, { name: 'red', color: '00ff00' })).toEqual({
      id: d.tagId,
      name: 'red',
      color: '00ff00',
    });
    expect((await d.lib.upsert('tag', { id: d.tagId, name: 'red', color: null })).id).toBe(d.tagId);
  });

  test('json values are stored exactly, including an own "__proto__" key', async () => {
    // JSON.parse creates "__proto__" as an ordinary own key; the canonical form must keep it.
    const d = await newDevice();
    const text = '{"__proto__":{"x":1},"y":2}';
    const data = JSON.parse(text) as Record<string, unknown>;
    expect(Object.keys(data)).toEqual(['__proto__', 'y']);
    const row = await d.lib.upsert('item', { ...validItem(), data });
    const got = await d.lib.get('item', row.id);
    expect(JSON.stringify(got!.data)).toBe(text);
  });
});

describe('ownership of device-owned rows', () => {
  async function withForeignRow() {
    const d = await seeded();
    const other = await keyedDevice();
    const foreign = {
      model: 'volume',
      id: 'their-volume',
      owner: other.device,
      version: 1,
      hlc: encodeHlc({ wallMs: Date.now(), counter: 0, deviceId: other.device }),
      deleted: false,
      values: { label: 'theirs', size: 7 },
    };
    d.wall.ms = Date.now(); // keep local wall time near the foreign row's clock
    const signed = (...rows: (typeof foreign)[]) => signedOwnedRows(other.key, d.lib.id, rows);
    expect(await engineOf(d.lib).applyRemoteOwned(signed(foreign))).toEqual({ applied: 1, stale: 0, advanced: false, withheld: 0 });
    expect(await d.lib.get('volume', 'their-volume')).toEqual({ id: 'their-volume', label: 'theirs', size: 7 });
    return { d, foreign, other, signed };
  }

  test('upsert with the id, update and delete of a row owned by another device are OwnershipErrors', async () => {
    const { d } = await withForeignRow();
    await expectRefused(d, () => d.lib.upsert('volume', { id: 'their-volume', label: 'mine', size: 1 }), OwnershipError);
    await expectRefused(d, () => d.lib.update('volume', 'their-volume', { label: 'mine' }), OwnershipError);
    await expectRefused(d, () => d.lib.delete('volume', 'their-volume'), OwnershipError);
    await expectRefused(
      d,
      () =>
        d.lib.transaction(async (tx) => {
          await tx.upsert('item', validItem()); // would be fine on its own
          await tx.update('volume', 'their-volume', { size: 8 });
        }),
      OwnershipError,
    );
    expect(await d.lib.get('volume', 'their-volume')).toEqual({ id: 'their-volume', label: 'theirs', size: 7 });
    // The device's own rows stay writable.
    expect(await d.lib.update('volume', d.volumeId, { size: 101 })).toEqual({ id: d.volumeId, label: 'disk', size: 101 });
  });

  test('a replicated row that claims an id owned by someone else is refused as a whole batch', async () => {
    const { d, foreign, other, signed } = await withForeignRow();
    const hijack = {
      ...foreign,
      id: d.volumeId, // owned by this device
      hlc: encodeHlc({ wallMs: Date.now(), counter: 1, deviceId: other.device }),
    };
    const newer = { ...foreign, version: 2, values: { label: 'theirs v2', size: 8 } };
    await expectRefused(d, () => engineOf(d.lib).applyRemoteOwned(signed(newer, hijack)), OwnershipError);
    expect(await d.lib.get('volume', 'their-volume')).toEqual({ id: 'their-volume', label: 'theirs', size: 7 });
    expect(await d.lib.get('volume', d.volumeId)).toEqual({ id: d.volumeId, label: 'disk', size: 100 });
    // An older version of the foreign row is stale.
    expect(await engineOf(d.lib).applyRemoteOwned(signed(newer))).toEqual({ applied: 1, stale: 0, advanced: false, withheld: 0 });
    expect(await engineOf(d.lib).applyRemoteOwned(signed(foreign))).toEqual({ applied: 0, stale: 1, advanced: false, withheld: 0 });
    expect(await d.lib.get('volume', 'their-volume')).toEqual({ id: 'their-volume', label: 'theirs v2', size: 8 });
  });
});

describe('transactions', () => {
  test('a throw inside a transaction leaves nothing written; later writes get dense sequence numbers', async () => {
    const d = await newDevice();
    const before = await snapshot(d.lib);
    await expectRefused(
      d,
      () =>
        d.lib.transaction(async (tx) => {
          const a = await tx.upsert('item', validItem());
          await tx.upsert('doc', { title: 'in tx' });
          await tx.update('item', a.id, { title: 'changed' });
          await tx.upsert('tag', { name: 'tx-tag', color: null });
          await tx.upsert('volume', { label: 'tx-volume', size: 1 });
          await tx.delete('item', a.id);
          expect(await tx.get('doc', 'nothing')).toBeUndefined();
          throw new RangeError('boom');
        }),
      RangeError,
    );
    expect(await snapshot(d.lib)).toEqual(before);
    expect(d.lib.versionVector()).toEqual({});
    for (const model of ['item', 'doc', 'tag', 'volume']) expect(await d.lib.list(model)).toEqual([]);

    // A transaction whose third write is invalid also leaves nothing behind.
    await expectRefused(
      d,
      () =>
        d.lib.transaction(async (tx) => {
          await tx.upsert('item', validItem());
          await tx.upsert('doc', { title: 'ok' });
          await tx.upsert('doc', { title: 5 });
        }),
      ValidationError,
    );
    expect(d.lib.versionVector()).toEqual({});

    const a = await d.lib.upsert('item', validItem());
    await d.lib.transaction(async (tx) => {
      await tx.update('item', a.id, { count: 4 });
      await tx.upsert('doc', { title: 'after' });
    });
    const entries = await allEntries(d.lib);
    expect(entries.map((e) => [e.origin, e.seq])).toEqual([
      [d.node.deviceId, 1],
      [d.node.deviceId, 2],
      [d.node.deviceId, 3],
    ]);
    expect(d.lib.versionVector()).toEqual({ [d.node.deviceId]: 3 });
    expect(await engineOf(d.lib).logSize()).toBe(3);
    expect(d.events.map((e) => [e.model, e.op, e.origin])).toEqual([
      ['item', 'upsert', 'local'],
      ['item', 'upsert', 'local'], // row-LWW logs an update as a full upsert
      ['doc', 'upsert', 'local'],
    ]);
  });

  test('reads inside a transaction see its own pending writes', async () => {
    const d = await newDevice();
    await d.lib.transaction(async (tx) => {
      const row = await tx.upsert('doc', { title: 'draft' });
      await tx.update('doc', row.id, { stars: 5 });
      expect(await tx.get('doc', row.id)).toEqual({ id: row.id, title: 'draft', body: null, stars: 5 });
      await tx.delete('doc', row.id);
      expect(await tx.get('doc', row.id)).toBeUndefined();
    });
    expect(d.lib.versionVector()).toEqual({ [d.node.deviceId]: 3 });
  });
});

describe('applyRemoteChunks', () => {
  /**
   * A and B share a library; A holds B's member row (B's first run), and B has written one change
   * of every kind since (`entries`, one run each in B's log: `runs`).
   */
  async function pair() {
    const a = await seeded();
    const b = await joinDevice(a.lib.id);
    const intro = await runsOf(b.lib);
    expect(intro).toHaveLength(1);
    expect(await engineOf(a.lib).applyRemoteChunks(intro)).toEqual({ applied: 1, ...NOTHING_ELSE });
    const i = await b.lib.upsert('item', validItem());
    const dc = await b.lib.upsert('doc', { title: 'b doc' });
    await b.lib.update('doc', dc.id, { stars: 1 });
    const tg = await b.lib.upsert('tag', { name: 'green', color: null });
    await b.lib.delete('item', i.id);
    const entries = (await engineOf(b.lib).entriesAfter(a.lib.versionVector(), BIG)).entries;
    expect(entries.map((e) => e.op)).toEqual(['upsert', 'upsert', 'update', 'upsert', 'delete']);
    const runs = await runsOf(b.lib, a.lib.versionVector());
    expect(runs).toHaveLength(5);
    return { a, b, intro, entries, runs, tagId: tg.id };
  }

  type Corrupt = (entries: Record<string, unknown>[]) => void;
  const fieldsOf = (e: Record<string, unknown>) => e.fields as Record<string, unknown>;
  // Corruptions of an entry as a run carries it (its origin is the run's, its clock the time part
  // of one the origin issued, its seq the run's next): the clock and origin checks of a run are
  // the next test's. Seq bounds and the tuple's shape are the wire schema's and the framing's
  // (malformed-chunk.test.ts).
  const corruptions: Array<[string, Corrupt, new (...args: never[]) => Error]> = [
    ['wrong stored type', (es) => void (fieldsOf(es[0]!).count = 'x'), ValidationError],
    ['boolean not stored as 0/1', (es) => void (fieldsOf(es[0]!).flag = true), ValidationError],
    ['non-canonical json', (es) => void (fieldsOf(es[0]!).data = '{"b":1,"a":2}'), ValidationError],
    ['unknown field', (es) => void (fieldsOf(es[1]!).colour = 'red'), ValidationError],
    ['upsert lacking a field', (es) => void delete fieldsOf(es[1]!).title, ValidationError],
    ['null for a non-nullable field', (es) => void (fieldsOf(es[2]!).title = null), ValidationError],
    ['partial update on a row-LWW model', (es) => void (es[0]!.op = 'update'), ValidationError],
    ['update naming the natural key', (es) => Object.assign(es[2]!, { model: 'tag', id: es[3]!.id, fields: { name: 'green' } }), ValidationError],
    ['union id not derived from the natural key', (es) => void (es[3]!.id = '11111111-2222-5333-8444-555555555555'), ValidationError],
    ['delete carrying fields', (es) => void (es[4]!.fields = { title: 'x' }), ValidationError],
    ['unknown op', (es) => void (es[4]!.op = 'merge'), ValidationError],
    ['device-owned model', (es) => void (es[4]!.model = 'volume'), ValidationError],
    ['unknown model', (es) => void (es[4]!.model = 'nope'), NotFoundError],
    ['empty id', (es) => void (es[4]!.id = ''), ValidationError],
  ];

  test.each(corruptions)('runs signed by their author with one invalid entry (%s) apply nothing', async (_name, corrupt, errorClass) => {
    const { a, b, intro, entries, runs } = await pair();
    const bad = structuredClone(entries) as unknown as Record<string, unknown>[];
    corrupt(bad);
    await expectRefused(a, () => engineOf(a.lib).applyRemoteChunks(signedAs(b, bad as unknown as LogEntry[], intro)), errorClass, { clock: true });
    // The author's runs as it stored them are then accepted whole.
    expect(await engineOf(a.lib).applyRemoteChunks(runs)).toEqual({ applied: 5, ...NOTHING_ELSE });
  });

  test('a run whose origin is not a uuid, or whose entry clock is not 16 hex digits, applies nothing', async () => {
    const { a, b, intro, entries } = await pair();
    const [run] = encodeChunks(entries);
    expect(run).toMatchObject({ firstSeq: 2, lastSeq: 6 });
    await expectRefused(a, () => engineOf(a.lib).applyRemoteChunks(signedAs(b, entries.map((e) => ({ ...e, origin: 'device-b' })), intro)), ValidationError, {
      clock: true,
    });
    const tuples = entries.map((e) => [e.seq, e.hlc.slice(0, 16), e.model, e.id, e.op, e.fields]);
    const withClock = (index: number, time: string): Chunk => {
      const changed = tuples.map((t, i) => (i === index ? [t[0], time, ...t.slice(2)] : t));
      return signedRun(b, { ...run!, entries: Buffer.concat(changed.map((t) => pack(t))) }, intro);
    };
    const time = tuples[2]![1] as string;
    for (const badTime of ['ZZ' + time.slice(2), time.toUpperCase().replace(/^./, 'A'), time + '0', time.slice(1), '']) {
      const thrown = await expectRefused(a, () => engineOf(a.lib).applyRemoteChunks([withClock(2, badTime)]), ValidationError, { clock: true });
      expect(thrown.message).toContain(`#${entries[2]!.seq}`);
    }
    // The same run with its clocks intact: B signed it, so it is taken (one run for B's five).
    expect(await engineOf(a.lib).applyRemoteChunks([withClock(2, time)])).toEqual({ applied: 5, ...NOTHING_ELSE });
  });

  test('runs are drift-checked as a whole: one entry too far ahead refuses the batch', async () => {
    const { a, b, runs } = await pair();
    b.wall.ms = T + DEFAULT_MAX_CLOCK_DRIFT_MS + 60_000;
    await b.lib.upsert('doc', { id: 'ahead', title: 'from the future' });
    const all = await runsOf(b.lib, a.lib.versionVector());
    expect(all.slice(0, -1)).toEqual(runs);
    await expectRefused(a, () => engineOf(a.lib).applyRemoteChunks(all), ClockDriftError, { clock: true });
    expect(await engineOf(a.lib).applyRemoteChunks(runs)).toEqual({ applied: 5, ...NOTHING_ELSE });
  });

  test('a run not signed by its author is a ProtocolError and applies nothing', async () => {
    const { a, runs } = await pair();
    // Signed by another device's key: C is no member of A's library.
    const c = await joinDevice(a.lib.id);
    const forged = signRun(deviceSignatures(c.key), a.lib.id, runs[0]!, runs[0]!.prev).chunk;
    await expectRefused(a, () => engineOf(a.lib).applyRemoteChunks([forged, ...runs.slice(1)]), ProtocolError, { clock: true });
    const flipped = { ...runs[0]!, sig: runs[0]!.sig.map((byte, i) => (i === 0 ? byte ^ 1 : byte)) };
    await expectRefused(a, () => engineOf(a.lib).applyRemoteChunks([flipped, ...runs.slice(1)]), ProtocolError, { clock: true });
    expect(await engineOf(a.lib).applyRemoteChunks(runs)).toEqual({ applied: 5, ...NOTHING_ELSE });
  });

  test('accepted runs are stored and served onward as signed: same bytes, entries in normalized form', async () => {
    const { a, b, intro, entries, runs } = await pair();
    expect(await engineOf(a.lib).applyRemoteChunks(runs)).toEqual({ applied: 5, ...NOTHING_ELSE });
    const relayed = await runsOf(a.lib, { [a.node.deviceId]: 1_000 });
    expect(relayed.map(plain)).toEqual([...intro, ...runs].map(plain));
    const relayedEntries = (await engineOf(a.lib).entriesAfter({ [a.node.deviceId]: 1_000, [b.node.deviceId]: 1 }, BIG)).entries;
    expect(relayedEntries).toHaveLength(5);
    // LogEntry.fields is `StoredValues | null`; the relayed delete must equal the original.
    expect(relayedEntries[4]!.fields).toBeNull();
    expect(relayedEntries).toEqual(entries);
  });

  test('a batch mixing new rows with rows already held applies each by its rule, with one event and count per change', async () => {
    const a = await seeded(true);
    const b = await joinDevice(a.lib.id);
    await sync(a, b);
    await b.lib.upsert('item', { ...validItem(), id: 'old', title: 'b first' });
    await sync(b, a);
    a.wall.ms = T + 10_000;
    await a.lib.upsert('item', { ...validItem(), id: 'mine', title: 'a, later' });
    b.wall.ms = T + 1_000;
    const sent = b.lib.versionVector()[b.node.deviceId]!;
    await b.lib.upsert('item', { ...validItem(), id: 'mine', title: 'b, earlier' });
    await b.lib.upsert('item', { ...validItem(), id: 'old', title: 'b again' });
    await b.lib.upsert('item', { ...validItem(), id: 'new', title: 'b new' });
    await b.lib.delete('item', a.itemId);
    const runs = await runsOf(b.lib, { ...a.lib.versionVector(), [b.node.deviceId]: sent });
    expect(runs.map((r) => [r.origin, r.lastSeq - r.firstSeq + 1])).toEqual(Array(4).fill([b.node.deviceId, 1]));
    const events = a.events.length;
    const counts = { added: 0, updated: 0, deleted: 0 };
    expect(await engineOf(a.lib).applyRemoteChunks(runs, counts)).toEqual({ applied: 4, ...NOTHING_ELSE });
    expect(counts).toEqual({ added: 1, updated: 1, deleted: 1 });
    expect(a.events.slice(events).map((e) => e.id).sort()).toEqual(['new', 'old', a.itemId].sort());
    expect(await a.lib.get('item', 'mine')).toMatchObject({ title: 'a, later' });
    expect(await a.lib.get('item', 'old')).toMatchObject({ title: 'b again' });
    expect(await a.lib.get('item', 'new')).toMatchObject({ title: 'b new' });
    expect(await a.lib.get('item', a.itemId)).toBeUndefined();
    await sync(a, b);
    for (const id of ['mine', 'old', 'new', a.itemId]) expect(await b.lib.get('item', id)).toEqual(await a.lib.get('item', id));
  });

  test('duplicate runs are skipped, runs after a gap are held back per origin, and a run at another boundary is refused', async () => {
    const a = await seeded();
    const b = await joinDevice(a.lib.id);
    const c = await joinDevice(a.lib.id);
    for (let i = 1; i <= 5; i++) await b.lib.upsert('doc', { id: `b${i}`, title: `b${i}` });
    for (let i = 1; i <= 3; i++) await c.lib.upsert('doc', { id: `c${i}`, title: `c${i}` });
    // Each device's member row first (seq 1), then one run per write.
    const [iB, e1, e2, e3, e4, e5] = await runsOf(b.lib);
    const [iC, c1, c2, c3] = await runsOf(c.lib);
    for (const run of [e1, e2, e3, e4, e5, c1, c2, c3]) expect(run!.lastSeq).toBe(run!.firstSeq);
    const B = b.node.deviceId;
    const C = c.node.deviceId;
    expect(await engineOf(a.lib).applyRemoteChunks([iB!, iC!])).toEqual({ applied: 2, ...NOTHING_ELSE });
    const logBase = await engineOf(a.lib).logSize();

    const start = await snapshot(a.lib);
    expect(await engineOf(a.lib).applyRemoteChunks([e3!, e4!])).toEqual({
      applied: 0,
      duplicates: 0,
      gaps: [{ origin: B, heldSeq: 1, firstReceivedSeq: 4 }],
      refused: 0,
      forks: [],
      withheld: 0,
      forkedRuns: [],
    });
    expect(await snapshot(a.lib)).toEqual(start);
    expect(await a.lib.get('doc', 'b3')).toBeUndefined();

    expect(await engineOf(a.lib).applyRemoteChunks([e2!, e1!])).toEqual({ applied: 2, ...NOTHING_ELSE });
    expect(a.lib.versionVector()[B]).toBe(3);
    // A run B signed over positions 3..4 besides its own runs there: it forks B's log (below).
    const across = signedRun(b, encodeChunks((await engineOf(b.lib).entriesAfter({ [B]: 2 }, BIG)).entries.slice(0, 2))[0]!, [iB!, e1!]);
    expect(across).toMatchObject({ firstSeq: 3, lastSeq: 4 });

    expect(await engineOf(a.lib).applyRemoteChunks([e1!, e2!, e2!, e3!])).toEqual({ applied: 1, ...NOTHING_ELSE, duplicates: 3 });
    expect(await engineOf(a.lib).applyRemoteChunks([e5!, e4!, e4!])).toEqual({ applied: 2, ...NOTHING_ELSE, duplicates: 1 });
    expect(a.lib.versionVector()[B]).toBe(6);
    expect(await engineOf(a.lib).logSize()).toBe(logBase + 5);

    // Everything again: all duplicates, nothing changes.
    const full = await snapshot(a.lib);
    expect(await engineOf(a.lib).applyRemoteChunks([e5!, e1!, e2!, e3!, e4!])).toEqual({ applied: 0, ...NOTHING_ELSE, duplicates: 5 });
    expect(await snapshot(a.lib)).toEqual(full);

    // A gap in one origin does not hold back another origin in the same batch.
    expect(await engineOf(a.lib).applyRemoteChunks([c3!, c2!])).toEqual({
      applied: 0,
      duplicates: 0,
      gaps: [{ origin: C, heldSeq: 1, firstReceivedSeq: 3 }],
      refused: 0,
      forks: [],
      withheld: 0,
      forkedRuns: [],
    });
    await b.lib.upsert('doc', { id: 'b6', title: 'b6' });
    const e6 = (await runsOf(b.lib, { [B]: 6 }))[0]!;
    expect(await engineOf(a.lib).applyRemoteChunks([c3!, e6, c1!])).toEqual({
      applied: 2,
      duplicates: 0,
      gaps: [{ origin: C, heldSeq: 2, firstReceivedSeq: 4 }],
      refused: 0,
      forks: [],
      withheld: 0,
      forkedRuns: [],
    });
    expect(a.lib.versionVector()).toMatchObject({ [B]: 7, [C]: 2 });
    expect(await a.lib.get('doc', 'c3')).toBeUndefined();

    // B's run across its own runs' boundary (3..4, where A holds B's runs 3 and 4..): a fork of
    // B's log. A keeps what it holds in its log, records the fork, applies the other run (here
    // the same changes: the rows stay) and takes no more of B's origin into its log.
    const held = await snapshot(a.lib);
    const forked = await engineOf(a.lib).applyRemoteChunks([across]);
    // Relayed on: the other run, and A's runs over its positions (a partner holding `across` lacks them).
    expect(forked).toMatchObject({ applied: 2, duplicates: 0, forks: [{ origin: B, seq: 3 }] });
    expect(forked.forkedRuns.map(plain)).toEqual([across, e2!, e3!].map(plain));
    expect(await snapshot(a.lib)).toEqual(held);
    expect(await engineOf(a.lib).forks()).toMatchObject([{ origin: B, device: B, seq: 3 }]);
    expect(await engineOf(a.lib).applyRemoteChunks([c3!, c2!, c1!])).toEqual({ applied: 2, ...NOTHING_ELSE, duplicates: 1 });
    expect(a.lib.versionVector()).toMatchObject({ [B]: 7, [C]: 4 });
    expect(await engineOf(a.lib).logSize()).toBe(logBase + 9);
    for (const id of ['b1', 'b6', 'c1', 'c3']) expect(await a.lib.get('doc', id)).toMatchObject({ id, title: id });

    // Runs received from a peer are served onward unchanged (same bounds, bytes, prev, signature).
    const relayed = await runsOf(a.lib, { [a.node.deviceId]: 1_000 });
    const byOrigin = (x: Chunk, y: Chunk) => (x.origin < y.origin ? -1 : x.origin > y.origin ? 1 : x.firstSeq - y.firstSeq);
    expect(relayed.map(plain)).toEqual([iB, e1, e2, e3, e4, e5, e6, iC, c1, c2, c3].map((r) => plain(r!)).sort(byOrigin));
  });
});

describe('conflict rules', () => {
  async function trio() {
    const a = await newDevice(T, true);
    const b = await joinDevice(a.lib.id, T);
    const c = await joinDevice(a.lib.id, T);
    // Each takes the others' member rows (their first runs), as joining members do.
    for (const from of [a, b, c]) for (const to of [a, b, c]) if (from !== to) await sync(from, to);
    await expectConverged(a, b, c);
    return { a, b, c };
  }

  async function expectConverged(...devices: Device[]): Promise<string> {
    const digest = await devices[0]!.lib.digest();
    for (const d of devices.slice(1)) expect(await d.lib.digest()).toBe(digest);
    return digest;
  }

  test('row LWW: an older upsert never resurrects a deleted row; a newer one does', async () => {
    const { a, b, c } = await trio();
    const row = (title: string) => ({ ...validItem(), id: 'x', title });

    await a.lib.upsert('item', row('v1'));
    await sync(a, b);
    a.wall.ms = T + 1_000;
    await a.lib.upsert('item', row('v2')); // older than B's delete below
    b.wall.ms = T + 2_000;
    await b.lib.delete('item', 'x');
    expect(await a.lib.get('item', 'x')).toMatchObject({ title: 'v2' });

    await sync(a, b);
    expect(await b.lib.get('item', 'x')).toBeUndefined();
    await sync(b, a);
    expect(await a.lib.get('item', 'x')).toBeUndefined();
    // A third device that gets the delete first and the older write later agrees.
    const fromB = (await runsOf(b.lib, c.lib.versionVector())).filter((r) => r.origin === b.node.deviceId);
    const fromA = (await runsOf(a.lib, c.lib.versionVector())).filter((r) => r.origin === a.node.deviceId);
    expect(await engineOf(c.lib).applyRemoteChunks(fromB)).toEqual({ applied: 1, ...NOTHING_ELSE }); // the delete, before any write
    expect(await c.lib.get('item', 'x')).toBeUndefined();
    expect(await engineOf(c.lib).applyRemoteChunks(fromA)).toEqual({ applied: 2, ...NOTHING_ELSE }); // both older writes, afterwards
    expect(await c.lib.get('item', 'x')).toBeUndefined();
    expect(await a.lib.list('item')).toEqual([]);
    await expectConverged(a, b, c);

    // A newer upsert brings the row back everywhere.
    a.wall.ms = T + 3_000;
    await a.lib.upsert('item', row('v3'));
    await sync(a, b);
    await sync(a, c);
    for (const d of [a, b, c]) expect(await d.lib.get('item', 'x')).toMatchObject({ id: 'x', title: 'v3', note: null });
    await expectConverged(a, b, c);
  });

  test('row LWW: a newer upsert from a device that never saw the delete wins over it', async () => {
    const { a, b } = await trio();
    await a.lib.upsert('item', { ...validItem(), id: 'y', title: 'first' });
    await sync(a, b);
    b.wall.ms = T + 2_000;
    await b.lib.delete('item', 'y');
    a.wall.ms = T + 5_000;
    await a.lib.upsert('item', { ...validItem(), id: 'y', title: 'rewritten' });
    await sync(a, b);
    await sync(b, a);
    for (const d of [a, b]) expect(await d.lib.get('item', 'y')).toMatchObject({ title: 'rewritten' });
    await expectConverged(a, b);
  });

  test('field LWW: older writes never resurrect a delete; a newer partial update alone does not either; a newer upsert does', async () => {
    const { a, b, c } = await trio();
    await a.lib.upsert('doc', { id: 'd', title: 'a', body: 'b', stars: 1 });
    await sync(a, b);
    a.wall.ms = T + 1_000;
    await a.lib.upsert('doc', { id: 'd', title: 'old full write', body: null, stars: null });
    await a.lib.update('doc', 'd', { body: 'old partial write' });
    const throughPartial = a.lib.versionVector()[a.node.deviceId]!;
    b.wall.ms = T + 2_000;
    await b.lib.delete('doc', 'd');

    await sync(a, b);
    await sync(b, a);
    for (const d of [a, b]) expect(await d.lib.get('doc', 'd')).toBeUndefined();
    await expectConverged(a, b);

    // A partial update newer than the delete, from a device that had not seen it yet.
    const early = (await runsOf(a.lib, c.lib.versionVector())).filter((r) => r.origin === a.node.deviceId && r.lastSeq <= throughPartial);
    expect(await engineOf(c.lib).applyRemoteChunks(early)).toEqual({ applied: 3, ...NOTHING_ELSE });
    expect(await c.lib.get('doc', 'd')).toMatchObject({ body: 'old partial write' });
    c.wall.ms = T + 3_000;
    await c.lib.update('doc', 'd', { stars: 5 });
    await sync(c, a);
    await sync(a, b);
    await sync(a, c);
    for (const d of [a, b, c]) {
      expect(await d.lib.get('doc', 'd')).toBeUndefined();
      expect(await d.lib.list('doc')).toEqual([]);
    }
    await expectConverged(a, b, c);

    // A newer full write brings it back, with the upsert's values (all newer than the update).
    b.wall.ms = T + 4_000;
    await b.lib.upsert('doc', { id: 'd', title: 'back', body: null, stars: null });
    await sync(b, a);
    await sync(b, c);
    for (const d of [a, b, c]) expect(await d.lib.get('doc', 'd')).toEqual({ id: 'd', title: 'back', body: null, stars: null });
    await expectConverged(a, b, c);
  });

  test('field LWW: concurrent edits to different fields both survive; to the same field the later wins', async () => {
    const { a, b } = await trio();
    await a.lib.upsert('doc', { id: 'e', title: 'start', body: 'start', stars: 0 });
    await sync(a, b);
    a.wall.ms = T + 100;
    await a.lib.update('doc', 'e', { title: 'title by A', stars: 1 });
    b.wall.ms = T + 200;
    await b.lib.update('doc', 'e', { body: 'body by B', stars: 2 });
    await sync(a, b);
    await sync(b, a);
    for (const d of [a, b]) expect(await d.lib.get('doc', 'e')).toEqual({ id: 'e', title: 'title by A', body: 'body by B', stars: 2 });
    await expectConverged(a, b);
  });

  test('row LWW, by contrast, keeps only the later of two concurrent edits', async () => {
    const { a, b } = await trio();
    await a.lib.upsert('item', { ...validItem(), id: 'r', title: 'start', count: 0 });
    await sync(a, b);
    a.wall.ms = T + 100;
    await a.lib.update('item', 'r', { title: 'title by A' });
    b.wall.ms = T + 200;
    await b.lib.update('item', 'r', { count: 2 });
    await sync(b, a);
    await sync(a, b);
    for (const d of [a, b]) expect(await d.lib.get('item', 'r')).toMatchObject({ title: 'start', count: 2 });
    await expectConverged(a, b);
  });

  test('union: two devices creating the same natural key converge to one row id', async () => {
    const { a, b, c } = await trio();
    a.wall.ms = T + 100;
    const fromA = await a.lib.upsert('tag', { name: 'urgent', color: 'red' });
    b.wall.ms = T + 200;
    const fromB = await b.lib.upsert('tag', { name: 'urgent', color: 'orange' });
    expect(fromB.id).toBe(fromA.id);
    await sync(a, b);
    await sync(b, a);
    await sync(b, c);
    for (const d of [a, b, c]) expect(await d.lib.list('tag')).toEqual([{ id: fromA.id, name: 'urgent', color: 'orange' }]);
    await expectConverged(a, b, c);
    // The same key in another library is another record.
    const other = await newDevice();
    expect((await other.lib.upsert('tag', { name: 'urgent', color: null })).id).not.toBe(fromA.id);
  });
});
