/**
 * Issue 11: devices find each other again after any restart. Two members on the default
 * port-0 listen config (on 127.0.0.1), in child processes, both stop (cleanly or SIGKILL) and
 * start again on their data directories: each asks for the ports it had, so each finds the
 * other where its member row says, and writes made after the restart arrive both ways. If one
 * cannot keep its port (another process holds it), it dials the other's stable address and the
 * other learns its new one. And a partner that is down shows why: the addresses tried, the
 * error, and when the next attempt is due.
 */
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { LibraryStatus } from '../src/index.js';
import { ensureBuilt, killRunningChildren, LineChild, makeTempDir, removeTempDirs, REPO_ROOT } from './helpers/child-process.js';
import { shareLibrary, startNode, stopAllNodes, stopNode, waitFor } from './helpers/cluster.js';
import { holdPort, rememberPortsOutsideEphemeralPool, tcpPort } from './helpers/port-holder.js';
import { RawPeer, stopAllRawPeers } from './helpers/raw-peer.js';

const CHILD = join(REPO_ROOT, 'test', 'fixtures', 'reach-child.mjs');
const NOTE = { name: 'note', ownership: 'shared', conflict: 'lww', fields: { title: 'text', body: { type: 'text', nullable: true } } };

let entry: string;
beforeAll(async () => {
  entry = await ensureBuilt();
}, 180_000);

afterEach(async () => {
  await killRunningChildren();
  await stopAllNodes();
  await stopAllRawPeers();
  await removeTempDirs();
});

interface Ready {
  peerId: string;
  addrs: string[];
  invite: string | null;
}

/** A member device in a child process, with what it last reported. */
class Device {
  ready: Ready | undefined;
  ids: string[] = [];
  digest = '';
  stopped = false;
  readonly child: LineChild;

  constructor(dataDir: string, extra: Record<string, unknown>) {
    // The default timings (redial backoff, reconcile interval): what a user gets.
    const options = { entry, dataDir, models: [NOTE], ...extra };
    this.child = new LineChild(CHILD, [JSON.stringify(options)], (line) => {
      const message = JSON.parse(line);
      if (message.t === 'ready') this.ready = message;
      if (message.t === 'notes') {
        this.ids = message.ids;
        this.digest = message.digest;
      }
      if (message.t === 'stopped') this.stopped = true;
    });
  }

  async started(): Promise<Ready> {
    await this.child.waitFor(() => this.ready !== undefined, 'the device to start', 30_000);
    return this.ready!;
  }

  holds(...ids: string[]): boolean {
    return ids.every((id) => this.ids.includes(id));
  }

  async stop(how: 'clean' | 'kill'): Promise<void> {
    if (how === 'kill') {
      await this.child.kill('SIGKILL');
      return;
    }
    const exit = await this.child.kill('SIGTERM');
    expect(this.stopped).toBe(true);
    expect(exit.code).toBe(0);
  }
}

/** Waits (up to 30 s) until both devices hold `ids` and report the same digest. */
async function bothHold(a: Device, b: Device, ids: string[]): Promise<void> {
  const converged = () => a.holds(...ids) && b.holds(...ids) && a.digest !== '' && a.digest === b.digest;
  await Promise.race([
    a.child.waitFor(converged, `both devices to hold ${ids.join(', ')} with equal digests`, 30_000),
    b.child.waitFor(converged, `both devices to hold ${ids.join(', ')} with equal digests`, 30_000),
  ]);
  expect(a.digest).toBe(b.digest);
}

/** A and B joined by invite and synced, then both stopped. */
async function syncedPair(how: 'clean' | 'kill') {
  const dirA = await makeTempDir('lsync-reach-a-');
  const dirB = await makeTempDir('lsync-reach-b-');
  // Both keep the default port-0 listen, but start on ports outside the ephemeral pool, as if
  // given them before: a parallel test's port-0 socket cannot take one while both are down.
  for (const dir of [dirA, dirB]) await rememberPortsOutsideEphemeralPool(dir, ['/ip4/127.0.0.1/tcp/0']);
  const a = new Device(dirA, { create: true, write: { id: 'before', title: 'made before the restart' } });
  const { invite, addrs: addrsA } = await a.started();
  const b = new Device(dirB, { invite });
  const { addrs: addrsB } = await b.started();
  await bothHold(a, b, ['before']);
  await Promise.all([a.stop(how), b.stop(how)]);
  return { dirA, dirB, portA: tcpPort(addrsA[0]!), portB: tcpPort(addrsB[0]!) };
}

/** Starts A and B again (A first), each writing a note; returns them and when B started. */
async function restartPair(dirA: string, dirB: string) {
  const a = new Device(dirA, { write: { id: 'after-a', title: 'written on A after the restart' } });
  await a.started();
  const secondStart = Date.now();
  const b = new Device(dirB, { write: { id: 'after-b', title: 'written on B after the restart' } });
  await b.started();
  return { a, b, secondStart };
}

