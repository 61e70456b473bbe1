import './shims.js';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2';
import { dcutr } from '@libp2p/dcutr';
import { identify } from '@libp2p/identify';
import type { Connection, Libp2p, PeerId, PeerInfo, PrivateKey, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { ping } from '@libp2p/ping';
import { tcp } from '@libp2p/tcp';
import { webSockets } from '@libp2p/websockets';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import { createLibp2p } from 'libp2p';
import { describeError, NetworkError, ProtocolVersionError } from '../errors.js';
import type { FrameLimits } from '../protocol/framing.js';
import type {
  ConnectionKind,
  ConnectionListener,
  ConnectOptions,
  DiscoveryListener,
  FrameStream,
  RelayPolicy,
  Transport,
} from '../protocol/transport.js';
import { Libp2pFrameStream, YAMUX_STREAM_OPTIONS } from './libp2p-frame-stream.js';
import { type LanDiscovery, lanDialAddresses, lanDiscoveryService, MDNS_ANSWER_TTL_MS, MDNS_SILENCE_MS, mdnsWorthwhile } from './lan-discovery.js';

export const DEFAULT_LISTEN = ['/ip4/0.0.0.0/tcp/0', '/ip4/0.0.0.0/tcp/0/ws'];

export interface Libp2pTransportOptions {
  privateKey: PrivateKey;
  listen: readonly string[];
  /** libp2p protocol id the sync streams are negotiated under. */
  protocol: string;
  /** Largest frame accepted; a larger one resets the stream. */
  maxFrameBytes: number;
  /** Largest first frame of a stream (the handshake); a larger one resets the stream. */
  maxFirstFrameBytes: number;
  /** Concurrent sync streams per connection and direction (one per shared library plus requests). */
  maxStreams: number;
  /** Open connections with peers that are not known (see `setKnownPeers`), at most. */
  maxStrangerConnections: number;
  /**
   * Find (and be found by) other sync nodes on the LAN with mDNS. Only takes effect when some
   * listen address is reachable from the LAN (`mdnsWorthwhile`); default false.
   */
  mdns?: boolean;
}

/** How long after a stranger disconnects its peer-store entry is looked for once more. */
const FORGET_RECHECK_MS = 2_000;
/** Streams per connection of the other protocols mounted (identify, its push, ping, dcutr), at most. */
const OTHER_PROTOCOL_STREAMS = 8;
/**
 * Relayed connections carried by one connection, each way (a hop stream from a member that
 * dials through this node, a stop stream to a member reached through it), at most.
 */
const MAX_RELAYED_PER_CONNECTION = 16;
/** Members holding a relay reservation on this node at once, at most (libp2p's default is 15). */
const MAX_RELAY_RESERVATIONS = 64;
/** Inbound connections still in their Noise/Yamux upgrade, at most (libp2p's default is 10). */
const MAX_PENDING_UPGRADES = 8;

/**
 * Dial limits. libp2p 3 dials a peer's addresses one after another (public before private,
 * loopback last, TCP before WebSockets; equal ones in the order given), each for at most
 * ADDRESS_DIAL_TIMEOUT_MS, the whole dial for at most DIAL_TIMEOUT_MS. A refused port fails at
 * once; a stale address that does not answer (a network left behind, or a port that another
 * process now holds and accepts TCP on without speaking libp2p) costs one address timeout. The
 * whole dial gives every address its timeout: a shorter one would let a few stale addresses
 * ahead of the live one (a member row lists every interface's) fail every dial for good. More
 * than MAX_DIAL_ADDRESSES addresses of one peer (taken from each source in turn: `dialTargetsOf`)
 * are not tried in one dial.
 */
const MAX_DIAL_ADDRESSES = 16;
const ADDRESS_DIAL_TIMEOUT_MS = 5_000;
const DIAL_TIMEOUT_MS = MAX_DIAL_ADDRESSES * ADDRESS_DIAL_TIMEOUT_MS;

/** The production transport: libp2p over TCP and WebSockets, with Noise and Yamux. */
export class Libp2pTransport implements Transport {
  private readonly listeners: ConnectionListener[] = [];
  private readonly discoveryListeners: DiscoveryListener[] = [];
  private isKnown: (peer: string) => boolean = () => false;
  private mayRelay: RelayPolicy = () => false;
  private readonly addressListeners: Array<() => void> = [];
  /** The addresses each member gave in its latest LAN answer (the newest replaces them). */
  private readonly lanAnswers = new Map<string, { addresses: Multiaddr[]; heardAt: number }>();
  private readonly recheckTimers = new Set<ReturnType<typeof setTimeout>>();
  private stopping = false;

  private constructor(
    private readonly node: Libp2p<{ listener: ListenerManager }>,
    private readonly options: Libp2pTransportOptions,
    private readonly lanDiscovery: LanDiscovery | undefined,
  ) {
    node.addEventListener('peer:connect', (evt) => this.emit(evt.detail.toString(), true));
    node.addEventListener('peer:disconnect', (evt) => {
      this.emit(evt.detail.toString(), false);
      void this.forgetStranger(evt.detail);
      this.forgetStrangerAgain(evt.detail);
    });
    // Identify may store what a stranger told it after that stranger left.
    node.addEventListener('peer:identify', (evt) => void this.forgetStranger(evt.detail.peerId));
    // Every answer heard, not libp2p's `peer:discovery` (sent only for a peer new to the peer
    // store): a member already known from its member row is exactly the one to redial.
    lanDiscovery?.onPeer((peer) => this.discovered(peer));
    // A relay reservation made or lost changes this node's addresses.
    node.addEventListener('self:peer:update', () => {
      for (const listener of this.addressListeners) listener();
    });
  }

  static async start(options: Libp2pTransportOptions): Promise<Libp2pTransport> {
    let transport: Libp2pTransport | undefined;
    const streams = options.maxStreams + OTHER_PROTOCOL_STREAMS + MAX_RELAYED_PER_CONNECTION;
    const lan = options.mdns === true && mdnsWorthwhile(options.listen) ? { mdns: lanDiscoveryService() } : {};
    const node = await createLibp2p({
      privateKey: options.privateKey,
      addresses: { listen: [...options.listen] },
      transports: [
        tcp(),
        webSockets(),
        circuitRelayTransport({ maxInboundStopStreams: MAX_RELAYED_PER_CONNECTION, maxOutboundStopStreams: MAX_RELAYED_PER_CONNECTION }),
      ],
      connectionEncrypters: [noise()],
      streamMuxers: [
        yamux({
          maxInboundStreams: streams,
          maxOutboundStreams: streams,
          // A paused stream's read buffer must hold one whole window (see STREAM_WINDOW_BYTES).
          streamOptions: YAMUX_STREAM_OPTIONS,
        }),
      ],
      connectionManager: {
        maxIncomingPendingConnections: MAX_PENDING_UPGRADES,
        maxPeerAddrsToDial: MAX_DIAL_ADDRESSES,
        addressDialTimeout: ADDRESS_DIAL_TIMEOUT_MS,
        dialTimeout: DIAL_TIMEOUT_MS,
      },
      connectionGater: {
        // Right after Noise, before a muxer exists: the first point where the PeerId is known.
        denyInboundEncryptedConnection: (peer) => transport?.refusesStranger(peer.toString()) ?? false,
        // The relay server asks these on every RESERVE and CONNECT: members only, never an open relay.
        denyInboundRelayReservation: (peer) => !(transport?.isKnown(peer.toString()) ?? false),
        denyOutboundRelayedConnection: (source, destination) =>
          !(transport?.mayRelay(source.toString(), destination.toString()) ?? false),
      },
      services: {
        identify: identify(),
        ping: ping(),
        // No default limit (2 min, 128 KiB per relayed connection): only members are relayed,
        // and a sync session must not be cut every 128 KiB. See docs/operations.md.
        relay: circuitRelayServer({
          reservations: { applyDefaultLimit: false, maxReservations: MAX_RELAY_RESERVATIONS },
          maxInboundHopStreams: MAX_RELAYED_PER_CONNECTION,
          maxOutboundStopStreams: MAX_RELAYED_PER_CONNECTION,
        }),
        dcutr: dcutr(),
        // A wrapper, not the transport manager itself: libp2p starts every service, and would
        // start the transport manager (and listen on every address) a second time.
        listener: ({ transportManager }: { transportManager: ListenerManager }): ListenerManager => ({
          listen: (addrs) => transportManager.listen(addrs),
        }),
        ...lan,
      },
    });
    transport = new Libp2pTransport(node, options, (node.services as { mdns?: LanDiscovery }).mdns);
    return transport;
  }

  get localPeer(): string {
    return this.node.peerId.toString();
  }

  addresses(): string[] {
    return this.node.getMultiaddrs().map((ma) => ma.toString());
  }

  /** Whether mDNS runs (it was asked for and some listen address is reachable from the LAN). */
  get mdnsRunning(): boolean {
    return this.lanDiscovery?.isStarted() ?? false;
  }

  handle(handler: (stream: FrameStream) => void): void {
    void this.node.handle(
      this.options.protocol,
      (stream: Stream, connection: Connection) => {
        handler(new Libp2pFrameStream(stream, connection.remotePeer.toString(), this.frameLimits()));
      },
      // A relayed member connection may carry limits if the relay sets some; sync still runs.
      { maxInboundStreams: this.options.maxStreams, maxOutboundStreams: this.options.maxStreams, runOnLimitedConnection: true },
    );
  }

  async connect(peer: string, addrs: readonly string[], options: ConnectOptions = {}): Promise<void> {
    if (this.isConnected(peer)) return;
    let tried: string[] = [];
    try {
      const targets = await this.dialTargetsOf(peer, addrs);
      tried = targets.map((t) => t.toString());
      options.onDialling?.(tried);
      if (targets.length === 0) throw new NetworkError(`no usable address for peer ${peer}`);
      const connection = await this.node.dial(targets, { signal: options.signal });
      // Every target ends in `peer`, so libp2p authenticates exactly that peer. Should a
      // connection to another peer come back all the same, it is that peer's (possibly a
      // member's, in use): never close it.
      if (connection.remotePeer.toString() !== peer) {
        throw new NetworkError(`dialled ${peer} but reached ${connection.remotePeer.toString()}`);
      }
    } catch (err) {
      if (err instanceof NetworkError) throw err;
      throw new NetworkError(`cannot reach peer ${peer} at ${tried.join(', ') || 'no address'}: ${describeDialError(err)}`);
    }
  }

  /**
   * Every address `peer` may be dialled at, at most MAX_DIAL_ADDRESSES: the member row's
   * (`addrs`, merged into the peer store), what the partner last said about itself; those of its
   * latest LAN answer; and what identify put in the peer store. Taken from each source in turn,
   * so none crowds out the others: a member row may list more addresses (every interface's)
   * than one dial tries, and a LAN answer is not authenticated.
   */
  private async dialTargetsOf(peer: string, addrs: readonly string[]): Promise<Multiaddr[]> {
    const peerId = peerIdFromString(peer);
    const fromRow = dialTargets(peer, addrs);
    if (fromRow.length > 0) await this.node.peerStore.merge(peerId, { multiaddrs: fromRow.map(withoutPeerId) });
    const known = (await this.node.peerStore.has(peerId))
      ? (await this.node.peerStore.get(peerId)).addresses.map((a) => a.multiaddr.toString())
      : [];
    const fromLan = this.lanAddressesOf(peer).map((a) => a.toString());
    return takeInTurn([fromRow, dialTargets(peer, fromLan), dialTargets(peer, known)], MAX_DIAL_ADDRESSES);
  }

  async openStream(peer: string, signal?: AbortSignal): Promise<FrameStream> {
    try {
      const stream = await this.node.dialProtocol(peerIdFromString(peer), this.options.protocol, { signal, runOnLimitedConnection: true });
      return new Libp2pFrameStream(stream, peer, this.frameLimits());
    } catch (err) {
      if ((err as Error).name === 'UnsupportedProtocolError') {
        // The peer runs libp2p but not this protocol id: another major version (or no sync).
        throw new ProtocolVersionError(this.options.protocol, `a version other than ${this.options.protocol}`);
      }
      throw new NetworkError(`cannot open a sync stream to ${peer}: ${describeError(err)}`);
    }
  }

  isConnected(peer: string): boolean {
    return this.connectionKind(peer) !== null;
  }

  connectionKind(peer: string): ConnectionKind | null {
    const open = this.node.getConnections(peerIdFromString(peer)).filter((c) => c.status === 'open');
    if (open.length === 0) return null;
    return open.some((c) => c.direct) ? 'direct' : 'relayed';
  }

  /**
   * Opens a direct connection to a peer reached only through a relay, on its direct addresses
   * (those `connect` would dial, `dialTargetsOf`, less relayed ones), then closes the relayed one: sessions on
   * it end and reopen on the direct connection. Resolves false when there is no direct address
   * to try; rejects when none answered. dcutr does the same on public addresses only.
   */
  async upgradeToDirect(peer: string, addrs: readonly string[]): Promise<boolean> {
    const id = peerIdFromString(peer);
    const targets = (await this.dialTargetsOf(peer, addrs)).filter((a) => !isRelayed(a));
    if (targets.length === 0) return false;
    try {
      const direct = await this.node.dial(targets, { force: true });
      if (!direct.direct) throw new NetworkError('the dial came back relayed');
    } catch (err) {
      throw new NetworkError(`cannot reach peer ${peer} directly: ${describeError(err)}`);
    }
    for (const relayed of this.node.getConnections(id).filter((c) => !c.direct)) {
      await relayed.close().catch(() => undefined);
    }
    return true;
  }

  hasRelayReservation(relay: string): boolean {
    return this.addresses().some((a) => a.includes(`/p2p/${relay}/p2p-circuit/`));
  }

  /**
   * Reserves a slot on `relay`, over the direct connection this node holds to it, so that the
   * relay's addresses with `/p2p-circuit/p2p/<self>` become this node's too. Rejects when there is
   * no direct connection or the relay refused (it grants members only).
   */
  async reserveRelay(relay: string): Promise<void> {
    const connection = this.node.getConnections(peerIdFromString(relay)).find((c) => c.status === 'open' && c.direct);
    if (!connection) throw new NetworkError(`no direct connection to relay ${relay}`);
    const listen = multiaddr(`${connection.remoteAddr.decapsulateCode(P2P_CODE).toString()}/p2p/${relay}/p2p-circuit`);
    try {
      await this.node.services.listener.listen([listen]);
    } catch (err) {
      throw new NetworkError(`relay ${relay} refused a reservation: ${describeError(err)}`);
    }
  }

  async disconnect(peer: string): Promise<void> {
    await this.node.hangUp(peerIdFromString(peer)).catch(() => undefined);
  }

  onConnectionChange(listener: ConnectionListener): void {
    this.listeners.push(listener);
  }

  setKnownPeers(isKnown: (peer: string) => boolean, mayRelay: RelayPolicy = () => false): void {
    this.isKnown = isKnown;
    this.mayRelay = mayRelay;
  }

  onAddressesChange(listener: () => void): void {
    this.addressListeners.push(listener);
  }

  onPeerDiscovered(listener: DiscoveryListener): void {
    this.discoveryListeners.push(listener);
  }

  async stop(): Promise<void> {
    // Disconnects while libp2p stops schedule no more look-ups.
    this.stopping = true;
    for (const timer of this.recheckTimers) clearTimeout(timer);
    this.recheckTimers.clear();
    this.listeners.length = 0;
    this.discoveryListeners.length = 0;
    this.addressListeners.length = 0;
    await this.node.stop();
  }

  private emit(peer: string, connected: boolean): void {
    for (const listener of this.listeners) listener(peer, connected);
  }

  /**
   * A peer answered on the LAN. Only a member's answer is kept (at most MAX_DIAL_ADDRESSES of
   * its LAN addresses, replacing its previous answer's), so answers with made-up PeerIds or
   * addresses hold no memory beyond one answer per member. It is reported only when it tells
   * something new: other addresses than the member's previous answer, or the first answer after
   * a silence (MDNS_SILENCE_MS; a member on the LAN answers every node's query). A member
   * answers each query of every node on the LAN, and a report lets the network dial it at once,
   * whatever its backoff: the same answer again must not make a member that answers but cannot
   * be reached (a firewall) be redialled at that rate.
   */
  private discovered(peer: PeerInfo): void {
    const id = peer.id.toString();
    if (id === this.localPeer || !this.isKnown(id)) return;
    const answer = { addresses: lanDialAddresses(peer.multiaddrs, MAX_DIAL_ADDRESSES), heardAt: Date.now() };
    const previous = this.lanAnswers.get(id);
    this.lanAnswers.set(id, answer);
    const same = previous !== undefined && answer.heardAt - previous.heardAt <= MDNS_SILENCE_MS && sameTargets(previous.addresses, answer.addresses);
    if (!same) for (const listener of this.discoveryListeners) listener(id);
  }

  /**
   * The addresses of `peer`'s latest LAN answer, while it is fresh: a member on the LAN answers
   * every query (MDNS_QUERY_INTERVAL_MS), so an answer older than the TTL its records carry is
   * from a member that left, and its addresses would only cost dials their timeouts.
   */
  private lanAddressesOf(peer: string): Multiaddr[] {
    const answer = this.lanAnswers.get(peer);
    if (answer && Date.now() - answer.heardAt <= MDNS_ANSWER_TTL_MS) return answer.addresses;
    this.lanAnswers.delete(peer);
    return [];
  }

  /**
   * Writes to the peer store that were under way when the stranger left (identify, the dialer's
   * bookkeeping) may land after both the disconnect and the identify event: look once more a
   * little later, so they do not outlive it either.
   */
  private forgetStrangerAgain(peer: PeerId): void {
    if (this.stopping || this.isKnown(peer.toString())) return;
    const timer = setTimeout(() => {
      this.recheckTimers.delete(timer);
      void this.forgetStranger(peer);
    }, FORGET_RECHECK_MS);
    timer.unref();
    this.recheckTimers.add(timer);
  }

  /**
   * Drops what libp2p's peer store holds of a peer that is not known and no longer connected
   * (identify stores every peer's addresses, protocols and agent string, and nothing ever
   * empties the store): anyone can connect under a new PeerId each time, so what strangers
   * leave behind must not outlive their connections.
   */
  private async forgetStranger(peer: PeerId): Promise<void> {
    if (this.stopping || this.isKnown(peer.toString()) || this.node.getConnections(peer).length > 0) return;
    await this.node.peerStore.delete(peer).catch(() => undefined);
  }

  private frameLimits(): FrameLimits {
    return { firstFrameBytes: this.options.maxFirstFrameBytes, frameBytes: this.options.maxFrameBytes };
  }

  /** A peer this node does not know gets a connection only while few others have one. */
  private refusesStranger(peer: string): boolean {
    if (this.isKnown(peer)) return false;
    const strangers = this.node.getConnections().filter((c) => !this.isKnown(c.remotePeer.toString())).length;
    return strangers >= this.options.maxStrangerConnections;
  }
}

/** What the relay reservations need of libp2p's transport manager: listening at run time. */
interface ListenerManager {
  listen(addrs: Multiaddr[]): Promise<void>;
}

const P2P_CODE = 0x01a5;

/** Whether an address goes through a circuit relay. */
function isRelayed(address: Multiaddr): boolean {
  return address.getComponents().some((c) => c.name === 'p2p-circuit');
}

/**
 * The addresses `peer` can be dialled at, each ending in `/p2p/<peer>`. An address that ends in
 * another PeerId is skipped: libp2p would dial that peer instead (or hand back its existing
 * connection), never `peer`. Addresses that do not parse are skipped too.
 */
function dialTargets(peer: string, addrs: readonly string[]): Multiaddr[] {
  const targets: Multiaddr[] = [];
  for (const text of addrs) {
    let address: Multiaddr;
    try {
      address = multiaddr(text);
    } catch {
      continue;
    }
    const last = address.getComponents().at(-1);
    if (last?.name !== 'p2p') targets.push(address.encapsulate(`/p2p/${peer}`));
    else if (last.value === peer) targets.push(address);
  }
  return targets;
}

/**
 * Up to `limit` targets, one from each source in turn (each in its own order). A target listed by
 * several sources counts as the first one's: the peer store also holds the member row's.
 */
function takeInTurn(sources: ReadonlyArray<readonly Multiaddr[]>, limit: number): Multiaddr[] {
  const seen = new Set<string>();
  const queues = sources.map((source) => source.filter((t) => !seen.has(t.toString()) && seen.add(t.toString())));
  const taken: Multiaddr[] = [];
  for (let i = 0; taken.length < limit && queues.some((queue) => i < queue.length); i++) {
    for (const queue of queues) if (i < queue.length && taken.length < limit) taken.push(queue[i]!);
  }
  return taken;
}

/** A dial target as the peer store keeps addresses: without the trailing /p2p/<peer>. */
function withoutPeerId(target: Multiaddr): Multiaddr {
  const components = target.getComponents();
  return multiaddr(components.slice(0, -1));
}

/** Whether `a` and `b` hold the same addresses (in any order). */
function sameTargets(a: readonly Multiaddr[], b: readonly Multiaddr[]): boolean {
  const texts = new Set(a.map(String));
  return a.length === b.length && b.every((target) => texts.has(target.toString()));
}

/** A libp2p dial failure with the reason of each address (libp2p aggregates them). */
function describeDialError(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) {
    return `${describeError(err)} (${err.errors.map((e: unknown) => describeAddressFailure(e)).join('; ')})`;
  }
  return describeAddressFailure(err);
}

/** A WebSocket dial fails with an `ErrorEvent`, whose `error` says why (ECONNREFUSED…). */
function describeAddressFailure(err: unknown): string {
  const inner = err instanceof Error ? undefined : (err as { error?: unknown } | null)?.error;
  return inner instanceof Error ? describeError(inner) : describeError(err);
}
