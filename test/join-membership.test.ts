/**
 * Right after a join, the other members refuse the new member (`NOT_MEMBER`) until its member
 * row has reached them by ordinary sync. The joiner retries such a refusal quietly on a short
 * schedule of its own: it gets its sessions with every member soon after the row arrives, and
 * sees no storm of session-error events. A real non-member is still refused every time.
 * The other way round, a joiner still backfilling refuses members its backfill has not brought
 * yet, and does not report it. The in-memory network, nodes with their own SQLite files,
 * raw protocol members (test/helpers/raw-member.ts) where a test must control the timing.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { type Library, PROTOCOL_VERSION, type SessionErrorEvent, type SyncNode } from '../src/index.js';
import type { MessageOf } from '../src/protocol/messages.js';
import { removeTempDirs } from './helpers/child-process.js';
import { shareLibrary, startNode, startNodeWithKey, steadySync, stopAllNodes, useMemoryTransport, waitFor, waitForConvergence } from './helpers/cluster.js';
import { joinAsRawMember, joinThroughRawMember, MemberSession, type RawMember, stopAllMemberSessions } from './helpers/raw-member.js';
import { keyWhere, RawPeer, stopAllRawPeers } from './helpers/raw-peer.js';
import { engineOf } from '../src/library/library.js';

useMemoryTransport();

afterEach(async () => {
  stopAllMemberSessions();
  await stopAllRawPeers();
  await stopAllNodes();
  await removeTempDirs();
});

/**
 * A, B and C push and pull one run per batch (a batch never cuts a run, so at least one): the
 * 300 runs A writes before the join (one per write), and the joiner's member row after
 * them, reach B and C only after 300 round trips, while the joiner (default batches) has
 * learnt of B and C from its first page.
 */
const slowSync = { ...steadySync, batchRecords: 1 };

function notMemberEvents(node: SyncNode, peer?: string): SessionErrorEvent[] {
  const events: SessionErrorEvent[] = [];
  node.on('session-error', (event) => {
    if ((event.error as { code?: string }).code === 'NOT_MEMBER' && (peer === undefined || event.peer === peer)) events.push(event);
  });
  return events;
}

async function partnerState(lib: Library, peer: string): Promise<string | undefined> {
  return (await lib.status()).partners.find((p) => p.peer === peer)?.state;
}

