import { NetworkError } from '../../src/errors.js';
import type { ConnectionKind } from '../../src/protocol/transport.js';

/** The relay side of a test `Transport` that has none: every connection is direct. */
export abstract class DirectOnlyTransport {
  abstract isConnected(peer: string): boolean;

  connectionKind(peer: string): ConnectionKind | null {
    return this.isConnected(peer) ? 'direct' : null;
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
}
