/**
 * Device-owned pages over rows of one owner that share a version. An owner gives each write its
 * own version, but a restored owner (or a copy of its data directory) writes again at versions
 * it used before the backup, so partners can hold two of its rows, both signed by it, at one
 * version until it gives them new ones (`own-rows.ts`). A page cut at its limits must then not
 * cut inside that version: its coverage (and the receiver's cursor, `provenCoverage`) would
 * move past the rows left out, and no page would serve them again.
 *
 * SQLite files; the owner is a key of no node, its rows applied to a replica as a partner's
 * page would be, then read back with `ownedAfter` (`readOwnedAfter`).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createSyncNode, defineModel, encodeHlc, type SyncNode } from '../src/index.js';
import { engineOf } from '../src/library/library.js';
import type { OwnedRowUpdate } from '../src/library/remote-apply.js';
import type { ReadLimits } from '../src/peer-log/types.js';
import { ownedToTuple, provenCoverage } from '../src/replication/session.js';
import { encodeMessage } from '../src/protocol/codec.js';
import { MAX_FRAME_BYTES, type Message } from '../src/protocol/messages.js';
import { makeTempDir, removeTempDirs } from './helpers/child-process.js';
import { keyedDevice, signedOwnedRows } from './helpers/signed-runs.js';

const models = [
  defineModel({ name: 'disk', ownership: 'device', fields: { label: 'text' } }),
  defineModel({ name: 'folder', ownership: 'device', fields: { path: 'text' } }),
];
const nodes: SyncNode[] = [];

afterEach(async () => {
  await Promise.all(nodes.splice(0).map((n) => n.stop()));
  await removeTempDirs();
});

type Row = Omit<OwnedRowUpdate, 'cert'>;

/** A replica holding `rows` of a fresh owner through their newest version. */
async function replicaHolding(spec: readonly [model: 'disk' | 'folder', id: string, version: number][], valueChars = 0) {
  const node = await createSyncNode({ dataDir: await makeTempDir('lsync-owned-eq-'), models, listen: [] });
  nodes.push(node);
  const lib = await node.createLibrary({ name: 'owned' });
  const owner = await keyedDevice();
  const rows: Row[] = spec.map(([model, id, version], i) => ({
    model,
    id,
    owner: owner.device,
    version,
    hlc: encodeHlc({ wallMs: Date.now(), counter: i, deviceId: owner.device }),
    deleted: false,
    values: { [model === 'disk' ? 'label' : 'path']: id.padEnd(valueChars, '.') },
  }));
  const through = Math.max(...spec.map(([, , v]) => v));
  const result = await engineOf(lib).applyRemoteOwned(signedOwnedRows(owner.key, lib.id, rows), { owner: owner.device, from: 0, to: through });
  expect(result).toMatchObject({ applied: rows.length, advanced: true });
  return { engine: engineOf(lib), owner: owner.device, rows, through };
}

/** Pulls every page as a receiver does (its cursor moves through the newest row served). */
async function pullAll(replica: Awaited<ReturnType<typeof replicaHolding>>, limits: ReadLimits) {
  const served: string[] = [];
  for (let after = 0, pages = 0; after < replica.through; pages++) {
    expect(pages).toBeLessThan(20);
    const page = await replica.engine.ownedAfter(replica.owner, after, limits);
    // The coverage claim: every held row with a version in (from, to] is in the page.
    const covered = replica.rows.filter((r) => r.version > page.from && r.version <= page.to).map((r) => r.id);
    expect(page.rows.map((r) => r.id).sort()).toEqual(covered.sort());
    served.push(...page.rows.map((r) => r.id));
    const next = provenCoverage(after, page.rows);
    if (next <= after) break;
    after = next;
  }
  return served.sort();
}

describe('device-owned pages over rows sharing a version', () => {
  const cases: { what: string; spec: [model: 'disk' | 'folder', id: string, version: number][]; limits: ReadLimits }[] = [
    { what: 'the record limit within one table', spec: [['disk', 'a', 1], ['disk', 'b', 2], ['disk', 'c', 2], ['disk', 'd', 3]], limits: { maxRecords: 2, maxBytes: 1 << 20 } },
    { what: 'the record limit across tables', spec: [['disk', 'a', 1], ['disk', 'b', 2], ['folder', 'c', 2], ['folder', 'd', 3]], limits: { maxRecords: 2, maxBytes: 1 << 20 } },
    // Each row costs about 180 bytes plus its certificate: two fit, three do not.
    { what: 'the byte limit', spec: [['disk', 'a', 1], ['disk', 'b', 2], ['folder', 'c', 2], ['folder', 'd', 3]], limits: { maxRecords: 100, maxBytes: 700 } },
  ];
  for (const { what, spec, limits } of cases) {
    it(`are never cut inside a version at ${what}: every row is served`, async () => {
      const replica = await replicaHolding(spec);
      expect(await pullAll(replica, limits)).toEqual(['a', 'b', 'c', 'd']);
    });
  }

  it('serve a version whole even when it alone exceeds the limits, so pages still make progress', async () => {
    const replica = await replicaHolding([['disk', 'a', 1], ['disk', 'b', 2], ['folder', 'c', 2], ['disk', 'e', 2], ['folder', 'd', 3]]);
    const page = await replica.engine.ownedAfter(replica.owner, 1, { maxRecords: 1, maxBytes: 1 });
    expect(page.rows.map((r) => r.id).sort()).toEqual(['b', 'c', 'e']);
    expect(page).toMatchObject({ from: 1, to: 2, hasMore: true });
    expect(await pullAll(replica, { maxRecords: 1, maxBytes: 1 })).toEqual(['a', 'b', 'c', 'd', 'e']);
  });

  it('cut a version inside only where it alone exceeds what one page may carry (2 MiB), so the page still fits a frame', async () => {
    // Eight rows of about 300 KB at one version: only an owner signing them so makes this.
    const replica = await replicaHolding(Array.from({ length: 8 }, (_, i) => ['disk', `big-${i}`, 1] as const), 300_000);
    const page = await replica.engine.ownedAfter(replica.owner, 0, { maxRecords: 5_000, maxBytes: 1 << 20 });
    expect(page.rows.length).toBeGreaterThan(3);
    expect(page.rows.length).toBeLessThan(8);
    expect(page).toMatchObject({ from: 0, to: 1 });
    const message = { t: 'state-page', library: 'x', req: 1, owner: replica.owner, from: 0, to: 1, author: page.author, rows: page.rows.map(ownedToTuple), hasMore: false } as Message;
    expect(encodeMessage(message).byteLength).toBeLessThanOrEqual(MAX_FRAME_BYTES);
  });
});
