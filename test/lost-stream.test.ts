/**
 * Streams that end under the node. A peer that closes, resets or dies (SIGKILL) in the middle
 * of the handshake is a lost stream (`NETWORK`), not bad input; only garbage counts as a
 * protocol error. A partner whose stream closes or resets while a backfill pulls from it, or
 * right after it pushed, is failed over: the run ends `done` from another partner. Real libp2p
 * on 127.0.0.1 (a pull's lost stream: the in-memory network); the peers are raw protocol
 * clients (test/helpers/raw-peer.ts, raw-member.ts), the killed one in its own process.
 */
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Library, NetworkError, ProtocolError, type SessionErrorEvent, type SyncNode } from '../src/index.js';
import type { Chunk } from '../src/peer-log/chunk.js';
import type { ChunkTuple, MessageOf } from '../src/protocol/messages.js';
import { ensureBuilt, killRunningChildren, LineChild, removeTempDirs, REPO_ROOT } from './helpers/child-process.js';
import { startNode, steadySync, stopAllNodes, waitFor, waitForConvergence } from './helpers/cluster.js';
import { joinAsRawMember, joinThroughRawMember, MemberSession, stopAllMemberSessions } from './helpers/raw-member.js';
import { libp2pStream, RawPeer, stopAllRawPeers } from './helpers/raw-peer.js';
import { engineOf } from '../src/library/library.js';

const HALF_HANDSHAKE_CHILD = join(REPO_ROOT, 'test', 'fixtures', 'half-handshake-child.mjs');

let entry: string;
beforeAll(async () => {
  entry = await ensureBuilt();
}, 120_000);

afterEach(async () => {
  stopAllMemberSessions();
  await killRunningChildren();
  await stopAllRawPeers();
  await stopAllNodes();
  await removeTempDirs();
});

function recordSessionErrors(node: SyncNode): SessionErrorEvent[] {
  const events: SessionErrorEvent[] = [];
  node.on('session-error', (event) => events.push(event));
  return events;
}

/** Every session-error must say what happened: a typed error with a code and a message. */
function expectTyped(events: readonly SessionErrorEvent[]): void {
  for (const { error } of events) {
    expect((error as { code?: unknown }).code, String(error)).toEqual(expect.any(String));
    expect(error.message, error.name).not.toBe('');
  }
}

/** A sends (the start of) a first frame: a length prefix announcing 64 bytes, and 8 of them. */
const HALF_FRAME = new Uint8Array([64, 1, 2, 3, 4, 5, 6, 7, 8]);

describe('a stream that ends during the handshake', () => {
  it('is NETWORK when the peer closes, resets or is killed; only garbage counts as a protocol error', async () => {
    const a = await startNode();
    const lib = await a.createLibrary({ name: 'handshakes' });
    const errors = recordSessionErrors(a);
    const base = (await lib.status()).protocolErrors;
    const attacker = await RawPeer.start();
    const from = (peer: string) => errors.filter((e) => e.peer === peer);

    const closing = await attacker.openUnframed(a);
    expect(await closing.write(HALF_FRAME)).toBe(true);
    await closing.close();
    await waitFor(() => from(attacker.peerId).length >= 1, 'a session-error for the closed stream');

    const resetting = await attacker.openUnframed(a);
    expect(await resetting.write(HALF_FRAME)).toBe(true);
    resetting.abort();
    await waitFor(() => from(attacker.peerId).length >= 2, 'a session-error for the reset stream');

    let opened: { peerId: string } | undefined;
    const child = new LineChild(HALF_HANDSHAKE_CHILD, [JSON.stringify({ entry, peer: a.peerId, addrs: a.multiaddrs() })], (line) => {
      opened = JSON.parse(line);
    });
    await child.waitFor(() => opened !== undefined, 'the child to open a stream', 30_000);
    await child.kill('SIGKILL');
    await waitFor(() => from(opened!.peerId).length >= 1, 'a session-error for the killed peer');

    for (const event of [...from(attacker.peerId), ...from(opened!.peerId)]) {
      expect(event.error, event.error.message).toBeInstanceOf(NetworkError);
      expect(event).toMatchObject({ direction: 'inbound', library: undefined });
    }
    expect(from(opened!.peerId)[0]!.error.message).toContain(opened!.peerId);
    expect((await lib.status()).protocolErrors).toBe(base);

    // Garbage is bad input: refused with PROTOCOL, and the only thing counted.
    const garbage = await attacker.open(a);
    await garbage.sendFrame(new Uint8Array([0xc1, 0xc1, 0xc1]));
    await garbage.ended('A to refuse the garbage');
    expect(garbage.messages).toMatchObject([{ t: 'error', code: 'PROTOCOL' }]);
    await waitFor(async () => (await lib.status()).protocolErrors === base + 1, 'the garbage to be counted');
    expect(from(attacker.peerId).at(-1)!.error).toBeInstanceOf(ProtocolError);
    expect(from(attacker.peerId)).toHaveLength(3);
    expectTyped(errors);
    expect((await lib.status()).protocolErrors).toBe(base + 1);
  });
});


