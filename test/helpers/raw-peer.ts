/**
 * A raw protocol client for security tests: a peer with its own fresh key that speaks
 * PROTOCOL_ID frame by frame, without any of the node's checks, so tests can send exactly what
 * an attacker (or a buggy peer) would and record exactly what comes back. It runs where the
 * test file's nodes run (libp2p, or the memory network: see `useMemoryTransport`); what goes
 * below the framing (unframed streams, extra connections) needs libp2p.
 */
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { Libp2p, PrivateKey, Stream } from '@libp2p/interface';
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { Libp2pTransport } from '../../src/network/libp2p-transport.js';
import { decodeMessage, encodeMessage } from '../../src/protocol/codec.js';
import { MAX_FRAME_BYTES, MAX_HANDSHAKE_FRAME_BYTES, type Message, PROTOCOL_ID, PROTOCOL_VERSION } from '../../src/protocol/messages.js';
import type { FrameStream, Transport } from '../../src/protocol/transport.js';
import { decodeInvite, hashSecret, inviteProof } from '../../src/replication/invite-code.js';
import { type ClusterTransport, clusterTransport, memoryTransportFor, waitFor } from './cluster.js';

/** Something a raw peer can dial: a sync node or another raw peer. */
export interface Dialable {
  readonly peerId: string;
  multiaddrs(): string[];
}

/**
 * An Ed25519 key whose PeerId satisfies `accept` (e.g. sorts after a given node's). The nodes'
 * own PeerIds are random, so now and then few PeerIds sort before the smallest of them (a run
 * once needed more than 1 000 keys): the bound is high, as a key takes about 0.05 ms.
 */
export async function keyWhere(accept: (peerId: string) => boolean): Promise<PrivateKey> {
  for (let i = 0; i < 200_000; i++) {
    const key = await generateKeyPair('Ed25519');
    if (accept(peerIdFromPrivateKey(key).toString())) return key;
  }
  throw new Error('no key with the wanted PeerId found');
}

/** The libp2p stream under a frame stream, for tests that must act below the framing. */
export function libp2pStream(stream: FrameStream): Stream {
  return (stream as unknown as { stream: Stream }).stream;
}

const started = new Set<RawPeer>();

/** Stops every raw peer still running (for afterEach). */
export async function stopAllRawPeers(): Promise<void> {
  await Promise.all([...started].map((p) => p.stop()));
}

/** How a stream ended, as seen by the raw peer's reader. */
export type StreamEnd = { kind: 'closed' } | { kind: 'reset'; error: Error };

/**
 * One stream with a background reader that records every frame received (decoded when it is a
 * valid message, kept raw otherwise) and how the stream ended.
 */
export class RawStream {
  /** Every frame received, in order, decoded where possible. */
  readonly received: Array<Message | { undecodable: Uint8Array }> = [];
  end: StreamEnd | undefined;
  private readonly sendFailures: Error[] = [];

  constructor(readonly stream: FrameStream) {
    void this.read();
  }

  get remotePeer(): string {
    return this.stream.remotePeer;
  }

  /** Received frames that decoded as messages. */
  get messages(): Message[] {
    return this.received.filter((m): m is Message => 't' in m);
  }

  async send(message: Message | Record<string, unknown>): Promise<void> {
    // Bypasses the schema on purpose: tests send malformed messages too.
    await this.sendFrame(encodeMessage(message as Message));
  }

  /** Sends one length-prefixed frame of arbitrary bytes; a failure (stream gone) is recorded. */
  async sendFrame(frame: Uint8Array): Promise<boolean> {
    try {
      await this.stream.send(frame);
      return true;
    } catch (err) {
      this.sendFailures.push(err as Error);
      return false;
    }
  }

  /** Waits for the `index`-th received frame (0-based) as a message. */
  async message(index: number, what = `message #${index}`, timeoutMs = 20_000): Promise<Message> {
    await waitFor(() => this.received.length > index || this.end !== undefined, what, timeoutMs);
    const frame = this.received[index];
    if (!frame) throw new Error(`stream ended (${this.end?.kind}) before ${what}; received ${this.describe()}`);
    if (!('t' in frame)) throw new Error(`${what} is not a valid message`);
    return frame;
  }

  /** Waits until the remote closes or resets the stream. */
  async ended(what = 'the stream to end', timeoutMs = 20_000): Promise<StreamEnd> {
    await waitFor(() => this.end !== undefined, what, timeoutMs);
    return this.end!;
  }

  close(): Promise<void> {
    return this.stream.close();
  }

  abort(): void {
    this.stream.abort(new Error('raw peer aborted'));
  }

  describe(): string {
    return JSON.stringify(this.received.map((m) => ('t' in m ? m.t : 'undecodable')));
  }

  private async read(): Promise<void> {
    try {
      for await (const frame of this.stream.frames()) {
        try {
          this.received.push(decodeMessage(frame));
        } catch {
          this.received.push({ undecodable: frame });
        }
      }
      this.end = { kind: 'closed' };
    } catch (err) {
      this.end = { kind: 'reset', error: err as Error };
    }
  }
}

/** A stream written without framing: the test controls every byte, including length prefixes. */
export class UnframedStream {
  readonly chunks: Uint8Array[] = [];
  end: StreamEnd | undefined;

  constructor(readonly stream: Stream) {
    void this.read();
  }

