/**
 * The fuzz harness's network: transports of several in-process nodes joined by a hub, with no
 * delay, loss or reordering (the fuzzer wants throughput and exact control, not faults), plus
 * `inject`, which hands the fuzzer the far end of a stream that the victim accepts as coming
 * from any PeerId the fuzzer names: the fuzzer plays members and strangers alike.
 */
import { NetworkError, SyncError } from '../src/errors.js';
import type { ConnectionKind, ConnectionListener, FrameStream, Transport } from '../src/protocol/transport.js';

/** One direction of a stream: frames queued for the reader, and how the writer ended. */
class Inbox {
  private readonly queue: Uint8Array[] = [];
  private wake: (() => void) | undefined;
  private ended = false;
  private failure: Error | undefined;

  put(frame: Uint8Array): void {
    if (this.ended || this.failure) return;
    this.queue.push(frame);
    this.notify();
  }

  end(): void {
    this.ended = true;
    this.notify();
  }

  fail(reason: Error): void {
    this.failure ??= reason;
    this.queue.length = 0;
    this.notify();
  }

  get open(): boolean {
    return !this.ended && !this.failure;
  }

  async *read(): AsyncGenerator<Uint8Array> {
    for (;;) {
      if (this.failure) throw this.failure;
      const frame = this.queue.shift();
      if (frame) {
        yield frame;
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

/** One end of an in-process stream. */
export class LoopStream implements FrameStream {
  /** Set once this end closed or reset (by either side). */
  endedBy: 'close' | 'abort' | undefined;
  peerEnd!: LoopStream;
  private readonly inbox = new Inbox();

  constructor(
    readonly remotePeer: string,
    private readonly record: ((frame: Uint8Array) => void) | undefined,
  ) {}

  static pair(a: string, b: string, record?: (from: string, frame: Uint8Array) => void): [LoopStream, LoopStream] {
    // The end held by `a` talks to `b`, so its remotePeer is `b`.
    const ofA = new LoopStream(b, record && ((frame) => record(a, frame)));
    const ofB = new LoopStream(a, record && ((frame) => record(b, frame)));
    ofA.peerEnd = ofB;
    ofB.peerEnd = ofA;
    return [ofA, ofB];
  }

  async send(frame: Uint8Array): Promise<void> {
    if (this.endedBy) throw new NetworkError('stream closed');
    this.record?.(frame);
    this.peerEnd.inbox.put(frame);
  }

  frames(): AsyncIterable<Uint8Array> {
    return { [Symbol.asyncIterator]: () => this.inbox.read() };
  }

  async close(): Promise<void> {
    if (this.endedBy) return;
    this.endedBy = 'close';
    this.peerEnd.inbox.end();
  }

  abort(reason: Error): void {
    if (this.endedBy === 'abort') return;
    this.endedBy = 'abort';
    // As `Libp2pTransport` reports it: this side's own typed reason, a reset for the other side.
    this.inbox.fail(reason instanceof SyncError ? reason : new NetworkError(`stream with ${this.remotePeer} aborted: ${reason.message}`));
    this.peerEnd.inbox.fail(new NetworkError(`the sync stream with ${this.peerEnd.remotePeer} was reset`));
    this.peerEnd.endedBy ??= 'abort';
  }
}

export class LoopHub {
  private readonly transports = new Map<string, LoopTransport>();

  /** Called with every frame any stream carries (the corpus recorder). */
  record: ((from: string, frame: Uint8Array) => void) | undefined;

  transport(peer: string): LoopTransport {
    const transport = new LoopTransport(this, peer);
    this.transports.set(peer, transport);
    return transport;
  }

  get(peer: string): LoopTransport | undefined {
    return this.transports.get(peer);
  }

  /** A stream to `victim` that it accepts as opened by `as`; the fuzzer holds the returned end. */
  inject(victim: string, as: string): LoopStream {
    const target = this.transports.get(victim);
    if (!target) throw new NetworkError(`no peer ${victim}`);
    const [mine, theirs] = LoopStream.pair(as, victim);
    target.accept(theirs);
    return mine;
  }

  unregister(peer: string): void {
    this.transports.delete(peer);
  }
}

/** A node's transport on the hub: connections are notional, streams are in-process pairs. */
export class LoopTransport implements Transport {
  private handler: ((stream: FrameStream) => void) | undefined;
  private readonly connected = new Set<string>();
  private connectionListener: ConnectionListener = () => undefined;

  constructor(
    private readonly hub: LoopHub,
    readonly localPeer: string,
  ) {}

  addresses(): string[] {
    return [`/memory/${this.localPeer}/p2p/${this.localPeer}`];
  }
  handle(handler: (stream: FrameStream) => void): void {
    this.handler = handler;
  }
  accept(stream: LoopStream): void {
    if (!this.handler) throw new NetworkError(`peer ${this.localPeer} does not accept streams`);
    this.handler(stream);
  }
  async connect(peer: string): Promise<void> {
    const other = this.hub.get(peer);
    if (!other) throw new NetworkError(`cannot reach peer ${peer}`);
    this.linked(peer, true);
    other.linked(this.localPeer, true);
  }
  async openStream(peer: string): Promise<FrameStream> {
    const other = this.hub.get(peer);
    if (!other || !this.connected.has(peer)) throw new NetworkError(`not connected to peer ${peer}`);
    const [mine, theirs] = LoopStream.pair(this.localPeer, peer, this.hub.record);
    other.accept(theirs);
    return mine;
  }
  isConnected(peer: string): boolean {
    return this.connected.has(peer);
  }
  connectionKind(peer: string): ConnectionKind | null {
    return this.connected.has(peer) ? 'direct' : null;
  }
  async upgradeToDirect(): Promise<boolean> {
    return false;
  }
  reserveRelay(): Promise<void> {
    return Promise.reject(new NetworkError('no relays here'));
  }
  hasRelayReservation(): boolean {
    return false;
  }
  onAddressesChange(): void {}
  async disconnect(peer: string): Promise<void> {
    this.linked(peer, false);
    this.hub.get(peer)?.linked(this.localPeer, false);
  }
  onConnectionChange(listener: ConnectionListener): void {
    this.connectionListener = listener;
  }
  setKnownPeers(): void {}
  onPeerDiscovered(): void {}
  async stop(): Promise<void> {
    for (const peer of [...this.connected]) await this.disconnect(peer);
    this.hub.unregister(this.localPeer);
  }

  private linked(peer: string, connected: boolean): void {
    if (this.connected.has(peer) === connected) return;
    if (connected) this.connected.add(peer);
    else this.connected.delete(peer);
    this.connectionListener(peer, connected);
  }
}
