/**
 * Resources a peer can grow without bound (issue 10, item 6): partial frames of non-members
 * (real libp2p on 127.0.0.1: the attacker writes below the framing, on streams and connections
 * of its own), ack vectors with invented origins and serving slots held by a few pullers (the
 * in-memory network). Attackers are raw protocol clients (test/helpers/raw-peer.ts, raw-member.ts);
 * every wait polls a condition with a deadline.
 */
import { encodeUint8Array, encodingLength } from 'uint8-varint';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_FRAME_BYTES, PROTOCOL_VERSION, ProtocolError, type SessionErrorEvent, type SyncNode } from '../src/index.js';
import { MAX_HANDSHAKE_FRAME_BYTES, MAX_VECTOR_ORIGINS } from '../src/protocol/messages.js';
import { makeTempDir } from './helpers/child-process.js';
import { fastSync, shareLibrary, startNode, stopNode, useMemoryTransport, waitFor, waitForConvergence } from './helpers/cluster.js';
import { joinAsRawMember, MemberSession, stopRawMemberTest } from './helpers/raw-member.js';
import { RawPeer, type UnframedStream } from './helpers/raw-peer.js';

useMemoryTransport();

afterEach(stopRawMemberTest);

/** Node-wide budget of non-members' streams in their handshake (MAX_STRANGER_HANDSHAKES). */
const STRANGER_HANDSHAKES = 16;
/** Node-wide budget of one peer's streams in their handshake (MAX_PEER_HANDSHAKES). */
const PEER_HANDSHAKES = 64;

function lengthPrefix(length: number): Uint8Array {
  const bytes = new Uint8Array(encodingLength(length));
  encodeUint8Array(length, bytes);
  return bytes;
}

/** A length prefix announcing `length` bytes, and `sent` bytes of the payload. */
function partialFrame(length: number, sent: number): Uint8Array {
  const prefix = lengthPrefix(length);
  const bytes = new Uint8Array(prefix.byteLength + sent).fill(7);
  bytes.set(prefix);
  return bytes;
}

function recordSessionErrors(node: SyncNode): SessionErrorEvent[] {
  const events: SessionErrorEvent[] = [];
  node.on('session-error', (event) => events.push(event));
  return events;
}

describe('partial frames from a non-member', () => {
  it('a large first frame is refused at once, at most 16 handshakes are held, the rest reset; members keep syncing', async () => {
    // Handshakes held for the whole test, and a session that load cannot time out.
    const sync = { ...fastSync, requestTimeoutMs: 120_000, peerTimeoutMs: 15_000 };
    const a = await startNode(undefined, { sync, transport: 'libp2p' });
    const dirB = await makeTempDir('lsync-limits-b-');
    let b = await startNode(dirB, { sync, transport: 'libp2p' });
    const [libA, libB] = await shareLibrary(a, [b]);
    await libA!.upsert('note', { id: 'n1', title: 'before', body: null });
    await waitForConvergence([libA!, libB!]);
    const errorsOnA = recordSessionErrors(a);
    const base = (await libA!.status()).protocolErrors;

    const attacker = await RawPeer.start(undefined, { maxStreams: 64, transport: 'libp2p' });
    // A first frame announcing the whole frame limit, or one byte over the handshake limit:
    // refused from the prefix, as bad input, before the payload is held.
    for (const [n, length] of [MAX_FRAME_BYTES, MAX_HANDSHAKE_FRAME_BYTES + 1].entries()) {
      const stream = await attacker.openUnframed(a);
      expect(await stream.write(partialFrame(length, 64 * 1024))).toBe(true);
      expect((await stream.ended(`A to refuse a first frame of ${length} bytes`)).kind).toBe('reset');
      await waitFor(async () => (await libA!.status()).protocolErrors === base + n + 1, `protocolErrors to count frame #${n}`);
    }
    const refusals = errorsOnA.filter((e) => e.peer === attacker.peerId);
    expect(refusals).toHaveLength(2);
    for (const e of refusals) {
      expect(e.error).toBeInstanceOf(ProtocolError);
      expect(e.error.message).toMatch(/first frame \(handshake\) of \d+ bytes exceeds the limit of 131072/);
    }

    // Partial first frames within the limit: at most 16 are held (until the handshake timeout),
    // every stream beyond them is reset at once, unread and unanswered.
    const streams: UnframedStream[] = [];
    for (let i = 0; i < STRANGER_HANDSHAKES + 8; i++) {
      const stream = await attacker.openUnframed(a);
      await stream.write(partialFrame(MAX_HANDSHAKE_FRAME_BYTES, MAX_HANDSHAKE_FRAME_BYTES - 1));
      streams.push(stream);
    }
    const ended = () => streams.filter((s) => s.end !== undefined);
    await waitFor(() => ended().length >= 8, 'the streams beyond the budget to be reset');
    expect(ended().map((s) => s.chunks.length)).toEqual(Array(8).fill(0));

    // Members sync on, and a member's new session is not held back by the budget.
    await libA!.upsert('note', { id: 'n2', title: 'during the attack', body: null });
    await stopNode(b);
    b = await startNode(dirB, { sync, transport: 'libp2p' });
    const libB2 = b.library(libA!.id);
    await libB2.upsert('note', { id: 'n3', title: 'from b after its restart', body: null });
    await waitForConvergence([libA!, libB2]);
    expect(await libB2.get('note', 'n2')).toMatchObject({ title: 'during the attack' });
    expect(ended()).toHaveLength(8);
    expect((await libA!.status()).protocolErrors).toBe(base + 2);

    // Once the held streams end, non-members are served again: a hello is answered NOT_MEMBER.
    for (const stream of streams) stream.stream.abort(new Error('attacker gave up'));
    await waitFor(async () => {
      const probe = await attacker.open(a);
      await probe.send({ t: 'hello', v: [...PROTOCOL_VERSION], library: libA!.id, device: crypto.randomUUID(), shared: {}, owned: {} });
      await probe.ended('the probe to end');
      return probe.messages.some((m) => m.t === 'error' && m.code === 'NOT_MEMBER');
    }, 'a hello of a non-member to be answered again');
  });
});

