import { deviceIdForPeer, isKeyDerivedId } from '../membership/device-id.js';
import { isWriterOf, writerPrefix } from './writers.js';

/**
 * Who may sign for a log origin (`verifyRuns`, snapshot proofs):
 * - an origin of a key-derived device id only the PeerId that derives its device id (the origin
 *   keeps the id's first three groups, key-derived digit included), so no member row is needed
 *   and no other key can take it;
 * - an origin of a random (pre-2.0) device id only the PeerId of that device's member row, as
 *   held or introduced. Should two members' ids share the origin's first three groups (made up
 *   on purpose), the origin is the device whose id it is, or no one's (`unknown`).
 */
export class OriginAuthors {
  private readonly peers: Map<string, string>;
  private readonly byPrefix = new Map<string, string[]>();

  /** `members`: device -> PeerId, as held. */
  constructor(members: ReadonlyMap<string, string>) {
    this.peers = new Map(members);
    for (const device of this.peers.keys()) this.place(device);
  }

  /** A member row not held yet binds `device` to `peer` (the first binding stays). */
  introduce(device: string, peer: string): void {
    if (this.peers.has(device)) return;
    this.peers.set(device, peer);
    this.place(device);
  }

  /** Whether `author` may sign for `origin`: yes, no (bad input), or not known here yet. */
  authority(origin: string, author: string): 'yes' | 'no' | 'unknown' {
    if (isKeyDerivedId(origin)) return isWriterOf(origin, deviceIdForPeer(author)) ? 'yes' : 'no';
    const candidates = this.byPrefix.get(writerPrefix(origin)) ?? [];
    const device = candidates.length === 1 ? candidates[0] : candidates.find((d) => d === origin);
    if (device === undefined || !isWriterOf(origin, device)) return 'unknown';
    return this.peers.get(device) === author ? 'yes' : 'no';
  }

  private place(device: string): void {
    const list = this.byPrefix.get(writerPrefix(device)) ?? [];
    list.push(device);
    this.byPrefix.set(writerPrefix(device), list);
  }
}
