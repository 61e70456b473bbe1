/**
 * Whom this node vouches for at the transport (connection gater exemption, relay reservations)
 * and whom it relays: members of a library it syncs, a relayed connection only between two of
 * them and never from a peer to itself; a library it no longer syncs (removed, left, given way
 * to another copy) vouches for nobody.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { LibraryReplicator } from '../src/replication/replicator.js';
import type { SyncNetwork } from '../src/replication/network.js';
import { ScriptedTransport, startNetwork } from './helpers/scripted-transport.js';

const networks: SyncNetwork[] = [];
afterEach(async () => {
  for (const network of networks.splice(0)) await network.stop();
});

/** A library with the member PeerIds `peers`, which this device syncs until `inactive` is set. */
function library(id: string, peers: string[]) {
  const state = { inactive: false };
  const replicator = {
    library: { id },
    get inactive() {
      return state.inactive;
    },
    sessions: new Map(),
    removedPeers: () => new Map(),
    partners: () => [],
    isMemberPeer: (peer: string) => peers.includes(peer),
    scheduleStatus: () => undefined,
    addressesChanged: () => undefined,
    stop: async () => undefined,
  } as unknown as LibraryReplicator;
  return { replicator, state };
}

describe('who is known and who is relayed', () => {
  it('relays between two members of one library it syncs, never a peer to itself, nothing once it stopped syncing', async () => {
    const transport = new ScriptedTransport();
    const network = startNetwork(transport, { now: () => 0, backoff: { minMs: 1_000, maxMs: 1_000 }, reconcileMs: 3_600_000 });
    networks.push(network);
    const shared = library('lib-1', ['peer-a', 'peer-b']);
    const other = library('lib-2', ['peer-c']);
    network.add(shared.replicator);
    network.add(other.replicator);

    expect(['peer-a', 'peer-b', 'peer-c', 'stranger'].map((p) => transport.isKnown(p))).toEqual([true, true, true, false]);
    expect(transport.mayRelay('peer-a', 'peer-b')).toBe(true);
    expect(transport.mayRelay('peer-a', 'peer-a')).toBe(false);
    // Members of two different libraries here share none.
    expect(transport.mayRelay('peer-a', 'peer-c')).toBe(false);
    expect(transport.mayRelay('stranger', 'peer-b')).toBe(false);

    // This device was removed from lib-1 (or left it): its members are strangers here now.
    shared.state.inactive = true;
    expect(['peer-a', 'peer-b', 'peer-c'].map((p) => transport.isKnown(p))).toEqual([false, false, true]);
    expect(transport.mayRelay('peer-a', 'peer-b')).toBe(false);
  });
});
