import type { LibraryStorage, OpenedLibraryDb } from '../core/storage.js';
import type { DataDir } from './data-dir.js';
import { openSqliteFile } from './sqlite.js';

/**
 * The node's libraries as SQLite files in its data directory, which stays locked until
 * `close()`: two live nodes on one directory would both write as the same device.
 */
export async function openFileStorage(dataDir: DataDir): Promise<LibraryStorage> {
  await dataDir.ensure();
  const unlock = await dataDir.lock();
  try {
    const deviceId = await dataDir.deviceId();
    const openFile = async (id: string): Promise<OpenedLibraryDb> => {
      const db = openSqliteFile(dataDir.libraryFile(id));
      return { db, release: () => db.destroy() };
    };
    return { deviceId, libraryIds: () => dataDir.libraryIds(), open: openFile, create: openFile, close: unlock };
  } catch (err) {
    await unlock();
    throw err;
  }
}
