import { describeError, NetworkError, ProtocolError, type SyncError, toSyncError } from '../errors.js';
import { FrameDecoder, type FrameLimits, lengthPrefixed } from '../protocol/framing.js';
import { MAX_FRAME_BYTES, MAX_HANDSHAKE_FRAME_BYTES } from '../protocol/messages.js';
import type {
  ConnectionKind,
  ConnectionListener,
  ConnectOptions,
  DiscoveryListener,
  FrameStream,
  RelayPolicy,
  Transport,
} from '../protocol/transport.js';
import type { Random, Scheduler } from '../runtime/runtime.js';

/**
 * An in-memory network of `Transport`s for tests and the simulator: named peers, connections,
 * streams of whole frames, and faults, all driven by an injected `Scheduler` and `Random`, so a
 * seed and a deterministic scheduler replay a run exactly. It keeps what the protocol relies on
 * from libp2p (docs/architecture.md, "The in-memory transport"): authenticated remote peers,
 * ordered streams with back-pressure, the frame limits, the stranger connection limit, and
 * every failure as a `NetworkError` (a broken frame limit as a `ProtocolError`).
 */

/** Faults applied to every frame sent (and delays to every dial and stream opening). */
export interface LinkFaults {
  /** Latency of each frame, dial and stream opening: uniform in [minMs, maxMs] on the scheduler. */
  delay: { minMs: number; maxMs: number };
  /** Probability that a frame is lost: the stream carrying it is reset at that frame, both sides. */
  loss: number;
  /** Probability that a frame is delivered twice in a row. */
  duplication: number;
  /**
   * Probability that a frame is held back and delivered after the next frame of its stream (or
   * alone, the maximum delay later, when no frame follows).
   */
  reordering: number;
}

export const NO_FAULTS: LinkFaults = { delay: { minMs: 0, maxMs: 0 }, loss: 0, duplication: 0, reordering: 0 };

export type FaultKind =
  | 'delay'
  | 'loss'
  | 'duplication'
  | 'reordering'
  /** A connection closed because a partition separated its peers. */
  | 'partition-cut'
  /** A dial refused because a partition separates the peers. */
  | 'partition-refusal'
  /** A connection closed by `dropConnection`. */
  | 'connection-drop';

export const FAULT_KINDS: readonly FaultKind[] = ['delay', 'loss', 'duplication', 'reordering', 'partition-cut', 'partition-refusal', 'connection-drop'];

export interface FaultEvent {
  kind: FaultKind;
  /** The sending (dialling) peer. */
  from: string;
  /** The receiving (dialled) peer. */
  to: string;
}

export interface MemoryTransportOptions {
  /** Largest frame accepted; a larger one fails the reader with a `ProtocolError`. */
  maxFrameBytes: number;
  /** Largest first non-empty frame of a stream (the handshake). */
  maxFirstFrameBytes: number;
  /** Streams per connection and direction, at most. */
  maxStreams: number;
  /** Open connections with peers that are not known (see `setKnownPeers`), at most. */
  maxStrangerConnections: number;
  /** Bytes of one stream direction in flight and unread before `send` waits (yamux's window). */
  maxBufferedBytes: number;
  /** Whether others can dial this peer; false: it has no address and only dials out (libp2p's `listen: []`). */
  listening: boolean;
}

const DEFAULT_MEMORY_TRANSPORT_OPTIONS: MemoryTransportOptions = {
  maxFrameBytes: MAX_FRAME_BYTES,
  maxFirstFrameBytes: MAX_HANDSHAKE_FRAME_BYTES,
  maxStreams: 64,
  maxStrangerConnections: 8,
  maxBufferedBytes: 256 * 1024,
  listening: true,
};

export interface MemoryNetworkOptions {
  scheduler: Scheduler;
  random: Random;
  faults?: Partial<LinkFaults>;
}

/** The address of a peer in the memory network (libp2p's memory transport spells it so too). */
function memoryAddress(peer: string): string {
  return `/memory/${peer}/p2p/${peer}`;
}

