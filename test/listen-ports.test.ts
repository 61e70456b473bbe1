/**
 * Stable listen ports (issue 11): a port-0 listen address keeps the port it was given across
 * restarts; only a port another process took is replaced, and only for that address. The pure
 * logic (src/network/listen-ports.ts) first, then real nodes on 127.0.0.1 with a port held by
 * another process (that checks libp2p's real error for a taken port).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  boundListenPorts,
  listenOnRememberedPorts,
  listenRequests,
  parseListenPorts,
  takenRememberedPorts,
} from '../src/network/listen-ports.js';
import { killRunningChildren, makeTempDir, removeTempDirs } from './helpers/child-process.js';
import { startNode, stopAllNodes, stopNode } from './helpers/cluster.js';
import { holdPort, rememberPortsOutsideEphemeralPool, tcpPort } from './helpers/port-holder.js';

afterEach(async () => {
  await stopAllNodes();
  await killRunningChildren();
  await removeTempDirs();
});

const TCP = '/ip4/127.0.0.1/tcp/0';
const WS = '/ip4/127.0.0.1/tcp/0/ws';
const PEER = '12D3KooWLRPJAA5o6Z6ruf4fNvHhMvWQCpm1dBGYKADFUzWe6bBX';

/** libp2p 3's error when listen addresses fail (one line per address; Node's cause). */
function listenFailure(lines: string[]): Error {
  const err = new Error(`Some configured addresses failed to be listened on, you may need to remove one or more listen addresses:\n${lines.map((l) => `\n  ${l}\n`).join('')}`);
  err.name = 'UnsupportedListenAddressesError';
  return err;
}

describe('listen port memory (pure)', () => {
  it('asks for the remembered port of each port-0 address and leaves explicit ports alone', () => {
    expect(listenRequests([TCP, WS, '/ip4/127.0.0.1/tcp/4100', '/ip4/0.0.0.0/tcp/0'], { [TCP]: 4001, [WS]: 4002, '/ip4/127.0.0.1/tcp/4100': 9 })).toEqual([
      { configured: TCP, address: '/ip4/127.0.0.1/tcp/4001', remembered: true },
      { configured: WS, address: '/ip4/127.0.0.1/tcp/4002/ws', remembered: true },
      { configured: '/ip4/127.0.0.1/tcp/4100', address: '/ip4/127.0.0.1/tcp/4100', remembered: false },
      { configured: '/ip4/0.0.0.0/tcp/0', address: '/ip4/0.0.0.0/tcp/0', remembered: false },
    ]);
  });

  it('does not ask for a remembered port that another address is configured with explicitly', () => {
    // Remembered from before the explicit address was added: asking for both, libp2p could
    // refuse the explicit one, and that failure is final (not a remembered port to give up).
    expect(listenRequests([WS, '/ip4/127.0.0.1/tcp/4100'], { [WS]: 4100 })).toEqual([
      { configured: WS, address: WS, remembered: false },
      { configured: '/ip4/127.0.0.1/tcp/4100', address: '/ip4/127.0.0.1/tcp/4100', remembered: false },
    ]);
  });

  it('reads the port each port-0 address was given from the addresses listened on', () => {
    const listening = [`/ip4/127.0.0.1/tcp/4001/p2p/${PEER}`, `/ip4/127.0.0.1/tcp/4002/ws/p2p/${PEER}`, `/ip4/127.0.0.1/tcp/4100/p2p/${PEER}`];
    expect(boundListenPorts([TCP, WS, '/ip4/127.0.0.1/tcp/4100'], listening)).toEqual({ [TCP]: 4001, [WS]: 4002 });
    // A wildcard address shows once per interface; a specific host takes its own port, never
    // the wildcard's; relayed addresses are the relay's port and never count.
    const wildcard = [
      `/ip4/127.0.0.1/tcp/5001/p2p/${PEER}`,
      `/ip4/192.168.1.7/tcp/5001/p2p/${PEER}`,
      `/ip4/127.0.0.1/tcp/5002/p2p/${PEER}`,
      `/ip4/127.0.0.1/tcp/5003/ws/p2p/${PEER}`,
      `/ip4/192.168.1.7/tcp/5003/ws/p2p/${PEER}`,
      `/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq/p2p-circuit/p2p/${PEER}`,
    ];
    expect(boundListenPorts(['/ip4/0.0.0.0/tcp/0', TCP, '/ip4/0.0.0.0/tcp/0/ws'], wildcard)).toEqual({
      '/ip4/0.0.0.0/tcp/0': 5001,
      [TCP]: 5002,
      '/ip4/0.0.0.0/tcp/0/ws': 5003,
    });
    expect(boundListenPorts([TCP], [])).toEqual({});
  });

  it('keeps only well-formed remembered ports', () => {
    expect(parseListenPorts({ ports: { [TCP]: 4001, [WS]: 0, a: 70_000, b: 1.5, c: '4' } })).toEqual({ [TCP]: 4001 });
    for (const bad of [null, 'x', [], { ports: [] }, { ports: null }]) expect(parseListenPorts(bad)).toEqual({});
  });

  it('retries on port 0 exactly the addresses whose remembered port is in use, and nothing else', async () => {
    const tried: string[][] = [];
    const result = await listenOnRememberedPorts([TCP, WS], { [TCP]: 4001, [WS]: 4002 }, async (addresses) => {
      tried.push(addresses);
      if (addresses.includes('/ip4/127.0.0.1/tcp/4001')) {
        throw listenFailure(['/ip4/127.0.0.1/tcp/4001: listen EADDRINUSE: address already in use 127.0.0.1:4001']);
      }
      return 'started';
    });
    expect(result).toBe('started');
    expect(tried).toEqual([
      ['/ip4/127.0.0.1/tcp/4001', '/ip4/127.0.0.1/tcp/4002/ws'],
      ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/tcp/4002/ws'],
    ]);
    // Another failure (a host not on this machine, a taken explicit port) is the caller's.
    const other = listenFailure(['/ip4/127.0.0.1/tcp/4002/ws: listen EADDRNOTAVAIL: address not available']);
    expect(takenRememberedPorts(other, listenRequests([TCP, WS], { [WS]: 4002 }))).toEqual([]);
    const explicit = listenFailure(['/ip4/127.0.0.1/tcp/4100: listen EADDRINUSE: address already in use 127.0.0.1:4100']);
    await expect(listenOnRememberedPorts(['/ip4/127.0.0.1/tcp/4100'], {}, () => Promise.reject(explicit))).rejects.toBe(explicit);
    expect(takenRememberedPorts(new Error('listen EADDRINUSE'), listenRequests([TCP], { [TCP]: 4001 }))).toEqual([]);
  });

  it('retries on port 0 an address whose remembered port the system refuses (EACCES), so no start fails for good', async () => {
    // Windows reserves port ranges anew at boot (Hyper-V, WSL, Docker): a port remembered
    // before a reboot may be refused with EACCES; so is a low port a damaged file names.
    const tried: string[][] = [];
    const result = await listenOnRememberedPorts([TCP], { [TCP]: 80 }, async (addresses) => {
      tried.push(addresses);
      if (addresses.includes('/ip4/127.0.0.1/tcp/80')) throw listenFailure(['/ip4/127.0.0.1/tcp/80: listen EACCES: permission denied 127.0.0.1:80']);
      return 'started';
    });
    expect(result).toBe('started');
    expect(tried).toEqual([['/ip4/127.0.0.1/tcp/80'], ['/ip4/127.0.0.1/tcp/0']]);
  });
});

