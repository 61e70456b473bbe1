import type { PrivateKey } from '@libp2p/interface';
import type { LibraryStorage, OpenedLibraryDb } from '../core/storage.js';
import type { Signatures } from '../runtime/signatures.js';
import type { DataDir } from './data-dir.js';
import { openSqliteFile } from './sqlite.js';
import { deviceSignatures } from './native-signatures.js';
import { loadOrCreatePeerKey } from '../network/peer-key.js';

/**
 * The node's libraries as SQLite files in its data directory, which stays locked until
 * `close()`: two live nodes on one directory would both write as the same device. The device
 * signs with the key kept there (`signaturesFor`: Node's native Ed25519 unless a benchmark
 * measures its baseline).
 */
export async function openFileStorage(dataDir: DataDir, signaturesFor: (key: PrivateKey) => Signatures = deviceSignatures): Promise<LibraryStorage> {
  await dataDir.ensure();
  const unlock = await dataDir.lock();
  try {
    const deviceId = await dataDir.deviceId();
    const signatures = signaturesFor(await loadOrCreatePeerKey(dataDir.peerKeyFile));
    const openFile = async (id: string): Promise<OpenedLibraryDb> => {
      const db = openSqliteFile(dataDir.libraryFile(id));
      return { db, release: () => db.destroy() };
    };
    return { deviceId, signatures, libraryIds: () => dataDir.libraryIds(), open: openFile, create: openFile, close: unlock };
  } catch (err) {
    await unlock();
    throw err;
  }
}
