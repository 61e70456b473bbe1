import { v4 as uuidv4 } from 'uuid';
import { NotFoundError, StoppedError, ValidationError } from '../errors.js';
import { compareHlc, type Hlc, HlcClock, isDeviceId, type WallClock } from '../hlc/index.js';
import { Library } from '../library/library.js';
import type { Model } from '../models/define.js';
import { ModelRegistry } from '../models/registry.js';
import { prepareLibrary } from '../storage/open-library.js';
import { openSqliteFile } from '../storage/sqlite-node.js';
import { DataDir } from './data-dir.js';

export interface SyncNodeOptions {
  /** Directory for the device identity and one SQLite file per library. Created if missing. */
  dataDir: string;
  /** The application's models (see `defineModel`). */
  models: Model[];
  /** Wall clock in milliseconds; defaults to `Date.now`. Injected by tests and the simulator. */
  wallClock?: WallClock;
  /** Remote clocks further ahead of local wall time than this are refused. Default 60 000. */
  maxClockDriftMs?: number;
}

export interface CreateLibraryOptions {
  name: string;
  /**
   * Open a replica of an existing library (a uuid) instead of minting a new id. Joining by
   * invite builds on this; tests and tools use it to place one library on several devices.
   */
  id?: string;
}

/**
 * A device's sync node: its identity, its clock and its open libraries. Create one with
 * `createSyncNode`; call `stop()` before the process exits.
 */
export class SyncNode {
  private stopped = false;

  private constructor(
    readonly deviceId: string,
    private readonly dataDir: DataDir,
    private readonly registry: ModelRegistry,
    private readonly clock: HlcClock,
    private readonly open: Map<string, Library>,
    private readonly unlock: () => Promise<void>,
  ) {}

  static async create(options: SyncNodeOptions): Promise<SyncNode> {
    if (typeof options?.dataDir !== 'string' || options.dataDir === '') {
      throw new ValidationError('createSyncNode: dataDir must be a directory path');
    }
    if (!Array.isArray(options.models)) throw new ValidationError('createSyncNode: models must be an array');
    const drift = options.maxClockDriftMs;
    if (drift !== undefined && (!Number.isFinite(drift) || drift < 0)) {
      throw new ValidationError('createSyncNode: maxClockDriftMs must be a non-negative number');
    }
    const registry = new ModelRegistry(options.models);
    const dataDir = new DataDir(options.dataDir);
    await dataDir.ensure();
    const unlock = await dataDir.lock();
    try {
      const deviceId = await dataDir.deviceId();
      const prepared = [];
      for (const id of await dataDir.libraryIds()) {
        const db = openSqliteFile(dataDir.libraryFile(id));
        try {
          prepared.push({ db, ...(await prepareLibrary(db, registry, { deviceId })) });
        } catch (err) {
          await db.destroy();
          throw err;
        }
      }
      // One clock per device: start above everything any library has persisted.
      let highWater: Hlc | undefined;
      for (const p of prepared) {
        if (p.highWater && (!highWater || compareHlc(p.highWater, highWater) > 0)) highWater = p.highWater;
      }
      const clock = new HlcClock({
        deviceId,
        wallClock: options.wallClock,
        maxClockDriftMs: options.maxClockDriftMs,
        highWater: highWater && { ...highWater, deviceId },
      });
      const open = new Map<string, Library>();
      for (const p of prepared) {
        open.set(
          p.meta.id,
          new Library({
            id: p.meta.id,
            name: p.meta.name,
            db: p.db,
            deviceId,
            clock,
            registry,
            tables: p.tables,
            counters: p.counters,
            release: () => p.db.destroy(),
          }),
        );
      }
      return new SyncNode(deviceId, dataDir, registry, clock, open, unlock);
    } catch (err) {
      await unlock();
      throw err;
    }
  }

  async createLibrary(options: CreateLibraryOptions): Promise<Library> {
    this.assertRunning();
    const name = options?.name;
    if (typeof name !== 'string' || name.trim() === '' || name.length > 200) {
      throw new ValidationError('createLibrary: name must be a non-empty string of at most 200 characters');
    }
    const id = options.id ?? uuidv4();
    if (!isDeviceId(id)) throw new ValidationError('createLibrary: id must be a lowercase uuid');
    if (this.open.has(id)) throw new ValidationError(`createLibrary: library ${id} already exists on this node`);
    const db = openSqliteFile(this.dataDir.libraryFile(id));
    const prepared = await prepareLibrary(db, this.registry, { deviceId: this.deviceId, create: { id, name } });
    const library = new Library({
      id,
      name,
      db,
      deviceId: this.deviceId,
      clock: this.clock,
      registry: this.registry,
      tables: prepared.tables,
      counters: prepared.counters,
      release: () => db.destroy(),
    });
    this.open.set(id, library);
    return library;
  }

  library(id: string): Library {
    this.assertRunning();
    const library = this.open.get(id);
    if (!library) throw new NotFoundError(`no library ${JSON.stringify(id)} on this node`);
    return library;
  }

  libraries(): Library[] {
    this.assertRunning();
    return [...this.open.values()];
  }

  /** Closes every library and releases the data directory. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const library of this.open.values()) await library.close();
    this.open.clear();
    await this.unlock();
  }

  private assertRunning(): void {
    if (this.stopped) throw new StoppedError();
  }
}

export function createSyncNode(options: SyncNodeOptions): Promise<SyncNode> {
  return SyncNode.create(options);
}