export class MemoryNetwork {
  readonly scheduler: Scheduler;
  private readonly random: Random;
  private currentFaults: LinkFaults;
  private readonly transports = new Map<string, MemoryTransport>();
  private readonly connections = new Map<string, MemoryConnection>();
  /** Pairs of peers (pairKey) a partition separates. */
  private readonly cuts = new Set<string>();
  private readonly counts = new Map<FaultKind, number>(FAULT_KINDS.map((kind) => [kind, 0]));
  private readonly faultListeners: Array<(event: FaultEvent) => void> = [];

  constructor(options: MemoryNetworkOptions) {
    this.scheduler = options.scheduler;
    this.random = options.random;
    this.currentFaults = { ...NO_FAULTS, ...options.faults };
  }

  /** A started transport for `peer`; a stopped peer may be created again (a restart). */
  createTransport(peer: string, options: Partial<MemoryTransportOptions> = {}): MemoryTransport {
    if (this.transports.has(peer)) throw new Error(`peer ${peer} already runs in this memory network`);
    const transport = new MemoryTransport(this, peer, { ...DEFAULT_MEMORY_TRANSPORT_OPTIONS, ...options });
    this.transports.set(peer, transport);
    return transport;
  }

  /** The running transport of `peer`, if any. */
  transportOf(peer: string): MemoryTransport | undefined {
    return this.transports.get(peer);
  }

  get faults(): LinkFaults {
    return { ...this.currentFaults, delay: { ...this.currentFaults.delay } };
  }

  /** Changes the faults from now on (frames already in flight keep theirs). */
  setFaults(faults: Partial<LinkFaults>): void {
    this.currentFaults = { ...this.currentFaults, ...faults };
  }

  /**
   * Separates every two peers listed in different groups (peers in no group keep their links):
   * their connections close now, on both sides, and dials between them fail until `heal`. Adds
   * to the partitions already in place.
   */
  partition(groups: ReadonlyArray<readonly string[]>): void {
    groups.forEach((group, i) => {
      for (const other of groups.slice(i + 1)) {
        for (const a of group) for (const b of other) if (a !== b) this.cuts.add(pairKey(a, b));
      }
    });
    for (const [key, connection] of this.connections) {
      if (this.cuts.has(key)) this.closeConnection(connection, 'a network partition', 'partition-cut');
    }
  }

  /** Removes every partition; peers reconnect when they dial again. */
  heal(): void {
    this.cuts.clear();
  }

  isPartitioned(a: string, b: string): boolean {
    return this.cuts.has(pairKey(a, b));
  }

  /** Closes the connection between `a` and `b`, if any, as a network failure would (counted). */
  dropConnection(a: string, b: string): void {
    const connection = this.connections.get(pairKey(a, b));
    if (connection) this.closeConnection(connection, 'a dropped connection', 'connection-drop');
  }

  /** Faults injected so far, by kind. */
  faultCounts(): Record<FaultKind, number> {
    return Object.fromEntries(this.counts) as Record<FaultKind, number>;
  }

  /** Told of every fault as it is injected (for traces). */
  onFault(listener: (event: FaultEvent) => void): void {
    this.faultListeners.push(listener);
  }

  // --- used by the transports and streams of this network -------------------------------

  /** @internal */
  recordFault(kind: FaultKind, from: string, to: string): void {
    this.counts.set(kind, (this.counts.get(kind) ?? 0) + 1);
    for (const listener of this.faultListeners) listener({ kind, from, to });
  }

  /** @internal A latency drawn from the current faults (a frame's, a dial's, a stream opening's). */
  sampleDelay(from: string, to: string): number {
    const { minMs, maxMs } = this.currentFaults.delay;
    const delay = maxMs > minMs ? minMs + this.random.next() * (maxMs - minMs) : minMs;
    if (delay > 0) this.recordFault('delay', from, to);
    return delay;
  }

