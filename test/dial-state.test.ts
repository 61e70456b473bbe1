/**
 * The per-partner dial state of `SyncNetwork` (shown as `status().partners[i].dial`), against a
 * scripted transport and a hand-set clock: what an attempt tried and why it failed, the backoff
 * before the next one, and a member row with a new address dialled at once despite the backoff.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { SyncNetwork } from '../src/replication/network.js';
import { waitFor } from './helpers/cluster.js';
import { fakeReplicator, ScriptedTransport, startNetwork } from './helpers/scripted-transport.js';

const PARTNER = 'peer-b';

const networks: SyncNetwork[] = [];
afterEach(async () => {
  for (const network of networks.splice(0)) await network.stop();
});

describe('dial state of a partner', () => {
  it('records the addresses tried, the error and the backoff; a new member-row address is dialled at once', async () => {
    const transport = new ScriptedTransport();
    const clock = { ms: 1_000_000 };
    const network = startNetwork(transport, { now: () => clock.ms, backoff: { minMs: 60_000, maxMs: 600_000 }, reconcileMs: 3_600_000 });
    networks.push(network);
    const partner = { device: 'device-b', peer: PARTNER, addrs: ['/ip4/127.0.0.1/tcp/4001'] };
    const statusEvents = { count: 0 };
    network.add(fakeReplicator(partner, () => void (statusEvents.count += 1)));
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
    partner.addrs = ['/ip4/127.0.0.1/tcp/4001', '/ip4/127.0.0.1/tcp/4555'];
    transport.reachable = true;
    network.reconcileSoon();
    await waitFor(() => transport.isConnected(PARTNER), 'the dial of the new address');
    expect(transport.dials.map((d) => d.addrs)).toEqual([['/ip4/127.0.0.1/tcp/4001'], ['/ip4/127.0.0.1/tcp/4001', '/ip4/127.0.0.1/tcp/4555']]);
    expect(network.dialStatus(PARTNER)).toEqual({
      addresses: [`/ip4/127.0.0.1/tcp/4001/p2p/${PARTNER}`, `/ip4/127.0.0.1/tcp/4555/p2p/${PARTNER}`],
      lastError: null,
      lastAttemptAt: 1_030_000,
      nextAttemptAt: null,
    });
  });
});
