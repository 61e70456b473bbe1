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
  countEntries,
  entriesAfter,
  pruneAcknowledged,
  readAcks,
  recordAck,
} from '../peer-log/log-store.js';
import type { EntriesAfterResult, ReadLimits, VersionVector } from '../peer-log/types.js';
import type { ModelTable, SqlRow } from '../storage/model-table.js';
import type { InternalTables } from '../storage/schema.js';
import { pack } from '../util/msgpack.js';
import { runSql } from '../util/sql.js';
import { LocalWriter, type WriteContext } from './local-writes.js';
import {
  type ApplyResult,
  applyRemoteEntries,
  applyRemoteOwned,
  type OwnedApplyResult,
  type OwnedRowUpdate,
  validateOwnedRows,
  validateRemoteEntries,
} from './remote-apply.js';
import { type ChangeEvent, type SyncCounters, WriteBatch } from './write-batch.js';

export interface LibraryEvents {
  change: [ChangeEvent];
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
const MAX_LIST_LIMIT = 10_000;

/**
 * One library: a set of application records kept in sync across the member devices, stored in
 * its own SQLite database. All writes go through the model registry inside one transaction per
 * call; the HLC high-water mark and sync counters are persisted in that same transaction.
 */
export class Library {
  readonly id: string;
  readonly name: string;
  private readonly db: Kysely<InternalTables>;
  private readonly ctx: WriteContext;
  private readonly release: () => Promise<void>;
  private readonly events = new EventEmitter<LibraryEvents>();
  private counters: SyncCounters;
  private closed = false;

  constructor(options: LibraryOptions) {
    this.id = options.id;
    this.name = options.name;
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

  /** The HLC high-water mark of this device's clock, encoded. */
  clockHighWater(): string {
    return encodeHlc(this.ctx.clock.last());
  }

  async entriesAfter(vector: VersionVector, limits: ReadLimits): Promise<EntriesAfterResult> {
    this.assertOpen();
    return entriesAfter(this.db, vector, limits);
  }

  /**
   * Applies shared-change entries received from peers, in one transaction. Validated first
   * (`ValidationError`) and drift-checked (`ClockDriftError`) before anything is touched.
   */
  async applyRemote(entries: readonly unknown[]): Promise<ApplyResult> {
    this.assertOpen();
    const validated = validateRemoteEntries(this.ctx, entries);
    for (const { hlc } of validated) this.ctx.clock.checkDrift(hlc);
    return this.write((batch) => applyRemoteEntries(this.ctx, batch, validated.map((v) => v.entry)));
  }

  /** Applies replicated device-owned rows (state-based sync), in one transaction. */
  async applyRemoteOwned(rows: readonly unknown[]): Promise<OwnedApplyResult> {
    this.assertOpen();
    const hlcs = validateOwnedRows(this.ctx, rows);
    for (const hlc of hlcs) this.ctx.clock.checkDrift(hlc);
    return this.write((batch) => applyRemoteOwned(this.ctx, batch, rows as OwnedRowUpdate[]));
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

  /** Deletes log entries acknowledged by every one of `partners`; returns how many. */
  async prune(partners: readonly string[]): Promise<number> {
    this.assertOpen();
    return this.db.transaction().execute((trx) => pruneAcknowledged(trx, partners));
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
   * mark with the data and adopts the batch's counters, then emits change events.
   */
  private async write<T>(fn: (batch: WriteBatch) => Promise<T>): Promise<T> {
    this.assertOpen();
    const { value, batch } = await this.db.transaction().execute(async (trx) => {
      const batch = new WriteBatch(trx, this.counters);
      const value = await fn(batch);
      await batch.flush();
      const highWater = encodeHlc(this.ctx.clock.last());
      await trx
        .insertInto('sync_meta')
        .values({ key: 'hlc', value: highWater })
        .onConflict((oc) => oc.column('key').doUpdateSet({ value: highWater }))
        .execute();
      return { value, batch };
    });
    this.counters = batch.counters();
    if (this.events.listenerCount('change') > 0) for (const event of batch.events) this.events.emit('change', event);
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

  private assertOpen(): void {
    if (this.closed) throw new StoppedError(`library ${this.id} is closed`);
  }
}
