import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { EventEmitter } from 'eventemitter3';
import type { Kysely } from 'kysely';
import { StoppedError, ValidationError } from '../errors.js';
import { encodeHlc, type HlcClock } from '../hlc/index.js';
import type { ModelRegistry } from '../models/registry.js';
import type { Row } from '../models/types.js';
import { checkRecordId, rowFromStored } from '../models/values.js';
import {
  chunksAfter,
  countEntries,
  entriesAfter,
  pruneAcknowledged,
  readAcks,
  readVector,
  recordAck,
} from '../peer-log/log-store.js';
import type { Chunk } from '../peer-log/chunk.js';
import type { ChunksAfterResult, EntriesAfterResult, ReadLimits, VersionVector } from '../peer-log/types.js';
import type { ModelTable, SqlRow } from '../storage/model-table.js';
import type { InternalTables } from '../storage/schema.js';
import { EventLoopTurns } from '../util/event-loop.js';
import { pack } from '../util/msgpack.js';
import { runSql } from '../util/sql.js';
import { LocalWriter, type WriteContext } from './local-writes.js';
import {
  type ApplyResult,
  applyRemoteEntries,
  applyRemoteOwned,
  type OwnedApplyResult,
  type OwnedCoverage,
  type OwnedRowUpdate,
  type RemoteCounts,
  validateOwnedRows,
  validateRemoteChunks,
  validateRemoteEntries,
} from './remote-apply.js';
import { type ChangeEvent, type SyncCounters, WriteBatch } from './write-batch.js';
import { MEMBERS_MODEL } from '../models/system.js';
import type { LibraryStatus } from '../replication/status.js';
import type { SyncedOptions } from '../replication/replicator.js';
import type { SyncProgress } from '../backfill/catch-up.js';
import { type OwnedPage, readOwnedAfter } from './owned-reads.js';
import {
  applySnapshotRows,
  readSnapshot,
  type SnapshotPage,
  type SnapshotPosition,
  type SnapshotRow,
  validateSnapshotRows,
} from './snapshot.js';
import { readRuns, type SyncRun } from '../backfill/history.js';

export interface LibraryEvents {
  change: [ChangeEvent];
  /** A transaction committed that grew the peer log or advanced a device-owned cursor. */
  appended: [];
  status: [LibraryStatus];
  /** A backfill or catch-up run received a page. */
  progress: [SyncProgress];
}

/** A member device of the library, as the synced member list records it. */
export interface Member {
  device: string;
  peer: string;
  addrs: string[];
}

export interface InviteOptions {
  /** How long the invite can be used, in ms (default 24 hours). */
  ttlMs?: number;
}

/** What the replication layer provides to a library once the node is networked. */
export interface LibrarySync {
  createInvite(options: InviteOptions): Promise<string>;
  status(): Promise<LibraryStatus>;
  synced(options: SyncedOptions): Promise<void>;
}

/** The writes available inside `lib.transaction(...)`; all of them commit or none does. */
export interface LibraryTransaction {
  upsert(model: string, row: Record<string, unknown>): Promise<Row>;
  update(model: string, id: string, partial: Record<string, unknown>): Promise<Row>;
  delete(model: string, id: string): Promise<void>;
  get(model: string, id: string): Promise<Row | undefined>;
}

export interface ListOptions {
  /** Page size, 1 … 10 000 (default 100). */
  limit?: number;
  /** Keyset cursor: return rows whose id sorts after this one. */
  after?: string;
}

export interface LibraryOptions {
  readonly id: string;
  readonly name: string;
  readonly db: Kysely<InternalTables>;
  readonly deviceId: string;
  readonly clock: HlcClock;
  readonly registry: ModelRegistry;
  readonly tables: ReadonlyMap<string, ModelTable>;
  readonly counters: SyncCounters;
  /** Releases the database; called once by `close()`. */
  readonly release: () => Promise<void>;
}

const DIGEST_PAGE = 1_000;
const SNAPSHOT_META_KEY = 'snapshot_checkpoint';

/** Where a snapshot read stands: the vector it covers and the position of the next page. */
export interface SnapshotCheckpoint {
  vector: VersionVector;
  next: SnapshotPosition | null;
}
const MAX_LIST_LIMIT = 10_000;

