import Database from 'better-sqlite3';

/** A node's storage as images of its library databases, by library id. */
export type DiskImage = ReadonlyMap<string, Buffer>;

/**
 * One simulated device's disk: an in-memory SQLite database per library while the node runs,
 * and what survives a crash, the committed content of each, in between. A crash rolls back the
 * transaction a handle has open (SQLite's journal does that at the next open after kill -9),
 * keeps the committed pages and closes the handle, so the abandoned node's code still running
 * fails on its next statement instead of writing to the disk the next run opens.
 */
export class SimDisk {
  private images = new Map<string, Buffer>();
  private readonly open = new Map<string, Database.Database>();

  /** Library ids on the disk. */
  libraryIds(): string[] {
    return [...new Set([...this.images.keys(), ...this.open.keys()])].sort();
  }

  /** Opens a library's database: from its image, or empty when it is new. */
  openDatabase(libraryId: string): Database.Database {
    if (this.open.has(libraryId)) throw new Error(`sim: library ${libraryId} is already open on this disk`);
    const image = this.images.get(libraryId);
    const database = image ? new Database(image) : new Database(':memory:');
    this.open.set(libraryId, database);
    return database;
  }

  /** A handle closed by the node itself (a library released in an orderly way). */
  closed(libraryId: string, database: Database.Database): void {
    if (this.open.get(libraryId) !== database) return;
    this.images.set(libraryId, database.serialize());
    this.open.delete(libraryId);
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
