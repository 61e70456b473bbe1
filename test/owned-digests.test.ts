/**
 * Issue 13, pages of another device's device-owned rows that leave rows out. Every row carries
 * its owner's certificate, so a member cannot forge one, but a certificate proves a row, not that
 * a page held every row of its coverage: the victim's cursor moved on, it never asked again, and
 * it held less than the owner wrote for good. Partners holding an owner through the same version
 * now compare summaries of its rows (`owned-digests`); where they differ, the rows are pulled
 * again, so the victim gets what it was denied from the first honest partner it meets, and a
 * member's false summary costs one pull (it is not refused: nothing tells it from a partner whose
 * rows changed meanwhile).
 *
 * The in-memory network and SQLite files; the hostile member is a raw protocol peer.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { engineOf } from '../src/library/library.js';
import type { OwnedRowUpdate } from '../src/library/remote-apply.js';
import { ProtocolError } from '../src/errors.js';
import { decodeMessage, encodeMessage } from '../src/protocol/codec.js';
import { MAX_OWNED_DIGESTS, type Message } from '../src/protocol/messages.js';
import { ownedToTuple } from '../src/replication/session.js';
import type { PrivateKey } from '@libp2p/interface';
import { encodeHlc } from '../src/index.js';
import { useMemoryTransport, waitFor, waitForConvergence } from './helpers/cluster.js';
import { MemberSession, startVictimCast, stopRawMemberTest } from './helpers/raw-member.js';
import { keyedDevice, signedOwnedRows } from './helpers/signed-runs.js';

useMemoryTransport();

afterEach(stopRawMemberTest);

/** A member's answer to every pull of `owner`'s rows: `rows` (all of them), as one final page through `to`. */
function servingRows(library: string, owner: string, author: string, to: number, rows: OwnedRowUpdate[]) {
  return (pull: { req: number; after: number }): Message[] => [
    {
      t: 'state-page',
      library,
      req: pull.req,
      owner,
      from: pull.after,
      to,
      author,
      rows: rows.filter((r) => r.version > pull.after).map(ownedToTuple),
      hasMore: false,
    },
  ];
}

/** Rows of a device that is no node here, as it writes and signs them: one tree per write. */
function writtenBy(key: PrivateKey, library: string, owner: string, writes: { id: string; bytes: number }[]): OwnedRowUpdate[] {
  return writes.map(({ id, bytes }, i) => {
    const row = {
      model: 'volume',
      id,
      owner,
      version: i + 1,
      hlc: encodeHlc({ wallMs: Date.now() - 60_000 + i, counter: 0, deviceId: owner }),
      deleted: false,
      values: { path: `/k/${id}`, bytes },
    };
    return signedOwnedRows(key, library, [row]).rows[0]!;
  });
}

/** The current row of each id: its newest version. */
const current = (rows: OwnedRowUpdate[]) => rows.filter((r) => !rows.some((o) => o.id === r.id && o.version > r.version));

describe("another device's device-owned rows left out of pages by a member", () => {
  it('reach the victim from the first honest partner holding the owner through the same version', async () => {
    const { v, libV, n, libN, member } = await startVictimCast();
    const id = libV.id;
    const k = await keyedDevice();
    // K writes six rows, then writes k-2 again and then k-7: eight versions, seven rows.
    const written = writtenBy(k.key, id, k.device, [
      ...[1, 2, 3, 4, 5, 6].map((i) => ({ id: `k-${i}`, bytes: i })),
      { id: 'k-2', bytes: 20 },
      { id: 'k-7', bytes: 7 },
    ]);
    const held = written.length;
    const all = current(written);
    // To the victim the member serves K's rows through `held` but for two: one it leaves out,
    // and k-2 at its first version (the newest row is served: a cursor moves only through it).
    const omitted = written.filter((r) => r.id !== 'k-4' && !(r.id === 'k-2' && r.version === 7));
    const toV = await MemberSession.open(member, v, id, {
      heartbeatMs: 200,
      owned: { [k.device]: held },
      answerPullState: servingRows(id, k.device, k.peer, held, omitted),
    });
    await waitFor(() => engineOf(libV).ownedVector()[k.device] === held, "the victim to take the member's pages through K's version");
    toV.stop();
    expect(await libV.get('volume', 'k-4')).toBeUndefined();
    expect((await libV.get('volume', 'k-2'))?.bytes).toBe(2);

    // To N it gives all of them (pushed: N may hold K through `held` already, from the victim).
    const toN = await MemberSession.open(member, n, id, {
      heartbeatMs: 200,
      owned: { [k.device]: held },
      answerPullState: servingRows(id, k.device, k.peer, held, all),
    });
    await toN.send({ t: 'state', library: id, batch: 1, owner: k.device, from: 0, to: held, author: k.peer, rows: all.map(ownedToTuple) });
    await waitFor(() => toN.of('ack').some((a) => a.batch === 1), 'N to ack the rows');
    expect((await libN.get('volume', 'k-4'))?.bytes).toBe(4);
    expect((await libN.get('volume', 'k-2'))?.bytes).toBe(20);

    // Both hold K through `held`; their summaries differ, so the victim pulls K's rows again.
    await waitFor(async () => (await libV.get('volume', 'k-4')) !== undefined, 'the victim to get the row left out');
    await waitForConvergence([libV, libN]);
    expect((await libV.get('volume', 'k-2'))?.bytes).toBe(20);
    expect((await libV.status()).ownedRepairs).toBe(2);
    expect((await libN.status()).ownedRepairs).toBe(0);
    expect((await libV.status()).protocolErrors).toBe(0);
    expect((await libN.status()).protocolErrors).toBe(0);
  });
});