/**
 * One library: a set of application records kept in sync across the member devices, stored in
 * its own SQLite database. All writes go through the model registry inside one transaction per
 * call; the HLC high-water mark and sync counters are persisted in that same transaction.
 */
export class Library {
  readonly id: string;
  readonly name: string;
  /** This device's id (the origin of its own changes, the owner of its own rows). */
  readonly deviceId: string;
  private readonly db: Kysely<InternalTables>;
  private readonly ctx: WriteContext;
  private readonly release: () => Promise<void>;
  private readonly events = new EventEmitter<LibraryEvents>();
  private readonly turns = new EventLoopTurns();
  private counters: SyncCounters;
  private closed = false;
  private sync: LibrarySync | undefined;

  constructor(options: LibraryOptions) {
    this.id = options.id;
    this.name = options.name;
    this.deviceId = options.deviceId;
    this.db = options.db;
    this.release = options.release;
    this.counters = options.counters;
    this.ctx = {
      libraryId: options.id,
      deviceId: options.deviceId,
      clock: options.clock,
      registry: options.registry,
      tables: options.tables,
    };
  }

  on<E extends keyof LibraryEvents>(event: E, listener: (...args: LibraryEvents[E]) => void): this {
    this.events.on(event, listener);
    return this;
  }

  off<E extends keyof LibraryEvents>(event: E, listener: (...args: LibraryEvents[E]) => void): this {
    this.events.off(event, listener);
    return this;
  }

  upsert(model: string, row: Record<string, unknown>): Promise<Row> {
    return this.transaction((tx) => tx.upsert(model, row));
  }

  update(model: string, id: string, partial: Record<string, unknown>): Promise<Row> {
    return this.transaction((tx) => tx.update(model, id, partial));
  }

  delete(model: string, id: string): Promise<void> {
    return this.transaction((tx) => tx.delete(model, id));
  }

  /**
   * Runs `fn` in one SQLite transaction. Writes made through `tx` commit together or not at
   * all. Use `tx`, not the library, inside `fn`: the library's own methods wait for this
   * transaction to finish and would deadlock.
   */
  async transaction<T>(fn: (tx: LibraryTransaction) => Promise<T>): Promise<T> {
    return this.write(async (batch) => {
      const writer = new LocalWriter(this.ctx, batch);
      return fn({
        upsert: (model, row) => writer.upsert(model, row),
        update: (model, id, partial) => writer.update(model, id, partial),
        delete: (model, id) => writer.delete(model, id),
        get: async (model, id) => {
          await batch.flush();
          return this.readRow(batch.db, model, id);
        },
      });
    });
  }

  async get(model: string, id: string): Promise<Row | undefined> {
    this.assertOpen();
    return this.readRow(this.db, model, id);
  }

