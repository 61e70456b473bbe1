import { CompiledQuery, type Kysely } from 'kysely';
import { InternalError, ValidationError } from '../errors.js';
import { decodeHlc, encodeHlc, type HlcClock } from '../hlc/index.js';
import { newestClockOf } from '../models/merge.js';
import { appendChunks, holdPrunedPrefix, type ProvenHead, type SignStoredRun, type StoredRun, writeVector } from '../peer-log/log-store.js';
import { type Chunk, encodeChunks } from '../peer-log/chunk.js';
import { GENESIS, runId } from '../peer-log/signed-runs.js';
import type { Signatures } from '../runtime/signatures.js';
import { type LogEntry, MAX_VECTOR_ORIGINS } from '../peer-log/types.js';
import type { ModelTable, SqlRow } from '../storage/model-table.js';
import type { InternalTables } from '../storage/schema.js';
import type { ChangeOp, OwnedRowState, SharedRowState, StoredValue } from '../models/types.js';
import { runSql } from '../util/sql.js';
import { putMeta } from '../storage/meta.js';
import type { Random } from '../runtime/runtime.js';
import type { Removals } from './removals.js';
import { newWriterId, WRITER_META_KEY, writerMetaValue, type WriterState } from './writers.js';
import type { WrittenRun } from './own-run-signatures.js';

export interface ChangeEvent {
  model: string;
  id: string;
  op: ChangeOp;
  origin: 'local' | 'remote';
}

/** Counters a transaction advances; adopted by the library only when the transaction commits. */
export interface SyncCounters {
  /** Per-origin contiguous prefix held (the version vector). */
  readonly vector: ReadonlyMap<string, number>;
  /**
   * Per owner, the version through which this device holds every device-owned row (its own
   * writes, or replicated pages and batches that covered a contiguous version range).
   */
  readonly ownerVersions: ReadonlyMap<string, number>;
  /** Per owner, the PeerId whose key signed the owner's rows held here (its member key). */
  readonly ownerAuthors: ReadonlyMap<string, string>;
  /** The writer this device's own shared changes go to (see `writers.ts`). */
  readonly writer: WriterState;
  /**
   * Per origin, the id of the run ending at its held seq, where known (not for a prefix adopted
   * from a snapshot or held from before 2.0): the `prev` its next run must carry.
   */
  readonly heads: ReadonlyMap<string, Uint8Array>;
  /** The lowest version of this device's own rows not signed yet, null when all are (`sign-own-rows.ts`). */
  readonly unsignedOwnFrom: number | null;
}

/** What signs this device's runs of one library. */
export interface RunSigner {
  readonly library: string;
  readonly signatures: Signatures;
  /** Signs a run of this device's stored unsigned, as the log's readers in the transaction need (`own-run-signatures.ts`). */
  readonly signStored: SignStoredRun;
}

/** Pending rows are written out in the middle of a long transaction past this many. */
const FLUSH_THRESHOLD = 4_000;
const IDS_PER_SELECT = 500;

type Pending<S> = Map<ModelTable, Map<string, S>>;

/**
 * The state of one write transaction: rows and log entries accumulate in memory (bounded) and
 * are written with multi-row statements, counters advance in a private copy. Reads inside the
 * transaction see pending rows first, then the database.
 *
 * It is also where the clock learns of clocks from elsewhere (invariant 3): every row state, log
 * entry and chunk put here has its newest clock noted (a string comparison), and the clock
 * receives the newest one before it stamps a local write (`stamp`) and before the transaction
 * persists its high-water mark (`highWater`). So whatever path stores a clock, the clock moves
 * past it in the same transaction, and the persisted mark covers it across restarts.
 */