describe('two members on port 0, both restarted', () => {
  for (const how of ['clean', 'kill'] as const) {
    it(`reconnect and sync both ways after a ${how === 'clean' ? 'clean stop' : 'SIGKILL'}`, async () => {
      const { dirA, dirB, portA, portB } = await syncedPair(how);
      const { a, b, secondStart } = await restartPair(dirA, dirB);
      await bothHold(a, b, ['before', 'after-a', 'after-b']);
      const elapsed = Date.now() - secondStart;
      console.log(`[reconnect] ${how}: writes on both sides arrived ${elapsed} ms after the second start`);
      // Each asked for, and got, the port it had: the other's member row was right again.
      expect(tcpPort(a.ready!.addrs[0]!)).toBe(portA);
      expect(tcpPort(b.ready!.addrs[0]!)).toBe(portB);
    }, 120_000);
  }

  it('reconnect when one of them cannot keep its port (another process holds it)', async () => {
    const { dirA, dirB, portA, portB } = await syncedPair('clean');
    const { holder } = await holdPort(portA);
    const { a, b, secondStart } = await restartPair(dirA, dirB);
    // A dials B's stable address; B learns A's new one from the connection and A's member row.
    await bothHold(a, b, ['before', 'after-a', 'after-b']);
    console.log(`[reconnect] port taken: writes on both sides arrived ${Date.now() - secondStart} ms after the second start`);
    expect(tcpPort(a.ready!.addrs[0]!)).not.toBe(portA);
    expect(tcpPort(b.ready!.addrs[0]!)).toBe(portB);
    expect(holder.exit).toBeUndefined();
  }, 120_000);
});

describe('dialling a partner', () => {
  it('shows, for a partner that is down, the addresses tried, the error and when the next attempt is due', async () => {
    const a = await startNode();
    const b = await startNode(undefined, { listen: ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/tcp/0/ws'] });
    const [libA] = await shareLibrary(a, [b]);
    const partner = (s: LibraryStatus) => s.partners.find((p) => p.peer === b.peerId)!;
    await waitFor(async () => partner(await libA!.status()).state === 'live', 'the session to go live');
    expect(partner(await libA!.status()).dial.nextAttemptAt).toBeNull();
    const addrsB = b.multiaddrs();
    const events: LibraryStatus[] = [];
    libA!.on('status', (s) => events.push(s));
    await stopNode(b);

    await waitFor(async () => partner(await libA!.status()).dial.lastError !== null, 'a failed dial', 20_000);
    const { dial, connected } = partner(await libA!.status());
    expect(connected).toBe(false);
    // B's member row lists both its addresses; the dial tried each, and the error names them.
    expect([...dial.addresses].sort()).toEqual([...addrsB].sort());
    for (const address of addrsB) expect(dial.lastError).toContain(address);
    expect(dial.lastError).toMatch(/ECONNREFUSED/);
    expect(dial.lastAttemptAt).toEqual(expect.any(Number));
    expect(dial.nextAttemptAt).toBeGreaterThan(dial.lastAttemptAt!);
    // The change is announced by a status event (coalesced).
    await waitFor(() => events.some((s) => partner(s).dial.lastError !== null), 'a status event with the dial error');
  }, 60_000);

  it('dials a peer on the addresses identify taught the peer store, not only those it was given', async () => {
    const v = await RawPeer.start();
    const n = await RawPeer.start();
    // N is a member for V: what V's peer store learnt of a stranger goes when the stranger does.
    v.transport.setKnownPeers((peer) => peer === n.peerId);
    await v.transport.connect(n.peerId, n.multiaddrs());
    await waitFor(() => v.transport.isConnected(n.peerId), 'the connection');
    await v.transport.disconnect(n.peerId);
    await waitFor(() => !v.transport.isConnected(n.peerId), 'the disconnection');
    // A member row with a dead address only: the peer store still has N's real ones.
    const dead = `/ip4/127.0.0.1/tcp/1/p2p/${n.peerId}`;
    await v.transport.connect(n.peerId, [dead]);
    expect(v.transport.isConnected(n.peerId)).toBe(true);
    await v.transport.disconnect(n.peerId);
    await waitFor(() => !v.transport.isConnected(n.peerId), 'the disconnection');
    // The dial names what it tries: the member row's address first, then the peer store's.
    let tried: readonly string[] = [];
    await v.transport.connect(n.peerId, [dead], { onDialling: (addrs) => (tried = addrs) });
    expect(tried[0]).toBe(dead);
    expect(tried).toEqual(expect.arrayContaining(n.multiaddrs()));
  });
});
