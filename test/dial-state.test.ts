/**
 * The per-partner dial state of `SyncNetwork` (shown as `status().partners[i].dial`), against a
 * scripted transport and a hand-set clock: what an attempt tried and why it failed, the backoff
 * before the next one, and a member row with a new address dialled at once despite the backoff.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { NetworkError } from '../src/errors.js';
import type { ConnectOptions, ConnectionListener, FrameStream, Transport } from '../src/protocol/transport.js';
import { SyncNetwork } from '../src/replication/network.js';
import type { LibraryReplicator } from '../src/replication/replicator.js';
import { waitFor } from './helpers/cluster.js';

const PARTNER = 'peer-b';

/** A transport whose dials fail (or succeed) as the test says, recording what was asked. */
class ScriptedTransport implements Transport {
  readonly localPeer = 'peer-z';
  readonly dials: Array<readonly string[]> = [];
  reachable = false;
  private connected = false;
  private listener: ConnectionListener | undefined;

  addresses(): string[] {
    return [];
  }
  handle(): void {}
  async connect(peer: string, addrs: readonly string[], options: ConnectOptions = {}): Promise<void> {
    this.dials.push(addrs);
    options.onDialling?.(addrs.map((a) => `${a}/p2p/${peer}`));
    if (!this.reachable) throw new NetworkError(`cannot reach peer ${peer} at ${addrs.join(', ')}: ECONNREFUSED`);
    this.connected = true;
    this.listener?.(peer, true);
  }
  openStream(): Promise<FrameStream> {
    return Promise.reject(new NetworkError('no streams here'));
  }
  isConnected(): boolean {
    return this.connected;
  }
  async disconnect(): Promise<void> {}
  onConnectionChange(listener: ConnectionListener): void {
    this.listener = listener;
  }
  setKnownPeers(): void {}
  onPeerDiscovered(): void {}
  async stop(): Promise<void> {}
}

/** The little of a library replicator that dialling reads: one partner and its member row. */
function fakeReplicator(addrs: { current: string[] }, statusEvents: { count: number }): LibraryReplicator {
  return {
    library: { id: 'lib' },
    refusal: undefined,
    sessions: new Map(),
    partners: () => [{ device: 'device-b', peer: PARTNER, addrs: addrs.current }],
    isMemberPeer: (peer: string) => peer === PARTNER,
    scheduleStatus: () => void (statusEvents.count += 1),
    stop: async () => undefined,
  } as unknown as LibraryReplicator;
}

const networks: SyncNetwork[] = [];
afterEach(async () => {
  for (const network of networks.splice(0)) await network.stop();
});

function start(transport: ScriptedTransport, clock: { ms: number }) {
  const network = new SyncNetwork(transport, 'device-z', {
    backoff: { minMs: 60_000, maxMs: 600_000 },
    reconcileMs: 3_600_000,
    handshakeTimeoutMs: 1_000,
    maxConcurrentServes: 1,
    deviceName: null,
    now: () => clock.ms,
    random: () => 0.5,
    onSessionError: () => undefined,
  });
  networks.push(network);
  return network;
}

describe('dial state of a partner', () => {
  it('records the addresses tried, the error and the backoff; a new member-row address is dialled at once', async () => {
    const transport = new ScriptedTransport();
    const clock = { ms: 1_000_000 };
    const network = start(transport, clock);
    const row = { current: ['/ip4/127.0.0.1/tcp/4001'] };
    const statusEvents = { count: 0 };
    network.add(fakeReplicator(row, statusEvents));
    expect(network.dialStatus(PARTNER)).toEqual({ addresses: [], lastError: null, lastAttemptAt: null, nextAttemptAt: clock.ms });

    network.reconcileSoon();
    await waitFor(() => network.dialStatus(PARTNER).lastError !== null, 'the failed dial');
    expect(network.dialStatus(PARTNER)).toEqual({
      addresses: [`/ip4/127.0.0.1/tcp/4001/p2p/${PARTNER}`],
      lastError: `NetworkError: cannot reach peer ${PARTNER} at /ip4/127.0.0.1/tcp/4001: ECONNREFUSED`,
      lastAttemptAt: 1_000_000,
      // The shortest backoff (jitter ±25 %, none at random() = 0.5).
      nextAttemptAt: 1_060_000,
    });
    expect(statusEvents.count).toBeGreaterThan(0);

    // Backing off: the same addresses are not dialled again before the next attempt is due.
    clock.ms += 30_000;
    network.reconcileSoon();
    await Promise.resolve();
    expect(transport.dials).toHaveLength(1);

    // A member row now names a new address (the partner moved): dialled at once, and reached.
    row.current = ['/ip4/127.0.0.1/tcp/4001', '/ip4/127.0.0.1/tcp/4555'];
    transport.reachable = true;
    network.reconcileSoon();
    await waitFor(() => transport.isConnected(), 'the dial of the new address');
    expect(transport.dials).toEqual([['/ip4/127.0.0.1/tcp/4001'], ['/ip4/127.0.0.1/tcp/4001', '/ip4/127.0.0.1/tcp/4555']]);
    expect(network.dialStatus(PARTNER)).toEqual({
      addresses: [`/ip4/127.0.0.1/tcp/4001/p2p/${PARTNER}`, `/ip4/127.0.0.1/tcp/4555/p2p/${PARTNER}`],
      lastError: null,
      lastAttemptAt: 1_030_000,
      nextAttemptAt: null,
    });
  });
});
