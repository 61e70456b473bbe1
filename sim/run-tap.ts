import type { FrameStream, Transport } from '../src/protocol/transport.js';

/** Sees (and may replace) every frame a node sends: the simulator's trace and its liar. */
export type FrameTap = (to: string, frame: Uint8Array) => Uint8Array;

/**
 * A node's transport with its outgoing frames passed through `tap` first. Everything else is
 * the wrapped transport's: the node cannot tell the difference.
 */
export function tapTransport(inner: Transport, tap: FrameTap): Transport {
  const wrap = (stream: FrameStream): FrameStream => ({
    remotePeer: stream.remotePeer,
    send: (frame) => stream.send(tap(stream.remotePeer, frame)),
    frames: () => stream.frames(),
    close: () => stream.close(),
    abort: (reason) => stream.abort(reason),
  });
  return {
    get localPeer() {
      return inner.localPeer;
    },
    addresses: () => inner.addresses(),
    handle: (handler) => inner.handle((stream) => handler(wrap(stream))),
    connect: (peer, addrs, options) => inner.connect(peer, addrs, options),
    openStream: async (peer, signal) => wrap(await inner.openStream(peer, signal)),
    isConnected: (peer) => inner.isConnected(peer),
    connectionKind: (peer) => inner.connectionKind(peer),
    upgradeToDirect: (peer, addrs) => inner.upgradeToDirect(peer, addrs),
    reserveRelay: (relay) => inner.reserveRelay(relay),
    hasRelayReservation: (relay) => inner.hasRelayReservation(relay),
    onAddressesChange: (listener) => inner.onAddressesChange(listener),
    disconnect: (peer) => inner.disconnect(peer),
    onConnectionChange: (listener) => inner.onConnectionChange(listener),
    setKnownPeers: (isKnown, mayRelay) => inner.setKnownPeers(isKnown, mayRelay),
    onPeerDiscovered: (listener) => inner.onPeerDiscovered(listener),
    stop: () => inner.stop(),
  };
}
