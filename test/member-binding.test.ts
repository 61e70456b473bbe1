/**
 * Issue 13, the re-keyed member row: a member wrote another member's row naming its own PeerId,
 * which cut that member off (every partner then expected the wrong key from it). Now a device id
 * is bound to one PeerId for good:
 * - a device made since 2.0 has an id derived from its PeerId, and a row naming another PeerId
 *   for it is bad input: refused, counted, never stored;
 * - a pre-2.0 (random) id keeps the PeerId it was first held with: a row naming another changes
 *   nothing (its writer's log goes on);
 * - once a device wrote its own row, another member's row for it changes nothing either.
 * Each attack comes from a raw member (a real member of the library speaking the protocol frame
 * by frame); honest sync goes on and the honest replicas' digests stay equal.
 *
 * The in-memory network and SQLite files.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeHlc, type Library, type SyncNode } from '../src/index.js';
import { deviceIdForPeer, isKeyDerivedId } from '../src/membership/device-id.js';
import { MEMBERS_MODEL } from '../src/models/system.js';
import { makeTempDir } from './helpers/child-process.js';
import { RawPeer } from './helpers/raw-peer.js';
import { signedTuples } from './helpers/signed-runs.js';
import { shareLibrary, startNode, useMemoryTransport, waitFor, waitForConvergence } from './helpers/cluster.js';
import {
  expectSessionRefused,
  joinAsRawMember,
  pushMemberRow,
  type RawMember,
  rawMemberSync,
  startVictimCast,
  stopRawMemberTest,
} from './helpers/raw-member.js';

useMemoryTransport();

afterEach(stopRawMemberTest);

/** What every replica's member list says of `device`: its PeerId and addresses. */
async function rowOf(lib: Library, device: string) {
  const member = (await lib.members()).find((m) => m.device === device);
  return member && { peer: member.peer, addrs: member.addrs };
}

/** A victim V on a data directory made before 2.0 (a random device id), an honest N, a raw member. */
async function startLegacyVictimCast(): Promise<{ v: SyncNode; libV: Library; n: SyncNode; libN: Library; member: RawMember }> {
  const dirV = await makeTempDir('lsync-node-');
  await writeFile(join(dirV, 'node.json'), JSON.stringify({ deviceId: randomUUID() }));
  const v = await startNode(dirV, { sync: rawMemberSync });
  const n = await startNode(await makeTempDir('lsync-node-'), { sync: rawMemberSync });
  const [libV, libN] = (await shareLibrary(v, [n])) as [Library, Library];
  const member = await joinAsRawMember(v, libV, [v, n]);
  await waitFor(async () => (await libN.members()).some((x) => x.device === member.device), 'N to learn of the raw member');
  return { v, libV, n, libN, member };
}

/** V writes, and N must receive it: honest sync goes on; returns the common digest. */
async function honestSyncGoesOn(libV: Library, libN: Library): Promise<string> {
  const id = randomUUID();
  await libV.upsert('note', { id, title: 'after the attack', body: null });
  await waitFor(async () => (await libN.get('note', id)) !== undefined, "N to receive V's write after the attack");
  return waitForConvergence([libV, libN]);
}

describe('device ids', () => {
  it("a new device's id is derived from its PeerId; a directory made before 2.0 keeps its random id", async () => {
    const fresh = await startNode(await makeTempDir('lsync-node-'));
    expect(fresh.deviceId).toBe(deviceIdForPeer(fresh.peerId));
    expect(isKeyDerivedId(fresh.deviceId)).toBe(true);

    const dir = await makeTempDir('lsync-node-');
    const legacy = randomUUID();
    await writeFile(join(dir, 'node.json'), JSON.stringify({ deviceId: legacy }));
    const old = await startNode(dir);
    expect(old.deviceId).toBe(legacy);
    expect(isKeyDerivedId(old.deviceId)).toBe(false);
  });
});

