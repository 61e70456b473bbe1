/**
 * The smallest in-process `Transport`: nodes registered on one hub reach each other at once,
 * frames pass in order without loss, nothing is timed. For tests that run node cores without
 * libp2p (no delay, loss or partitions: that is the simulator's in-memory transport).
 */
import { NetworkError } from '../../src/errors.js';
import type { ConnectionListener, FrameStream, Transport } from '../../src/protocol/transport.js';
import { DirectOnlyTransport } from './direct-only-transport.js';

/** One direction of a stream: frames queued until read. */
class Pipe {
  private readonly queue: Uint8Array[] = [];
  private ended = false;
  private error: Error | undefined;
  private wake: (() => void) | undefined;

  push(frame: Uint8Array): void {
    if (this.ended || this.error) throw new NetworkError('stream closed');
    this.queue.push(frame);
    this.notify();
  }

  end(): void {
    this.ended = true;
    this.notify();
  }

  fail(error: Error): void {
    this.error ??= error;
    this.notify();
  }

  async *read(): AsyncIterable<Uint8Array> {
    for (;;) {
      if (this.error) throw this.error;
      const frame = this.queue.shift();
      if (frame) yield frame;
      else if (this.ended) return;
      else await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

class PairedStream implements FrameStream {
  constructor(
    readonly remotePeer: string,
    private readonly inbound: Pipe,
    private readonly outbound: Pipe,
  ) {}

  async send(frame: Uint8Array): Promise<void> {
    this.outbound.push(frame.slice());
  }

  frames(): AsyncIterable<Uint8Array> {
    return this.inbound.read();
  }

  async close(): Promise<void> {
    this.outbound.end();
  }

  abort(reason: Error): void {
    this.outbound.fail(reason);
    this.inbound.fail(reason);
  }
}

export class PairedHub {
  readonly transports = new Map<string, PairedTransport>();

  /** A transport for `peer` on this hub. */
  transport(peer: string): PairedTransport {
    const transport = new PairedTransport(this, peer);
    this.transports.set(peer, transport);
    return transport;
  }
}

export class PairedTransport extends DirectOnlyTransport implements Transport {
  private handler: (stream: FrameStream) => void = (stream) => stream.abort(new NetworkError('no handler'));
  private readonly connectionListeners: ConnectionListener[] = [];
  /** Open streams by remote peer: a connection is open while the peer is a key here. */
  private readonly links = new Map<string, Set<PairedStream>>();
  private stopped = false;

  constructor(
    private readonly hub: PairedHub,
    readonly localPeer: string,
  ) {
    super();
  }

  addresses(): string[] {
    return this.stopped ? [] : [`/memory/${this.localPeer}/p2p/${this.localPeer}`];
  }

  handle(handler: (stream: FrameStream) => void): void {
    this.handler = handler;
  }

  async connect(peer: string): Promise<void> {
    const other = this.hub.transports.get(peer);
    if (this.stopped || !other || other.stopped) throw new NetworkError(`cannot reach peer ${peer}`);
    if (this.links.has(peer)) return;
    this.links.set(peer, new Set());
    other.links.set(this.localPeer, new Set());
    this.connectionChanged(peer, true);
    other.connectionChanged(this.localPeer, true);
  }

  async openStream(peer: string): Promise<FrameStream> {
    await this.connect(peer);
    const other = this.hub.transports.get(peer)!;
    const there = new Pipe();
    const back = new Pipe();
    const local = new PairedStream(peer, back, there);
    const remote = new PairedStream(this.localPeer, there, back);
    this.links.get(peer)!.add(local);
    other.links.get(this.localPeer)!.add(remote);
    other.handler(remote);
    return local;
  }

  isConnected(peer: string): boolean {
    return this.links.has(peer);
  }

  onAddressesChange(): void {}

  async disconnect(peer: string): Promise<void> {
    this.unlink(peer);
    this.hub.transports.get(peer)?.unlink(this.localPeer);
  }

  onConnectionChange(listener: ConnectionListener): void {
    this.connectionListeners.push(listener);
  }

  setKnownPeers(): void {}

  onPeerDiscovered(): void {}

  async stop(): Promise<void> {
    this.stopped = true;
    for (const peer of [...this.links.keys()]) await this.disconnect(peer);
  }

  private unlink(peer: string): void {
    const streams = this.links.get(peer);
    if (!streams) return;
    this.links.delete(peer);
    for (const stream of streams) stream.abort(new NetworkError(`connection to ${peer} closed`));
    this.connectionChanged(peer, false);
  }

  private connectionChanged(peer: string, connected: boolean): void {
    for (const listener of this.connectionListeners) listener(peer, connected);
  }
}
