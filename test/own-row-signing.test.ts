/**
 * This device's device-owned rows are signed when first read to be served, not when written
 * (`src/library/sign-own-rows.ts`): a write does not wait for Ed25519, and the rows of many
 * writes share one signature. Real SQLite files, the in-memory network.
 *
 * 1. Rows written one by one are stored without certificates; the first read for a partner
 *    signs all of them under one signature, each verifies against the device's key, and a
 *    replica that applies the page holds the same rows (equal digests).
 * 2. Rows left unsigned by a stop are signed after the restart, before they are served, and
 *    reach a partner that was away.
 */
import { generateKeyPair } from '@libp2p/crypto/keys';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Library } from '../src/index.js';
import { engineOf } from '../src/library/library.js';
import { MAX_SIGNED_ROWS, OwnedRowVerifier } from '../src/models/signed-owned-rows.js';
import { deviceSignatures } from '../src/node/native-signatures.js';
import { unpack } from '../src/util/msgpack.js';
import { makeTempDir, removeTempDirs } from './helpers/child-process.js';
import { startNode, stopAllNodes, useMemoryTransport, waitFor, waitForConvergence, writtenWhileAway } from './helpers/cluster.js';

useMemoryTransport();

afterEach(async () => {
  await stopAllNodes();
  await removeTempDirs();
});

const EVERYTHING = { maxRecords: 1_000, maxBytes: 1 << 24 };

/** How many of `owner`'s `volume` rows the library file holds without a certificate (read beside the node: WAL). */
function unsignedRows(dataDir: string, library: string, owner: string): number {
  const db = new Database(join(dataDir, 'libraries', `${library}.sqlite`), { readonly: true, fileMustExist: true });
  try {
    return (db.prepare('SELECT count(*) AS n FROM "volume" WHERE _owner = ? AND _cert IS NULL').get(owner) as { n: number }).n;
  } finally {
    db.close();
  }
}

async function writeVolumes(lib: Library, prefix: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) await lib.upsert('volume', { id: `${prefix}-${i}`, path: `/${prefix}/${i}`, bytes: i });
}

describe("this device's own rows", () => {
  it('are written unsigned and signed together when first served: one signature, each row verified', async () => {
    const dir = await makeTempDir('lsync-own-sign-');
    const a = await startNode(dir);
    const lib = await a.createLibrary({ name: 'own rows' });
    await writeVolumes(lib, 'v', 12);
    expect(unsignedRows(dir, lib.id, a.deviceId)).toBe(12);

    const engine = engineOf(lib);
    const page = await engine.ownedAfter(a.deviceId, 0, EVERYTHING);
    expect(page.rows.map((r) => r.id).sort()).toEqual(Array.from({ length: 12 }, (_, i) => `v-${i}`).sort());
    expect(unsignedRows(dir, lib.id, a.deviceId)).toBe(0);
    // One tree of the twelve rows: one signature.
    const signatures = new Set(page.rows.map((r) => Buffer.from((unpack(r.cert) as [number, number, Uint8Array, Uint8Array])[3]).toString('hex')));
    expect(signatures.size).toBe(1);
    // Each row verifies against the device's key (checked by a stranger), and a tampered one does not.
    expect(page.author).toBe(a.peerId);
    const verifier = new OwnedRowVerifier(deviceSignatures(await generateKeyPair('Ed25519')), lib.id, a.deviceId, a.peerId);
    for (const row of page.rows) expect(() => verifier.verify(row, row.cert)).not.toThrow();
    expect(() => verifier.verify({ ...page.rows[0]!, version: page.rows[0]!.version + 1 }, page.rows[0]!.cert)).toThrow(/not signed|does not fit/);

    // Written again: only the new version is unsigned, and the next read signs it.
    await lib.upsert('volume', { id: 'v-3', path: '/again', bytes: 99 });
    expect(unsignedRows(dir, lib.id, a.deviceId)).toBe(1);
    const next = await engine.ownedAfter(a.deviceId, page.to, EVERYTHING);
    expect(next.rows.map((r) => [r.id, r.values?.path])).toEqual([['v-3', '/again']]);
    expect(unsignedRows(dir, lib.id, a.deviceId)).toBe(0);

    // A replica takes the served pages (certificates checked) and holds the same rows.
    const b = await startNode();
    const replica = await b.createLibrary({ name: 'own rows', id: lib.id });
    const all = await engine.ownedAfter(a.deviceId, 0, EVERYTHING);
    await engineOf(replica).applyRemoteOwned(all, { owner: a.deviceId, from: all.from, to: all.to });
    expect(await replica.list('volume', { limit: 100 })).toEqual(await lib.list('volume', { limit: 100 }));
  });

  it('of a large backlog are signed in trees of MAX_SIGNED_ROWS, all before the first page is served', async () => {
    const dir = await makeTempDir('lsync-own-sign-backlog-');
    const a = await startNode(dir);
    const lib = await a.createLibrary({ name: 'backlog' });
    const count = MAX_SIGNED_ROWS + 76;
    await lib.transaction(async (tx) => {
      for (let i = 0; i < count; i++) await tx.upsert('volume', { id: `b-${i}`, path: `/b/${i}`, bytes: i });
    });
    expect(unsignedRows(dir, lib.id, a.deviceId)).toBe(count);
    const page = await engineOf(lib).ownedAfter(a.deviceId, 0, { maxRecords: 5_000, maxBytes: 1 << 26 });
    expect(page.rows).toHaveLength(count);
    expect(unsignedRows(dir, lib.id, a.deviceId)).toBe(0);
    const trees = new Map<string, number>();
    for (const row of page.rows) {
      const [size, , , sig] = unpack(row.cert) as [number, number, Uint8Array, Uint8Array];
      trees.set(Buffer.from(sig).toString('hex'), size);
    }
    expect([...trees.values()].sort((x, y) => x - y)).toEqual([76, MAX_SIGNED_ROWS]);
  });

  it('left unsigned by a stop are signed after the restart and reach a partner that was away', async () => {
    const away = await writtenWhileAway((libA) => writeVolumes(libA, 'away', 5));
    expect(unsignedRows(away.dirA, away.id, away.deviceA)).toBe(5);

    const [libA, libB] = await away.restart();
    await waitFor(async () => (await libB.list('volume', { limit: 100 })).filter((v) => String(v.id).startsWith('away-')).length === 5, "B to hold A's rows");
    await waitForConvergence([libA, libB]);
    expect(unsignedRows(away.dirA, away.id, away.deviceA)).toBe(0);
    expect((await libB.status()).protocolErrors).toBe(0);
  });
});
