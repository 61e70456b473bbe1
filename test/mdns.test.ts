/**
 * Issue 11, LAN discovery: two members that both changed port find each other through mDNS,
 * with no third device; with `discovery: { mdns: false }` they do not; a node that listens on
 * loopback only (or nowhere) runs no mDNS at all; the option is validated; a LAN neighbour that
 * sends a thousand made-up answers makes the node hold nothing.
 *
 * The two-device tests run each node as a child process (test/fixtures/lan-child.mjs, the
 * built package) inside its own network namespace, which the test creates: a veth pair between
 * them and private addresses inside the namespaces only. mDNS is never enabled on this
 * machine's own interfaces: every other node here listens on loopback.
 */
import { join } from 'node:path';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSyncNode, ValidationError } from '../src/index.js';
import { multiaddr } from '@multiformats/multiaddr';
import { lanDialAddresses, MDNS_SERVICE_TAG, mdnsWorthwhile } from '../src/network/lan-discovery.js';
import { clusterModels, waitFor } from './helpers/cluster.js';
import { ensureBuilt, killRunningChildren, LineChild, makeTempDir, removeTempDirs, REPO_ROOT } from './helpers/child-process.js';
import { converge, type LanDevice, startLanDevice, stopLanDevice } from './helpers/lan-device.js';
import { createLan, type Lan, type LanHost, netnsUnavailable } from './helpers/netns.js';
import { fakeReplicator, ScriptedTransport, startNetwork } from './helpers/scripted-transport.js';

const TRANSPORT_CHILD = join(REPO_ROOT, 'test', 'fixtures', 'lan-transport-child.mjs');
const FLOOD = join(REPO_ROOT, 'test', 'fixtures', 'mdns-flood.mjs');

describe('mdnsWorthwhile', () => {
  it('is false for loopback-only and empty listen lists, true once an address can be reached from the LAN', () => {
    expect(mdnsWorthwhile([])).toBe(false);
    expect(mdnsWorthwhile(['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/tcp/0/ws'])).toBe(false);
    expect(mdnsWorthwhile(['/ip4/127.5.6.7/tcp/4001', '/ip6/::1/tcp/0', '/ip6/::ffff:127.0.0.1/tcp/0'])).toBe(false);
    expect(mdnsWorthwhile(['/dns4/localhost/tcp/1', '/dns/app.localhost/tcp/1'])).toBe(false);
    expect(mdnsWorthwhile(['/p2p-circuit', 'not a multiaddr'])).toBe(false);
    expect(mdnsWorthwhile(['/ip4/0.0.0.0/tcp/0'])).toBe(true);
    expect(mdnsWorthwhile(['/ip6/::/tcp/0'])).toBe(true);
    expect(mdnsWorthwhile(['/ip4/127.0.0.1/tcp/0', '/ip4/192.168.1.20/tcp/0/ws'])).toBe(true);
    expect(mdnsWorthwhile(['/ip4/10.213.0.1/tcp/4001'])).toBe(true);
    expect(mdnsWorthwhile(['/dns4/laptop.lan/tcp/4001'])).toBe(true);
  });
});

describe('lanDialAddresses', () => {
  it('keeps the private and loopback IP addresses of an answer, as many as asked: never a public host or a DNS name', () => {
    const answer = [
      '/ip4/8.8.8.8/tcp/4001',
      '/ip4/192.168.1.20/tcp/4001',
      '/dns4/attacker.example/tcp/4001',
      '/dns4/localhost/tcp/4001',
      '/ip6/2001:4860:4860::8888/tcp/4001',
      '/ip4/127.0.0.1/tcp/4001/ws',
      '/ip4/10.0.0.7/tcp/4001',
    ].map((a) => multiaddr(a));
    expect(lanDialAddresses(answer, 16).map(String)).toEqual(['/ip4/192.168.1.20/tcp/4001', '/ip4/127.0.0.1/tcp/4001/ws', '/ip4/10.0.0.7/tcp/4001']);
    expect(lanDialAddresses(answer, 2).map(String)).toEqual(['/ip4/192.168.1.20/tcp/4001', '/ip4/127.0.0.1/tcp/4001/ws']);
  });
});

