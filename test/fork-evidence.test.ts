/**
 * Issue 13, fork evidence (docs/protocol.md, "Fork evidence"). A member that signs two histories
 * of its origin is found out where both meet, and the evidence travels: every member learns of
 * the fork, applies every signed run of the origin any member applied, and so all converge.
 * Evidence is checked like any signed run: a `forked` message that proves no fork, or whose runs
 * do not verify, is bad input (PROTOCOL, counted, nothing stored).
 *
 * The in-memory network and SQLite files; the forking member is a raw protocol peer.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeHlc, type Library, type SyncNode } from '../src/index.js';
import type { ChunkTuple } from '../src/protocol/messages.js';
import { engineOf } from '../src/library/library.js';
import { chunksOf } from '../src/replication/session.js';
import type { LogEntry } from '../src/peer-log/types.js';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { startNode, stopNode, useMemoryTransport, waitFor, waitForConvergence } from './helpers/cluster.js';
import { expectSessionRefused, MemberSession, rawMemberSync, startVictimCast, stopRawMemberTest, type VictimCast } from './helpers/raw-member.js';
import { signedTuples } from './helpers/signed-runs.js';

useMemoryTransport();

afterEach(stopRawMemberTest);

function noteAt(origin: string, seq: number, title: string, id: string = randomUUID()): LogEntry {
  return { origin, seq, hlc: encodeHlc({ wallMs: Date.now(), counter: seq, deviceId: origin }), model: 'note', id, op: 'upsert', fields: { title, body: null } };
}

const titles = async (lib: Library) => (await lib.list('note', { limit: 1_000 })).map((note) => String(note.title)).filter((t) => /^[AB]\d+$/.test(t)).sort();

/**
 * V and N, each given one branch of the member's origin by the member while the other was away,
 * then both running again. Returns the restarted pair.
 */
async function branchesApart(cast: VictimCast, toV: ChunkTuple[], toN: ChunkTuple[], sync = rawMemberSync): Promise<[Library, Library]> {
  const { dirV, dirN, v, n, libV, member } = cast;
  const id = libV.id;
  await stopNode(n);
  const pushTo = async (node: SyncNode, chunks: ChunkTuple[]) => {
    const session = await MemberSession.open(member, node, id, { heartbeatMs: 200 });
    await session.send({ t: 'changes', library: id, batch: 1, chunks });
    await waitFor(() => session.of('ack').some((x) => x.batch === 1), 'the push to be acked');
    session.stop();
  };
  await pushTo(v, toV);
  await stopNode(v);
  const n2 = await startNode(dirN, { sync });
  await pushTo(n2, toN);
  const v2 = await startNode(dirV, { sync });
  return [v2.library(id), n2.library(id)];
}

/**
 * The member's first run (A1), which two branches share, with the heads to sign on from: `heads`
 * goes on with branch A, `afterA1` starts branch B.
 */
function sharedFirstRun(cast: VictimCast) {
  const m = cast.member.device;
  const key = cast.member.peer.key;
  const id = cast.libV.id;
  const heads = new Map<string, Uint8Array>();
  const a1 = signedTuples(key, id, [noteAt(m, 1, 'A1')], heads);
  return { m, key, id, a1, heads, afterA1: new Map(heads) };
}

async function expectBothForkedAndAlike(libV: Library, libN: Library): Promise<void> {
  await waitFor(async () => (await libV.status()).forks.length === 1, 'V to record the fork');
  await waitFor(async () => (await libN.status()).forks.length === 1, 'N to record the fork');
  await waitForConvergence([libV, libN]);
  expect((await libV.status()).protocolErrors).toBe(0);
  expect((await libN.status()).protocolErrors).toBe(0);
}

describe('an equivocating member', () => {
  it('that sent two partners one seq with other contents (same clock, same note): both find the fork and keep the same', async () => {
    const cast = await startVictimCast();
    const m = cast.member.device;
    const note = randomUUID();
    const hlc = encodeHlc({ wallMs: Date.now(), counter: 0, deviceId: m });
    const at = (title: string): LogEntry => ({ origin: m, seq: 1, hlc, model: 'note', id: note, op: 'upsert', fields: { title, body: null } });
    const key = cast.member.peer.key;
    const [libV, libN] = await branchesApart(cast, signedTuples(key, cast.libV.id, [at('aaa')]), signedTuples(key, cast.libV.id, [at('zzz')]));
    // One position each: no vector shows the fork, the heads do.
    expect(libV.versionVector()[m]).toBe(1);
    expect(libN.versionVector()[m]).toBe(1);
    await expectBothForkedAndAlike(libV, libN);
    expect((await libV.get('note', note))?.title).toBe((await libN.get('note', note))?.title);
  });

  it('whose branches share a prefix: each walks the other back to where they part, and both hold both', async () => {
    const cast = await startVictimCast();
    const { m, key, id, a1, heads, afterA1 } = sharedFirstRun(cast);
    const branchA = [...a1, ...signedTuples(key, id, [noteAt(m, 2, 'A2')], heads), ...signedTuples(key, id, [noteAt(m, 3, 'A3')], heads)];
    const branchB = [...a1, ...signedTuples(key, id, [noteAt(m, 2, 'B2')], afterA1), ...signedTuples(key, id, [noteAt(m, 3, 'B3')], afterA1), ...signedTuples(key, id, [noteAt(m, 4, 'B4')], afterA1)];
    const [libV, libN] = await branchesApart(cast, branchA, branchB);
    await expectBothForkedAndAlike(libV, libN);
    expect(await titles(libV)).toEqual(['A1', 'A2', 'A3', 'B2', 'B3', 'B4']);
  });
});

