import type Database from 'better-sqlite3';
import type { LibraryStorage, OpenedLibraryDb } from '../src/core/storage.js';
import { openMemorySqlite } from '../src/node/sqlite.js';
import type { Signatures } from '../src/runtime/signatures.js';

/** A node's storage as images of its library databases, by library id. */
export type DiskImage = ReadonlyMap<string, Buffer>;

/**
 * One simulated device's disk: an in-memory SQLite database per library while the node runs,
 * and what survives a crash, the committed content of each, in between. A crash rolls back the
 * transaction a handle has open (SQLite's journal does that at the next open after kill -9),
 * keeps the committed pages and closes the handle, so the abandoned node's code still running
 * fails on its next statement instead of writing to the disk the next life opens.
 */
export class SimDisk {
  private images = new Map<string, Buffer>();
  private readonly open = new Map<string, Database.Database>();

  constructor(
    private readonly deviceId: string,
    /** The device's signing key (the simulator's keyring, by peer name). */
    private readonly signatures: Signatures,
  ) {}

  /** The disk as the node core sees it (`LibraryStorage`). */
  storage(): LibraryStorage {
    const openLibrary = async (id: string) => this.openLibrary(id);
    return {
      deviceId: this.deviceId,
      signatures: this.signatures,
      libraryIds: async () => [...this.images.keys()].sort(),
      open: openLibrary,
      create: openLibrary,
      close: async () => undefined,
    };
  }

  private openLibrary(id: string): OpenedLibraryDb {
    if (this.open.has(id)) throw new Error(`sim: library ${id} is already open on this disk`);
    const { db, database } = openMemorySqlite(this.images.get(id));
    this.open.set(id, database);
    // Listed from now on: a library created on this life is on the disk after a crash.
    if (!this.images.has(id)) this.images.set(id, database.serialize());
    return {
      db,
      release: async () => {
        // Closed by the node itself (an orderly stop): keep what it committed.
        if (this.open.get(id) === database) {
          this.images.set(id, database.serialize());
          this.open.delete(id);
        }
        await db.destroy();
      },
    };
  }

  /** The process dies: open transactions roll back, committed content stays, handles close. */
  crash(): void {
    for (const [id, database] of this.open) {
      if (database.inTransaction) database.exec('ROLLBACK');
      this.images.set(id, database.serialize());
      database.close();
    }
    this.open.clear();
  }

  /**
   * A backup of the committed content now, or undefined while a transaction is open (a backup
   * tool copies committed pages; here a handle mid-transaction has uncommitted ones in memory).
   */
  backup(): DiskImage | undefined {
    const image = new Map(this.images);
    for (const [id, database] of this.open) {
      if (database.inTransaction) return undefined;
      image.set(id, database.serialize());
    }
    return image;
  }

  /** Replaces the disk's content with `image` (a restore from backup); only while nothing is open. */
  restore(image: DiskImage): void {
    if (this.open.size > 0) throw new Error('sim: restore onto a disk with open databases');
    this.images = new Map(image);
  }
}
