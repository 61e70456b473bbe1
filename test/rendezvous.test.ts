/**
 * Issue 11, rendezvous peers: `createSyncNode({ bootstrap })`, the members-only circuit relay
 * every node runs, and the upgrade of a relayed partner connection to a direct one.
 *
 * Real libp2p on 127.0.0.1 and SQLite files; nodes in process, restarted from their data
 * directories. A node started with `listen: []` has no direct address at all: its partners can
 * reach it only through its relay slot on the rendezvous member R.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { createSyncNode, type Library, NetworkError, type PartnerStatus, type SyncNode, ValidationError } from '../src/index.js';
import { makeTempDir } from './helpers/child-process.js';
import { clusterModels, startNode, steadySync, stopAllNodes, stopNode, waitFor, waitForConvergence } from './helpers/cluster.js';
import { RawPeer, stopAllRawPeers } from './helpers/raw-peer.js';

afterEach(async () => {
  await stopAllRawPeers();
  await stopAllNodes();
});

/** The status `lib` shows of the partner `peer`. */
async function partner(lib: Library, peer: string): Promise<PartnerStatus | undefined> {
  return (await lib.status()).partners.find((p) => p.peer === peer);
}

/** Waits until `lib` has a live session with `peer` over a connection of `kind`. */
async function waitLive(lib: Library, peer: string, kind: 'direct' | 'relayed', what: string): Promise<void> {
  await waitFor(async () => {
    const p = await partner(lib, peer);
    return p?.state === 'live' && p.connection === kind;
  }, what, 30_000);
}

/** A node that knows only `bootstrap` (its data directory is returned for restarts). */
async function startMember(bootstrap: SyncNode, listen: string[]): Promise<{ node: SyncNode; dir: string }> {
  const dir = await makeTempDir('lsync-rdv-');
  const node = await startNode(dir, { listen, bootstrap: [bootstrap.multiaddrs()[0]!], sync: steadySync });
  return { node, dir };
}

/**
 * A rendezvous member R with a library that A and B joined by R's invites. Neither A nor B has a
 * direct address: each is reachable only through its relay slot on R.
 */
async function meetThroughR() {
  const r = await startNode(undefined, { sync: steadySync });
  const libR = await r.createLibrary({ name: 'rendezvous' });
  const a = await startMember(r, []);
  const b = await startMember(r, []);
  const libA = await a.node.joinLibrary(await libR.createInvite());
  const libB = await b.node.joinLibrary(await libR.createInvite());
  return { r, libR, a, b, libA, libB };
}

describe('the bootstrap option', () => {
  it('refuses anything but multiaddr strings ending in /p2p/<PeerId>, with a typed error', async () => {
    const dataDir = await makeTempDir('lsync-rdv-');
    const bad: unknown[] = [
      'not-an-array',
      ['/ip4/127.0.0.1/tcp/4001'],
      ['nonsense'],
      [42],
      ['/ip4/127.0.0.1/tcp/4001/p2p/not-a-peer-id'],
    ];
    for (const bootstrap of bad) {
      await expect(
        createSyncNode({ dataDir, models: clusterModels, listen: [], bootstrap: bootstrap as string[] }),
      ).rejects.toThrow(ValidationError);
    }
  });
});