  /** @internal Whether a fault of probability `p` strikes now (no draw when it cannot). */
  strikes(kind: 'loss' | 'duplication' | 'reordering', from: string, to: string): boolean {
    const p = this.currentFaults[kind];
    if (p <= 0 || this.random.next() >= p) return false;
    this.recordFault(kind, from, to);
    return true;
  }

  /** @internal The largest frame delay now (how long a held-back frame waits for a follower). */
  maxDelayMs(): number {
    return this.currentFaults.delay.maxMs;
  }

  /** @internal */
  connectionBetween(a: string, b: string): MemoryConnection | undefined {
    return this.connections.get(pairKey(a, b));
  }

  /** @internal Connects `dialer` to `peer` at one of `targets`, as a dial that reached it would. */
  async dial(dialer: MemoryTransport, peer: string, targets: readonly string[], signal: AbortSignal | undefined): Promise<void> {
    await this.wait(this.sampleDelay(dialer.localPeer, peer), signal);
    if (dialer.stopped) throw new Error('this node is stopped');
    const existing = this.connectionBetween(dialer.localPeer, peer);
    if (existing) return;
    const remote = this.transports.get(peer);
    if (!remote || !targets.some((target) => remote.addresses().includes(target))) throw new Error('ECONNREFUSED: no peer listens there');
    if (this.isPartitioned(dialer.localPeer, peer)) {
      this.recordFault('partition-refusal', dialer.localPeer, peer);
      throw new Error('EHOSTUNREACH: a network partition separates the peers');
    }
    if (remote.refusesStranger(dialer.localPeer)) throw new Error('the peer refused the connection (too many connections of peers it does not know)');
    const connection = new MemoryConnection(dialer, remote);
    this.connections.set(pairKey(dialer.localPeer, peer), connection);
    dialer.connected(remote);
    remote.connected(dialer);
  }

  /** @internal Closes `connection`: its streams fail on both sides, both sides hear of it. */
  closeConnection(connection: MemoryConnection, why: string, fault?: FaultKind): void {
    const key = pairKey(connection.a.localPeer, connection.b.localPeer);
    if (this.connections.get(key) !== connection) return;
    this.connections.delete(key);
    if (fault) this.recordFault(fault, connection.a.localPeer, connection.b.localPeer);
    for (const stream of [...connection.streams]) stream.resetBoth(`the connection closed (${why})`);
    connection.a.disconnected(connection.b);
    connection.b.disconnected(connection.a);
  }

  /** @internal */
  connectionsOf(peer: string): MemoryConnection[] {
    return [...this.connections.values()].filter((c) => c.a.localPeer === peer || c.b.localPeer === peer);
  }

  /** @internal */
  removed(transport: MemoryTransport): void {
    for (const connection of this.connectionsOf(transport.localPeer)) this.closeConnection(connection, `${transport.localPeer} stopped`);
    if (this.transports.get(transport.localPeer) === transport) this.transports.delete(transport.localPeer);
  }

  /** @internal Resolves `ms` later on the scheduler; rejects at once when `signal` aborts. */
  wait(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        cancel();
        reject(abortReason(signal!));
      };
      const cancel = this.scheduler.setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

/** One connection between two peers (the memory network keeps at most one per pair). */
class MemoryConnection {
  readonly streams = new Set<MemoryStreamEnd>();

  constructor(
    readonly a: MemoryTransport,
    readonly b: MemoryTransport,
  ) {}