describe('discovery option', () => {
  afterAll(removeTempDirs);

  it.each([
    ['a boolean', true],
    ['null', null],
    ['an array', []],
    ['mdns not a boolean', { mdns: 'off' }],
    ['a misspelt key', { mDNS: false }],
  ])('is refused with a ValidationError when it is %s', async (_, discovery) => {
    const dataDir = await makeTempDir('lsync-node-');
    const error = await createSyncNode({ dataDir, models: clusterModels, listen: [], discovery: discovery as never }).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as Error).message).toMatch(/^createSyncNode: discovery/);
  });
});

describe('SyncNetwork and discovered peers', () => {
  it('dials a discovered member at once despite its backoff, and never a discovered non-member', async () => {
    const transport = new ScriptedTransport();
    // A frozen clock and a minute of backoff: after one failed dial, only a discovery can
    // make the network dial the member again within this test.
    const network = startNetwork(transport, { now: () => 1_000_000, backoff: { minMs: 60_000, maxMs: 60_000 }, reconcileMs: 20 });
    const member = { device: 'member-device', peer: 'member-peer', addrs: ['/ip4/10.0.0.9/tcp/1'] };
    network.add(fakeReplicator(member));
    try {
      await waitFor(() => transport.dials.length === 1, 'the first dial of the member');
      transport.discover('stranger-peer');
      transport.discover(member.peer);
      await waitFor(() => transport.dials.length === 2, 'the member dialled again once discovered');

      // Discovered while a dial (on the addresses known before) is in flight: dialled again
      // right after that dial fails, not after its backoff.
      let release!: () => void;
      transport.hold = new Promise((resolve) => (release = resolve));
      transport.discover(member.peer);
      await waitFor(() => transport.dials.length === 3, 'a third dial');
      transport.discover(member.peer);
      transport.hold = undefined;
      release();
      await waitFor(() => transport.dials.length === 4, 'the member dialled again after the dial in flight failed');
      expect(transport.dials.every((dial) => dial.peer === member.peer)).toBe(true);
    } finally {
      await network.stop();
    }
  });
});

const unavailable = netnsUnavailable();
if (unavailable !== undefined) console.warn(`skipping the mDNS tests in network namespaces: ${unavailable}`);

