/**
 * State-based sync of device-owned rows: pages after a version, with the coverage a page
 * vouches for, across several device-owned models; and the record size bound that keeps every
 * change small enough to replicate.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createSyncNode, defineModel, type SyncNode, ValidationError } from '../src/index.js';
import { makeTempDir, removeTempDirs } from './helpers/child-process.js';
import { engineOf } from '../src/library/library.js';

const models = [
  defineModel({ name: 'disk', ownership: 'device', fields: { label: 'text' } }),
  defineModel({ name: 'folder', ownership: 'device', fields: { path: 'text' } }),
  defineModel({ name: 'note', ownership: 'shared', conflict: 'lww', fields: { body: 'text' } }),
];
const nodes: SyncNode[] = [];

async function node(): Promise<SyncNode> {
  const n = await createSyncNode({ dataDir: await makeTempDir('lsync-owned-'), models, listen: [] });
  nodes.push(n);
  return n;
}

afterEach(async () => {
  await Promise.all(nodes.splice(0).map((n) => n.stop()));
  await removeTempDirs();
});

describe('device-owned pages', () => {
  it('small pages over interleaved models cover every version once and rebuild the same state', async () => {
    const owner = await node();
    const lib = await owner.createLibrary({ name: 'owned' });
    // Interleave the two models so a page cut in one table must not skip versions of the other.
    for (let i = 0; i < 40; i++) {
      await lib.upsert(i % 3 === 0 ? 'disk' : 'folder', { id: `r${i % 17}`, ...(i % 3 === 0 ? { label: `l${i}` } : { path: `p${i}` }) });
      if (i % 11 === 5) await lib.delete(i % 3 === 0 ? 'disk' : 'folder', `r${i % 17}`);
    }
    const through = engineOf(lib).ownedVector()[owner.deviceId]!;
    expect(through).toBeGreaterThan(40);

    const replicaNode = await node();
    const replica = await replicaNode.createLibrary({ name: 'owned', id: lib.id });
    let after = 0;
    const seen = new Set<number>();
    for (let pages = 0; after < through; pages++) {
      expect(pages).toBeLessThan(100);
      const page = await engineOf(lib).ownedAfter(owner.deviceId, after, { maxRecords: 3, maxBytes: 1_000_000 });
      expect(page.from).toBe(after);
      expect(page.to).toBeGreaterThan(after);
      for (const row of page.rows) {
        expect(row.version).toBeGreaterThan(page.from);
        expect(row.version).toBeLessThanOrEqual(page.to);
        expect(seen.has(row.version)).toBe(false);
        seen.add(row.version);
      }
      const result = await engineOf(replica).applyRemoteOwned(page, { owner: owner.deviceId, from: page.from, to: page.to });
      expect(result.advanced).toBe(true);
      expect(engineOf(replica).ownedVector()[owner.deviceId]).toBe(page.to);
      expect(page.hasMore).toBe(page.to < through);
      after = page.to;
    }
    expect(await replica.digest()).toBe(await lib.digest());
  });

  it('a batch that does not start at the held version applies nothing to the cursor', async () => {
    const owner = await node();
    const lib = await owner.createLibrary({ name: 'owned' });
    for (let i = 0; i < 6; i++) await lib.upsert('disk', { id: `d${i}`, label: `x${i}` });
    const replica = await (await node()).createLibrary({ name: 'owned', id: lib.id });
    const tail = await engineOf(lib).ownedAfter(owner.deviceId, 3, { maxRecords: 100, maxBytes: 1_000_000 });
    const result = await engineOf(replica).applyRemoteOwned(tail, { owner: owner.deviceId, from: tail.from, to: tail.to });
    expect(result.advanced).toBe(false);
    expect(engineOf(replica).ownedVector()[owner.deviceId] ?? 0).toBe(0);
    await expect(
      engineOf(replica).applyRemoteOwned(tail, { owner: owner.deviceId, from: 4, to: 6 }),
    ).rejects.toBeInstanceOf(ValidationError);
  });
});

describe('record size bound', () => {
  it('refuses a record too large to replicate and leaves the library unchanged', async () => {
    const lib = await (await node()).createLibrary({ name: 'big' });
    await lib.upsert('note', { id: 'ok', body: 'x'.repeat(900_000) });
    const before = { digest: await lib.digest(), size: await engineOf(lib).logSize() };
    await expect(lib.upsert('note', { id: 'big', body: 'x'.repeat(1_100_000) })).rejects.toBeInstanceOf(ValidationError);
    await expect(lib.update('note', 'ok', { body: 'y'.repeat(1_100_000) })).rejects.toBeInstanceOf(ValidationError);
    await expect(lib.upsert('disk', { label: 'z'.repeat(1_100_000) })).rejects.toBeInstanceOf(ValidationError);
    expect({ digest: await lib.digest(), size: await engineOf(lib).logSize() }).toEqual(before);
  });
});
