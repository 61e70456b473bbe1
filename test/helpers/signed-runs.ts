/**
 * Runs signed the way a device signs its own (`WriteBatch.flush`), for raw protocol peers that
 * author changes: entries are cut into runs and each is signed with the author's libp2p key,
 * following the origin's previous run (tracked in `heads`, which a peer keeps across pushes).
 */
import type { PrivateKey } from '@libp2p/interface';
import { deviceSignatures } from '../../src/node/native-signatures.js';
import { encodeChunks } from '../../src/peer-log/chunk.js';
import { GENESIS, signRun } from '../../src/peer-log/signed-runs.js';
import type { LogEntry } from '../../src/peer-log/types.js';
import type { ChunkTuple } from '../../src/protocol/messages.js';
import { chunkToTuple } from '../../src/replication/session.js';

export function signedTuples(key: PrivateKey, library: string, entries: readonly LogEntry[], heads = new Map<string, Uint8Array>()): ChunkTuple[] {
  const signatures = deviceSignatures(key);
  return encodeChunks(entries).map((run): ChunkTuple => {
    const { chunk, id } = signRun(signatures, library, run, heads.get(run.origin) ?? GENESIS);
    heads.set(run.origin, id);
    return chunkToTuple(chunk);
  });
}