export class WriteBatch {
  readonly events: ChangeEvent[] = [];
  private readonly shared: Pending<SharedRowState> = new Map();
  private readonly owned: Pending<OwnedRowState> = new Map();
  /** This device's own entries not yet made into signed runs (at the next flush). */
  private log: LogEntry[] = [];
  private chunks: Chunk[] = [];
  /** This device's runs written unsigned so far, to sign once committed. */
  readonly ownRunsWritten: WrittenRun[] = [];
  private pendingCount = 0;
  private readonly vector: Map<string, number>;
  private readonly heads: Map<string, Uint8Array>;
  private readonly ownerVersions: Map<string, number>;
  private readonly ownerAuthors: Map<string, string>;
  /** Whether this transaction appended to the log or moved an owner's cursor. */
  advanced = false;
  private readonly changedOrigins = new Set<string>();
  private readonly changedOwners = new Set<string>();
  /** Owners whose device-owned rows this transaction wrote (their summaries change). */
  readonly ownersWritten = new Set<string>();
  private readonly prunedPrefixes = new Map<string, { through: number; proven: ProvenHead | null }>();
  /** The newest clock put in this transaction that the clock has not received yet. */
  private unreceived: string | null = null;
  /**
   * A value the clock has reached (the last one stamped or received here): clocks at or below it
   * need no receive, which keeps a local write's own clocks from costing anything.
   */
  private covered = '';
  /** Pending shared row states written by local writes: the table must take every one. */
  private readonly localStates = new Set<SharedRowState>();
  private writer: WriterState;
  private writerChanged = false;
  private unsignedOwnFrom: number | null;
  /**
   * Removals and closed origins as this transaction changes them (a removal it applies, an
   * origin it closes); adopted by the library only once committed, like the counters.
   */
  readonly removals: Removals;

  constructor(
    readonly db: Kysely<InternalTables>,
    committed: SyncCounters,
    private readonly clock: HlcClock,
    /** This device: its origin and owner always have room (see `admit`). */
    private readonly self: string,
    committedRemovals: Removals,
    /** Draws fresh writer ids (`ownOrigin`). */
    private readonly random: Random,
    /** Signs this device's runs (`flush`). */
    private readonly signer: RunSigner,
  ) {
    this.removals = committedRemovals.copy();
    this.vector = new Map(committed.vector);
    this.heads = new Map(committed.heads);
    this.ownerVersions = new Map(committed.ownerVersions);
    this.ownerAuthors = new Map(committed.ownerAuthors);
    this.writer = committed.writer;
    this.unsignedOwnFrom = committed.unsignedOwnFrom;
  }

  /**
   * A clock for a local write: above every clock stored so far, this transaction's included.
   * `writer` is its device part: a shared change's writer (origin), else the device id.
   */
  stamp(writer: string = this.clock.deviceId): string {
    this.receiveStored();
    this.covered = encodeHlc({ ...this.clock.now(), deviceId: writer });
    return this.covered;
  }

  /** The clock's high-water mark to persist with this transaction: it covers every clock stored. */
  highWater(): string {
    this.receiveStored();
    return encodeHlc(this.clock.last());
  }

  private receiveStored(): void {
    const newest = this.unreceived;
    if (newest === null) return;
    this.unreceived = null;
    // The clock is shared by the device's libraries and may be past `covered` already.
    if (newest > encodeHlc(this.clock.last())) this.clock.receive(decodeHlc(newest));
    this.covered = encodeHlc(this.clock.last());
  }

  private observe(hlc: string): void {
    if (hlc > (this.unreceived ?? this.covered)) this.unreceived = hlc;
  }

  counters(): SyncCounters {
    return {
      vector: this.vector,
      ownerVersions: this.ownerVersions,
      ownerAuthors: this.ownerAuthors,
      writer: this.writer,
      heads: this.heads,
      unsignedOwnFrom: this.unsignedOwnFrom,
    };
  }

  /** The current writer, confirmed or retired or neither. */
  get currentWriter(): WriterState {
    return this.writer;
  }

  /**
   * The origin for a local shared change of `device`: the current writer once confirmed;
   * otherwise (not confirmed yet in this run, or retired) a fresh writer, which nobody can hold
   * yet and which stays the writer from then on. Stored with the transaction.
   */
  ownOrigin(device: string): string {
    if (!this.writer.confirmed || this.writer.retired) this.setWriter({ id: newWriterId(device, this.random), confirmed: true, retired: false });
    return this.writer.id;
  }

  /** Replaces the writer state (confirmation is kept in memory; the rest is stored). */
  setWriter(writer: WriterState): void {
    if (writer.id !== this.writer.id || writer.retired !== this.writer.retired) this.writerChanged = true;
    this.writer = writer;
  }

  seqOf(origin: string): number {
    return this.vector.get(origin) ?? 0;
  }

  versionOf(owner: string): number {
    return this.ownerVersions.get(owner) ?? 0;
  }

