/**
 * Issue 13, forged and equivocating log entries. A member could write under any other device's
 * origin, the receiver's own included, and send one seq with different contents to two
 * partners. Now every run of the log is signed by its origin's author and checked against the
 * author's member row wherever it arrives:
 * - a run under another member's origin, or under the receiver's own, signed with the
 *   attacker's key is refused (PROTOCOL), counted, and never stored;
 * - two different runs of one author for one place are a fork: the receiver keeps the run it
 *   holds in its log, applies the other too, records both (status().forks, the
 *   `origin-forked` event), relays the evidence, and keeps syncing (more in fork-evidence.test.ts).
 * Every honest replica's digest is unchanged by each attack and honest sync goes on.
 *
 * The in-memory network and SQLite files; the hostile member is a raw protocol peer.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeHlc, type Library, type OriginFork } from '../src/index.js';
import type { LogEntry } from '../src/peer-log/types.js';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { engineOf } from '../src/library/library.js';
import { deviceSignatures } from '../src/node/native-signatures.js';
import { encodeChunks } from '../src/peer-log/chunk.js';
import { signRun } from '../src/peer-log/signed-runs.js';
import { shareLibrary, startNode, startNodeWithKey, stopNode, useMemoryTransport, waitFor, waitForConvergence } from './helpers/cluster.js';
import { expectSessionRefused, MemberSession, type RawMember, rawMemberSync, startVictimCast, stopRawMemberTest } from './helpers/raw-member.js';
import { signedTuples } from './helpers/signed-runs.js';

useMemoryTransport();

afterEach(stopRawMemberTest);

/** A note upsert at `origin`#`seq`, as a device writes one. */
function noteAt(origin: string, seq: number, title: string): LogEntry {
  return {
    origin,
    seq,
    hlc: encodeHlc({ wallMs: Date.now(), counter: 0, deviceId: origin }),
    model: 'note',
    id: randomUUID(),
    op: 'upsert',
    fields: { title, body: null },
  };
}

/** V writes and N receives it; returns the common digest. */
async function honestSyncGoesOn(libV: Library, libN: Library): Promise<string> {
  const id = randomUUID();
  await libV.upsert('note', { id, title: 'after the attack', body: null });
  await waitFor(async () => (await libN.get('note', id)) !== undefined, "N to receive V's write after the attack");
  return waitForConvergence([libV, libN]);
}