describe('a rendezvous member', () => {
  it('is where members that know only it meet and converge, after every address changed', async () => {
    const rDir = await makeTempDir('lsync-rdv-');
    let r = await startNode(rDir, { sync: steadySync });
    const libR = await r.createLibrary({ name: 'rendezvous' });
    const a = await startMember(r, ['/ip4/127.0.0.1/tcp/0']);
    const b = await startMember(r, ['/ip4/127.0.0.1/tcp/0']);
    await a.node.joinLibrary(await libR.createInvite());
    await b.node.joinLibrary(await libR.createInvite());
    await waitForConvergence([libR, a.node.library(libR.id), b.node.library(libR.id)]);

    // Everyone stops; R comes back on a new port, so the member rows A and B hold name only
    // R's old address; A and B come back on new ports too. Only the bootstrap address leads
    // anywhere, and through R's member rows A and B learn each other's new addresses.
    await Promise.all([stopNode(a.node), stopNode(b.node), stopNode(r)]);
    r = await startNode(rDir, { sync: steadySync });
    const restart = (dir: string) => startNode(dir, { listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [r.multiaddrs()[0]!], sync: steadySync });
    const nodeA = await restart(a.dir);
    const nodeB = await restart(b.dir);
    const [onR, onA, onB] = [r.library(libR.id), nodeA.library(libR.id), nodeB.library(libR.id)];
    await onA.upsert('note', { id: 'from-a', title: 'written on A after the restart', body: null });
    await onB.upsert('note', { id: 'from-b', title: 'written on B after the restart', body: null });
    await waitForConvergence([onR, onA, onB]);
    expect(await onA.get('note', 'from-b')).toBeDefined();
    expect(await onB.get('note', 'from-a')).toBeDefined();
  });

  it('relays a live session between members that cannot dial each other, and nothing for a stranger', async () => {
    const { r, libR, a, b, libA, libB } = await meetThroughR();
    await waitLive(libA, b.node.peerId, 'relayed', 'A live with B through R');
    await waitLive(libB, a.node.peerId, 'relayed', 'B live with A through R');
    expect((await partner(libA, r.peerId))?.connection).toBe('direct');
    // B's member row, as A holds it, names B's relayed addresses on R only.
    const rowOfB = async () => (await libA.members()).find((m) => m.peer === b.node.peerId);
    await waitFor(async () => ((await rowOfB())?.addrs.length ?? 0) > 0, "B's relayed addresses on A");
    expect((await rowOfB())!.addrs.every((addr) => addr.includes(`/p2p/${r.peerId}/p2p-circuit/p2p/${b.node.peerId}`))).toBe(true);

    await libB.upsert('note', { id: 'over-the-relay', title: 'from B', body: null });
    await waitFor(async () => (await libA.get('note', 'over-the-relay')) !== undefined, 'the write of B on A');
    await waitForConvergence([libR, libA, libB]);

    // A stranger (a member of nothing on R) gets no reservation and is relayed to no one.
    const stranger = await RawPeer.start();
    await stranger.transport.connect(r.peerId, r.multiaddrs());
    await expect(stranger.transport.reserveRelay(r.peerId)).rejects.toThrow(NetworkError);
    await expect(stranger.transport.reserveRelay(r.peerId)).rejects.toThrow(/PERMISSION_DENIED/);
    expect(stranger.transport.hasRelayReservation(r.peerId)).toBe(false);
    const viaR = `${r.multiaddrs()[0]!}/p2p-circuit/p2p/${b.node.peerId}`;
    await expect(stranger.transport.connect(b.node.peerId, [viaR])).rejects.toThrow(NetworkError);
    await expect(stranger.transport.connect(b.node.peerId, [viaR])).rejects.toThrow(/PERMISSION_DENIED/);
    expect(stranger.transport.isConnected(b.node.peerId)).toBe(false);

    // A member of another library on R may reserve there, but R relays it to no member of a
    // library it does not share with it.
    const libOther = await r.createLibrary({ name: 'another' });
    const welcome = await stranger.join(await libOther.createInvite(), { device: randomUUID() });
    await waitFor(() => welcome.received.some((m) => 't' in m && m.t === 'welcome'), 'welcome to the other library');
    await stranger.transport.reserveRelay(r.peerId);
    await waitFor(() => stranger.transport.hasRelayReservation(r.peerId), 'a reservation of the other member on R');
    await expect(stranger.transport.connect(b.node.peerId, [viaR])).rejects.toThrow(/PERMISSION_DENIED/);
    expect(stranger.transport.isConnected(b.node.peerId)).toBe(false);
  });

  it('lets members that met through the relay move to a direct connection once one has a direct address', async () => {
    const { r, libR, a, b, libA } = await meetThroughR();
    await waitLive(libA, b.node.peerId, 'relayed', 'A live with B through R');

    // B comes back with a direct address as well; A cannot be dialled directly, so only A's
    // own background dial of B's direct address (learnt from B's member row) leaves the relay.
    await stopNode(b.node);
    const nodeB = await startNode(b.dir, { listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [r.multiaddrs()[0]!], sync: steadySync });
    const libB = nodeB.library(libR.id);
    await waitLive(libA, nodeB.peerId, 'direct', 'A live with B directly');
    await waitLive(libB, a.node.peerId, 'direct', 'B live with A directly');
    await libB.upsert('note', { id: 'direct', title: 'from B', body: null });
    await waitForConvergence([libR, libA, libB]);
  });
});