  /** Streams `opener` opened on this connection that are still in use. */
  openedBy(opener: string): number {
    return [...this.streams].filter((s) => s.opener === opener && s.local === opener).length;
  }
}

/**
 * A `Transport` of the memory network. Differences from `Libp2pTransport`, on purpose: peers
 * are reached by PeerId at their one address (`memoryAddress`), there are no relays
 * (`connectionKind` is 'direct', `upgradeToDirect` resolves false, `reserveRelay` rejects), no
 * LAN discovery and no address changes (their listeners are kept, never called); a stranger
 * over the limit has its dial refused at once (libp2p lets the dial succeed for a moment and
 * closes the connection after Noise), and a peer without a handler refuses streams with a
 * `NetworkError` (libp2p: an unsupported protocol, `ProtocolVersionError`).
 */
export class MemoryTransport implements Transport {
  private halted = false;
  private handler: ((stream: FrameStream) => void) | undefined;
  private readonly connectionListeners: ConnectionListener[] = [];
  private readonly addressListeners: Array<() => void> = [];
  private readonly discoveryListeners: DiscoveryListener[] = [];
  private isKnown: (peer: string) => boolean = () => false;
  /** What identify would have told: the addresses of peers connected before (strangers forgotten). */
  private readonly learned = new Map<string, string[]>();

  constructor(
    private readonly network: MemoryNetwork,
    readonly localPeer: string,
    readonly options: MemoryTransportOptions,
  ) {}

  addresses(): string[] {
    return this.halted || !this.options.listening ? [] : [memoryAddress(this.localPeer)];
  }

  handle(handler: (stream: FrameStream) => void): void {
    this.handler = handler;
  }

  async connect(peer: string, addrs: readonly string[], options: ConnectOptions = {}): Promise<void> {
    if (this.isConnected(peer)) return;
    const targets = dialTargets(peer, [...addrs, ...(this.learned.get(peer) ?? [])]);
    options.onDialling?.(targets);
    if (targets.length === 0) throw new NetworkError(`no usable address for peer ${peer}`);
    try {
      await this.network.dial(this, peer, targets, options.signal);
    } catch (err) {
      throw new NetworkError(`cannot reach peer ${peer} at ${targets.join(', ')}: ${describeError(err)}`);
    }
  }

  async openStream(peer: string, signal?: AbortSignal): Promise<FrameStream> {
    try {
      await this.connect(peer, [], { signal });
      const connection = this.network.connectionBetween(this.localPeer, peer);
      const remote = connection && (connection.a.localPeer === peer ? connection.a : connection.b);
      if (!connection || !remote) throw new Error('the connection closed');
      if (!remote.handler) throw new Error('the peer does not handle sync streams');
      const limit = Math.min(this.options.maxStreams, remote.options.maxStreams);
      if (connection.openedBy(this.localPeer) >= limit) throw new Error(`too many streams on the connection (${limit})`);
      const [local, inbound] = MemoryStreamEnd.pair(this.network, connection, this, remote);
      await this.network.wait(this.network.sampleDelay(this.localPeer, peer), signal).catch((err: unknown) => {
        local.resetBoth('the stream opening was aborted');
        throw err;
      });
      if (local.failed) throw new Error('the connection closed while the stream opened');
      remote.handler?.(inbound);
      return local;
    } catch (err) {
      throw toSyncError(err, (cause) => new NetworkError(`cannot open a sync stream to ${peer}: ${cause}`));
    }
  }

  isConnected(peer: string): boolean {
    return this.network.connectionBetween(this.localPeer, peer) !== undefined;
  }

  connectionKind(peer: string): ConnectionKind | null {
    return this.isConnected(peer) ? 'direct' : null;
  }

  /** Every connection is direct: there is never a relayed one to upgrade. */
  async upgradeToDirect(): Promise<boolean> {
    return false;
  }

  async reserveRelay(relay: string): Promise<void> {
    throw new NetworkError(`relay ${relay} refused a reservation: the memory network has no relays`);
  }

  hasRelayReservation(): boolean {
    return false;
  }

  onAddressesChange(listener: () => void): void {
    this.addressListeners.push(listener);
  }

  async disconnect(peer: string): Promise<void> {
    const connection = this.network.connectionBetween(this.localPeer, peer);
    if (connection) this.network.closeConnection(connection, `${this.localPeer} hung up`);
  }

  onConnectionChange(listener: ConnectionListener): void {
    this.connectionListeners.push(listener);
  }