const asTuple = (c: Chunk): ChunkTuple => [c.origin, c.firstSeq, c.lastSeq, c.entries, c.prev, c.sig, c.author];


/**
 * How the raw member M ends its stream with J: it closes the stream, resets it, or hangs up the
 * whole connection. Under a pull, J waits for M's second page; under a push, J's push to M
 * waits for M (which stopped reading) to drain, while J also waits for that page. A pull runs
 * on the in-memory network; a push on libp2p, where M stops reading its libp2p stream.
 */
describe.each([
  { under: 'a pull', end: 'closes' },
  { under: 'a pull', end: 'resets' },
  { under: 'a pull', end: 'hangs up' },
  { under: 'a push', end: 'closes' },
  { under: 'a push', end: 'resets' },
  { under: 'a push', end: 'hangs up' },
] as const)('a partner that $end under $under', ({ under, end }) => {
  it('is failed over: the backfill ends done from another partner, synced() resolves, every session-error is typed', async () => {
    const transport = under === 'a push' ? 'libp2p' : 'memory';
    const a = await startNode(undefined, { sync: steadySync, transport });
    const j = await startNode(undefined, { sync: steadySync, transport });
    const libA = await a.createLibrary({ name: 'lost partner' });
    // M sorts below A and J: only M opens sessions with them.
    const member = await joinAsRawMember(a, libA, [a, j], { transport });
    await libA.transaction(async (tx) => {
      for (let i = 0; i < 500; i++) await tx.upsert('note', { id: `n-${i}`, title: `note ${i}`, body: null });
    });
    const errorsOnJ = recordSessionErrors(j);
    // J joins through M: M is the partner its backfill pulls from first.
    const libJ: Library = await joinThroughRawMember(member, a, libA, j);

    // M serves A's log as its own: a first page, then leaves the second pull unanswered.
    const first = await engineOf(libA).chunksAfter({}, { maxRecords: 100, maxBytes: 1024 * 1024 });
    expect(first.hasMore).toBe(true);
    const pulls: Array<MessageOf<'pull-shared'>> = [];
    const session = await MemberSession.open(member, j, libA.id, {
      heartbeatMs: 200,
      shared: libA.versionVector(),
      answerPullShared: (pull) => {
        pulls.push(pull);
        if (pulls.length > 1) return undefined;
        return { t: 'shared-page', library: libA.id, req: pull.req, chunks: first.chunks.map(asTuple), hasMore: true, pruned: [] };
      },
    });
    await waitFor(() => pulls.length >= 2, 'J to ask M for its second page');
    expect(pulls[0]!.after).toEqual({});
    // J learnt of A from the first page: A is there to fail over to.
    await waitFor(
      async () => ['catching-up', 'live'].includes((await libJ.status()).partners.find((p) => p.peer === a.peerId)?.state ?? ''),
      'J to have a session with A',
    );
    expect((await libJ.status()).state).toBe('backfilling');
    if (under === 'a push') {
      // M stops reading (and granting window); J writes more than the stream's window.
      const stream = libp2pStream(session.stream);
      stream.pause();
      await libJ.transaction(async (tx) => {
        for (let i = 0; i < 20; i++) await tx.upsert('note', { id: `j-${i}`, title: `from j ${i}`, body: 'x'.repeat(20_000) });
      });
      await waitFor(() => stream.readBufferLength > 200_000, "J's push to fill M's window");
    }
    if (end === 'closes') await session.stream.close();
    else if (end === 'resets') session.stop();
    else await member.peer.transport.disconnect(j.peerId);

    await libJ.synced();
    await waitForConvergence([libA, libJ]);
    expect(libJ.versionVector()).toEqual(libA.versionVector());
    const runs = await libJ.syncHistory();
    expect(runs).toHaveLength(1);
    expect(runs[0]).toMatchObject({ kind: 'backfill', outcome: 'done', peers: [member.peer.peerId, a.peerId] });
    expect(runs[0]!.error).toBeUndefined();
    expect((await libJ.status()).error).toBeNull();
    expectTyped(errorsOnJ);
    const fromM = errorsOnJ.filter((e) => e.peer === member.peer.peerId);
    for (const event of fromM) expect(event.error).toBeInstanceOf(NetworkError);
    // A reset fails the stream; a close or a hang-up may just end it (a quiet end).
    if (end === 'resets') expect(fromM.length).toBeGreaterThanOrEqual(1);
    expect(errorsOnJ.filter((e) => e.peer !== member.peer.peerId)).toEqual([]);
    expect((await libJ.status()).protocolErrors).toBe(0);
  });
});
