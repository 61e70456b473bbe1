import type { PeerDiscovery, PeerInfo, Startable } from '@libp2p/interface';
import { type MulticastDNSComponents, mdns } from '@libp2p/mdns';
import { isPrivate } from '@libp2p/utils';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';

/**
 * The DNS-SD service this node queries for and answers as (RFC 6763 `_<service>._udp.local`,
 * the service label at most 15 characters). Not libp2p's default `_p2p._udp.local`: other
 * libp2p applications on the LAN neither hear from us nor fill our peer store, and we never
 * answer their queries.
 */
export const MDNS_SERVICE_TAG = '_leaderless-sync._udp.local';

/**
 * How often the node multicasts its query. Each query makes every other node of the service
 * answer, so a partner that changed address is found within this time even if neither side
 * restarts; a few small packets per interval and device are nothing on a home or office LAN.
 */
export const MDNS_QUERY_INTERVAL_MS = 5_000;

/** The TTL of the records @libp2p/mdns answers with (120 s): how long an answer holds. */
export const MDNS_ANSWER_TTL_MS = 120_000;

/**
 * A member silent on the LAN this long was away (it answers every query, ours at least every
 * MDNS_QUERY_INTERVAL_MS): its next answer is news even if it names the same addresses.
 */
export const MDNS_SILENCE_MS = 3 * MDNS_QUERY_INTERVAL_MS;

/** The mDNS service as the transport sees it: started and stopped by libp2p, and heard. */
export interface LanDiscovery extends Startable {
  isStarted(): boolean;
  /** Every answer heard, from anyone on the LAN. */
  onPeer(listener: (peer: PeerInfo) => void): void;
}

/**
 * The libp2p service that discovers (and answers) other sync nodes on the LAN. Deliberately not
 * a libp2p peer discovery: libp2p would put every answer's PeerId and addresses in its peer
 * store, which nothing ever empties, and anyone on the LAN can send any number of answers, each
 * with a new PeerId. The transport keeps what members announce instead (bounded).
 */
export function lanDiscoveryService(): (components: MulticastDNSComponents) => LanDiscovery {
  return (components) => {
    const service = mdns({ serviceTag: MDNS_SERVICE_TAG, interval: MDNS_QUERY_INTERVAL_MS })(components) as PeerDiscovery &
      Startable & { isStarted(): boolean };
    return {
      start: () => service.start(),
      stop: () => service.stop(),
      isStarted: () => service.isStarted(),
      onPeer: (listener) => service.addEventListener('peer', (evt) => listener(evt.detail)),
    };
  };
}

/**
 * The addresses of a LAN answer worth dialling, at most `limit`: those @libp2p/mdns announces
 * (private and loopback ones, the only kind an honest answer holds). Answers are not
 * authenticated: a forged one naming a member must not make the node dial hosts on the
 * internet, or resolve DNS names, for whoever sent it.
 */
export function lanDialAddresses(addresses: readonly Multiaddr[], limit: number): Multiaddr[] {
  return addresses.filter((address) => isPrivate(address) && address.getComponents()[0]?.name.startsWith('ip')).slice(0, limit);
}

/**
 * Whether announcing this node on the LAN could help anyone: some listen address is reachable
 * from another machine (an IP address other than loopback, the wildcards included, or a host
 * name other than localhost). A node that listens on loopback only, or nowhere, runs no mDNS at
 * all, so it sends nothing onto the network (its queries would be for nothing: no one on the
 * LAN could reach it, and it could reach partners' addresses without mDNS just as well).
 * Addresses that do not parse or are not IP/DNS (a relay circuit) are no LAN address.
 */
export function mdnsWorthwhile(listen: readonly string[]): boolean {
  return listen.some(isLanListenAddress);
}

function isLanListenAddress(text: string): boolean {
  let host: { name: string; value?: string } | undefined;
  try {
    host = multiaddr(text).getComponents()[0];
  } catch {
    return false;
  }
  const value = host?.value ?? '';
  switch (host?.name) {
    case 'ip4':
      return !value.startsWith('127.');
    case 'ip6':
      // multiaddr normalises IPv4-mapped loopback (::ffff:127.x.y.z) to ::ffff:7fxx:yyzz.
      return value !== '::1' && !/^::ffff:7f[0-9a-f]{2}:/i.test(value);
    case 'dns':
    case 'dns4':
    case 'dns6':
      return value !== 'localhost' && !value.endsWith('.localhost');
    default:
      return false;
  }
}