  /** No relays here, so `mayRelay` is not kept; `isKnown` sets the stranger limit as in libp2p. */
  setKnownPeers(isKnown: (peer: string) => boolean, _mayRelay?: RelayPolicy): void {
    this.isKnown = isKnown;
  }

  onPeerDiscovered(listener: DiscoveryListener): void {
    this.discoveryListeners.push(listener);
  }

  async stop(): Promise<void> {
    if (this.halted) return;
    // As Libp2pTransport: the listeners go first, so stopping tells this node nothing.
    this.connectionListeners.length = 0;
    this.addressListeners.length = 0;
    this.discoveryListeners.length = 0;
    this.halted = true;
    this.network.removed(this);
  }

  get stopped(): boolean {
    return this.halted;
  }

  /** @internal A peer this node does not know gets a connection only while few others have one. */
  refusesStranger(peer: string): boolean {
    if (this.isKnown(peer)) return false;
    const strangers = this.network.connectionsOf(this.localPeer).filter((c) => !this.isKnown(otherEnd(c, this.localPeer).localPeer)).length;
    return strangers >= this.options.maxStrangerConnections;
  }

  /** @internal */
  connected(remote: MemoryTransport): void {
    this.learned.set(remote.localPeer, remote.addresses());
    for (const listener of this.connectionListeners) listener(remote.localPeer, true);
  }

  /** @internal */
  disconnected(remote: MemoryTransport): void {
    // As Libp2pTransport forgets strangers: what they leave behind must not outlive them.
    if (!this.isKnown(remote.localPeer)) this.learned.delete(remote.localPeer);
    for (const listener of this.connectionListeners) listener(remote.localPeer, false);
  }

  /** @internal */
  frameLimits(): FrameLimits {
    return { firstFrameBytes: this.options.maxFirstFrameBytes, frameBytes: this.options.maxFrameBytes };
  }
}

/** A frame on its way, the end of the stream (a graceful close), or its reset by the sender (`abort`). */
type InFlight = { kind: 'frame'; frame: Uint8Array; at: number } | { kind: 'end'; at: number } | { kind: 'reset'; why: string; at: number };

/**
 * One end of a stream. Frames travel to `peer` through `outbound` (each with its arrival time,
 * never before the one ahead of it: delay does not reorder) and wait in `peer.inbox` until read.
 * `send` waits while the receiver holds more than its `maxBufferedBytes` in flight and unread.
 */
class MemoryStreamEnd implements FrameStream {
  readonly remotePeer: string;
  private peer!: MemoryStreamEnd;
  private readonly inbox: Uint8Array[] = [];
  /** Bytes sent to this end and not read yet (in flight, held back, or in the inbox). */
  private pendingBytes = 0;
  private readonly outbound: InFlight[] = [];
  private lastArrival = 0;
  /** A frame reordering holds back until the next one is sent. */
  private held: Uint8Array | undefined;
  private remoteEnded = false;
  private writeClosed = false;
  private failure: SyncError | undefined;
  private readonly decoder: FrameDecoder;
  private wake: (() => void) | undefined;
  private readonly drainWaiters: Array<() => void> = [];
  private readonly closeWaiters: Array<() => void> = [];

  private constructor(
    private readonly network: MemoryNetwork,
    private readonly connection: MemoryConnection,
    readonly local: string,
    readonly opener: string,
    remote: MemoryTransport,
    limits: FrameLimits,
    private readonly maxBufferedBytes: number,
  ) {
    this.remotePeer = remote.localPeer;
    this.decoder = new FrameDecoder(limits);
  }

  /** Both ends of a new stream `opener` opens to `remote`; registered on the connection. */
  static pair(network: MemoryNetwork, connection: MemoryConnection, opener: MemoryTransport, remote: MemoryTransport): [MemoryStreamEnd, MemoryStreamEnd] {
    const local = new MemoryStreamEnd(network, connection, opener.localPeer, opener.localPeer, remote, opener.frameLimits(), opener.options.maxBufferedBytes);
    const inbound = new MemoryStreamEnd(network, connection, remote.localPeer, opener.localPeer, opener, remote.frameLimits(), remote.options.maxBufferedBytes);
    local.peer = inbound;
    inbound.peer = local;
    connection.streams.add(local);
    return [local, inbound];
  }