  /** Writes bytes as they are; false if the stream refused them (already closed or reset). */
  async write(bytes: Uint8Array): Promise<boolean> {
    try {
      if (this.stream.status !== 'open') return false;
      if (!this.stream.send(bytes)) await this.stream.onDrain();
      return true;
    } catch {
      return false;
    }
  }

  /** Closes this side gracefully (the remote reads to the end of what was written). */
  async close(): Promise<void> {
    await this.stream.close();
  }

  /** Resets the stream at once. */
  abort(): void {
    this.stream.abort(new Error('raw peer aborted'));
  }

  async ended(what = 'the unframed stream to end', timeoutMs = 20_000): Promise<StreamEnd> {
    await waitFor(() => this.end !== undefined, what, timeoutMs);
    return this.end!;
  }

  private async read(): Promise<void> {
    try {
      for await (const chunk of this.stream) this.chunks.push(chunk.subarray());
      this.end = { kind: 'closed' };
    } catch (err) {
      this.end = { kind: 'reset', error: err as Error };
    }
  }
}

export class RawPeer implements Dialable {
  /** Streams other peers opened to this one, in order. */
  readonly inbound: RawStream[] = [];
  /** Called for each inbound stream as it opens (after it is recorded in `inbound`). */
  onInbound: ((stream: RawStream) => void) | undefined;

  private constructor(
    readonly transport: Transport,
    /** Its key: runs it authors are signed with it (`signedTuples`). */
    readonly key: PrivateKey,
  ) {
    transport.handle((stream) => {
      const raw = new RawStream(stream);
      this.inbound.push(raw);
      this.onInbound?.(raw);
    });
  }

  /**
   * Starts a raw peer with `key` (default: a fresh Ed25519 key), which opens at most
   * `maxStreams` sync streams at once per connection, listening on 127.0.0.1 (libp2p) or on the
   * file's memory network.
   */
  static async start(key?: PrivateKey, { maxStreams = 8, transport = clusterTransport() }: { maxStreams?: number; transport?: ClusterTransport } = {}): Promise<RawPeer> {
    const privateKey = key ?? (await generateKeyPair('Ed25519'));
    const limits = { maxStreams, maxStrangerConnections: 64 };
    const peerTransport =
      transport === 'memory'
        ? memoryTransportFor(privateKey, limits)
        : await Libp2pTransport.start({
            privateKey,
            listen: ['/ip4/127.0.0.1/tcp/0'],
            protocol: PROTOCOL_ID,
            maxFrameBytes: MAX_FRAME_BYTES,
            maxFirstFrameBytes: MAX_HANDSHAKE_FRAME_BYTES,
            ...limits,
          });
    const peer = new RawPeer(peerTransport, privateKey);
    started.add(peer);
    return peer;
  }

  get peerId(): string {
    return this.transport.localPeer;
  }

  multiaddrs(): string[] {
    return this.transport.addresses();
  }

  /** Connects to `target` and opens a sync stream (nothing sent yet). */
  async open(target: Dialable): Promise<RawStream> {
    await this.transport.connect(target.peerId, target.multiaddrs());
    return new RawStream(await this.transport.openStream(target.peerId));
  }

  /** Opens a sync stream whose bytes the caller writes itself (no length prefixes added). */
  async openUnframed(target: Dialable): Promise<UnframedStream> {
    await this.transport.connect(target.peerId, target.multiaddrs());
    return new UnframedStream(await this.libp2p().dialProtocol(peerIdFromString(target.peerId), PROTOCOL_ID));
  }

  /** Opens a connection of its own to `target` (besides any open already) and returns it. */
  async newConnection(target: Dialable): Promise<{ openUnframed(): Promise<UnframedStream> }> {
    const connection = await this.libp2p().dial(target.multiaddrs().map((a) => multiaddr(a)), { force: true });
    return { openUnframed: async () => new UnframedStream(await connection.newStream(PROTOCOL_ID)) };
  }

  /** The transport keeps its libp2p node private; raw streams need it directly. */
  private libp2p(): Libp2p {
    if (!(this.transport instanceof Libp2pTransport)) throw new Error('streams below the framing need a raw peer on libp2p');
    return (this.transport as unknown as { node: Libp2p }).node;
  }

  /**
   * Sends a join for `invite` (an invite string) as the node's own `join` would, with the
   * proof bound to this peer's PeerId unless `proof` is given. Returns the stream; the reply
   * (welcome or error) arrives as its first message.
   */
  async join(
    inviteText: string,
    options: { device: string; proof?: Uint8Array; library?: string; v?: [number, number]; addrs?: string[]; name?: string },
  ): Promise<RawStream> {
    const invite = decodeInvite(inviteText);
    const library = options.library ?? invite.library;
    const stream = await this.open({ peerId: invite.inviterPeer, multiaddrs: () => invite.inviterAddrs });
    await stream.send({
      t: 'join',
      v: options.v ?? [...PROTOCOL_VERSION],
      library,
      invite: invite.id,
      proof: options.proof ?? inviteProof(hashSecret(invite.secret), this.peerId, invite.library),
      device: options.device,
      addrs: options.addrs ?? this.multiaddrs(),
      ...(options.name === undefined ? {} : { name: options.name }),
    });
    return stream;
  }

  async stop(): Promise<void> {
    if (!started.delete(this)) return;
    await this.transport.stop();
  }
}
