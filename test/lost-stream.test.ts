/**
 * Streams that end under the node: a peer that closes, resets or dies (SIGKILL) in the middle
 * of the handshake is a lost stream (`NETWORK`), not bad input; only garbage counts as a
 * protocol error. Real libp2p on 127.0.0.1; the peers are raw protocol clients
 * (test/helpers/raw-peer.ts), the killed one in its own process.
 */
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { NetworkError, ProtocolError, type SessionErrorEvent, type SyncNode } from '../src/index.js';
import { ensureBuilt, killRunningChildren, LineChild, removeTempDirs, REPO_ROOT } from './helpers/child-process.js';
import { startNode, stopAllNodes, waitFor } from './helpers/cluster.js';
import { RawPeer, stopAllRawPeers } from './helpers/raw-peer.js';

const HALF_HANDSHAKE_CHILD = join(REPO_ROOT, 'test', 'fixtures', 'half-handshake-child.mjs');

let entry: string;
beforeAll(async () => {
  entry = await ensureBuilt();
}, 120_000);

afterEach(async () => {
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