  get failed(): boolean {
    return this.failure !== undefined;
  }

  async send(frame: Uint8Array): Promise<void> {
    if (this.failure || this.writeClosed) {
      throw new NetworkError(`cannot send to ${this.remotePeer}: the sync stream is ${this.failure ? 'reset' : 'closed'}`);
    }
    if (this.network.strikes('loss', this.local, this.remotePeer)) {
      this.resetBoth('a frame was lost (simulated loss)');
      throw this.failure!;
    }
    const copies = this.network.strikes('duplication', this.local, this.remotePeer) ? 2 : 1;
    for (let i = 0; i < copies; i++) this.transmit(frame.slice());
    while (!this.failure && this.peer.pendingBytes > this.peer.maxBufferedBytes) {
      await new Promise<void>((resolve) => this.drainWaiters.push(resolve));
    }
    if (this.failure) throw new NetworkError(`sync stream with ${this.remotePeer} failed while sending: ${describeError(this.failure)}`);
  }

  async *frames(): AsyncIterable<Uint8Array> {
    for (;;) {
      // What arrived before a remote reset is read first (a failure of this side empties the inbox).
      const frame = this.inbox.shift();
      if (this.failure && !frame) throw this.failure;
      if (frame) {
        this.pendingBytes -= frame.byteLength;
        this.peer.drained();
        let decoded: Uint8Array[];
        try {
          decoded = [...this.decoder.push(lengthPrefixed(frame))];
        } catch (err) {
          const error = new ProtocolError(`bad frame from ${this.remotePeer}: ${describeError(err)}`);
          this.reset(error, 'the remote refused a frame');
          throw error;
        }
        yield* decoded;
      } else if (this.remoteEnded) {
        return;
      } else {
        await new Promise<void>((resolve) => (this.wake = resolve));
      }
    }
  }

  async close(): Promise<void> {
    if (this.failure || this.writeClosed) return;
    this.releaseHeld();
    this.writeClosed = true;
    this.enqueue({ kind: 'end', at: this.arrivalTime() });
    await new Promise<void>((resolve) => this.closeWaiters.push(resolve));
  }

  /**
   * Fails this end now; the frames sent before still travel, and the reset after them, as
   * yamux sends its reset behind the data: the remote reads them, then fails (a refusal sends
   * its error frame, then aborts).
   */
  abort(reason: Error): void {
    if (this.failure) return;
    this.releaseHeld();
    this.failure = toSyncError(reason, (cause) => new NetworkError(`sync stream with ${this.remotePeer} was aborted: ${cause}`));
    this.inbox.length = 0;
    // This end is done now: the stream no longer counts on the connection, even while its
    // reset still travels (or never arrives, the remote having failed first).
    this.connection.streams.delete(this.opener === this.local ? this : this.peer);
    this.wakeAll();
    this.enqueue({ kind: 'reset', why: `the remote reset the stream (${describeError(reason)})`, at: this.arrivalTime() });
  }

  /** Resets the stream with the same cause on both sides (connection closed, frame lost). */
  resetBoth(why: string): void {
    this.reset(new NetworkError(`sync stream with ${this.remotePeer} failed: StreamResetError: ${why}`), why);
  }

  /** Fails this end with `error`, the other with a reset that says `remoteWhy`; drops what was in flight. */
  private reset(error: SyncError, remoteWhy: string): void {
    if (!this.failure) this.fail(error);
    this.outbound.length = 0;
    if (!this.peer.failure) this.peer.fail(this.resetError(remoteWhy));
  }

  /** What the other end fails with when this one resets the stream. */
  private resetError(why: string): NetworkError {
    return new NetworkError(`sync stream with ${this.local} failed: StreamResetError: ${why}`);
  }

