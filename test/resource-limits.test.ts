/**
 * Resources a peer can grow without bound (issue 10, item 6), against real libp2p on 127.0.0.1:
 * partial frames of non-members, ack vectors with invented origins, serving slots held by a
 * few pullers. Attackers are raw protocol clients (test/helpers/raw-peer.ts, raw-member.ts);
 * every wait polls a condition with a deadline.
 */
import { encodeUint8Array, encodingLength } from 'uint8-varint';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_FRAME_BYTES, PROTOCOL_VERSION, ProtocolError, type SessionErrorEvent, type SyncNode } from '../src/index.js';
import { MAX_HANDSHAKE_FRAME_BYTES } from '../src/protocol/messages.js';
import { makeTempDir, removeTempDirs } from './helpers/child-process.js';
import { fastSync, shareLibrary, startNode, stopAllNodes, stopNode, waitFor, waitForConvergence } from './helpers/cluster.js';
import { RawPeer, stopAllRawPeers, type UnframedStream } from './helpers/raw-peer.js';

afterEach(async () => {
  await stopAllRawPeers();
  await stopAllNodes();
  await removeTempDirs();
});

/** Node-wide budget of non-members' streams in their handshake (MAX_STRANGER_HANDSHAKES). */
const STRANGER_HANDSHAKES = 16;

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
    const a = await startNode(undefined, { sync });
    const dirB = await makeTempDir('lsync-limits-b-');
    let b = await startNode(dirB, { sync });
    const [libA, libB] = await shareLibrary(a, [b]);
    await libA!.upsert('note', { id: 'n1', title: 'before', body: null });
    await waitForConvergence([libA!, libB!]);
    const errorsOnA = recordSessionErrors(a);
    const base = (await libA!.status()).protocolErrors;

    const attacker = await RawPeer.start(undefined, { maxStreams: 64 });
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
    b = await startNode(dirB, { sync });
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