  setVersion(owner: string, version: number): void {
    if (version <= this.versionOf(owner)) return;
    admit(this.ownerVersions, owner, this.self, 'owners');
    this.ownerVersions.set(owner, version);
    this.changedOwners.add(owner);
    this.advanced = true;
  }

  /** Records the PeerId that signed the rows of `owner` this transaction takes. */
  setOwnerAuthor(owner: string, author: string): void {
    if (this.ownerAuthors.get(owner) === author) return;
    admit(this.ownerVersions, owner, this.self, 'owners');
    this.ownerAuthors.set(owner, author);
    this.changedOwners.add(owner);
  }

  loadShared(table: ModelTable, id: string): Promise<SharedRowState | undefined> {
    return this.load(this.shared, table, id, (row) => table.sharedFromRow(row));
  }

  loadOwned(table: ModelTable, id: string): Promise<OwnedRowState | undefined> {
    return this.load(this.owned, table, id, (row) => table.ownedFromRow(row));
  }

  /** A row as this transaction sees it: pending first, then the database. */
  private async load<S>(pending: Pending<S>, table: ModelTable, id: string, decode: (row: SqlRow) => S): Promise<S | undefined> {
    const state = pending.get(table)?.get(id);
    if (state) return state;
    const rows = await runSql<SqlRow>(this.db, table.selectByIdsSql(1), [id]);
    return rows[0] ? decode(rows[0]) : undefined;
  }

  /** Loads the current state of many rows with few statements (remote batches). */
  async loadManyShared(table: ModelTable, ids: readonly string[]): Promise<Map<string, SharedRowState>> {
    const found = new Map<string, SharedRowState>();
    const missing: string[] = [];
    const pending = this.shared.get(table);
    for (const id of new Set(ids)) {
      const state = pending?.get(id);
      if (state) found.set(id, state);
      else missing.push(id);
    }
    for (let start = 0; start < missing.length; start += IDS_PER_SELECT) {
      const chunk = missing.slice(start, start + IDS_PER_SELECT);
      for (const row of await runSql<SqlRow>(this.db, table.selectByIdsSql(chunk.length), chunk)) {
        found.set(row.id as string, table.sharedFromRow(row));
      }
    }
    return found;
  }

  /** Whether this transaction holds a pending (unwritten) state of the row. */
  hasPendingShared(table: ModelTable, id: string): boolean {
    return this.shared.get(table)?.has(id) ?? false;
  }

  /**
   * Writes rows at once if the database holds none of their ids, in statements of
   * `rowsPerStatement` rows; a statement that meets a held id writes nothing. Returns the rows
   * not written. For rows with nothing pending in this transaction (`hasPendingShared`), so later
   * reads see them in the database.
   */
  async insertIfAbsent(table: ModelTable, states: readonly SharedRowState[]): Promise<SharedRowState[]> {
    const notWritten: SharedRowState[] = [];
    for (const state of states) this.observe(newestClockOf(state));
    for (let start = 0; start < states.length; start += table.rowsPerStatement) {
      const chunk = states.slice(start, start + table.rowsPerStatement);
      const out: StoredValue[] = [];
      for (const state of chunk) table.sharedParams(state, out);
      // Inserting is cheaper than first reading which ids are held; the savepoint undoes the
      // rare statement that finds some held (it inserted only the others).
      await runSql(this.db, 'SAVEPOINT insert_if_absent');
      const { numAffectedRows } = await this.db.executeQuery(CompiledQuery.raw(table.insertIfAbsentSql(chunk.length), out));
      if (Number(numAffectedRows) !== chunk.length) {
        await runSql(this.db, 'ROLLBACK TO insert_if_absent');
        notWritten.push(...chunk);
      }
      await runSql(this.db, 'RELEASE insert_if_absent');
    }
    return notWritten;
  }

  putShared(table: ModelTable, state: SharedRowState): void {
    this.observe(newestClockOf(state));
    this.put(this.shared, table, state);
  }

  /**
   * `putShared` for a local write, whose clock is the newest of the row: the write fails at flush
   * if the table keeps a stored row instead (row-level LWW tables keep a newer stored row).
   */
  putLocalShared(table: ModelTable, state: SharedRowState): void {
    this.putShared(table, state);
    this.localStates.add(state);
  }