describe.skipIf(unavailable !== undefined)('LAN discovery between two network namespaces', () => {
  let lan: Lan | undefined;
  let entry: string;
  beforeAll(async () => {
    entry = await ensureBuilt();
    lan = await createLan(`lsync-${process.pid}`);
  }, 200_000);
  afterAll(async () => {
    await killRunningChildren();
    await lan?.destroy();
    await removeTempDirs();
  });

  /** Starts a device in `host`'s namespace on an explicit port (a new one at every start). */
  function start(host: LanHost, dataDir: string, port: number, options: Record<string, unknown>): LanDevice {
    return startLanDevice(entry, host.ns, dataDir, [`/ip4/${host.address}/tcp/${port}`], options);
  }

  /** Whether any status report of `device` showed a connected partner. */
  const everConnected = (device: LanDevice) => device.partners.some((report) => report.some((p) => p.connected));


  // In a namespace, not in this process: should the rule break, the node's multicast stays
  // inside the namespace instead of going out on this machine's interfaces.
  it('runs no mDNS on a node that listens on loopback only or nowhere, although mDNS is on by default', async () => {
    const [hostA] = lan!.hosts;
    const runs: Array<{ listen: string[]; options: Record<string, unknown> }> = [
      { listen: ['/ip4/127.0.0.1/tcp/0'], options: {} },
      { listen: [], options: { discovery: { mdns: true } } },
      { listen: ['/ip4/127.0.0.1/tcp/0'], options: { discovery: { mdns: false } } },
    ];
    for (const { listen, options } of runs) {
      const device = startLanDevice(entry, hostA.ns, await makeTempDir('lsync-lan-'), listen, { role: 'create', write: 'n-1', ...options });
      await device.child.waitFor(() => device.ready !== undefined, 'the node to start', 30_000);
      expect(device.ready?.mdnsRunning).toBe(false);
      await stopLanDevice(device);
    }
  }, 120_000);

  it('finds a member that changed address through mDNS, and not with discovery.mdns false', async () => {
    const [hostA, hostB] = lan!.hosts;
    const dirA = await makeTempDir('lsync-lan-a');
    const dirB = await makeTempDir('lsync-lan-b');

    // A creates the library and invites B, who joins over the veth link; they sync.
    let a = start(hostA, dirA, 41_001, { role: 'create', write: 'a-1', discovery: { mdns: false } });
    await a.child.waitFor(() => a.invite !== undefined && a.digest !== undefined, 'A to create the library', 30_000);
    let b = start(hostB, dirB, 41_002, { role: 'join', invite: a.invite, write: 'b-1', discovery: { mdns: false } });
    await converge(a, b, 'A and B to sync after the join');
    await Promise.all([stopLanDevice(a), stopLanDevice(b)]);

    // Both restart on new ports: each member row holds the partner's old address only.
    a = start(hostA, dirA, 41_011, { role: 'reopen', write: 'a-2', discovery: { mdns: false } });
    b = start(hostB, dirB, 41_012, { role: 'reopen', write: 'b-2', discovery: { mdns: false } });
    await a.child.waitFor(() => a.digest !== undefined, 'A to write', 30_000);
    await b.child.waitFor(() => b.digest !== undefined, 'B to write', 30_000);
    expect(a.ready?.mdnsRunning).toBe(false);
    expect(b.ready?.mdnsRunning).toBe(false);
    // An absence can only be observed for a while, never proven by an event: so a bounded
    // window, longer than mDNS needs below (its first query goes out at start) and than many
    // redials (at most 1 s apart here), in which neither reports a connection and their writes
    // stay apart. This wait is the observation itself, not a synchronisation.
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    expect(a.child.exit ?? b.child.exit).toBeUndefined();
    expect(everConnected(a) || everConnected(b)).toBe(false);
    expect(a.digest).not.toBe(b.digest);
    await Promise.all([stopLanDevice(a), stopLanDevice(b)]);

    // Again on new ports, now with mDNS (on by default): they find each other and converge.
    a = start(hostA, dirA, 41_021, { role: 'reopen', write: 'a-3' });
    b = start(hostB, dirB, 41_022, { role: 'reopen', write: 'b-3' });
    await a.child.waitFor(() => a.ready !== undefined, 'A to start', 30_000);
    await b.child.waitFor(() => b.ready !== undefined, 'B to start', 30_000);
    expect(a.ready?.mdnsRunning).toBe(true);
    expect(b.ready?.mdnsRunning).toBe(true);
    const startedAt = Date.now();
    await converge(a, b, 'A and B to find each other through mDNS and converge');
    console.info(`mDNS: converged ${Date.now() - startedAt} ms after both started`);
    expect(everConnected(a) && everConnected(b)).toBe(true);
    await Promise.all([stopLanDevice(a), stopLanDevice(b)]);
  }, 180_000);

  it('holds nothing of a LAN neighbour that answers with a thousand made-up PeerIds', async () => {
    const [hostA, hostB] = lan!.hosts;
    const member = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString();
    let ready: { mdnsRunning: boolean } | undefined;
    const stored: number[] = [];
    const node = new LineChild(
      TRANSPORT_CHILD,
      [JSON.stringify({ entry, listen: [`/ip4/${hostA.address}/tcp/41031`], member })],
      (line) => {
        const message = JSON.parse(line);
        if (message.t === 'ready') ready = message;
        if (message.t === 'discovered') stored.push(message.stored);
      },
      { prefix: ['ip', 'netns', 'exec', hostA.ns] },
    );
    await node.waitFor(() => ready !== undefined, 'the transport to start', 30_000);
    expect(ready?.mdnsRunning).toBe(true);

    let flooded = false;
    const options = { serviceTag: MDNS_SERVICE_TAG, count: 1_000, addrs: 4, address: hostB.address, member, memberAddress: `/ip4/${hostB.address}/tcp/41032` };
    const flood = new LineChild(FLOOD, [JSON.stringify(options)], (line) => void (flooded ||= JSON.parse(line).t === 'flooded'), {
      prefix: ['ip', 'netns', 'exec', hostB.ns],
    });
    await flood.waitFor(() => flooded, 'the made-up answers to be sent', 90_000);
    // The member's answers are sent after the made-up ones: once one is heard, so were those.
    const before = stored.length;
    await node.waitFor(() => stored.length > before, "the member's answer after the flood", 30_000);
    expect(stored.at(-1)).toBe(0);
    await flood.kill('SIGTERM');
    await node.kill('SIGTERM');
    expect(node.exit).toEqual({ code: 0, signal: null });
  }, 180_000);
});