async function expectForgeryRefused(member: RawMember, libV: Library, libN: Library, v: Parameters<typeof expectSessionRefused>[1], origin: string, what: string) {
  const digest = await waitForConvergence([libV, libN]);
  const errorsBefore = (await libV.status()).protocolErrors;
  const held = libV.versionVector()[origin] ?? 0;
  // Signed, but with the member's key: the origin's author is another device.
  const forged = signedTuples(member.peer.key, libV.id, [noteAt(origin, held + 1, 'forged')]);
  await expectSessionRefused(
    member,
    v,
    libV.id,
    what,
    { heartbeatMs: 200 },
    (session) => session.send({ t: 'changes', library: libV.id, batch: 1, chunks: forged }),
    { code: 'PROTOCOL', message: /not signed by its author's key/ },
  );
  expect((await libV.status()).protocolErrors).toBe(errorsBefore + 1);
  expect(libV.versionVector()[origin] ?? 0).toBe(held);
  expect(await libV.digest()).toBe(digest);
  const after = await honestSyncGoesOn(libV, libN);
  expect(after).not.toBe(digest);
}

describe('a forged run', () => {
  it("under another member's origin is refused and counted; nothing is stored", async () => {
    const { v, libV, n, libN, member } = await startVictimCast();
    await libN.upsert('note', { id: randomUUID(), title: 'by N', body: null });
    await waitForConvergence([libV, libN]);
    await expectForgeryRefused(member, libV, libN, v, libN.writer(), "a run of N's origin signed by the member");
    expect(n.deviceId).not.toBe(member.device);
  });

  it("under the receiver's own origin is refused and counted; its next write follows its own log", async () => {
    const { v, libV, libN, member } = await startVictimCast();
    await libV.upsert('note', { id: randomUUID(), title: 'by V', body: null });
    await waitForConvergence([libV, libN]);
    const own = libV.writer();
    const seq = libV.versionVector()[own]!;
    await expectForgeryRefused(member, libV, libN, v, own, "a run of V's own origin signed by the member");
    expect(libV.versionVector()[own]).toBe(seq + 1);
  });
});

describe('two runs of one author for one place (a fork)', () => {
  it('keeps the first in the log, applies both, records and reports them once, and relays the evidence; sync goes on', async () => {
    const { v, libV, libN, member } = await startVictimCast();
    const reported: OriginFork[] = [];
    libV.on('origin-forked', (fork) => reported.push(fork));
    const reportedOnN: OriginFork[] = [];
    libN.on('origin-forked', (fork) => reportedOnN.push(fork));
    const first = noteAt(member.device, 1, 'first copy');
    const session = await MemberSession.open(member, v, libV.id, { heartbeatMs: 200 });
    await session.send({ t: 'changes', library: libV.id, batch: 1, chunks: signedTuples(member.peer.key, libV.id, [first]) });
    await waitFor(() => session.of('ack').some((a) => a.batch === 1), 'V to ack the first run');
    await waitFor(() => libN.versionVector()[member.device] === 1, 'N to receive the first run from V');
    const digest = await waitForConvergence([libV, libN]);
    const errorsBefore = (await libV.status()).protocolErrors;

    // The same position, other content (a later write of the same note), signed by the same
    // (the member's own) key.
    const other = { ...noteAt(member.device, 1, 'second copy'), id: first.id, hlc: encodeHlc({ wallMs: Date.now() + 1_000, counter: 0, deviceId: member.device }) };
    await session.send({ t: 'changes', library: libV.id, batch: 2, chunks: signedTuples(member.peer.key, libV.id, [other]) });
    await waitFor(() => reported.length === 1, 'V to report the fork');
    expect(reported[0]).toMatchObject({ origin: member.device, device: member.device, seq: 1 });
    expect((await libV.status()).forks).toEqual(reported);
    // The log keeps the first run; both runs are applied (the later write wins), and the second
    // is not counted as bad input of the session.
    expect(libV.versionVector()[member.device]).toBe(1);
    await waitFor(async () => (await libV.get('note', first.id))?.title === 'second copy', 'V to apply the second run');
    expect((await libV.status()).protocolErrors).toBe(errorsBefore);
    expect(session.end).toBeUndefined();
    // N held only the first run: V's fork evidence shows it the fork and brings it the second.
    await waitFor(() => reportedOnN.length === 1, 'N to learn of the fork from V');
    expect(reportedOnN[0]).toMatchObject({ origin: member.device, seq: 1 });
    const forked = await waitForConvergence([libV, libN]);
    expect(forked).not.toBe(digest);
    expect(await libN.get('note', first.id)).toMatchObject({ title: 'second copy' });
    // The same fork again is not reported twice.
    await session.send({ t: 'changes', library: libV.id, batch: 3, chunks: signedTuples(member.peer.key, libV.id, [other]) });
    await waitFor(() => session.of('ack').some((a) => a.batch === 3), 'V to answer the repeated fork');
    expect(reported).toHaveLength(1);
    await honestSyncGoesOn(libV, libN);
  });
});

describe('runs whose author the receiver cannot place from its member list', () => {
  it("of a key-derived device need no member row: a joiner backfills pages of the inviter's writes made before its own row", async () => {
    // The creator's own member row is written at its first invite, after more than a page of
    // writes: the joiner checks those runs by the PeerId each names, which derives the origin.
    const a = await startNode();
    const libA = await a.createLibrary({ name: 'before any invite' });
    const body = 'x'.repeat(2_000);
    for (let i = 0; i < 8; i++) {
      await libA.transaction(async (tx) => {
        for (let k = 0; k < 100; k++) await tx.upsert('note', { id: `n-${i}-${k}`, title: `note ${i} ${k}`, body });
      });
    }
    const b = await startNode();
    const libB = await b.joinLibrary(await libA.createInvite());
    await libB.synced();
    await waitForConvergence([libA, libB]);
    expect((await libB.status()).protocolErrors).toBe(0);
  });
});

describe('a fork that honest members meet', () => {
  it('is recorded when both runs come in one message', async () => {
    const { v, libV, member } = await startVictimCast();
    const session = await MemberSession.open(member, v, libV.id, { heartbeatMs: 200 });
    const first = noteAt(member.device, 1, 'first copy');
    const other = { ...noteAt(member.device, 1, 'second copy'), id: first.id };
    const chunks = [...signedTuples(member.peer.key, libV.id, [first]), ...signedTuples(member.peer.key, libV.id, [other])];
    await session.send({ t: 'changes', library: libV.id, batch: 1, chunks });
    await waitFor(() => session.of('ack').some((a) => a.batch === 1), 'V to ack the batch');
    expect((await libV.status()).forks).toMatchObject([{ origin: member.device, seq: 1 }]);
    expect(libV.versionVector()[member.device]).toBe(1);
  });

  it('of a member that sent each of two partners another history: both record it and converge on both branches; their sync goes on', async () => {
    const { dirV, dirN, v: v0, n: n0, libV: libV0, member } = await startVictimCast();
    const id = libV0.id;
    const m = member.device;
    // Branch A (one run at 1) reaches V alone; branch B (1, then 2, as two runs) reaches N alone.
    await stopNode(n0);
    const toV = await MemberSession.open(member, v0, id, { heartbeatMs: 200 });
    await toV.send({ t: 'changes', library: id, batch: 1, chunks: signedTuples(member.peer.key, id, [noteAt(m, 1, 'A1')]) });
    await waitFor(() => toV.of('ack').some((a) => a.batch === 1), 'V to ack A1');
    toV.stop();
    await stopNode(v0);
    const n = await startNode(dirN, { sync: rawMemberSync });
    const libN = n.library(id);
    const heads = new Map<string, Uint8Array>();
    const toN = await MemberSession.open(member, n, id, { heartbeatMs: 200 });
    const branchB = [...signedTuples(member.peer.key, id, [noteAt(m, 1, 'B1')], heads), ...signedTuples(member.peer.key, id, [noteAt(m, 2, 'B2')], heads)];
    await toN.send({ t: 'changes', library: id, batch: 1, chunks: branchB });
    await waitFor(() => toN.of('ack').some((a) => a.batch === 1), 'N to ack B1, B2');
    toN.stop();

    const v = await startNode(dirV, { sync: rawMemberSync });
    const libV = v.library(id);
    // V meets branch B on N, N branch A on V: both record the fork, keep their own branch in the
    // log, and apply the other's, so neither differs from the other.
    await waitFor(async () => (await libV.status()).forks.length === 1, 'V to record the fork');
    await waitFor(async () => (await libN.status()).forks.length === 1, 'N to record the fork');
    expect((await libV.status()).forks).toMatchObject([{ origin: m, device: m, seq: 1 }]);
    expect((await libN.status()).forks).toMatchObject([{ origin: m, device: m, seq: 1 }]);
    await waitForConvergence([libV, libN]);
    const titles = async (lib: Library) => (await lib.list('note')).map((note) => note.title).filter((t) => /^[AB]\d$/.test(String(t))).sort();
    expect(await titles(libV)).toEqual(['A1', 'B1', 'B2']);
    expect(await titles(libN)).toEqual(['A1', 'B1', 'B2']);
    expect(libN.versionVector()[m]).toBe(2);
    // Honest writes still cross both ways, and V's session with N is not refused over it.
    const fromN = randomUUID();
    await libN.upsert('note', { id: fromN, title: 'by N after the fork', body: null });
    await waitFor(async () => (await libV.get('note', fromN)) !== undefined, "V to receive N's write after the fork");
    const fromV = randomUUID();
    await libV.upsert('note', { id: fromV, title: 'by V after the fork', body: null });
    await waitFor(async () => (await libN.get('note', fromV)) !== undefined, "N to receive V's write after the fork");
    expect((await libV.status()).protocolErrors).toBe(0);
    expect(libV.versionVector()[m]).toBe(1);
    await waitFor(async () => (await libV.status()).state === 'ready', 'V to be ready with N');
  });
});

describe("a fork of this device's own writer", () => {
  it('retires the writer: the next write goes to a fresh one, and reaches the partner', async () => {
    // Another copy of V's data directory (V's key) signed another run at V's second position.
    const key = await generateKeyPair('Ed25519');
    const v = await startNodeWithKey(key);
    const n = await startNode();
    const [libV, libN] = (await shareLibrary(v, [n])) as [Library, Library];
    await libV.upsert('note', { id: randomUUID(), title: 'first', body: null });
    await libV.upsert('note', { id: randomUUID(), title: 'second', body: null });
    await waitForConvergence([libV, libN]);
    const own = libV.writer();
    const held = libV.versionVector()[own]!;
    // N acknowledged everything, so V prunes its writer's runs, all but the one it ends at (it
    // stays, to prove forks there): the fork is met with that run alone, every time (the test
    // read the run before it, and failed when the prune came first). The copy's run follows the
    // same run as V's last one.
    await waitFor(async () => ((await engineOf(libV).prunedVector())[own] ?? 0) >= held - 1, "V to prune its writer's log but its last run");
    const { chunks } = await engineOf(libV).chunksAfter({ ...libV.versionVector(), [own]: held - 1 }, { maxRecords: 10, maxBytes: 1 << 20 });
    const last = chunks.find((c) => c.origin === own && c.firstSeq === held && c.lastSeq === held);
    expect(last, `V's run at ${own}#${held}`).toBeDefined();
    const signatures = deviceSignatures(key);
    const [body] = encodeChunks([{ ...noteAt(own, held, 'the copy'), hlc: encodeHlc({ wallMs: Date.now(), counter: 0, deviceId: own }) }]);
    const copy = signRun(signatures, libV.id, body!, last!.prev).chunk;
    // Applied (kept off the log), and relayed to N as fork evidence.
    expect(await engineOf(libV).applyRemoteChunks([copy])).toMatchObject({ applied: 1, forks: [{ origin: own, seq: held }] });
    await waitFor(async () => (await libN.list('note')).some((note) => note.title === 'the copy'), "N to receive the copy's run as fork evidence");

    const after = randomUUID();
    await libV.upsert('note', { id: after, title: 'after the fork', body: null });
    expect(libV.writer()).not.toBe(own);
    await waitFor(async () => (await libN.get('note', after)) !== undefined, "N to receive V's write after the fork");
    await waitForConvergence([libV, libN]);
  });
});