describe('partial first frames from a member', () => {
  it('at most 64 of one peer’s handshakes are held node-wide, over any number of connections; the rest reset', async () => {
    // Handshakes held for the whole test, and a session that load cannot time out.
    const sync = { ...fastSync, requestTimeoutMs: 120_000, peerTimeoutMs: 15_000 };
    const a = await startNode(undefined, { sync, transport: 'libp2p' });
    const b = await startNode(undefined, { sync, transport: 'libp2p' });
    const [libA, libB] = await shareLibrary(a, [b]);
    // A member is a known peer: the stranger budget does not apply to it (nor to any PeerId a
    // member row names, and members write member rows), so its own budget must bound it.
    const member = await joinAsRawMember(a, libA!, [a, b], { maxStreams: 64, transport: 'libp2p' });
    const streams: UnframedStream[] = [];
    for (let c = 0; c < 3; c++) {
      const connection = await member.peer.newConnection(a);
      for (let i = 0; i < 40; i++) {
        const stream = await connection.openUnframed();
        await stream.write(partialFrame(MAX_HANDSHAKE_FRAME_BYTES, MAX_HANDSHAKE_FRAME_BYTES - 1));
        streams.push(stream);
      }
    }
    const ended = () => streams.filter((s) => s.end !== undefined);
    await waitFor(() => ended().length >= streams.length - PEER_HANDSHAKES, 'the streams beyond the member’s budget to be reset');
    expect(ended().map((s) => s.chunks.length)).toEqual(Array(streams.length - PEER_HANDSHAKES).fill(0));

    // Other members sync on meanwhile.
    await libA!.upsert('note', { id: 'during', title: 'during the attack', body: null });
    await libB!.upsert('note', { id: 'from-b', title: 'from b', body: null });
    await waitForConvergence([libA!, libB!]);
    expect(ended()).toHaveLength(streams.length - PEER_HANDSHAKES);
  });
});

/** A vector of `entries` origins nobody knows, each at `seq`. */
function invented(entries: number, seq: number): Record<string, number> {
  return Object.fromEntries(Array.from({ length: entries }, () => [crypto.randomUUID(), seq]));
}