  putOwned(table: ModelTable, state: OwnedRowState): void {
    this.observe(state.hlc);
    this.ownersWritten.add(state.owner);
    this.put(this.owned, table, state);
  }

  /**
   * Appends a received run, whole and as signed (decoded, validated and verified by the caller:
   * `id` is its run id); its first seq must extend the origin's prefix. `newestHlc` is the
   * newest clock of its entries.
   */
  appendChunk(chunk: Chunk, id: Uint8Array, newestHlc: string): void {
    this.extendPrefix(chunk.origin, chunk.firstSeq, chunk.lastSeq);
    this.heads.set(chunk.origin, id);
    this.observe(newestHlc);
    this.chunks.push(chunk);
  }

  /** Appends an entry of this device's own (it goes out in a run this device signs at `flush`). */
  appendLog(entry: LogEntry): void {
    this.extendPrefix(entry.origin, entry.seq, entry.seq);
    this.observe(entry.hlc);
    this.log.push(entry);
  }

  /** The id of a stored or received run (as its author signed it). */
  runIdOf(chunk: Chunk): Uint8Array {
    return runId(this.signer.signatures, this.signer.library, chunk, chunk.prev);
  }

  /** The id of the run `origin` ends at, where known. */
  headOf(origin: string): Uint8Array | undefined {
    return this.heads.get(origin);
  }

  private extendPrefix(origin: string, firstSeq: number, lastSeq: number): void {
    if (firstSeq !== this.seqOf(origin) + 1) throw new InternalError(`internal: log entry ${origin}#${firstSeq} would leave a gap`);
    admit(this.vector, origin, this.self, 'origins');
    this.vector.set(origin, lastSeq);
    this.changedOrigins.add(origin);
    this.advanced = true;
    this.pendingCount += lastSeq - firstSeq + 1;
  }

  /**
   * Holds `origin` through `through` without its entries: a snapshot covered them. The log
   * keeps none of them (they count as pruned here), so the next entry appended is `through + 1`.
   * `proven`: the verified proof of the run ending there, so the next run must follow it, and
   * this device can prove the position in turn; null where no proof verified (a pre-2.0 origin's).
   */
  adoptPrunedPrefix(origin: string, through: number, proven: ProvenHead | null): void {
    if (through <= this.seqOf(origin)) return;
    admit(this.vector, origin, this.self, 'origins');
    this.vector.set(origin, through);
    if (proven) this.heads.set(origin, proven.id);
    else this.heads.delete(origin);
    this.prunedPrefixes.set(origin, { through, proven });
    this.advanced = true;
  }

  /** Pending rows passed the bound: flush, so a long transaction stays small in memory. */
  get full(): boolean {
    return this.pendingCount >= FLUSH_THRESHOLD;
  }

  /** Writes everything pending, including counters. The caller commits the transaction. */
  async flush(): Promise<void> {
    this.noteUnsignedOwnRows();
    for (const [table, rows] of this.shared) await this.writeShared(table, [...rows.values()]);
    for (const [table, rows] of this.owned) await this.writeRows(table, [...rows.values()], (s, out) => table.ownedParams(s, out));
    this.shared.clear();
    this.owned.clear();
    this.localStates.clear();
    await appendChunks(this.db, [...this.chunks, ...this.ownRuns()]);
    this.log = [];
    this.chunks = [];
    this.pendingCount = 0;
    for (const [origin, { through, proven }] of this.prunedPrefixes) await holdPrunedPrefix(this.db, origin, through, proven);
    this.prunedPrefixes.clear();
    await writeVector(this.db, new Map([...this.changedOrigins].map((o) => [o, { seq: this.seqOf(o), head: this.heads.get(o) ?? null }])));
    this.changedOrigins.clear();
    if (this.writerChanged) {
      await putMeta(this.db, WRITER_META_KEY, writerMetaValue(this.writer));
      this.writerChanged = false;
    }
    if (this.changedOwners.size > 0) {
      await this.db
        .insertInto('sync_owner_versions')
        .values([...this.changedOwners].map((owner) => ({ owner, version: this.versionOf(owner), author: this.ownerAuthors.get(owner) ?? null })))
        .onConflict((oc) => oc.column('owner').doUpdateSet((eb) => ({ version: eb.ref('excluded.version'), author: eb.ref('excluded.author') })))
        .execute();
      this.changedOwners.clear();
    }
  }

