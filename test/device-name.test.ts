/**
 * Device names and last-seen times in `lib.members()`: every member shows every member's name
 * (synced in the member rows, sent by a joiner in its `join`), a renamed device's new name
 * reaches the others after a restart, and when a partner was last heard is kept across
 * restarts (device-local). The in-memory network, nodes with their own SQLite files.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { createSyncNode, type Library, type MemberInfo, ValidationError } from '../src/index.js';
import { engineOf } from '../src/library/library.js';
import { makeTempDir, removeTempDirs } from './helpers/child-process.js';
import { clusterModels, shareLibrary, startNode, steadySync, stopAllNodes, stopNode, useMemoryTransport, waitFor } from './helpers/cluster.js';
import { RawPeer, stopAllRawPeers } from './helpers/raw-peer.js';
import { joinAsRawMember, pushMemberRow, stopAllMemberSessions } from './helpers/raw-member.js';

useMemoryTransport();

afterEach(async () => {
  stopAllMemberSessions();
  await stopAllRawPeers();
  await stopAllNodes();
  await removeTempDirs();
});

async function namesOn(lib: Library): Promise<Record<string, string | null>> {
  return Object.fromEntries((await lib.members()).map((m) => [m.device, m.name]));
}

async function memberOn(lib: Library, device: string): Promise<MemberInfo | undefined> {
  return (await lib.members()).find((m) => m.device === device);
}

describe('device names', () => {
  it('every member shows every member with its name; its own entry is marked', async () => {
    const a = await startNode(undefined, { deviceName: 'alpha' });
    const b = await startNode(undefined, { deviceName: 'beta' });
    const c = await startNode(undefined, { deviceName: 'gamma laptop' });
    const libs = await shareLibrary(a, [b, c]);
    const expected = { [a.deviceId]: 'alpha', [b.deviceId]: 'beta', [c.deviceId]: 'gamma laptop' };
    for (const lib of libs) {
      await waitFor(async () => isDeepStrictEqual(await namesOn(lib), expected), `names on ${lib.deviceId}`);
    }
    expect(b.deviceName).toBe('beta');
    const own = await memberOn(libs[1]!, b.deviceId);
    expect(own).toMatchObject({ device: b.deviceId, peer: b.peerId, name: 'beta', self: true, lastSeenAt: null });
    expect((await libs[1]!.members()).filter((m) => m.self)).toHaveLength(1);
  });

  it('defaults to the host name', async () => {
    const a = await startNode();
    const b = await startNode(undefined, { deviceName: 'beta' });
    const [libA, libB] = (await shareLibrary(a, [b])) as [Library, Library];
    expect(a.deviceName).toBe(hostname());
    await waitFor(async () => (await memberOn(libB, a.deviceId))?.name === hostname(), 'B to show A under its host name');
    expect((await memberOn(libA, a.deviceId))?.name).toBe(hostname());
  });

  it('a device renamed between runs shows its new name to the others', async () => {
    const a = await startNode(undefined, { deviceName: 'alpha' });
    const bDir = await makeTempDir('lsync-node-');
    const b = await startNode(bDir, { deviceName: 'beta' });
    const [libA, libB] = (await shareLibrary(a, [b])) as [Library, Library];
    // B refreshes its own member row once it holds it (it arrives with the backfill).
    await libB.synced();
    expect((await memberOn(libB, b.deviceId))?.name).toBe('beta');
    await waitFor(async () => (await memberOn(libA, b.deviceId))?.name === 'beta', 'A to show B as beta');

    await stopNode(b);
    const b2 = await startNode(bDir, { deviceName: 'beta renamed' });
    await waitFor(async () => (await memberOn(libA, b.deviceId))?.name === 'beta renamed', 'A to show the new name');
    expect((await memberOn(b2.library(libA.id), b.deviceId))?.name).toBe('beta renamed');
  });

  it('a partner last seen is shown after a session and kept across a restart', async () => {
    const aDir = await makeTempDir('lsync-node-');
    const a = await startNode(aDir, { deviceName: 'alpha' });
    const b = await startNode(undefined, { deviceName: 'beta' });
    const before = Date.now();
    const [libA] = (await shareLibrary(a, [b])) as [Library, Library];
    await waitFor(async () => (await memberOn(libA, b.deviceId))?.lastSeenAt != null, 'A to have heard B');
    await libA.upsert('note', { title: 'hello', body: null });

    await stopNode(b);
    await waitFor(async () => (await libA.status()).partners.every((p) => p.state === 'offline'), 'A to see B gone');
    const seen = (await memberOn(libA, b.deviceId))!.lastSeenAt!;
    expect(seen).toBeGreaterThanOrEqual(before);
    expect(seen).toBeLessThanOrEqual(Date.now());
    // The partner status shows the same time (one source), with no session open.
    expect((await libA.status()).partners.map((p) => p.lastSeenAt)).toEqual([seen]);

    await stopNode(a);
    const a2 = await startNode(aDir, { deviceName: 'alpha' });
    const reopened = a2.library(libA.id);
    expect(await memberOn(reopened, b.deviceId)).toMatchObject({ name: 'beta', lastSeenAt: seen, self: false });
    expect((await memberOn(reopened, a.deviceId))?.lastSeenAt).toBeNull();
    expect((await reopened.status()).partners).toMatchObject([{ device: b.deviceId, state: 'offline', lastSeenAt: seen }]);
  });

  it('a live partner last-seen time is written while the session runs, not only when it ends', async () => {
    const aDir = await makeTempDir('lsync-node-');
    const a = await startNode(aDir, { deviceName: 'alpha', sync: steadySync });
    const b = await startNode(undefined, { deviceName: 'beta', sync: steadySync });
    const [libA] = (await shareLibrary(a, [b])) as [Library, Library];
    await waitFor(async () => (await libA.status()).partners.some((p) => p.state === 'live'), 'a live session');
    // Another reader of A's file (WAL): what is stored, while A runs and the session stays open.
    const stored = () => {
      const db = new Database(join(aDir, 'libraries', `${libA.id}.sqlite`), { readonly: true });
      try {
        return db.prepare('SELECT seen_at FROM sync_last_seen WHERE device = ?').get(b.deviceId) as { seen_at: number } | undefined;
      } finally {
        db.close();
      }
    };
    await waitFor(() => stored() !== undefined, 'the last-seen time to be written', 30_000);
    expect((await libA.status()).partners.map((p) => p.state)).toEqual(['live']);
    expect(stored()!.seen_at).toBeLessThanOrEqual((await memberOn(libA, b.deviceId))!.lastSeenAt!);
  });

  it('a joiner that sends no name still joins, with no name', async () => {
    const a = await startNode(undefined, { deviceName: 'alpha' });
    const lib = await a.createLibrary({ name: 'home' });
    const raw = await RawPeer.start();
    const device = randomUUID();
    const stream = await raw.join(await lib.createInvite({ ttlMs: 60_000 }), { device });
    expect(await stream.message(0, 'the welcome')).toMatchObject({ t: 'welcome', device: a.deviceId });
    expect(await memberOn(lib, device)).toMatchObject({ peer: raw.peerId, name: null, self: false, lastSeenAt: null });
  });

  it('a member row written by a 1.1 device (no name field) is accepted, with no name', async () => {
    const a = await startNode(undefined, { deviceName: 'alpha' });
    const lib = await a.createLibrary({ name: 'home' });
    const member = await joinAsRawMember(a, lib);
    const addrs = ['/ip4/127.0.0.1/tcp/1/p2p/' + member.peer.peerId];
    const session = await pushMemberRow(member, a, lib.id, member.device, { peer: member.peer.peerId, addrs });
    expect(await memberOn(lib, member.device)).toMatchObject({ addrs, name: null });
    expect(session.of('error')).toEqual([]);
  });

  it('a joiner name out of bounds is refused, and the joiner is not admitted', async () => {
    const a = await startNode(undefined, { deviceName: 'alpha' });
    const lib = await a.createLibrary({ name: 'home' });
    for (const name of ['', '   ', 'x'.repeat(129)]) {
      const raw = await RawPeer.start();
      const stream = await raw.join(await lib.createInvite({ ttlMs: 60_000 }), { device: randomUUID(), name });
      expect(await stream.message(0, 'the refusal')).toMatchObject({ t: 'error', code: 'PROTOCOL' });
    }
    expect((await lib.members()).map((m) => m.device)).toEqual([a.deviceId]);
  });

  it('a member row with a name out of bounds is refused', async () => {
    const a = await startNode(undefined, { deviceName: 'alpha' });
    const lib = await a.createLibrary({ name: 'home' });
    await lib.createInvite();
    const member = { device: randomUUID(), peer: a.peerId, addrs: [] };
    for (const name of ['', 'x'.repeat(129), 7]) {
      await expect(engineOf(lib).writeMemberRow({ ...member, name: name as string })).rejects.toBeInstanceOf(ValidationError);
    }
    expect((await lib.members()).map((m) => m.device)).toEqual([a.deviceId]);
    await engineOf(lib).writeMemberRow({ ...member, name: 'x'.repeat(128) });
    expect((await memberOn(lib, member.device))?.name).toBe('x'.repeat(128));
  });

  it('an invalid deviceName is a ValidationError, before anything is stored', async () => {
    const parent = await makeTempDir('lsync-node-');
    for (const deviceName of ['', '  \t', 'x'.repeat(129), 42, null]) {
      const dataDir = join(parent, 'never-created');
      await expect(
        createSyncNode({ dataDir, models: clusterModels, listen: [], deviceName: deviceName as unknown as string }),
      ).rejects.toBeInstanceOf(ValidationError);
      expect(existsSync(dataDir)).toBe(false);
    }
    const longest = await startNode(undefined, { deviceName: 'é'.repeat(128), listen: [] });
    expect(longest.deviceName).toBe('é'.repeat(128));
  });
});
