/**
 * Right after a join, the other members refuse the new member (`NOT_MEMBER`) until its member
 * row has reached them by ordinary sync. The joiner retries such a refusal quietly on a short
 * schedule of its own: it gets its sessions with every member soon after the row arrives, and
 * sees no storm of session-error events. A real non-member is still refused every time.
 * Real libp2p on 127.0.0.1, four nodes with their own SQLite files.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { type Library, type SessionErrorEvent, type SyncNode } from '../src/index.js';
import { removeTempDirs } from './helpers/child-process.js';
import { fastSync, shareLibrary, startNode, startNodeWithKey, stopAllNodes, waitFor, waitForConvergence } from './helpers/cluster.js';
import { keyWhere, RawPeer, stopAllRawPeers } from './helpers/raw-peer.js';

afterEach(async () => {
  await stopAllRawPeers();
  await stopAllNodes();
  await removeTempDirs();
});

/** No pruning, and no session may drop for load reasons during the test. */
const sync = { ...fastSync, peerTimeoutMs: 15_000, pruneIntervalMs: 3_600_000 };
/**
 * A, B and C push and pull one entry per batch: the entries A writes before the join, and the
 * joiner's member row after them, reach B and C only after a thousand round trips, while the
 * joiner (default batches) has learnt of B and C from its first page.
 */
const slowSync = { ...sync, batchRecords: 1 };

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
    await libA.transaction(async (tx) => {
      for (let i = 0; i < 1_000; i++) await tx.upsert('note', { id: `n-${i}`, title: `note ${i}`, body: null });
    });

    // D sorts below every member, so D opens each of its sessions.
    const d = await startNodeWithKey(await keyWhere((id) => [a, b, c].every((n) => id < n.peerId)), undefined, { sync });
    const seenByD = notMemberEvents(d);
    const refusedByB = notMemberEvents(b, d.peerId);
    const refusedByC = notMemberEvents(c, d.peerId);
    const libD = await d.joinLibrary(await libA.createInvite());
    const joinedAt = Date.now();

    await waitFor(
      async () => (await partnerState(libD, b.peerId)) === 'live' && (await partnerState(libD, c.peerId)) === 'live',
      'D to have live sessions with B and C',
      30_000,
    );
    // B and C did refuse D until its member row reached them: the case this is about.
    expect(refusedByB.length + refusedByC.length).toBeGreaterThan(0);
    expect(Date.now() - joinedAt).toBeLessThan(30_000);
    await libD.synced();
    await waitForConvergence([libA, libB, libC, libD]);
    // Those refusals were retried quietly: the joiner reported none of them.
    expect(seenByD).toEqual([]);

    // A real non-member is refused with NOT_MEMBER on every attempt, and each is reported.
    const stranger = await RawPeer.start(await keyWhere((id) => id > b.peerId));
    const refusedStranger = notMemberEvents(b, stranger.peerId);
    for (let attempt = 1; attempt <= 5; attempt++) {
      const stream = await stranger.open(b);
      await stream.send({ t: 'hello', v: [1, 0], library: libB.id, device: crypto.randomUUID(), shared: {}, owned: {} });
      await stream.ended(`B to refuse the stranger (attempt ${attempt})`);
      expect(stream.messages).toMatchObject([{ t: 'error', code: 'NOT_MEMBER' }]);
      await waitFor(() => refusedStranger.length === attempt, `B to report refusal ${attempt}`);
    }
  }, 90_000);
});