  /**
   * This device's pending entries as runs, each following the origin's last run (a prefix whose
   * last run is not known, adopted or held from before 2.0, is followed from `GENESIS`:
   * receivers take that one link on the signature alone). Stored unsigned, and signed once
   * committed (`ownRunsWritten`, `own-run-signatures.ts`); their ids are fixed here.
   */
  private ownRuns(): StoredRun[] {
    const { library, signatures } = this.signer;
    return encodeChunks(this.log).map((body) => {
      const run = { ...body, prev: this.heads.get(body.origin) ?? GENESIS, author: signatures.peer };
      const id = runId(signatures, library, run, run.prev);
      this.heads.set(run.origin, id);
      this.ownRunsWritten.push({ origin: run.origin, lastSeq: run.lastSeq, id });
      return { ...run, sig: null };
    });
  }

  /** Signs a stored run of this device's not signed yet (for the log's readers in this transaction). */
  get signStored(): SignStoredRun {
    return this.signer.signStored;
  }

  /** This device's pending owned rows are written unsigned, and signed before they are served (`sign-own-rows.ts`). */
  private noteUnsignedOwnRows(): void {
    for (const rows of this.owned.values()) {
      for (const state of rows.values()) {
        if (state.owner === this.self && state.cert === null && (this.unsignedOwnFrom === null || state.version < this.unsignedOwnFrom)) this.unsignedOwnFrom = state.version;
      }
    }
  }

  private put<S extends { id: string }>(pending: Pending<S>, table: ModelTable, state: S): void {
    let rows = pending.get(table);
    if (!rows) pending.set(table, (rows = new Map()));
    rows.set(state.id, state);
    this.pendingCount += 1;
  }

  /**
   * Local rows go in statements of their own, which must write every row: a row-level LWW table
   * keeps a stored row with a newer clock (see `ModelTable.upsertSql`), and a local write it
   * kept would resolve and lose. That cannot happen while the clock covers every stored clock;
   * if it does, the transaction fails instead. A remote row the table keeps is no loss (a custom
   * apply may return a state no newer than the stored one).
   */
  private async writeShared(table: ModelTable, states: SharedRowState[]): Promise<void> {
    const params = (s: SharedRowState, out: StoredValue[]) => table.sharedParams(s, out);
    if (this.localStates.size === 0) return this.writeRows(table, states, params);
    await this.writeRows(table, states.filter((s) => !this.localStates.has(s)), params);
    await this.writeRows(table, states.filter((s) => this.localStates.has(s)), params, true);
  }

  /** Writes rows; with `mustWriteAll`, a row the table keeps instead fails the transaction. */
  private async writeRows<S>(
    table: ModelTable,
    states: readonly S[],
    params: (state: S, out: StoredValue[]) => void,
    mustWriteAll = false,
  ): Promise<void> {
    for (let start = 0; start < states.length; start += table.rowsPerStatement) {
      const chunk = states.slice(start, start + table.rowsPerStatement);
      const out: StoredValue[] = [];
      for (const state of chunk) params(state, out);
      const { numAffectedRows } = await this.db.executeQuery(CompiledQuery.raw(table.upsertSql(chunk.length), out));
      if (mustWriteAll && Number(numAffectedRows) !== chunk.length) {
        throw new InternalError(
          `internal: ${chunk.length - Number(numAffectedRows)} local ${table.model.name} write(s) lost to a stored row ` +
            `with a newer clock (HLC invariant broken); the transaction is rolled back`,
        );
      }
    }
  }
}

/**
 * Refuses a new origin (or owner) once `held` has MAX_VECTOR_ORIGINS of them, counting this
 * device's own as held from the start so that its first write always has room. Every vector this
 * library sends holds all of them, and a partner refuses a vector with more entries as bad input:
 * without this bound a member pushing changes of invented origins (or a snapshot or coverage
 * naming them) would make every later message of this device refused, by every partner.
 */
function admit(held: ReadonlyMap<string, number>, key: string, self: string, what: 'origins' | 'owners'): void {
  if (held.has(key)) return;
  const taken = held.size + (key === self || held.has(self) ? 0 : 1);
  if (taken >= MAX_VECTOR_ORIGINS) {
    throw new ValidationError(`a library holds at most ${MAX_VECTOR_ORIGINS} ${what}, this device included: ${key} would be one more`);
  }
}
