/**
 * Issue 13, the owned-row attacks of the campaign: a member rewrote another device's device-owned
 * rows with a later version (the owner's real update was then dropped as stale, and the owner
 * never saw the forgery). Since 3.0 every row carries its owner's certificate
 * (`src/models/signed-owned-rows.ts`): whatever a member makes of another device's rows, the
 * victim refuses it as bad input (`PROTOCOL`), counts it, stores nothing, and its honest sync goes
 * on; an owner's older row replayed is no forgery, only stale.
 *
 * The in-memory network and SQLite files; the hostile member is a raw protocol peer.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeHlc } from '../src/index.js';
import { engineOf } from '../src/library/library.js';
import type { OwnedRowUpdate } from '../src/library/remote-apply.js';
import { pack } from '../src/util/msgpack.js';
import { ownedToTuple } from '../src/replication/session.js';
import { useMemoryTransport, waitFor, waitForConvergence } from './helpers/cluster.js';
import { expectSessionRefused, MemberSession, startVictimCast, stopRawMemberTest } from './helpers/raw-member.js';
import { signedOwnedTuples } from './helpers/signed-runs.js';

useMemoryTransport();

afterEach(stopRawMemberTest);

const ALL = { maxRecords: 1_000, maxBytes: 1 << 20 };

describe("another device's device-owned rows forged by a member", () => {
  it('are refused and counted whatever the member makes of them; nothing is stored and sync goes on', async () => {
    const { v, libV, n, libN, member } = await startVictimCast();
    await libN.upsert('volume', { id: 'n-vol', path: '/n', bytes: 1 });
    await waitFor(async () => (await libV.get('volume', 'n-vol')) !== undefined, "V to hold N's row");
    const digest = await waitForConvergence([libV, libN]);
    const held = engineOf(libV).ownedVector()[n.deviceId]!;
    const [genuine] = (await engineOf(libN).ownedAfter(n.deviceId, 0, ALL)).rows as [OwnedRowUpdate];
    const laterContent = {
      model: genuine.model,
      id: genuine.id,
      owner: n.deviceId,
      version: held + 1,
      hlc: encodeHlc({ wallMs: Date.now() + 1_000, counter: 0, deviceId: n.deviceId }),
      deleted: false,
      values: { path: '/forged', bytes: 666 },
    };
    const later = { ...laterContent, cert: genuine.cert };
    const bySelf = signedOwnedTuples(member.peer.key, libV.id, [laterContent]);
    const state = (author: string, rows: ReturnType<typeof ownedToTuple>[]) =>
      ({ t: 'state', library: libV.id, batch: 1, owner: n.deviceId, from: held, to: held + 1, author, rows }) as const;
    const forgeries: { what: string; author: string; rows: ReturnType<typeof ownedToTuple>[]; message: RegExp }[] = [
      { what: "a later version signed by the member, the member named as N's key", author: bySelf.author, rows: bySelf.rows, message: /signed by .* which is not its key/ },
      { what: "a later version signed by the member's key, N named as its author", author: n.peerId, rows: bySelf.rows, message: /not signed by its owner's key/ },
      { what: "N's own certificate on a later version with other values", author: n.peerId, rows: [ownedToTuple(later)], message: /not signed by its owner's key/ },
      { what: 'a certificate of random bytes', author: n.peerId, rows: [ownedToTuple({ ...later, cert: randomBytes(200) })], message: /certificate is malformed/ },
      { what: 'a certificate whose path fits no tree', author: n.peerId, rows: [ownedToTuple({ ...later, cert: pack([1, 0, new Uint8Array(32), new Uint8Array(64)]) })], message: /fit a tree of 1 rows/ },
    ];
    for (const forgery of forgeries) {
      const errorsBefore = (await libV.status()).protocolErrors;
      await expectSessionRefused(
        member,
        v,
        libV.id,
        forgery.what,
        {
          heartbeatMs: 200,
          owned: { [n.deviceId]: held + 1 },
          // Advertised, so V may pull it too: pushed or pulled, it is refused alike.
          answerPullState: (pull) => [{ ...state(forgery.author, forgery.rows), t: 'state-page', req: pull.req, from: pull.after, hasMore: false }],
        },
        async (s) => {
          await s.send({ t: 'heartbeat', library: libV.id, shared: {}, owned: s.owned });
          await s.send(state(forgery.author, forgery.rows));
        },
        { code: 'PROTOCOL', message: forgery.message },
      );
      expect((await libV.status()).protocolErrors, forgery.what).toBe(errorsBefore + 1);
      expect(await libV.get('volume', 'n-vol'), forgery.what).toEqual({ id: 'n-vol', path: '/n', bytes: 1 });
      expect(engineOf(libV).ownedVector()[n.deviceId], forgery.what).toBe(held);
      expect(await libV.digest(), forgery.what).toBe(digest);
    }

    // N's own row replayed is no forgery: stale where a newer one is held, nothing refused.
    await libN.update('volume', 'n-vol', { bytes: 2 });
    await waitFor(async () => (await libV.get('volume', 'n-vol'))?.bytes === 2, "V to take N's update");
    const replay = await MemberSession.open(member, v, libV.id, { heartbeatMs: 200, owned: { [n.deviceId]: genuine.version } });
    await replay.send({ t: 'heartbeat', library: libV.id, shared: {}, owned: replay.owned });
    await replay.send({ ...state(n.peerId, [ownedToTuple(genuine)]), from: 0, to: genuine.version, batch: 7 });
    await waitFor(() => replay.of('ack').some((a) => a.batch === 7), 'V to ack the replayed row');
    expect(replay.of('error')).toEqual([]);
    replay.stop();
    expect(await libV.get('volume', 'n-vol')).toEqual({ id: 'n-vol', path: '/n', bytes: 2 });

    // Honest sync goes on: N's next write reaches V, and they agree.
    await libN.upsert('volume', { id: 'n-vol-2', path: '/n2', bytes: 3 });
    await waitFor(async () => (await libV.get('volume', 'n-vol-2')) !== undefined, "V to receive N's write after the attacks");
    await waitForConvergence([libV, libN]);
  });

  it("of the victim's own, served back as its own rows, are refused before they move anything", async () => {
    const { v, libV, member } = await startVictimCast();
    await libV.upsert('volume', { id: 'v-vol', path: '/v', bytes: 1 });
    const held = engineOf(libV).ownedVector()[v.deviceId]!;
    const digest = await libV.digest();
    const errorsBefore = (await libV.status()).protocolErrors;
    const row = {
      model: 'volume',
      id: 'v-vol',
      owner: v.deviceId,
      version: held + 1,
      hlc: encodeHlc({ wallMs: Date.now() + 1_000, counter: 0, deviceId: v.deviceId }),
      deleted: false,
      values: { path: '/forged', bytes: 666 },
    };
    // A claim of more of V's rows than V holds looks like a restore: V pulls its rows back.
    await expectSessionRefused(
      member,
      v,
      libV.id,
      "V's own row signed by the member",
      {
        heartbeatMs: 200,
        owned: { [v.deviceId]: held + 1 },
        answerPullState: (pull) => [
          { t: 'state-page', library: libV.id, req: pull.req, owner: pull.owner, from: pull.after, to: held + 1, ...signedOwnedTuples(member.peer.key, libV.id, [row]), hasMore: false },
        ],
      },
      (s) => waitFor(() => s.count('pull-state') > 0 || s.end !== undefined, 'V to compare its own rows'),
      { code: 'PROTOCOL', message: /signed by .* which is not its key/ },
    );
    expect((await libV.status()).protocolErrors).toBe(errorsBefore + 1);
    expect(await libV.get('volume', 'v-vol')).toEqual({ id: 'v-vol', path: '/v', bytes: 1 });
    expect(engineOf(libV).ownedVector()[v.deviceId]).toBe(held);
    expect(await libV.digest()).toBe(digest);
  });
});