  /** Live rows of `model` in id order, one keyset page at a time. */
  async list(modelName: string, options: ListOptions = {}): Promise<Row[]> {
    this.assertOpen();
    const model = this.ctx.registry.get(modelName);
    const limit = options.limit ?? 100;
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) {
      throw new ValidationError(`list limit must be an integer from 1 to ${MAX_LIST_LIMIT}`);
    }
    const table = this.table(model.name);
    const after = options.after === undefined ? undefined : checkRecordId(model, options.after);
    const rows = await runSql<SqlRow>(
      this.db,
      table.liveRowsSql(after !== undefined),
      after === undefined ? [limit] : [after, limit],
    );
    return rows.map((r) => rowFromStored(model, r.id as string, table.valuesFromRow(r)));
  }

  /**
   * SHA-256 (hex) over every live row of every model, with its winning clocks and sync
   * metadata, in canonical order (models by name, rows by id). Two devices that hold the same
   * set of changes have equal digests. Reads page by page, so memory stays bounded.
   */
  async digest(): Promise<string> {
    this.assertOpen();
    const hash = sha256.create();
    for (const model of this.ctx.registry.all()) {
      const table = this.table(model.name);
      let after: string | undefined;
      for (;;) {
        // A digest of a large library takes seconds: let sockets and timers run meanwhile.
        await this.turns.turn();
        const rows = await runSql<SqlRow>(
          this.db,
          table.liveRowsSql(after !== undefined),
          after === undefined ? [DIGEST_PAGE] : [after, DIGEST_PAGE],
        );
        for (const row of rows) hash.update(pack([model.name, ...table.canonicalTuple(row)]));
        if (rows.length < DIGEST_PAGE) break;
        after = rows[rows.length - 1]!.id as string;
      }
    }
    return bytesToHex(hash.digest());
  }

  /** The contiguous prefix of every origin's changes held here. */
  versionVector(): VersionVector {
    return Object.fromEntries(this.counters.vector);
  }

  /** Whether this library holds changes of `origin`, or device-owned rows of it as owner. */
  holdsOrigin(origin: string): boolean {
    return this.counters.vector.has(origin) || this.counters.ownerVersions.has(origin);
  }

  /** The HLC high-water mark of this device's clock, encoded. */
  clockHighWater(): string {
    return encodeHlc(this.ctx.clock.last());
  }

  async entriesAfter(vector: VersionVector, limits: ReadLimits): Promise<EntriesAfterResult> {
    this.assertOpen();
    return entriesAfter(this.db, vector, limits);
  }

  /** `entriesAfter` in the log's stored form (what the wire carries), not decoded. */
  async chunksAfter(vector: VersionVector, limits: ReadLimits): Promise<ChunksAfterResult> {
    this.assertOpen();
    return chunksAfter(this.db, vector, limits);
  }

  /**
   * Applies shared-change entries received from peers, in one transaction. Validated first
   * (`ValidationError`) and drift-checked (`ClockDriftError`) before anything is touched.
   */
  async applyRemote(entries: readonly unknown[], counts?: RemoteCounts): Promise<ApplyResult> {
    this.assertOpen();
    const { entries: valid, newest } = validateRemoteEntries(this.ctx, entries);
    if (newest) this.ctx.clock.checkDrift(newest);
    return this.write((batch) => applyRemoteEntries(this.ctx, batch, valid, counts));
  }

  /**
   * `applyRemote` for log chunks as the wire carries them: decoded (a malformed chunk is a
   * `ProtocolError`) and validated the same way; a chunk applied whole is stored as received.
   */
  async applyRemoteChunks(chunks: readonly Chunk[], counts?: RemoteCounts): Promise<ApplyResult> {
    this.assertOpen();
    const { entries, newest } = validateRemoteChunks(this.ctx, chunks);
    if (newest) this.ctx.clock.checkDrift(newest);
    return this.write((batch) => applyRemoteEntries(this.ctx, batch, entries, counts, chunks));
  }

  /** Current shared rows after `after` (tombstones and clocks included), for a partner's snapshot. */
  async snapshotAfter(after: SnapshotPosition | null, limits: ReadLimits): Promise<SnapshotPage> {
    this.assertOpen();
    const shared = this.ctx.registry.all().filter((m) => m.ownership === 'shared');
    return readSnapshot(this.db, shared.map((m) => this.table(m.name)), after, limits);
  }

  /** Shared rows held, tombstones included: the size of a snapshot. */
  async sharedRowCount(): Promise<number> {
    this.assertOpen();
    let total = 0;
    for (const model of this.ctx.registry.all()) {
      if (model.ownership !== 'shared') continue;
      const [row] = await runSql<{ n: number }>(this.db, `SELECT count(*) AS n FROM ${this.table(model.name).table}`);
      total += row!.n;
    }
    return total;
  }

  /**
   * Merges a page of a partner's snapshot into the held rows and records where the snapshot
   * stands, in one transaction. On the last page (`checkpoint.next` null) the library holds
   * every origin through the snapshot's vector instead, and continues from there by the log.
   */
  async applySnapshot(rows: readonly SnapshotRow[], checkpoint: SnapshotCheckpoint, counts?: RemoteCounts): Promise<void> {
    this.assertOpen();
    for (const hlc of validateSnapshotRows(this.ctx, rows)) this.ctx.clock.checkDrift(hlc);
    await this.write(async (batch) => {
      await applySnapshotRows(this.ctx, batch, rows, counts ?? { added: 0, updated: 0, deleted: 0 });
      if (checkpoint.next === null) {
        for (const [origin, through] of Object.entries(checkpoint.vector)) {
          // A snapshot never moves this device's own counter: only its own writes do (a
          // position it adopted would be one it then skips or reuses).
          if (origin !== this.deviceId) batch.adoptPrunedPrefix(origin, through);
        }
        await batch.db.deleteFrom('sync_meta').where('key', '=', SNAPSHOT_META_KEY).execute();
      } else {
        const value = JSON.stringify(checkpoint);
        await batch.db
          .insertInto('sync_meta')
          .values({ key: SNAPSHOT_META_KEY, value })
          .onConflict((oc) => oc.column('key').doUpdateSet({ value }))
          .execute();
      }
    });
  }

  /** Where an unfinished snapshot read stands, if one is in progress. */
  async snapshotCheckpoint(): Promise<SnapshotCheckpoint | undefined> {
    const value = await this.metaValue(SNAPSHOT_META_KEY);
    return value === undefined ? undefined : (JSON.parse(value) as SnapshotCheckpoint);
  }

  /** Past and running backfill and catch-up runs, oldest first (at most the last 1 000). */
  async syncHistory(): Promise<SyncRun[]> {
    this.assertOpen();
    return readRuns(this.db);
  }

  /**
   * Applies replicated device-owned rows (state-based sync), in one transaction. With
   * `coverage`, the rows are all of the owner's rows in that version range, and the owner's
   * cursor moves forward when it is contiguous with what is held.
   */
  async applyRemoteOwned(rows: readonly unknown[], coverage?: OwnedCoverage, counts?: RemoteCounts): Promise<OwnedApplyResult> {
    this.assertOpen();
    const hlcs = validateOwnedRows(this.ctx, rows);
    for (const hlc of hlcs) this.ctx.clock.checkDrift(hlc);
    return this.write((batch) => applyRemoteOwned(this.ctx, batch, rows as OwnedRowUpdate[], coverage, counts));
  }

  /** Per owner, the version through which every device-owned row is held. */
  ownedVector(): VersionVector {
    return Object.fromEntries(this.counters.ownerVersions);
  }

  /** Device-owned rows of `owner` after `after`, as far as they are held contiguously. */
  async ownedAfter(owner: string, after: number, limits: ReadLimits): Promise<OwnedPage> {
    this.assertOpen();
    const through = this.counters.ownerVersions.get(owner) ?? 0;
    const tables = [...this.ctx.tables.values()].filter((t) => t.model.ownership === 'device');
    return readOwnedAfter(this.db, tables, owner, after, through, limits);
  }

  /** The library's member devices (synced data: every member learns of a new one). */
  async members(): Promise<Member[]> {
    const members: Member[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await this.list(MEMBERS_MODEL.name, { limit: MAX_LIST_LIMIT, after });
      for (const row of page) members.push({ device: row.id, peer: row.peer as string, addrs: row.addrs as string[] });
      if (page.length < MAX_LIST_LIMIT) return members;
      after = page[page.length - 1]!.id;
    }
  }

  /**
   * A transaction for the sync engine itself: it may write system models (membership) and
   * use the raw transaction for its own tables. Not for application code.
   */
  async systemTransaction<T>(fn: (writer: LocalWriter, trx: Kysely<InternalTables>) => Promise<T>): Promise<T> {
    return this.write(async (batch) => fn(new LocalWriter(this.ctx, batch, true), batch.db));
  }

  /** Reads one of the engine's own settings stored with the library. */
  async metaValue(key: string): Promise<string | undefined> {
    this.assertOpen();
    const row = await this.db.selectFrom('sync_meta').select('value').where('key', '=', key).executeTakeFirst();
    return row?.value;
  }

  async deleteMetaValue(key: string): Promise<void> {
    this.assertOpen();
    await this.db.deleteFrom('sync_meta').where('key', '=', key).execute();
  }

  /** The library's database, for the sync engine's own bookkeeping (history). Not for application code. */
  engineDb(): Kysely<InternalTables> {
    this.assertOpen();
    return this.db;
  }

  async setMetaValue(key: string, value: string): Promise<void> {
    this.assertOpen();
    await this.db
      .insertInto('sync_meta')
      .values({ key, value })
      .onConflict((oc) => oc.column('key').doUpdateSet({ value }))
      .execute();
  }

  /** Creates a one-time invite another device can join this library with. */
  createInvite(options: InviteOptions = {}): Promise<string> {
    return this.requireSync().createInvite(options);
  }

  /** Partners, their acknowledged vectors, this device's vectors, log size and sync state. */
  status(): Promise<LibraryStatus> {
    return this.requireSync().status();
  }

  /**
   * Resolves once the library is `ready` (backfilled and caught up with its connected
   * partners); rejects if it reports `error`, or with `ABORTED` when `signal` aborts.
   */
  synced(options: SyncedOptions = {}): Promise<void> {
    return this.requireSync().synced(options);
  }

  /** Connects the library to the node's replication; called once by the node. */
  attachSync(sync: LibrarySync): void {
    this.sync = sync;
  }

  /** Emits a status change (called by the replication layer). */
  emitStatus(status: LibraryStatus): void {
    this.events.emit('status', status);
  }

  /** Emits sync progress (called by the replication layer). */
  emitProgress(progress: SyncProgress): void {
    this.events.emit('progress', progress);
  }

  /** Records the vector an authenticated partner device has acknowledged. */
  async recordAck(partnerDevice: string, vector: VersionVector): Promise<void> {
    this.assertOpen();
    await recordAck(this.db, partnerDevice, vector);
  }

  async acks(): Promise<Map<string, VersionVector>> {
    this.assertOpen();
    return readAcks(this.db);
  }

  /**
   * Deletes log entries acknowledged by every one of `partners`, keeping at most
   * `retainEntries` per origin for a partner that lags further; returns how many.
   */
  async prune(partners: readonly string[], retainEntries?: number): Promise<number> {
    this.assertOpen();
    return this.db.transaction().execute((trx) => pruneAcknowledged(trx, partners, retainEntries));
  }

  /** Per origin, the last seq deleted from this log (0 where nothing was pruned). */
  async prunedVector(): Promise<VersionVector> {
    this.assertOpen();
    const held = await readVector(this.db);
    return Object.fromEntries([...held].map(([origin, v]) => [origin, v.prunedThrough]));
  }

  async logSize(): Promise<number> {
    this.assertOpen();
    return countEntries(this.db);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.events.removeAllListeners();
    await this.release();
  }

  /**
   * Runs `fn` in a transaction with a fresh batch; on commit, persists the clock high-water
   * mark with the data and adopts the batch's counters, then emits change events. The mark is
   * taken after the clock received every clock the batch stored (`WriteBatch.highWater`).
   */
  private async write<T>(fn: (batch: WriteBatch) => Promise<T>): Promise<T> {
    this.assertOpen();
    // Between transactions, let sockets and timers run if a burst of writes has held the loop.
    await this.turns.turn();
    this.assertOpen();
    const { value, batch } = await this.db.transaction().execute(async (trx) => {
      const batch = new WriteBatch(trx, this.counters, this.ctx.clock, this.deviceId);
      const value = await fn(batch);
      await batch.flush();
      const highWater = batch.highWater();
      await trx
        .insertInto('sync_meta')
        .values({ key: 'hlc', value: highWater })
        .onConflict((oc) => oc.column('key').doUpdateSet({ value: highWater }))
        .execute();
      return { value, batch };
    });
    this.counters = batch.counters();
    if (this.events.listenerCount('change') > 0) for (const event of batch.events) this.events.emit('change', event);
    if (batch.advanced) this.events.emit('appended');
    return value;
  }

  private async readRow(db: Kysely<InternalTables>, modelName: string, id: string): Promise<Row | undefined> {
    const model = this.ctx.registry.get(modelName);
    const table = this.table(model.name);
    const rows = await runSql<SqlRow>(db, table.selectByIdsSql(1), [checkRecordId(model, id)]);
    const row = rows[0];
    if (!row || row._deleted === 1) return undefined;
    return rowFromStored(model, id, table.valuesFromRow(row));
  }

  private table(name: string): ModelTable {
    return this.ctx.tables.get(name)!;
  }

  private requireSync(): LibrarySync {
    this.assertOpen();
    if (!this.sync) throw new StoppedError(`library ${this.id} is not attached to a running sync node`);
    return this.sync;
  }

  private assertOpen(): void {
    if (this.closed) throw new StoppedError(`library ${this.id} is closed`);
  }
}