describe('an equivocating member, and what its partners do about it', () => {
  it('that two members meet in a catch-up of many pages: neither drops the other as sending nothing new', async () => {
    const cast = await startVictimCast();
    const { m, key, id, a1, heads, afterA1 } = sharedFirstRun(cast);
    const a2 = signedTuples(key, id, [noteAt(m, 2, 'A2')], heads);
    const b: ChunkTuple[] = [];
    for (let s = 2; s <= 12; s++) b.push(...signedTuples(key, id, [noteAt(m, s, `B${s}`)], afterA1));
    // Pages of one entry: the fork is found (by heads or the first page) while pulls are on their way.
    const [libV, libN] = await branchesApart(cast, [...a1, ...a2], [...a1, ...b], { ...rawMemberSync, batchRecords: 1 });
    await expectBothForkedAndAlike(libV, libN);
    expect(await titles(libV)).toEqual(['A1', 'A2', ...b.map((_, i) => `B${i + 2}`)].sort());
  });

  it("that a member relays to a partner met later: the relay reaches back to where the walk-back found the branches part", async () => {
    const { dirV, dirN, v, n, libV, member } = await startVictimCast();
    const id = libV.id;
    const m = member.device;
    const key = member.peer.key;
    const heads = new Map<string, Uint8Array>();
    const p1 = signedTuples(key, id, [noteAt(m, 1, 'A1')], heads);
    const afterP1 = new Map(heads);
    const x = [...signedTuples(key, id, [noteAt(m, 2, 'A2')], heads), ...signedTuples(key, id, [noteAt(m, 3, 'A3')], heads)];
    const y2 = signedTuples(key, id, [noteAt(m, 2, 'B2')], afterP1);
    const y3 = signedTuples(key, id, [noteAt(m, 3, 'B3')], afterP1);
    // V finds the fork at 3 and takes B2 from someone since gone: its forked runs reach back to 2.
    await stopNode(n);
    const session = await MemberSession.open(member, v, id, { heartbeatMs: 200 });
    await session.send({ t: 'changes', library: id, batch: 1, chunks: [...p1, ...x] });
    await waitFor(() => session.of('ack').some((a) => a.batch === 1), 'V to ack A1..A3');
    await session.send({ t: 'changes', library: id, batch: 2, chunks: y3 });
    await waitFor(async () => (await libV.status()).forks.length === 1, 'V to record the fork');
    await session.send({ t: 'forked', library: id, origin: m, evidence: null, runs: y2 });
    await waitFor(async () => (await titles(libV)).includes('B2'), 'V to take B2');
    session.stop();
    await stopNode(v);
    // N holds A1 B2 B3 only, and meets V.
    const n2 = await startNode(dirN, { sync: rawMemberSync });
    const toN = await MemberSession.open(member, n2, id, { heartbeatMs: 200 });
    await toN.send({ t: 'changes', library: id, batch: 1, chunks: [...p1, ...y2, ...y3] });
    await waitFor(() => toN.of('ack').some((a) => a.batch === 1), 'N to ack A1 B2 B3');
    toN.stop();
    const v2 = await startNode(dirV, { sync: rawMemberSync });
    await expectBothForkedAndAlike(v2.library(id), n2.library(id));
    expect(await titles(n2.library(id))).toEqual(['A1', 'A2', 'A3', 'B2', 'B3']);
  });

  it('whose heads name one origin twice is refused; one named again at the same position is answered once', async () => {
    const { v, libV, member } = await startVictimCast();
    await libV.transaction(async (tx) => {
      for (let i = 0; i < 3; i++) await tx.upsert('note', { id: randomUUID(), title: `t${i}`, body: null });
    });
    const writer = libV.writer();
    const held = libV.versionVector()[writer]!;
    // Another id at V's own position: V shows the member the run it holds there, once.
    const bogus: [string, number, Uint8Array] = [writer, held, new Uint8Array(32)];
    const session = await MemberSession.open(member, v, libV.id, { heartbeatMs: 200 });
    const before = session.of('changes').length;
    for (let i = 0; i < 3; i++) await session.send({ t: 'heads', library: libV.id, heads: [bogus] });
    await waitFor(() => session.of('changes').length > before, 'V to show the run it holds there');
    // An honest heartbeat's round trip later, still one.
    const acks = session.of('heartbeat').length;
    await waitFor(() => session.of('heartbeat').length >= acks + 2, 'two more heartbeats from V');
    expect(session.of('changes').slice(before)).toHaveLength(1);
    session.stop();
    await expectSessionRefused(
      member,
      v,
      libV.id,
      'heads naming one origin twice',
      { heartbeatMs: 200 },
      (s) => s.send({ t: 'heads', library: libV.id, heads: [bogus, bogus] }),
      { code: 'PROTOCOL', message: /named twice/ },
    );
  });
});

