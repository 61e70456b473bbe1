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
import { encodeHlc } from '../src/index.js';
import type { Message } from '../src/protocol/messages.js';
import type { LogEntry } from '../src/peer-log/types.js';
import { deviceSignatures } from '../src/node/native-signatures.js';
import { proofOf, proofToTuple, type ProofTuple } from '../src/peer-log/signed-runs.js';
import { chunksOf } from '../src/replication/session.js';
import { engineOf } from '../src/library/library.js';
import { proveVector } from '../src/library/snapshot.js';
import { OriginAuthors } from '../src/library/origin-authors.js';
import { waitFor, waitForConvergence, useMemoryTransport } from './helpers/cluster.js';
import { signedTuples } from './helpers/signed-runs.js';
import {
  expectSessionRefused,
  joinAsRawMember,
  MemberSession,
  type MemberSessionOptions,
  startVictimCast,
  stopRawMemberTest,
} from './helpers/raw-member.js';

useMemoryTransport();

afterEach(stopRawMemberTest);

const note = (origin: string, seq: number, id: string, title: string): LogEntry => ({
  origin,
  seq,
  hlc: encodeHlc({ wallMs: Date.now(), counter: seq, deviceId: origin }),
  model: 'note',
  id,
  op: 'upsert',
  fields: { title, body: null },
});

