import { createPrivateKey, createPublicKey, hash, type KeyObject, sign, verify } from 'node:crypto';
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id';
import type { PrivateKey } from '@libp2p/interface';
import type { Signatures } from '../runtime/signatures.js';

/** PKCS#8 DER of an Ed25519 private key, before its 32-byte seed (RFC 8410). */
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
/** SPKI DER of an Ed25519 public key, before its 32 bytes. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
/** Public keys decoded, by peer name (a library has at most a few thousand members). */
const MAX_CACHED_KEYS = 4_096;
/** Valid signatures remembered (about 200 bytes each). */
const MAX_CHECKED_SIGNATURES = 16_384;

// The one-shot `hash` (Node 20.12) costs half of a `createHash` per call: signed owned rows hash
// a few short nodes per row.
const sha256 = (data: Uint8Array): Uint8Array => hash('sha256', data, 'buffer');

/**
 * `Signatures` on Node's native Ed25519 and SHA-256 for a device with libp2p key `key`: a peer's
 * key is the one its PeerId names (an Ed25519 PeerId holds its public key).
 */
export function deviceSignatures(key: PrivateKey): Signatures {
  if (key.type !== 'Ed25519') throw new Error(`internal: a device key must be Ed25519, not ${key.type}`);
  // libp2p's raw Ed25519 private key is the 32-byte seed followed by the public key.
  return nativeSignatures(
    peerIdFromPrivateKey(key).toString(),
    key.raw.subarray(0, 32),
    (peer) => {
      const publicKey = peerIdFromString(peer).publicKey;
      return publicKey?.type === 'Ed25519' ? publicKeyFromRaw(publicKey.raw) : null;
    },
    'thread-pool',
  );
}

/**
 * `Signatures` for the simulator's and the fuzzer's peers, whose names are not PeerIds: each
 * name's key is derived from the name itself, the same in every node of a run (a test keyring,
 * which anyone can derive: only for networks where no key is secret). They sign on this thread
 * only: a signature coming back from the thread pool would order a run's events by the
 * machine's timing, not by its seed.
 */
export function namedPeerSignatures(peer: string): Signatures {
  return nativeSignatures(peer, seedOfName(peer), (name) => createPublicKey(privateKeyFromSeed(seedOfName(name))), 'this-thread');
}

function seedOfName(name: string): Uint8Array {
  return sha256(new TextEncoder().encode(`leaderless-sync test key\u0000${name}`));
}

/** Where `signOffThread` signs: Node's thread pool, or this thread (a deterministic run). */
type SigningThread = 'thread-pool' | 'this-thread';

function nativeSignatures(peer: string, seed: Uint8Array, keyOfPeer: (peer: string) => KeyObject | null, signingThread: SigningThread): Signatures {
  const own = privateKeyFromSeed(seed);
  const keys = new Map<string, KeyObject | null>();
  const publicKeyOf = (peer: string): KeyObject | null => {
    let found = keys.get(peer);
    if (found !== undefined) return found;
    try {
      found = keyOfPeer(peer);
    } catch {
      // Not a PeerId: it names no key.
      found = null;
    }
    if (keys.size >= MAX_CACHED_KEYS) keys.clear();
    keys.set(peer, found);
    return found;
  };
  // Runs come again and again (relays, duplicates, retries): a signature checked once is not
  // checked again. Keyed by everything the check depends on.
  const checked = new Set<string>();
  return {
    peer,
    sha256,
    sign: (message) => sign(null, message, own),
    signOffThread: (message) =>
      signingThread === 'this-thread'
        ? new Promise((resolve) => resolve(sign(null, message, own)))
        : new Promise((resolve, reject) => sign(null, message, own, (error, signature) => (error ? reject(error) : resolve(signature)))),
    verify(author, message, signature) {
      const key = `${author}:${Buffer.from(message).toString('base64')}:${Buffer.from(signature).toString('base64')}`;
      if (checked.has(key)) return true;
      const publicKey = publicKeyOf(author);
      const valid = publicKey !== null && signature.byteLength === 64 && verify(null, message, publicKey, signature);
      if (valid) {
        if (checked.size >= MAX_CHECKED_SIGNATURES) checked.clear();
        checked.add(key);
      }
      return valid;
    },
  };
}

function privateKeyFromSeed(seed: Uint8Array): KeyObject {
  return createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
}

function publicKeyFromRaw(raw: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}
