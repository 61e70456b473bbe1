import type { Kysely } from 'kysely';
import type { InternalTables } from '../storage/schema.js';
import type { Signatures } from '../runtime/signatures.js';

/** One library's database, open until `release()` (called once, when the library closes). */
export interface OpenedLibraryDb {
  readonly db: Kysely<InternalTables>;
  release(): Promise<void>;
}

/**
 * Where a node keeps its libraries: one SQLite database each. The Node edge keeps them as files
 * in the data directory (`src/node/`); the simulator keeps in-memory databases that outlive a
 * simulated crash. The core never names a driver or a path.
 */
export interface LibraryStorage {
  /** This device's id. It is kept with the libraries: a copy of the storage is the same device. */
  readonly deviceId: string;
  /** Signing with this device's key (the one its PeerId names), and checking others' signatures. */
  readonly signatures: Signatures;
  /** Ids of the libraries held. */
  libraryIds(): Promise<string[]>;
  /** Opens a held library's database. */
  open(id: string): Promise<OpenedLibraryDb>;
  /** Creates the (empty) database of a new library; `prepareLibrary` gives it its tables. */
  create(id: string): Promise<OpenedLibraryDb>;
  /** Releases the storage (the data directory's lock) after every library closed. */
  close(): Promise<void>;
}
