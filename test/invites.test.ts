/**
 * Invites over their lifetime: `lib.invites()` lists the pending ones, `lib.revokeInvite()`
 * revokes one (by string or id, idempotently), and a join with a revoked or expired invite is
 * refused by the inviter (`INVITE_REVOKED`, `INVITE_EXPIRED`) with no library on the joiner.
 * Real libp2p on 127.0.0.1, nodes with their own SQLite files.
 */
import { randomUUID } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { InviteError, NotFoundError, type SyncError, type SyncNode } from '../src/index.js';
import { decodeInvite } from '../src/replication/invite-code.js';
import { makeTempDir, removeTempDirs } from './helpers/child-process.js';
import { ManualClock, startNode, stopAllNodes, waitFor } from './helpers/cluster.js';
import { RawPeer, stopAllRawPeers } from './helpers/raw-peer.js';

afterEach(async () => {
  await stopAllRawPeers();
  await stopAllNodes();
  await removeTempDirs();
});

async function joinError(joiner: SyncNode, invite: string): Promise<SyncError> {
  const err = await joiner.joinLibrary(invite).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(InviteError);
  return err as SyncError;
}

/** The library files in a node's data directory. */
async function libraryFiles(dataDir: string): Promise<string[]> {
  return (await readdir(join(dataDir, 'libraries')).catch(() => [])).filter((f) => f.endsWith('.sqlite'));
}