describe('vectors with invented origins', () => {
  it('acks keep known origins only, at most the member count; a claim never served ends the session, not sync', async () => {
    const a = await startNode(undefined, { sync: { ...fastSync, peerTimeoutMs: 15_000 } });
    const libA = await a.createLibrary({ name: 'acks' });
    await libA.upsert('note', { id: 'n1', title: 'one', body: null });
    const raw = await joinAsRawMember(a, libA);
    const ownA = libA.versionVector()[a.deviceId]!;
    const session = await MemberSession.open(raw, a, libA.id, { heartbeatMs: 200 });
    for (let i = 0; i < 30; i++) {
      await session.ack(i === 0 ? null : i, { ...invented(MAX_VECTOR_ORIGINS - 1, 9), [a.deviceId]: ownA }, invented(MAX_VECTOR_ORIGINS, 9));
    }
    // Only heads naming A's runs count as acks: those of invented origins (any id) and A's own.
    await waitFor(() => session.count('heads') >= 1, "A's heads");
    const someId = session.of('heads')[0]!.heads[0]![2];
    await session.send({ t: 'heads', library: libA.id, heads: Object.keys(invented(MAX_VECTOR_ORIGINS - 1, 9)).map((o) => [o, 9, someId]) });
    await session.echoHeads([a.deviceId]);
    // A handles frames in order: once this pull is answered, every frame before it was handled
    // (heads are compared beside the read loop: the wait for the ack below covers them).
    await session.send({ t: 'pull-shared', library: libA.id, req: 1, after: libA.versionVector(), maxRecords: 10, maxBytes: 1_000 });
    await waitFor(() => session.received.some((m) => (m.t === 'shared-page' || m.t === 'busy') && m.req === 1), 'the pull to be answered');

    const partnerOf = async (device: string) => (await libA.status()).partners.find((p) => p.device === device)!;
    const members = await libA.members();
    await waitFor(async () => (await partnerOf(raw.device)).acked[a.deviceId] === ownA, "the member's ack of A's origin");
    const partner = await partnerOf(raw.device);
    expect(partner.acked).toEqual({ [a.deviceId]: ownA });
    expect(Object.keys(partner.acked).length).toBeLessThanOrEqual(members.length);
    expect(partner.ackedOwned).toEqual({});
    expect(session.end).toBeUndefined();
    const errorsBefore = (await libA.status()).protocolErrors;

    // The raw member claimed to hold changes of those origins: A's next catch-up (when C's
    // session opens) asks it for them, gets nothing, and ends that session as bad input. The
    // run goes on with C, whose write reaches A.
    const c = await startNode();
    const libC = await c.joinLibrary(await libA.createInvite());
    await libC.upsert('note', { id: 'from-c', title: 'c', body: null });
    await waitFor(() => (libA.versionVector()[libC.writer()] ?? 0) > 0, "C's write to reach A");
    await session.ended('A to end the session of the member that advertised changes it never served');
    await waitFor(async () => (await libA.status()).protocolErrors > errorsBefore, 'the bad claim to be counted');
    await waitForConvergence([libA, libC]);

    // C, a member A learned of after those acks, is known from then on: a later claim counts.
    // (C's write went to the writer C appends to, which A now holds.)
    const writerC = libC.writer();
    const again = await MemberSession.open(raw, a, libA.id, { shared: { [writerC]: 1 }, heartbeatMs: 200 });
    await waitFor(() => again.of('heads').some((m) => m.heads.some(([o]) => o === writerC)), "A's head of C's origin");
    await again.echoHeads([writerC]);
    await waitFor(async () => (await partnerOf(raw.device)).acked[writerC] === 1, "the ack of C's origin to be kept");
    expect((await partnerOf(raw.device)).acked).toEqual({ [a.deviceId]: ownA, [writerC]: 1 });
    expect(again.end).toBeUndefined();
  });
});

describe('serving slots', () => {
  it('a member pulling in a loop cannot hold the only slot: a restarted member still catches up', async () => {
    const steady = { ...fastSync, peerTimeoutMs: 15_000 };
    const a = await startNode(undefined, { sync: { ...steady, maxConcurrentServes: 1 } });
    const dirB = await makeTempDir('lsync-serving-b-');
    const syncB = { ...steady, batchRecords: 200 };
    let b = await startNode(dirB, { sync: syncB });
    const [libA, libB] = await shareLibrary(a, [b]);
    await waitForConvergence([libA!, libB!]);
    const raw = await joinAsRawMember(a, libA!, [a, b]);
    const puller = await MemberSession.open(raw, a, libA!.id, { heartbeatMs: 200 });

    await stopNode(b);
    await libA!.transaction(async (tx) => {
      for (let i = 0; i < 2_000; i++) await tx.upsert('note', { id: `while-b-was-down-${i}`, title: `note ${i}`, body: null });
    });

    // The raw member pulls again as soon as each reply arrives, busy or not, for the whole test.
    let pulling = true;
    let served = 0;
    const loop = (async () => {
      for (let req = 1; pulling && !puller.end; req++) {
        await puller.send({ t: 'pull-shared', library: libA!.id, req, after: {}, maxRecords: 1, maxBytes: 1_000 });
        await waitFor(() => puller.end !== undefined || puller.received.some((m) => 'req' in m && m.req === req), `the reply to pull ${req}`);
        if (puller.of('shared-page').some((m) => m.req === req)) served += 1;
      }
    })();
    await waitFor(() => served >= 3, 'the raw member to hold the serving slot');

    const restartedAt = Date.now();
    b = await startNode(dirB, { sync: syncB });
    const libB2 = b.library(libA!.id);
    const caughtUp = async () => (await libB2.syncHistory()).find((r) => r.startedAt >= restartedAt && r.outcome === 'done');
    await waitFor(async () => (await caughtUp()) !== undefined, "B's catch-up to complete", 60_000);
    await waitForConvergence([libA!, libB2]);
    // B did wait for the slot, and the raw member is served on, in its turns.
    const run = (await caughtUp())!;
    expect(run).toMatchObject({ kind: 'catch-up', added: 2_000 });
    expect(run.busyReplies).toBeGreaterThan(0);
    const servedBefore = served;
    await waitFor(() => served > servedBefore, 'the raw member to be served again');
    pulling = false;
    await loop;
    expect(puller.end).toBeUndefined();
  }, 120_000);
});