/** A member ahead on `origin` by `claimed`, whose log no longer reaches back, serving one snapshot page with `proofs`. */
function snapshotClaim(library: string, origin: string, held: number, claimed: number, proofs: ProofTuple[] | undefined): MemberSessionOptions {
  return {
    heartbeatMs: 200,
    shared: { [origin]: claimed },
    answerPullShared: (pull) => ({ t: 'shared-page', library, req: pull.req, chunks: [], hasMore: false, pruned: [[origin, held, claimed]] }),
    answerPullSnapshot: (pull) => [
      { t: 'snapshot-page', library, req: pull.req, vector: { [origin]: claimed }, rows: [], next: null, total: 0, ...(proofs ? { proofs } : {}) } as Message,
    ],
  };
}

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

    const attacks: [string, ProofTuple[], RegExp][] = [
      ['the proof of the position N really holds', [genuine], /its proof is of a run ending at/],
      ['a proof signed by the member’s own key', [[origin, real + 1, claimed, genuine[3], genuine[4], genuine[5], member.peer.peerId]], /may not sign for it/],
      ['a proof whose signature does not verify', [[origin, real + 1, claimed, genuine[3], genuine[4], genuine[5], genuine[6]]], /not signed by its author's key/],
    ];
    const errorsBefore = (await libV.status()).protocolErrors;
    for (const [what, proofs, message] of attacks) {
      await expectSessionRefused(member, v, id, what, snapshotClaim(id, origin, real, claimed, proofs), (s) => s.pulled('pull-snapshot', `the victim to pull a snapshot (${what})`), {
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

  it('without the proofs it needs is not taken from its partner, and is no fault of it: the victim goes on with others', async () => {
    const { libN, libV, v, n, member } = await startVictimCast();
    const id = libV.id;
    await libN.upsert('note', { id: 'n-1', title: 'from n', body: null });
    await waitForConvergence([libV, libN]);
    // R: a device with a random (pre-2.0 form) id, which signs its runs like any device since 2.0.
    const r = await joinAsRawMember(v, libV, [v, n]);
    const fromR = await MemberSession.open(r, v, id, { heartbeatMs: 200 });
    await fromR.send({ t: 'changes', library: id, batch: 1, chunks: signedTuples(r.peer.key, id, [note(r.device, 1, 'r-1', 'r one')], r.heads) });
    await waitFor(() => fromR.of('ack').some((a) => a.batch === 1), 'the victim to take R#1');
    fromR.stop();
    const errorsBefore = (await libV.status()).protocolErrors;
    // Without proofs: of an honest key-derived origin, and of R, of which the victim holds a signed run.
    for (const [origin, held] of [[libN.writer(), libN.versionVector()[libN.writer()]!], [r.device, 1]] as const) {
      const s = await MemberSession.open(member, v, id, snapshotClaim(id, origin, held, held + 1_000, []));
      await s.pulled('pull-snapshot', 'the victim to pull a snapshot');
      await s.quietFor(3, 'the victim to judge the snapshot');
      expect(s.end, origin).toBeUndefined();
      expect(s.of('error'), origin).toEqual([]);
      expect(s.count('pull-snapshot'), 'asked once on the session').toBe(1);
      expect(libV.versionVector()[origin], origin).toBe(held);
      s.stop();
    }
    expect((await libV.status()).protocolErrors).toBe(errorsBefore);
    // R's and N's real later writes still reach the victim.
    const again = await MemberSession.open(r, v, id, { heartbeatMs: 200 });
    await again.send({ t: 'changes', library: id, batch: 2, chunks: signedTuples(r.peer.key, id, [note(r.device, 2, 'r-2', 'r two')], r.heads) });
    await waitFor(async () => (await libV.get('note', 'r-2')) !== undefined, "the victim to take R's real next write");
    again.stop();
    await libN.upsert('note', { id: 'n-2', title: 'later', body: null });
    await waitForConvergence([libV, libN]);
  });

  it('lets a random-id (pre-2.0) origin of which nothing signed is held come unproven; a wrong proof is refused even then', () => {
    const origin = '00000000-0000-4000-8000-000000000007';
    const signatures = { sha256: () => new Uint8Array(32), verify: () => false } as unknown as Parameters<typeof proveVector>[0];
    const authors = new OriginAuthors(new Map());
    expect(proveVector(signatures, 'lib', { [origin]: 9 }, [], {}, new Set(), authors)).toEqual({ heads: new Map(), unproven: [] });
    expect(proveVector(signatures, 'lib', { [origin]: 9 }, [], {}, new Set([origin]), authors).unproven).toEqual([origin]);
    const wrong = { origin, firstSeq: 1, lastSeq: 8, prev: new Uint8Array(32), body: new Uint8Array(32), sig: new Uint8Array(64), author: 'p' };
    expect(() => proveVector(signatures, 'lib', { [origin]: 9 }, [wrong], {}, new Set(), authors)).toThrow(/proof is of a run ending at 8/);
  });

  it("proven to one branch of a forking device, is no reason to refuse an honest relay of the other", async () => {
    const { v, n, libV, libN, member } = await startVictimCast();
    const id = libV.id;
    const m = member.device;
    // Branch A, signed, shown to the victim only as the proof of a snapshot.
    const [a] = signedTuples(member.peer.key, id, [note(m, 1, 'a-1', 'A'), note(m, 2, 'a-2', 'A')], new Map());
    const proofA = proofToTuple(proofOf(deviceSignatures(member.peer.key), chunksOf([a!])[0]!));
    const s = await MemberSession.open(member, v, id, snapshotClaim(id, m, 0, 2, [proofA]));
    await s.pulled('pull-snapshot');
    await waitFor(() => libV.versionVector()[m] === 2, 'the victim to adopt branch A as a proven prefix');
    s.stop();
    const errorsBefore = (await libV.status()).protocolErrors;
    // Branch B goes to N, which relays it as any honest member does.
    const toN = await MemberSession.open(member, n, id, { heartbeatMs: 200 });
    const headsB = new Map<string, Uint8Array>();
    await toN.send({ t: 'changes', library: id, batch: 1, chunks: signedTuples(member.peer.key, id, [note(m, 1, 'b-1', 'B'), note(m, 2, 'b-2', 'B')], headsB) });
    await toN.send({ t: 'changes', library: id, batch: 2, chunks: signedTuples(member.peer.key, id, [note(m, 3, 'b-3', 'B')], headsB) });
    await waitFor(() => toN.of('ack').some((x) => x.batch === 2), 'N to take branch B');
    toN.stop();
    // N's own later writes reach the victim, and no session with N ends in a protocol error.
    await libN.upsert('note', { id: 'n-after', title: 'after the fork', body: null });
    await waitFor(async () => (await libV.get('note', 'n-after')) !== undefined, "the victim to take N's later write");
    expect((await libV.status()).protocolErrors).toBe(errorsBefore);
    expect(libV.versionVector()[m]).toBe(2);
    expect(await libV.get('note', 'b-3')).toBeUndefined();
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
    // Nor is it asked to continue a snapshot this device stopped half-way.
    await engineOf(libV).applySnapshot([], { vector: libV.versionVector(), proofs: [], next: ['note', ''] });
    expect(await engineOf(libV).snapshotCheckpoint()).toBeDefined();
    const resumed = await MemberSession.open(member, v, id, { heartbeatMs: 200, version: [3, 1], shared: { [origin]: real + 5 } });
    await resumed.quietFor(3, 'the victim to look at the 3.1 member');
    expect(resumed.count('pull-snapshot')).toBe(0);
    expect(resumed.end).toBeUndefined();
    resumed.stop();
    // Live changes still flow between the honest devices.
    await libN.upsert('note', { id: 'n-2', title: 'later', body: null });
    await waitFor(async () => (await libV.get('note', 'n-2')) !== undefined, 'the victim to take N’s later change');
  });
});
