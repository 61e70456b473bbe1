/**
 * A `Transport` that a test scripts, for unit tests of `SyncNetwork`'s dialling: dials fail (or
 * succeed, or wait) as the test says and are recorded; the test makes discoveries and sets this
 * node's addresses (changed silently, as the interfaces under a wildcard listen do, or with an
 * address event). No streams, no relays. With `fakeReplicator` and `startNetwork`, a network with one partner and a clock
 * the test sets.
 */
import { NetworkError } from '../../src/errors.js';
import type {
  ConnectionListener,
  ConnectOptions,
  DiscoveryListener,
  FrameStream,
  RelayPolicy,
  Transport,
} from '../../src/protocol/transport.js';
import { SyncNetwork } from '../../src/replication/network.js';
import type { LibraryReplicator } from '../../src/replication/replicator.js';
import { systemRandom, systemScheduler } from '../../src/runtime/system-runtime.js';
import { DirectOnlyTransport } from './direct-only-transport.js';

export class ScriptedTransport extends DirectOnlyTransport implements Transport {
  /** Sorts after the partners' PeerIds: the partner side opens sessions, so none open here. */
  readonly localPeer = 'zz-local-peer';
  /** Every dial asked for: the peer and the addresses it was given. */
  readonly dials: Array<{ peer: string; addrs: readonly string[] }> = [];
  /** Whether the next dials succeed. */
  reachable = false;
  /** While set, a dial waits for this promise before it ends. */
  hold: Promise<void> | undefined;
  private readonly connected = new Set<string>();
  private connectionListener: ConnectionListener = () => undefined;
  private discoveryListener: DiscoveryListener = () => undefined;
  private addressListener: () => void = () => undefined;
  /** This node's addresses; a test may replace them. */
  addrs: string[] = [];

  addresses(): string[] {
    return [...this.addrs];
  }
  handle(): void {}
  async connect(peer: string, addrs: readonly string[], options: ConnectOptions = {}): Promise<void> {
    this.dials.push({ peer, addrs });
    options.onDialling?.(addrs.map((a) => `${a}/p2p/${peer}`));
    await this.hold;
    if (!this.reachable) throw new NetworkError(`cannot reach peer ${peer} at ${addrs.join(', ')}: ECONNREFUSED`);
    this.connected.add(peer);
    this.connectionListener(peer, true);
  }
  openStream(): Promise<FrameStream> {
    return Promise.reject(new NetworkError('no streams here'));
  }
  isConnected(peer: string): boolean {
    return this.connected.has(peer);
  }
  onAddressesChange(listener: () => void): void {
    this.addressListener = listener;
  }
  /** Fires the address event, as libp2p's 'self:peer:update' does. */
  announceAddresses(): void {
    this.addressListener();
  }
  async disconnect(): Promise<void> {}
  onConnectionChange(listener: ConnectionListener): void {
    this.connectionListener = listener;
  }
  /** What the network told the transport: who is known, and whom this node may relay. */
  isKnown: (peer: string) => boolean = () => false;
  mayRelay: RelayPolicy = () => false;
  setKnownPeers(isKnown: (peer: string) => boolean, mayRelay: RelayPolicy = () => false): void {
    this.isKnown = isKnown;
    this.mayRelay = mayRelay;
  }
  onPeerDiscovered(listener: DiscoveryListener): void {
    this.discoveryListener = listener;
  }
  /** Makes discovery report `peer`, as mDNS would. */
  discover(peer: string): void {
    this.discoveryListener(peer);
  }
  async stop(): Promise<void> {}
}

export interface FakePartner {
  device: string;
  peer: string;
  /** The partner's member-row addresses; a test may replace them (the partner moved). */
  addrs: string[];
}

/** The little of a library replicator that dialling reads: one partner and its member row. */
export function fakeReplicator(
  partner: FakePartner,
  onStatus: () => void = () => undefined,
  onAddressesChanged: () => void = () => undefined,
): LibraryReplicator {
  return {
    library: { id: 'library' },
    inactive: false,
    sessions: new Map(),
    removedPeers: () => new Map(),
    devicesOf: (peer: string) => (peer === partner.peer ? [partner.device] : []),
    onRefusedAsRemoved: async () => undefined,
    partners: () => [{ device: partner.device, peer: partner.peer, addrs: partner.addrs }],
    isMemberPeer: (peer: string) => peer === partner.peer,
    scheduleStatus: onStatus,
    addressesChanged: onAddressesChanged,
    stop: async () => undefined,
  } as unknown as LibraryReplicator;
}

/** A network on `transport` with a fixed backoff (no jitter: random() is 0.5) and the given clock. */
export function startNetwork(
  transport: ScriptedTransport,
  options: { now: () => number; backoff: { minMs: number; maxMs: number }; reconcileMs: number },
): SyncNetwork {
  const { now, ...rest } = options;
  return new SyncNetwork(transport, 'local-device', {
    ...rest,
    handshakeTimeoutMs: 1_000,
    maxConcurrentServes: 1,
    deviceName: null,
    bootstrap: [],
    runtime: { scheduler: systemScheduler, random: { next: () => 0.5, bytes: systemRandom.bytes }, wallClock: now },
    onSessionError: () => undefined,
  });
}
