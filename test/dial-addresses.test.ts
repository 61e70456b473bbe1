/**
 * Dialling a partner on every address known for it, against an unlucky real world: addresses
 * that a partner left behind and something else now answers on (a process that accepts TCP but
 * never speaks libp2p; on a network left behind, a host that does not answer at all). Each such
 * address costs a dial its per-address timeout; the live address must still be reached.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PeerInfo } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { MDNS_ANSWER_TTL_MS, MDNS_SILENCE_MS } from '../src/network/lan-discovery.js';
import { Libp2pTransport } from '../src/network/libp2p-transport.js';
import { waitFor } from './helpers/cluster.js';

const PROTOCOL = '/leaderless-sync-test/1.0.0';
const started: Libp2pTransport[] = [];
const servers: Server[] = [];
const sockets: Socket[] = [];

async function startTransport(): Promise<Libp2pTransport> {
  const transport = await Libp2pTransport.start({
    privateKey: await generateKeyPair('Ed25519'),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    protocol: PROTOCOL,
    maxFrameBytes: 1024,
    maxFirstFrameBytes: 1024,
    maxStreams: 8,
    maxStrangerConnections: 8,
  });
  started.push(transport);
  return transport;
}

/** A TCP port on 127.0.0.1 that nothing listens on (it was free a moment ago). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A TCP port on 127.0.0.1 whose process accepts connections and never sends a byte. */
async function silentPort(): Promise<number> {
  const server = createServer((socket) => void sockets.push(socket));
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as { port: number }).port;
}

/** `transport` hears a LAN answer of `peer` (what its mDNS service hands it; no multicast here). */
function hearLanAnswer(transport: Libp2pTransport, peer: string, addresses: string[]): void {
  const answer: PeerInfo = { id: peerIdFromString(peer), multiaddrs: addresses.map((a) => multiaddr(a)) };
  (transport as unknown as { discovered(peer: PeerInfo): void }).discovered(answer);
}

afterEach(async () => {
  vi.restoreAllMocks();
  for (const socket of sockets.splice(0)) socket.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
  await Promise.all(started.splice(0).map((t) => t.stop()));
});

describe('dialling every known address', () => {
  it('reaches the live address after five silent ones (a port held by a process that is not libp2p)', async () => {
    const a = await startTransport();
    const b = await startTransport();
    const silent = await Promise.all([1, 2, 3, 4, 5].map(() => silentPort()));
    const stale = silent.map((port) => `/ip4/127.0.0.1/tcp/${port}`);
    // All on loopback, so libp2p's sorter keeps this order: the live address is tried last.
    await a.connect(b.localPeer, [...stale, ...b.addresses()]);
    expect(a.isConnected(b.localPeer)).toBe(true);
  }, 120_000);

  it('also tries the addresses the peer store holds when the member row alone lists more than one dial tries', async () => {
    const a = await startTransport();
    const b = await startTransport();
    // A knows B, a member, at its live address from a connection (libp2p keeps it in the peer store).
    a.setKnownPeers((peer) => peer === b.localPeer);
    await a.connect(b.localPeer, b.addresses());
    await a.disconnect(b.localPeer);
    await waitFor(() => !a.isConnected(b.localPeer), 'A to disconnect from B');
    // A member row of B that lists 16 addresses (it may hold 32), none of them live any more.
    const row = await Promise.all(Array.from({ length: 16 }, async () => `/ip4/127.0.0.1/tcp/${await closedPort()}`));
    const tried: string[] = [];
    await a.connect(b.localPeer, row, { onDialling: (addresses) => tried.push(...addresses) });
    expect(a.isConnected(b.localPeer)).toBe(true);
    expect(tried).toHaveLength(16);
    expect(tried).toContain(`${b.addresses()[0]}`);
  }, 120_000);

  it("dials a member on its LAN answer's addresses while the answer holds (its records' TTL), not after", async () => {
    const a = await startTransport();
    const b = await startTransport();
    a.setKnownPeers((peer) => peer === b.localPeer);
    const answered = `/ip4/127.0.0.1/tcp/${await closedPort()}`;
    hearLanAnswer(a, b.localPeer, [answered, '/ip4/8.8.8.8/tcp/4001']);
    const dial = async () => {
      const tried: string[] = [];
      await a.connect(b.localPeer, b.addresses(), { onDialling: (addresses) => tried.push(...addresses) });
      await a.disconnect(b.localPeer);
      await waitFor(() => !a.isConnected(b.localPeer), 'A to disconnect from B');
      return tried;
    };
    // A public address in a LAN answer is never dialled (an honest answer holds none).
    expect(await dial()).toEqual([...b.addresses(), `${answered}/p2p/${b.localPeer}`]);
    const now = Date.now();
    vi.spyOn(Date, 'now').mockImplementation(() => now + MDNS_ANSWER_TTL_MS + 1_000);
    expect(await dial()).toEqual(b.addresses());
  }, 60_000);

  it("reports a member's LAN answer only when it tells something new, so its backoff holds against repeats", async () => {
    const a = await startTransport();
    const member = (await startTransport()).localPeer;
    const stranger = (await startTransport()).localPeer;
    a.setKnownPeers((peer) => peer === member);
    const reports: string[] = [];
    a.onPeerDiscovered((peer) => reports.push(peer));
    const x = '/ip4/192.168.1.20/tcp/4001';
    const y = '/ip4/192.168.1.20/tcp/4002/ws';
    hearLanAnswer(a, member, [x]);
    hearLanAnswer(a, member, [x]);
    hearLanAnswer(a, stranger, [x]);
    expect(reports).toEqual([member]);
    // Other addresses are news; the same ones again (in any order) are not.
    hearLanAnswer(a, member, [y, x]);
    hearLanAnswer(a, member, [x, y]);
    expect(reports).toEqual([member, member]);
    // After a silence, the same answer is news: the member was away and is back.
    const now = Date.now();
    vi.spyOn(Date, 'now').mockImplementation(() => now + MDNS_SILENCE_MS + 1_000);
    hearLanAnswer(a, member, [x, y]);
    expect(reports).toEqual([member, member, member]);
  });
});