describe('invites', () => {
  it('a revoked invite is refused with INVITE_REVOKED and the joiner gets no library', async () => {
    const a = await startNode();
    const bDir = await makeTempDir('lsync-node-');
    const b = await startNode(bDir);
    const lib = await a.createLibrary({ name: 'home' });
    const invite = await lib.createInvite({ ttlMs: 60_000 });
    await lib.revokeInvite(invite);

    const err = await joinError(b, invite);
    expect(err.code).toBe('INVITE_REVOKED');
    expect(err.message).toMatch(/peer reported: this invite was revoked/);
    expect(b.libraries()).toEqual([]);
    expect(await libraryFiles(bDir)).toEqual([]);
    expect((await lib.members()).map((m) => m.device)).toEqual([a.deviceId]);
  });

  it('invites() lists pending invites newest first, and no used, revoked or expired one', async () => {
    const wall = new ManualClock(Date.now());
    const a = await startNode(undefined, { wallClock: wall.read });
    const b = await startNode();
    const lib = await a.createLibrary({ name: 'home' });
    expect(await lib.invites()).toEqual([]);

    const createdAt = wall.ms;
    const short = decodeInvite(await lib.createInvite({ ttlMs: 60_000 }));
    wall.ms += 1;
    const long = decodeInvite(await lib.createInvite({ ttlMs: 600_000 }));
    wall.ms += 1;
    const revoked = await lib.createInvite({ ttlMs: 600_000 });
    wall.ms += 1;
    const used = await lib.createInvite({ ttlMs: 600_000 });
    const usedId = decodeInvite(used).id;
    expect((await lib.invites()).map((i) => i.id)).toEqual([usedId, decodeInvite(revoked).id, long.id, short.id]);
    expect((await lib.invites()).at(-1)).toEqual({ id: short.id, createdAt, expiresAt: createdAt + 60_000 });

    await lib.revokeInvite(revoked);
    await b.joinLibrary(used);
    expect((await lib.invites()).map((i) => i.id)).toEqual([long.id, short.id]);

    // The expiry is the inviter's clock's: once it passes, the invite is no longer pending.
    wall.ms = short.expiresAt + 1;
    expect(await lib.invites()).toEqual([{ id: long.id, createdAt: createdAt + 1, expiresAt: long.expiresAt }]);
  });

  it('an expired invite is refused by the inviter with INVITE_EXPIRED, also when the joiner did not check', async () => {
    const wall = new ManualClock(Date.now());
    const a = await startNode(undefined, { wallClock: wall.read });
    const bDir = await makeTempDir('lsync-node-');
    const b = await startNode(bDir);
    const lib = await a.createLibrary({ name: 'home' });
    const invite = await lib.createInvite({ ttlMs: 60_000 });
    // Only the inviter's clock passes the expiry: the joiner's own check lets the invite through.
    wall.ms += 120_000;
    expect(await lib.invites()).toEqual([]);

    const err = await joinError(b, invite);
    expect(err.code).toBe('INVITE_EXPIRED');
    expect(err.message).toMatch(/^peer reported: /);
    expect(b.libraries()).toEqual([]);
    expect(await libraryFiles(bDir)).toEqual([]);

    // A raw joiner (no local check at all) with the right proof is refused the same way.
    const raw = await RawPeer.start();
    const stream = await raw.join(invite, { device: randomUUID() });
    expect(await stream.message(0, 'the refusal')).toMatchObject({ t: 'error', code: 'INVITE_EXPIRED' });
    expect((await lib.members()).map((m) => m.device)).toEqual([a.deviceId]);
  });

  it('the joiner refuses an invite it sees expired before dialling', async () => {
    const a = await startNode();
    const wall = new ManualClock(Date.now() + 120_000);
    const b = await startNode(undefined, { wallClock: wall.read });
    const lib = await a.createLibrary({ name: 'home' });
    const err = await joinError(b, await lib.createInvite({ ttlMs: 60_000 }));
    expect(err.code).toBe('INVITE_EXPIRED');
    // A local diagnosis: not a peer's report.
    expect(err.message).toBe('this invite has expired');
  });

  it('a revoked invite whose proof is wrong is refused as invalid: nothing about it leaks without the secret', async () => {
    const a = await startNode();
    const lib = await a.createLibrary({ name: 'home' });
    const invite = await lib.createInvite({ ttlMs: 60_000 });
    await lib.revokeInvite(invite);
    const raw = await RawPeer.start();
    const stream = await raw.join(invite, { device: randomUUID(), proof: new Uint8Array(32) });
    expect(await stream.message(0, 'the refusal')).toMatchObject({ t: 'error', code: 'INVITE_INVALID' });
  });

  it('revoking is idempotent, by string or id; an unknown invite is NOT_FOUND and a malformed one INVITE_INVALID', async () => {
    const a = await startNode();
    const b = await startNode();
    const lib = await a.createLibrary({ name: 'home' });
    const other = await a.createLibrary({ name: 'other' });
    const invite = await lib.createInvite({ ttlMs: 60_000 });
    const { id } = decodeInvite(invite);

    await lib.revokeInvite(invite);
    await lib.revokeInvite(invite);
    await lib.revokeInvite(id);
    expect(await lib.invites()).toEqual([]);
    expect((await joinError(b, invite)).code).toBe('INVITE_REVOKED');

    await expect(lib.revokeInvite(randomUUID())).rejects.toBeInstanceOf(NotFoundError);
    // An invite of another library, or issued by another device, is not this library's to revoke.
    const otherInvite = await other.createInvite({ ttlMs: 60_000 });
    await expect(lib.revokeInvite(otherInvite)).rejects.toBeInstanceOf(NotFoundError);
    await expect(lib.revokeInvite(decodeInvite(otherInvite).id)).rejects.toBeInstanceOf(NotFoundError);
    expect((await other.invites()).map((i) => i.id)).toEqual([decodeInvite(otherInvite).id]);
    const libB = await b.createLibrary({ name: 'b' });
    await expect(lib.revokeInvite(await libB.createInvite())).rejects.toBeInstanceOf(NotFoundError);
    await expect(lib.revokeInvite('lsync1.garbage')).rejects.toMatchObject({ code: 'INVITE_INVALID' });
    await expect(lib.revokeInvite(42 as unknown as string)).rejects.toMatchObject({ code: 'INVITE_INVALID' });

    // The other library's invite still works.
    const joined = await b.joinLibrary(otherInvite);
    await waitFor(async () => (await other.members()).some((m) => m.device === b.deviceId), 'B to be a member of the other library');
    expect(joined.id).toBe(other.id);
  });

  it('revoking an invite that was already used (also by a join that won the race) is INVITE_USED and changes nothing', async () => {
    const a = await startNode();
    const b = await startNode();
    const lib = await a.createLibrary({ name: 'home' });
    const invite = await lib.createInvite({ ttlMs: 60_000 });
    await b.joinLibrary(invite);
    await expect(lib.revokeInvite(invite)).rejects.toMatchObject({ code: 'INVITE_USED', message: expect.stringMatching(/removeMember/) });
    // Nothing was revoked: a revoked invite would be revoked again silently, this one is still used.
    await expect(lib.revokeInvite(decodeInvite(invite).id)).rejects.toMatchObject({ code: 'INVITE_USED' });
  });
});