describe('stable listen ports of a node', () => {
  it('remembers the port each port-0 address was given at its first start', async () => {
    const dataDir = await makeTempDir('lsync-ports-');
    const node = await startNode(dataDir, { listen: [TCP, WS] });
    const addrs = node.multiaddrs();
    const given = { [TCP]: tcpPort(addrs.find((a) => !a.includes('/ws'))!), [WS]: tcpPort(addrs.find((a) => a.includes('/ws'))!) };
    expect(JSON.parse(await readFile(join(dataDir, 'listen-ports.json'), 'utf8'))).toEqual({ ports: given });
  }, 60_000);

  it('keeps its port-0 ports across restarts, and replaces only a port another process took', async () => {
    // Remembered ports outside the ephemeral pool: a parallel test's port-0 socket cannot take
    // them between restarts (see port-holder.ts); the node treats them as ports it was given.
    const dataDir = await makeTempDir('lsync-ports-');
    const listen = [TCP, WS];
    const remembered = await rememberPortsOutsideEphemeralPool(dataDir, listen);
    const first = { tcp: remembered[TCP]!, ws: remembered[WS]! };
    const portsOf = (addrs: string[]) => ({
      tcp: tcpPort(addrs.find((a) => !a.includes('/ws'))!),
      ws: tcpPort(addrs.find((a) => a.includes('/ws'))!),
    });
    let node = await startNode(dataDir, { listen });
    expect(portsOf(node.multiaddrs())).toEqual(first);
    await stopNode(node);

    node = await startNode(dataDir, { listen });
    expect(portsOf(node.multiaddrs())).toEqual(first);
    await stopNode(node);

    // Another process takes the TCP port: that address gets a new one, WebSockets keeps its
    // own, and the new port is the one remembered (asked for at the next start, as above).
    const { holder } = await holdPort(first.tcp);
    node = await startNode(dataDir, { listen });
    const moved = portsOf(node.multiaddrs());
    expect(moved.tcp).not.toBe(first.tcp);
    expect(moved.ws).toBe(first.ws);
    expect(JSON.parse(await readFile(join(dataDir, 'listen-ports.json'), 'utf8'))).toEqual({ ports: { [TCP]: moved.tcp, [WS]: first.ws } });
    expect(holder.exit).toBeUndefined();
  }, 60_000);

  it('starts when the port its TCP address had is now configured for WebSockets explicitly', async () => {
    // The user pins the port they saw (say, for a port forward), for WebSockets: libp2p
    // listens on TCP first, so asking for the remembered port there would fail the explicit
    // address, at every start.
    const dataDir = await makeTempDir('lsync-ports-');
    const { [TCP]: port } = await rememberPortsOutsideEphemeralPool(dataDir, [TCP]);
    const node = await startNode(dataDir, { listen: [TCP, `/ip4/127.0.0.1/tcp/${port}/ws`] });
    const addrs = node.multiaddrs();
    expect(tcpPort(addrs.find((a) => a.includes('/ws'))!)).toBe(port);
    expect(tcpPort(addrs.find((a) => !a.includes('/ws'))!)).not.toBe(port);
  }, 60_000);

  it('uses an explicit port as given: taken, it is an error, not a fresh port', async () => {
    const { port } = await holdPort(0);
    const dataDir = await makeTempDir('lsync-ports-');
    await expect(startNode(dataDir, { listen: [`/ip4/127.0.0.1/tcp/${port}`] })).rejects.toThrow(/EADDRINUSE/);
    // Nothing was remembered for it.
    await expect(readFile(join(dataDir, 'listen-ports.json'), 'utf8')).rejects.toThrow(/ENOENT/);
  }, 30_000);
});
