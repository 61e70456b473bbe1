/**
 * Issue 13: a snapshot's claim about another origin's positions. Up to 3.1 a member could claim
 * an honest device's origin in a snapshot's vector further than that device wrote: the victim
 * adopted the claim as a pruned prefix, then took the device's real entries there as duplicates
 * it already held (or refused a run across the claim as a protocol error, which ended its
 * sessions with honest relays), and never held them. Since 3.2 the first page proves each
 * position the requester would adopt with the signed header of the run ending there (`proofs`).
 * A claim without one, with the proof of another position, signed by another key or with a bad
 * signature is refused (`PROTOCOL`, counted), nothing of the snapshot applied; the victim goes on
 * syncing with the honest device and ends equal to it. A partner before 3.2 is not asked for a
 * snapshot at all.
 *
 * The in-memory network and SQLite files; the hostile member is a raw protocol peer.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Message } from '../src/protocol/messages.js';
import { proofToTuple, type ProofTuple } from '../src/peer-log/signed-runs.js';
import { engineOf } from '../src/library/library.js';
import { waitFor, waitForConvergence, useMemoryTransport } from './helpers/cluster.js';
import { expectSessionRefused, MemberSession, type MemberSessionOptions, startVictimCast, stopRawMemberTest } from './helpers/raw-member.js';

useMemoryTransport();

afterEach(stopRawMemberTest);

describe("a snapshot's vector", () => {
  it("is refused where it claims an honest device's origin beyond what that device proves", async () => {
    const { libN, libV, v, member } = await startVictimCast();
    const id = libV.id;
    for (let i = 0; i < 3; i++) await libN.upsert('note', { id: `n-${i}`, title: `from n ${i}`, body: null });
    await waitForConvergence([libV, libN]);
    const origin = libN.writer();
    const real = libN.versionVector()[origin]!;
    const claimed = real + 1_000;
    const [realProof] = await engineOf(libN).snapshotProofs({ [origin]: real }, {});
    expect(realProof?.lastSeq).toBe(real);
    const genuine = proofToTuple(realProof!);

    /** A member ahead on N's origin by `claimed`, whose log no longer reaches back, serving one snapshot page. */
    const forgedSnapshot = (proofs: ProofTuple[] | undefined): MemberSessionOptions => ({
      heartbeatMs: 200,
      shared: { [origin]: claimed },
      answerPullShared: (pull) => ({ t: 'shared-page', library: id, req: pull.req, chunks: [], hasMore: false, pruned: [[origin, real, claimed]] }),
      answerPullSnapshot: (pull) => [
        { t: 'snapshot-page', library: id, req: pull.req, vector: { [origin]: claimed }, rows: [], next: null, total: 0, ...(proofs ? { proofs } : {}) } as Message,
      ],
    });
    const attacks: [string, ProofTuple[] | undefined, RegExp][] = [
      ['no proofs at all', undefined, /without a proof/],
      ['the proof of the position N really holds', [genuine], /its proof is of a run ending at/],
      ['a proof signed by the member’s own key', [[origin, real + 1, claimed, genuine[3], genuine[4], genuine[5], member.peer.peerId]], /may not sign for it/],
      ['a proof whose signature does not verify', [[origin, real + 1, claimed, genuine[3], genuine[4], genuine[5], genuine[6]]], /not signed by its author's key/],
    ];
    const errorsBefore = (await libV.status()).protocolErrors;
    for (const [what, proofs, message] of attacks) {
      await expectSessionRefused(member, v, id, what, forgedSnapshot(proofs), (s) => s.pulled('pull-snapshot', `the victim to pull a snapshot (${what})`), {
        code: 'PROTOCOL',
        message,
      });
      expect(libV.versionVector()[origin], what).toBe(real);
    }
    expect((await libV.status()).protocolErrors).toBe(errorsBefore + attacks.length);

    // N's real entries at the claimed positions still reach the victim, and it ends equal to N.
    for (let i = 0; i < 5; i++) await libN.upsert('note', { id: `n-after-${i}`, title: 'after', body: null });
    await waitForConvergence([libV, libN]);
    expect(libV.versionVector()[origin]).toBe(libN.versionVector()[origin]);
    expect(await libV.get('note', 'n-after-4')).toMatchObject({ title: 'after' });
  });

  it('is not asked of a partner before 3.2, whose snapshots prove nothing; the session goes on', async () => {
    const { libN, libV, v, member } = await startVictimCast();
    const id = libV.id;
    await libN.upsert('note', { id: 'n-1', title: 'from n', body: null });
    await waitForConvergence([libV, libN]);
    const origin = libN.writer();
    const real = libN.versionVector()[origin]!;
    const errorsBefore = (await libV.status()).protocolErrors;
    const s = await MemberSession.open(member, v, id, {
      heartbeatMs: 200,
      version: [3, 1],
      shared: { [origin]: real + 5 },
      answerPullShared: (pull) => ({ t: 'shared-page', library: id, req: pull.req, chunks: [], hasMore: false, pruned: [[origin, real, real + 5]] }),
    });
    await s.pulled('pull-shared', 'the victim to pull the log of the 3.1 member');
    await s.quietFor(3, 'the victim to judge the pruned log');
    expect(s.count('pull-snapshot')).toBe(0);
    expect(s.end).toBeUndefined();
    expect(s.of('error')).toEqual([]);
    expect((await libV.status()).protocolErrors).toBe(errorsBefore);
    expect(libV.versionVector()[origin]).toBe(real);
    s.stop();
    // Live changes still flow between the honest devices.
    await libN.upsert('note', { id: 'n-2', title: 'later', body: null });
    await waitFor(async () => (await libV.get('note', 'n-2')) !== undefined, 'the victim to take N’s later change');
  });
});
