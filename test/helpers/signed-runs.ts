/**
 * Runs and device-owned rows signed the way a device signs its own (`WriteBatch.flush`), for raw
 * protocol peers that author changes: entries are cut into runs and each is signed with the
 * author's libp2p key, following the origin's previous run (tracked in `heads`, which a peer
 * keeps across pushes).
 */
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import type { OwnedRowUpdate } from '../../src/library/remote-apply.js';
import { deviceIdForPeer } from '../../src/membership/device-id.js';
import { signOwnedRows } from '../../src/models/signed-owned-rows.js';
import { deviceSignatures } from '../../src/node/native-signatures.js';
import { encodeChunks } from '../../src/peer-log/chunk.js';
import { GENESIS, signRun } from '../../src/peer-log/signed-runs.js';
import type { LogEntry } from '../../src/peer-log/types.js';
import type { ChunkTuple, OwnedRowTuple } from '../../src/protocol/messages.js';
import { chunkToTuple, ownedToTuple } from '../../src/replication/session.js';

export function signedTuples(key: PrivateKey, library: string, entries: readonly LogEntry[], heads = new Map<string, Uint8Array>()): ChunkTuple[] {
  const signatures = deviceSignatures(key);
  return encodeChunks(entries).map((run): ChunkTuple => {
    const { chunk, id } = signRun(signatures, library, run, heads.get(run.origin) ?? GENESIS);
    heads.set(run.origin, id);
    return chunkToTuple(chunk);
  });
}

/** Device-owned rows of one owner signed with `key` as the owner signs its own (`WriteBatch.flush`). */
export function signedOwnedRows(key: PrivateKey, library: string, rows: readonly Omit<OwnedRowUpdate, 'cert'>[]): { author: string; rows: OwnedRowUpdate[] } {
  const signatures = deviceSignatures(key);
  const owner = rows[0]?.owner ?? '';
  const certs = signOwnedRows(signatures, library, owner, rows);
  return { author: signatures.peer, rows: rows.map((row, i) => ({ ...row, cert: certs[i]! })) };
}

/** `signedOwnedRows` as the `author` and `rows` of a `state` or `state-page` message. */
export function signedOwnedTuples(key: PrivateKey, library: string, rows: readonly Omit<OwnedRowUpdate, 'cert'>[]): { author: string; rows: OwnedRowTuple[] } {
  const signed = signedOwnedRows(key, library, rows);
  return { author: signed.author, rows: signed.rows.map(ownedToTuple) };
}

/** A device that is no node of the test: its key, and the key-derived id that key gives it. */
export async function keyedDevice(): Promise<{ key: PrivateKey; device: string; peer: string }> {
  const key = await generateKeyPair('Ed25519');
  const peer = peerIdFromPrivateKey(key).toString();
  return { key, device: deviceIdForPeer(peer), peer };
}
