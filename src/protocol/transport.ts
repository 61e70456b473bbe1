/**
 * What the protocol needs from a network, and nothing more: authenticated peers, connections
 * and streams of whole frames. libp2p is the production implementation
 * (`network/libp2p-transport.ts`); a simulator can provide an in-memory one. Peers are named by
 * their PeerId string, which the transport has authenticated (Noise handshake for libp2p).
 */

/** A bidirectional stream of frames (byte arrays) to one authenticated peer. */
export interface FrameStream {
  /** The authenticated PeerId of the other side. */
  readonly remotePeer: string;
  /** Queues one frame; resolves once the transport can take more (back-pressure). */
  send(frame: Uint8Array): Promise<void>;
  /**
   * Frames in the order sent. Ends when the remote closes its side; throws if the stream is
   * reset or a frame exceeds the size limit. Call it once per stream and start iterating at
   * once (the frame limits hold per stream; libp2p's reader may never end otherwise, see
   * docs/testing.md, "Transports").
   */
  frames(): AsyncIterable<Uint8Array>;
  /** Closes gracefully after queued frames are sent. */
  close(): Promise<void>;
  /** Resets the stream at once. */
  abort(reason: Error): void;
}

export interface ConnectOptions {
  signal?: AbortSignal;
  onDialling?: (addresses: readonly string[]) => void;
}

export type ConnectionListener = (peer: string, connected: boolean) => void;
/** Told the PeerId of a peer that discovery found; its addresses are where `connect` looks. */
export type DiscoveryListener = (peer: string) => void;

/** How a peer is reached: over a connection of its own, or only through a relay (another peer). */
export type ConnectionKind = 'direct' | 'relayed';

/** Whether this node, as a relay, may carry a connection from `source` to `destination`. */
export type RelayPolicy = (source: string, destination: string) => boolean;

export interface Transport {
  /** This node's PeerId. */
  readonly localPeer: string;
  /** Addresses this node listens on, each ending in its PeerId (shareable in invites). */
  addresses(): string[];
  /**
   * Whether LAN discovery (mDNS) runs now (`node.mdnsRunning`); a transport without LAN
   * discovery (the in-memory one) leaves it out.
   */
  readonly mdnsRunning?: boolean;
  /** Registers the handler for inbound sync streams. */
  handle(handler: (stream: FrameStream) => void): void;
  /**
   * Ensures a connection to `peer`. If none is open, dials it on every address known for it:
   * `addrs` (its member row) and what the transport learned (libp2p: identify, discovery), taken
   * from each source in turn so that none crowds out the others.
   * `options.onDialling` hears which addresses the dial tries, before it starts. A failure is a
   * `NetworkError` whose message names the addresses and why each failed.
   */
  connect(peer: string, addrs: readonly string[], options?: ConnectOptions): Promise<void>;
  /** Opens a sync stream over an existing (or new) connection to `peer`. */
  openStream(peer: string, signal?: AbortSignal): Promise<FrameStream>;
  isConnected(peer: string): boolean;
  /** How `peer` is connected now (direct wins over relayed), or null when it is not. */
  connectionKind(peer: string): ConnectionKind | null;
  /**
   * Opens a direct connection to `peer` (reached only through a relay) on its direct addresses,
   * then closes the relayed one. False when there was no direct address to try.
   */
  upgradeToDirect(peer: string, addrs: readonly string[]): Promise<boolean>;
  /** Keeps a relay slot on `relay` (connected directly), so `relay` can reach this node for others. */
  reserveRelay(relay: string): Promise<void>;
  hasRelayReservation(relay: string): boolean;
  /** Called when this node's addresses change (a relay reservation made or lost). */
  onAddressesChange(listener: () => void): void;
  /** Closes every connection to `peer` (after it stopped answering). */
  disconnect(peer: string): Promise<void>;
  /** Called whenever the first connection to a peer opens or the last one closes. */
  onConnectionChange(listener: ConnectionListener): void;
  /**
   * Tells the transport which peers are known (members of a library here). Others (joiners,
   * and anyone else) get only a few connections at once, and no relay reservation. `mayRelay`
   * says which connections this node relays (between members of a library they share here);
   * without it, none.
   */
  setKnownPeers(isKnown: (peer: string) => boolean, mayRelay?: RelayPolicy): void;
  /**
   * Called when discovery (mDNS on the LAN) hears something new of a peer: the libp2p transport
   * reports only peers `isKnown` accepts, and an answer only when its addresses changed or after
   * a silence. Nothing is dialled because of it unless the listener does so.
   */
  onPeerDiscovered(listener: DiscoveryListener): void;
  stop(): Promise<void>;
}