describe('fork evidence', () => {
  it('reaches a device that joins after the fork: it holds both branches like the others', async () => {
    const { v, libV, libN, member } = await startVictimCast();
    const m = member.device;
    const session = await MemberSession.open(member, v, libV.id, { heartbeatMs: 200 });
    const heads = new Map<string, Uint8Array>();
    // Branch A: two runs; branch B: one other run at the second position.
    const a1 = signedTuples(member.peer.key, libV.id, [noteAt(m, 1, 'A1')], heads);
    const headA1 = new Map(heads);
    const a2 = signedTuples(member.peer.key, libV.id, [noteAt(m, 2, 'A2')], heads);
    const b2 = signedTuples(member.peer.key, libV.id, [noteAt(m, 2, 'B2')], headA1);
    await session.send({ t: 'changes', library: libV.id, batch: 1, chunks: [...a1, ...a2] });
    await waitFor(() => session.of('ack').some((x) => x.batch === 1), 'V to ack branch A');
    await session.send({ t: 'changes', library: libV.id, batch: 2, chunks: b2 });
    await waitFor(async () => (await libN.status()).forks.length === 1, 'N to learn of the fork');
    session.stop();
    const digest = await waitForConvergence([libV, libN]);
    expect(await titles(libV)).toEqual(['A1', 'A2', 'B2']);

    const j = await startNode(undefined, { sync: rawMemberSync });
    const libJ = await j.joinLibrary(await libN.createInvite());
    await libJ.synced();
    await waitFor(async () => (await libJ.status()).forks.length === 1, 'the joiner to learn of the fork');
    expect(await waitForConvergence([libV, libN, libJ])).not.toBe(digest);
    expect(await titles(libJ)).toEqual([...(await titles(libV))]);
    expect(await titles(libJ)).toContain('B2');
  });

  it('is kept across a restart and relayed to a member that was away', async () => {
    const { dirV, dirN, v, libV, n, member } = await startVictimCast();
    const id = libV.id;
    const m = member.device;
    await stopNode(n);
    const session = await MemberSession.open(member, v, id, { heartbeatMs: 200 });
    const first = signedTuples(member.peer.key, id, [noteAt(m, 1, 'A1')]);
    const other = signedTuples(member.peer.key, id, [noteAt(m, 1, 'B1')]);
    await session.send({ t: 'changes', library: id, batch: 1, chunks: [...first, ...other] });
    await waitFor(() => session.of('ack').some((x) => x.batch === 1), 'V to ack both runs');
    session.stop();
    expect(await titles(libV)).toEqual(['A1', 'B1']);
    await stopNode(v);

    // N was away during the fork; V restarted since. N gets both runs from the evidence V kept.
    const v2 = await startNode(dirV, { sync: rawMemberSync });
    const libV2 = v2.library(id);
    const n2 = await startNode(dirN, { sync: rawMemberSync });
    const libN2 = n2.library(id);
    await waitFor(async () => (await libN2.status()).forks.length === 1, 'N to learn of the fork from the restarted V');
    await waitForConvergence([libV2, libN2]);
    expect(await titles(libN2)).toEqual(['A1', 'B1']);
  });

  it("brings a member that was behind the history before the fork into its log, not among the fork's runs", async () => {
    const { libV, member } = await startVictimCast();
    const id = libV.id;
    const m = member.device;
    const heads = new Map<string, Uint8Array>();
    const runs = [];
    let before = new Map<string, Uint8Array>();
    for (let s = 1; s <= 300; s++) {
      if (s === 300) before = new Map(heads);
      runs.push(...chunksOf(signedTuples(member.peer.key, id, [noteAt(m, s, `A${s}`)], heads)));
    }
    const [other] = chunksOf(signedTuples(member.peer.key, id, [noteAt(m, 300, 'B300')], before));
    const engine = engineOf(libV);
    await engine.applyRemoteChunks([runs[0]!]);
    // Another member relays the fork at 300 and its log from where V stands (1).
    const result = await engine.applyForkEvidence(m, [runs[299]!, other!], runs.slice(1, 299));
    expect(result).toMatchObject({ refused: 0 });
    expect(libV.versionVector()[m]).toBe(299);
    expect((await libV.status()).forks).toMatchObject([{ origin: m, seq: 300 }]);
    expect(await titles(libV)).toEqual([...runs.map((_, i) => `A${i + 1}`), 'B300'].sort());
  });

  it('that proves no fork, or does not verify, is refused and counted; nothing is stored', async () => {
    const { v, libV, libN, member } = await startVictimCast();
    const m = member.device;
    const heads = new Map<string, Uint8Array>();
    const one = signedTuples(member.peer.key, libV.id, [noteAt(m, 1, 'one')], heads);
    const two = signedTuples(member.peer.key, libV.id, [noteAt(m, 2, 'two')], heads);
    const digest = await waitForConvergence([libV, libN]);
    const errorsBefore = (await libV.status()).protocolErrors;
    const stranger = await generateKeyPair('Ed25519');
    const forged = signedTuples(stranger, libV.id, [noteAt(m, 1, 'forged')]);
    const ofN = signedTuples(member.peer.key, libV.id, [noteAt(libN.writer(), 1, 'not mine')]);
    const cases = [
      { what: 'fork evidence of one history', evidence: [one[0]!, two[0]!], message: /shows no fork/ },
      { what: 'fork evidence with a run signed by another key', evidence: [one[0]!, forged[0]!], message: /not signed by its author's key/ },
      { what: 'fork evidence with a run of another origin', evidence: [one[0]!, ofN[0]!], message: /another origin/ },
    ] as const;
    for (const { what, evidence, message } of cases) {
      await expectSessionRefused(
        member,
        v,
        libV.id,
        what,
        { heartbeatMs: 200 },
        (session) => session.send({ t: 'forked', library: libV.id, origin: m, evidence: [...evidence], runs: [] }),
        { code: 'PROTOCOL', message },
      );
    }
    expect((await libV.status()).protocolErrors).toBe(errorsBefore + cases.length);
    expect((await libV.status()).forks).toEqual([]);
    expect(await libV.digest()).toBe(digest);
    // Honest sync goes on.
    const after = randomUUID();
    await libN.upsert('note', { id: after, title: 'after', body: null });
    await waitFor(async () => (await libV.get('note', after)) !== undefined, "V to receive N's write");
  });
});

describe("a partner's heads", () => {
  it('confirm what it holds step by step while it writes ahead of this device, and its last head once it stops', async () => {
    const { v, libV, member } = await startVictimCast();
    const m = member.device;
    const base = libV.versionVector()[m] ?? 0;
    const heads = new Map(member.heads);
    const runs: ChunkTuple[][] = [];
    const ids: Uint8Array[] = [];
    for (let i = 1; i <= 4; i++) {
      runs.push(signedTuples(member.peer.key, libV.id, [noteAt(m, base + i, `A${i}`)], heads));
      ids.push(heads.get(m)!);
    }
    const session = await MemberSession.open(member, v, libV.id, { heartbeatMs: 200 });
    const acked = async () => (await libV.status()).partners.find((p) => p.device === m)!.acked[m] ?? 0;
    const push = async (batch: number, chunks: ChunkTuple[]) => {
      await session.send({ t: 'changes', library: libV.id, batch, chunks });
      await waitFor(() => session.of('ack').some((a) => a.batch === batch), `V to ack batch ${batch}`);
    };
    // Each head is past what V holds when it arrives (V checks it before the next batch is applied).
    await session.send({ t: 'heads', library: libV.id, heads: [[m, base + 2, ids[1]!]] });
    await push(1, runs[0]!);
    await session.send({ t: 'heads', library: libV.id, heads: [[m, base + 4, ids[3]!]] });
    await push(2, runs[1]!);
    // V holds the first head now: confirmed there, although a later head arrived meanwhile.
    await waitFor(async () => (await acked()) === base + 2, 'V to count the first head once it holds it');
    await push(3, [...runs[2]!, ...runs[3]!]);
    // And the last one once V holds it too, with no further heads.
    await waitFor(async () => (await acked()) === base + 4, 'V to count the last head once it holds it');
    expect(libV.versionVector()[m]).toBe(base + 4);
    expect(session.end).toBeUndefined();
  });
});