describe('joining', () => {
  it('refuses a joiner whose key-derived device id derives from another key, and the invite stays usable', async () => {
    const a = await startNode(await makeTempDir('lsync-node-'));
    const lib = await a.createLibrary({ name: 'binding' });
    const raw = await RawPeer.start();
    const invite = await lib.createInvite({ ttlMs: 60_000 });
    const forged = await raw.join(invite, { device: deviceIdForPeer(`${raw.peerId}-other`) });
    expect(await forged.message(0, 'the refusal')).toMatchObject({ t: 'error', code: 'INVITE_INVALID', message: /derived from another key/ });
    const own = await raw.join(invite, { device: deviceIdForPeer(raw.peerId) });
    expect(await own.message(0, 'the welcome')).toMatchObject({ t: 'welcome' });
  });
});

describe('a member re-keying another member', () => {
  it("is refused and counted when the device's id derives from its key; nothing changes anywhere", async () => {
    const { v, libV, libN, member } = await startVictimCast();
    const before = await rowOf(libN, v.deviceId);
    expect(before?.peer).toBe(v.peerId);
    const errorsBefore = (await libV.status()).protocolErrors;
    const rekey = signedTuples(member.peer.key, libV.id, [
      {
        origin: member.device,
        seq: 1,
        hlc: encodeHlc({ wallMs: Date.now(), counter: 0, deviceId: member.device }),
        model: MEMBERS_MODEL.name,
        id: v.deviceId,
        op: 'upsert',
        fields: { peer: member.peer.peerId, addrs: '[]', name: null },
      },
    ]);

    await expectSessionRefused(
      member,
      v,
      libV.id,
      "a row binding V's id to the member's key",
      { heartbeatMs: 200 },
      (session) => session.send({ t: 'changes', library: libV.id, batch: 1, chunks: rekey }),
      { code: 'VALIDATION', message: /derived from another key/ },
    );
    expect((await libV.status()).protocolErrors).toBe(errorsBefore + 1);
    // Never stored: the member's origin holds nothing on V, and V's row is V's on both.
    expect(libV.versionVector()[member.device]).toBeUndefined();
    expect(await rowOf(libV, v.deviceId)).toEqual(before);
    await honestSyncGoesOn(libV, libN);
    expect(await rowOf(libN, v.deviceId)).toEqual(before);
    expect((await libN.status()).partners.find((p) => p.device === v.deviceId)?.state).toBe('live');
  });

  it('changes nothing for a pre-2.0 device id, which keeps the PeerId it was first held with', async () => {
    const { v, libV, libN, member } = await startLegacyVictimCast();
    const before = await rowOf(libN, v.deviceId);
    expect(before?.peer).toBe(v.peerId);
    const session = await pushMemberRow(member, v, libV.id, v.deviceId, { peer: member.peer.peerId, addrs: [] });
    // Taken as a change of the member's log (acked, and relayed to N), which binds nothing.
    expect(libV.versionVector()[member.device]).toBe(1);
    await waitFor(() => libN.versionVector()[member.device] === 1, "N to receive the member's change");
    session.stop();
    expect(await rowOf(libV, v.deviceId)).toEqual(before);
    expect(await rowOf(libN, v.deviceId)).toEqual(before);
    await honestSyncGoesOn(libV, libN);
  });

  it("cannot move a device's addresses once the device wrote its own row", async () => {
    const { v, libV, libN, member } = await startVictimCast();
    const before = await rowOf(libN, v.deviceId);
    expect(before?.addrs.length).toBeGreaterThan(0);
    const session = await pushMemberRow(member, v, libV.id, v.deviceId, { peer: v.peerId, addrs: [`/memory/nowhere/p2p/${v.peerId}`] });
    await waitFor(() => libN.versionVector()[member.device] === 1, "N to receive the member's change");
    session.stop();
    expect(await rowOf(libV, v.deviceId)).toEqual(before);
    expect(await rowOf(libN, v.deviceId)).toEqual(before);
    await honestSyncGoesOn(libV, libN);
  });
});
