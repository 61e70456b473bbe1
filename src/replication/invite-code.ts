import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, utf8ToBytes } from '@noble/hashes/utils.js';
import { InviteError } from '../errors.js';
import type { Random } from '../runtime/runtime.js';
import { isDeviceId } from '../hlc/index.js';
import { pack, unpack } from '../util/msgpack.js';

/** What an invite string carries: where to find the inviter and the one-time secret. */
export interface Invite {
  library: string;
  name: string;
  /** The inviter's PeerId: the joiner only talks to the peer that authenticates as this. */
  inviterPeer: string;
  inviterAddrs: string[];
  id: string;
  secret: Uint8Array;
  expiresAt: number;
}

const PREFIX = 'lsync1.';
const SECRET_BYTES = 32;

export function newInviteSecret(random: Random): Uint8Array {
  return random.bytes(SECRET_BYTES);
}

export function encodeInvite(invite: Invite): string {
  const body = pack([
    invite.library,
    invite.name,
    invite.inviterPeer,
    invite.inviterAddrs,
    invite.id,
    invite.secret,
    invite.expiresAt,
  ]);
  return PREFIX + toBase64Url(body);
}

export function decodeInvite(text: unknown): Invite {
  const bad = (why: string) => new InviteError('INVITE_INVALID', `not a valid invite: ${why}`);
  if (typeof text !== 'string' || !text.startsWith(PREFIX) || text.length > 8192) throw bad('expected an lsync1. string');
  let fields: unknown;
  try {
    fields = unpack(fromBase64Url(text.slice(PREFIX.length)));
  } catch {
    throw bad('undecodable');
  }
  if (!Array.isArray(fields) || fields.length !== 7) throw bad('wrong shape');
  const [library, name, inviterPeer, inviterAddrs, id, secret, expiresAt] = fields as unknown[];
  if (!isDeviceId(library) || !isDeviceId(id)) throw bad('bad library or invite id');
  if (typeof name !== 'string' || typeof inviterPeer !== 'string' || inviterPeer.length > 128) throw bad('bad inviter');
  if (!Array.isArray(inviterAddrs) || !inviterAddrs.every((a) => typeof a === 'string')) throw bad('bad addresses');
  if (!(secret instanceof Uint8Array) || secret.byteLength !== SECRET_BYTES) throw bad('bad secret');
  if (typeof expiresAt !== 'number' || !Number.isSafeInteger(expiresAt)) throw bad('bad expiry');
  return { library, name, inviterPeer, inviterAddrs: inviterAddrs as string[], id, secret, expiresAt };
}

/** Stored by the inviter instead of the secret itself. */
export function hashSecret(secret: Uint8Array): string {
  return bytesToHex(sha256(secret));
}

/**
 * The joiner's proof of the secret, bound to the joiner's authenticated PeerId and the library,
 * so a proof seen by anyone else cannot be replayed from another peer.
 */
export function inviteProof(secretHash: string, joinerPeer: string, library: string): Uint8Array {
  return hmac(sha256, utf8ToBytes(secretHash), utf8ToBytes(`leaderless-sync/join\n${library}\n${joinerPeer}`));
}

export function proofsEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  let diff = 0;
  for (let i = 0; i < a.byteLength; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

function toBase64Url(bytes: Uint8Array): string {
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function fromBase64Url(text: string): Uint8Array {
  const binary = atob(text.replace(/-/g, '+').replace(/_/g, '/'));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}