  /** Fails this end; with `keepInbox`, what arrived is still read first (a remote reset behind it). */
  private fail(error: SyncError, keepInbox = false): void {
    this.failure = error;
    if (!keepInbox) this.inbox.length = 0;
    this.outbound.length = 0;
    this.held = undefined;
    this.connection.streams.delete(this.opener === this.local ? this : this.peer);
    this.wakeAll();
  }

  private wakeAll(): void {
    this.wake?.();
    this.wake = undefined;
    for (const waiter of this.drainWaiters.splice(0)) waiter();
    for (const waiter of this.closeWaiters.splice(0)) waiter();
  }

  /** The reader made room: wake the sends waiting for it. */
  private drained(): void {
    for (const waiter of this.drainWaiters.splice(0)) waiter();
  }

  /** Sends one copy of a frame through the reordering fault. */
  private transmit(frame: Uint8Array): void {
    this.peer.pendingBytes += frame.byteLength;
    if (this.held === undefined && this.network.strikes('reordering', this.local, this.remotePeer)) {
      this.held = frame;
      const held = frame;
      this.network.scheduler.setTimeout(() => {
        if (this.held === held) this.releaseHeld();
      }, this.network.maxDelayMs());
      return;
    }
    this.enqueue({ kind: 'frame', frame, at: this.arrivalTime() });
    this.releaseHeld();
  }

  private releaseHeld(): void {
    const held = this.held;
    if (held === undefined || this.failure) return;
    this.held = undefined;
    this.enqueue({ kind: 'frame', frame: held, at: this.arrivalTime() });
  }

  private arrivalTime(): number {
    const at = Math.max(this.network.scheduler.monotonicNow() + this.network.sampleDelay(this.local, this.remotePeer), this.lastArrival);
    this.lastArrival = at;
    return at;
  }

  private enqueue(item: InFlight): void {
    this.outbound.push(item);
    this.network.scheduler.setTimeout(() => this.deliverDue(), Math.max(0, item.at - this.network.scheduler.monotonicNow()));
  }

  /** Hands the receiver every frame whose time has come, in order. */
  private deliverDue(): void {
    const now = this.network.scheduler.monotonicNow();
    // The receiver failed meanwhile (its connection closed, it reset the stream): nothing more arrives.
    if (this.peer.failure) this.outbound.length = 0;
    while (this.outbound.length > 0 && this.outbound[0]!.at <= now) {
      const item = this.outbound.shift()!;
      if (item.kind === 'reset') {
        this.peer.fail(this.resetError(item.why), true);
        return;
      }
      if (item.kind === 'frame') this.peer.inbox.push(item.frame);
      else this.peer.remoteEnded = true;
      this.peer.wake?.();
      this.peer.wake = undefined;
      if (item.kind === 'end') {
        for (const waiter of this.closeWaiters.splice(0)) waiter();
        if (this.peer.writeClosed) this.connection.streams.delete(this.opener === this.local ? this : this.peer);
      }
    }
    const next = this.outbound[0];
    if (next) this.network.scheduler.setTimeout(() => this.deliverDue(), Math.max(1, next.at - now));
  }
}

function pairKey(a: string, b: string): string {
  return a < b ? `${a}\n${b}` : `${b}\n${a}`;
}

function otherEnd(connection: MemoryConnection, peer: string): MemoryTransport {
  return connection.a.localPeer === peer ? connection.b : connection.a;
}

/** The addresses `peer` can be dialled at, each ending in `/p2p/<peer>` (another peer's are skipped). */
function dialTargets(peer: string, addrs: readonly string[]): string[] {
  const suffix = `/p2p/${peer}`;
  const targets = addrs.filter((a) => !a.includes('/p2p/') || a.endsWith(suffix)).map((a) => (a.endsWith(suffix) ? a : `${a}${suffix}`));
  return [...new Set(targets)];
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('AbortError: the operation was aborted');
}
