import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, utf8ToBytes } from '@noble/hashes/utils.js';

/**
 * Key-derived device ids (protocol 2.0). A device id of this form is the SHA-256 of the
 * device's PeerId (itself its Ed25519 public key), laid out as an RFC 9562 version-8 uuid, so
 * any member checks the binding of a member row from the row alone: no other member can name
 * another key for the device, whatever it writes and in whatever order replicas see it.
 *
 * Devices made before 2.0 keep their random (version-4) ids: for them the binding is the first
 * member row a replica holds, and it never changes afterwards (`MEMBERS_MODEL`'s apply rule).
 */
const DOMAIN = 'leaderless-sync device id\u0000';

/** The device id that `peer` (a PeerId string) derives. */
export function deviceIdForPeer(peer: string): string {
  const hash = sha256(utf8ToBytes(DOMAIN + peer)).slice(0, 16);
  hash[6] = (hash[6]! & 0x0f) | 0x80;
  hash[8] = (hash[8]! & 0x3f) | 0x80;
  const hex = bytesToHex(hash);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Whether `device` has the key-derived form (version 8): then only `deviceIdForPeer` binds it. */
export function isKeyDerivedId(device: string): boolean {
  return device.length === 36 && device[14] === '8';
}

/**
 * Whether a member row may bind `device` to `peer` by its form alone: always for a random
 * (pre-2.0) id, and for a key-derived id only to the PeerId it derives from.
 */
export function mayBind(device: string, peer: string): boolean {
  return !isKeyDerivedId(device) || deviceIdForPeer(peer) === device;
}