describe('NOT_MEMBER right after a join', () => {
  it('the joiner gets live sessions with every member soon, with no error storm; a non-member is refused every time', async () => {
    const a = await startNode(undefined, { sync: slowSync });
    const b = await startNode(undefined, { sync: slowSync });
    const c = await startNode(undefined, { sync: slowSync });
    const [libA, libB, libC] = (await shareLibrary(a, [b, c])) as [Library, Library, Library];
    await waitForConvergence([libA, libB, libC]);
    // One write each: a run each, so that one batch carries one of them.
    for (let i = 0; i < 300; i++) await libA.upsert('note', { id: `n-${i}`, title: `note ${i}`, body: null });

    // D sorts below every member, so D opens each of its sessions.
    const d = await startNodeWithKey(await keyWhere((id) => [a, b, c].every((n) => id < n.peerId)), undefined, { sync: steadySync });
    const seenByD = notMemberEvents(d);
    const refusedByB = notMemberEvents(b, d.peerId);
    const refusedByC = notMemberEvents(c, d.peerId);
    const libD = await d.joinLibrary(await libA.createInvite());

    await waitFor(
      async () => (await partnerState(libD, b.peerId)) === 'live' && (await partnerState(libD, c.peerId)) === 'live',
      'D to have live sessions with B and C',
      // D's member row reaches B and C behind 1 000 one-record batches: slow on a loaded machine.
      60_000,
    );
    // B and C did refuse D until its member row reached them: the case this is about.
    expect(refusedByB.length + refusedByC.length).toBeGreaterThan(0);
    await libD.synced();
    await waitForConvergence([libA, libB, libC, libD]);
    // Those refusals were retried quietly: the joiner reported none of them.
    expect(seenByD).toEqual([]);

    // A real non-member is refused with NOT_MEMBER on every attempt, and each is reported.
    const stranger = await RawPeer.start(await keyWhere((id) => id > b.peerId));
    const refusedStranger = notMemberEvents(b, stranger.peerId);
    for (let attempt = 1; attempt <= 5; attempt++) {
      const stream = await stranger.open(b);
      await stream.send({ t: 'hello', v: [...PROTOCOL_VERSION], library: libB.id, device: crypto.randomUUID(), shared: {}, owned: {} });
      await stream.ended(`B to refuse the stranger (attempt ${attempt})`);
      expect(stream.messages).toMatchObject([{ t: 'error', code: 'NOT_MEMBER' }]);
      await waitFor(() => refusedStranger.length === attempt, `B to report refusal ${attempt}`);
    }
  }, 150_000);

  it('a joiner still backfilling refuses a member it does not know yet without reporting it, then accepts it; it invites only once synced', async () => {
    const a = await startNode(undefined, { sync: steadySync });
    const j = await startNode(undefined, { sync: steadySync });
    const libA = await a.createLibrary({ name: 'members arriving' });
    await libA.upsert('note', { id: 'seed', title: 'from a', body: null });
    // Two raw members, sorting below A and J (they open every session): J joins through M1,
    // which serves J's first page only when the test says so; M2 is a member J learns of from it.
    const m1: RawMember = await joinAsRawMember(a, libA, [a, j]);
    const m2: RawMember = await joinAsRawMember(a, libA, [a, j]);
    const seenByJ = notMemberEvents(j);
    const libJ = await joinThroughRawMember(m1, a, libA, j);
    let pull: MessageOf<'pull-shared'> | undefined;
    const bootstrap = await MemberSession.open(m1, j, libA.id, {
      heartbeatMs: 200,
      shared: libA.versionVector(),
      answerPullShared: (p) => {
        pull = p;
        return undefined;
      },
    });
    await waitFor(() => pull !== undefined, 'J to pull from M1');
    expect((await libJ.status()).state).toBe('backfilling');
    // Nor does it invite: its joiner would complete its own first sync from J's part of the
    // history (the simulator, seed 29).
    await expect(libJ.createInvite()).rejects.toMatchObject({ code: 'INVITE_BACKFILLING' });
    expect(await libJ.invites()).toEqual([]);

    const hello = { t: 'hello', v: [...PROTOCOL_VERSION], library: libA.id, device: m2.device, shared: {}, owned: {} };
    const early = await m2.peer.open(j);
    await early.send(hello);
    await early.ended('J to refuse M2, whose member row it does not hold yet');
    expect(early.messages).toMatchObject([{ t: 'error', code: 'NOT_MEMBER' }]);

    // M1 serves the whole log: J learns of M2 (and of A) and completes its backfill.
    const page = await engineOf(libA).chunksAfter(pull!.after, { maxRecords: 5_000, maxBytes: 1024 * 1024 });
    expect(page.hasMore).toBe(false);
    await bootstrap.send({
      t: 'shared-page',
      library: libA.id,
      req: pull!.req,
      chunks: page.chunks.map((c) => [c.origin, c.firstSeq, c.lastSeq, c.entries, c.prev, c.sig, c.author]),
      hasMore: false,
      pruned: [],
    });
    await libJ.synced();
    expect((await libJ.members()).map((m) => m.device)).toContain(m2.device);
    expect(await libJ.createInvite()).toEqual(expect.any(String));
    const later = await MemberSession.open(m2, j, libA.id, { heartbeatMs: 200 });
    expect(later.hello).toMatchObject({ t: 'hello', library: libA.id, device: j.deviceId });
    // The refusal while backfilling was not reported: J's member list was still arriving.
    expect(seenByJ).toEqual([]);
  });
});
