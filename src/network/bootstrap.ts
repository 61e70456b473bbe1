import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { ValidationError } from '../errors.js';
import { MAX_ADDR_LENGTH, MAX_MEMBER_ADDRS } from '../models/system.js';
import type { BootstrapPeer } from '../replication/network.js';

/**
 * The `bootstrap` option of `createSyncNode`: multiaddr strings, each ending in `/p2p/<PeerId>`
 * (the PeerId is what authenticates the always-on node; an address alone could reach anyone).
 */
export function parseBootstrap(value: unknown): BootstrapPeer[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.length > MAX_MEMBER_ADDRS) {
    throw new ValidationError(`createSyncNode: bootstrap must be an array of at most ${MAX_MEMBER_ADDRS} multiaddr strings`);
  }
  return value.map((addr: unknown) => {
    const fail = () =>
      new ValidationError(`createSyncNode: bootstrap address ${JSON.stringify(addr)} is not a multiaddr string ending in /p2p/<PeerId>`);
    if (typeof addr !== 'string' || addr.length > MAX_ADDR_LENGTH) throw fail();
    try {
      const last = multiaddr(addr).getComponents().at(-1);
      if (last?.name !== 'p2p' || last.value === undefined) throw fail();
      return { peer: peerIdFromString(last.value).toString(), addr };
    } catch {
      throw fail();
    }
  });
}