describe("a member's summaries of another device's rows", () => {
  it('cost one pull of the rows however often a false one is sent, and a true one none', async () => {
    const { v, libV, libN, n, member } = await startVictimCast();
    const id = libV.id;
    for (let i = 1; i <= 3; i++) await libN.upsert('volume', { id: `n-vol-${i}`, path: `/n/${i}`, bytes: i });
    const digest = await waitForConvergence([libV, libN]);
    const owner = n.deviceId;
    const held = engineOf(libV).ownedVector()[owner]!;
    const summary = (digest: Uint8Array) => ({ t: 'owned-digests', library: id, digests: [[owner, held, 'volume', digest]] }) as const;
    const pulls = (s: MemberSession) => s.of('pull-state').filter((p) => p.owner === owner).length;

    const lying = await MemberSession.open(member, v, id, { heartbeatMs: 200, owned: { [owner]: held } });
    for (let i = 0; i < 4; i++) {
      await lying.send(summary(randomBytes(16)));
      await lying.quietFor(2, 'the victim to compare the summary');
    }
    expect(pulls(lying)).toBe(1);
    expect(lying.of('error')).toEqual([]);
    lying.stop();
    // On later sessions another false summary costs one pull again; the same one, none: that
    // mismatch was answered (a member reconnecting costs no more than one pull per lie).
    const fixed = randomBytes(16);
    for (const expected of [1, 0]) {
      const again = await MemberSession.open(member, v, id, { heartbeatMs: 200, owned: { [owner]: held } });
      await again.send(summary(fixed));
      await again.quietFor(3, 'the victim to compare the summary');
      expect(pulls(again)).toBe(expected);
      again.stop();
    }
    expect((await libV.status()).ownedRepairs).toBe(0);
    expect(await libV.digest()).toBe(digest);

    const honest = await MemberSession.open(member, v, id, { heartbeatMs: 200, owned: { [owner]: held } });
    await honest.send(summary((await engineOf(libN).ownedDigests(owner, held))!.get('volume')!));
    await honest.quietFor(3, 'the victim to compare the summary');
    expect(pulls(honest)).toBe(0);
    honest.stop();

    await libN.upsert('volume', { id: 'n-vol-4', path: '/n/4', bytes: 4 });
    await waitFor(async () => (await libV.get('volume', 'n-vol-4')) !== undefined, "the victim to go on taking N's rows");
    await waitForConvergence([libV, libN]);
  });
});

describe('summaries of device-owned rows', () => {
  it('go to partners of 3.1 or later, each owner once per version, and never to a 3.0 partner', async () => {
    const { v, libV, libN, n, member } = await startVictimCast();
    const id = libV.id;
    await libN.upsert('volume', { id: 'n-vol', path: '/n', bytes: 1 });
    await waitForConvergence([libV, libN]);
    // What N holds: the member claims no more of the victim's own rows than confirmed.
    const owned = { [n.deviceId]: engineOf(libV).ownedVector()[n.deviceId]! };

    const older = await MemberSession.open(member, v, id, { heartbeatMs: 200, owned, version: [3, 0] });
    await older.quietFor(12, 'the victim to have sent summaries if it were to');
    expect(older.count('owned-digests')).toBe(0);
    expect(older.of('error')).toEqual([]);
    older.stop();

    const current = await MemberSession.open(member, v, id, { heartbeatMs: 200, owned });
    await waitFor(() => current.count('owned-digests') > 0, 'the victim to send its summaries');
    await current.quietFor(12, 'the victim to send anything more');
    const sent = current.of('owned-digests').flatMap((m) => m.digests);
    const expected = await Promise.all(
      [n.deviceId].map(async (owner) => [...(await engineOf(libV).ownedDigests(owner, owned[owner]!))!].map(([model, d]) => [owner, owned[owner], model, d])),
    );
    expect(sent.map(([o, ver, model, d]) => [o, ver, model, Buffer.from(d).toString('hex')]).sort()).toEqual(
      expected.flat().map(([o, ver, model, d]) => [o, ver, model, Buffer.from(d as Uint8Array).toString('hex')]).sort(),
    );
    current.stop();
  });
});

describe('the owned-digests message', () => {
  const owner = '0b7c1e2a-5d6f-4a8b-9c0d-1e2f3a4b5c6d';
  const library = '1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f';
  const frame = (digests: unknown[]) => encodeMessage({ t: 'owned-digests', library, digests } as unknown as Message);

  it('is refused with each owner and model more than once, a digest of another size, or more than the bound', () => {
    const entry = (model: string, digest = new Uint8Array(16)) => [owner, 3, model, digest];
    expect(decodeMessage(frame([entry('volume'), entry('prefs')]))).toMatchObject({ t: 'owned-digests' });
    expect(() => decodeMessage(frame([entry('volume'), entry('volume')]))).toThrow(ProtocolError);
    expect(() => decodeMessage(frame([entry('volume', new Uint8Array(32))]))).toThrow(ProtocolError);
    expect(() => decodeMessage(frame([[owner, 0, 'volume', new Uint8Array(16)]]))).toThrow(ProtocolError);
    const many = Array.from({ length: MAX_OWNED_DIGESTS + 1 }, (_, i) => entry(`m${i}`));
    expect(() => decodeMessage(frame(many))).toThrow(ProtocolError);
    expect(decodeMessage(frame(many.slice(1)))).toMatchObject({ t: 'owned-digests' });
  });
});
