import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { EventEmitter } from 'eventemitter3';
import type { Kysely } from 'kysely';
import { DeviceForkedError, InternalError, InviteError, NotFoundError, ProtocolError, type RemovalInfo, StoppedError, ValidationError } from '../errors.js';
import { encodeHlc, HLC_TIME_LENGTH, type HlcClock } from '../hlc/index.js';
import type { ModelRegistry } from '../models/registry.js';
import type { Row } from '../models/types.js';
import { checkRecordId, rowFromStored } from '../models/values.js';
import {
  chunksAfter,
  countEntries,
  entriesAfter,
  entryAt,
  pruneAcknowledged,
  readAcks,
  readProofs,
  readVector,
  recordAck,
  runCovering,
  storeRunSignatures,
} from '../peer-log/log-store.js';
import type { Chunk, ChunksAfterResult, HeadComparison } from '../peer-log/chunk.js';
import type { EntriesAfterResult, LogEntry, ReadLimits, VersionVector } from '../peer-log/types.js';
import type { ModelTable, SqlRow } from '../storage/model-table.js';
import type { InternalTables } from '../storage/schema.js';
import { EventLoopTurns } from '../util/event-loop.js';
import type { RecordIds } from '../util/ids.js';
import type { Runtime } from '../runtime/runtime.js';
import type { Signatures } from '../runtime/signatures.js';
import { runId, type RunProof } from '../peer-log/signed-runs.js';
import { OriginAuthors } from './origin-authors.js';
import { equalBytes } from '../util/bytes.js';
import { deviceIdForPeer, isKeyDerivedId } from '../membership/device-id.js';
import { OwnedRowVerifier } from '../models/signed-owned-rows.js';
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
  type SignedOwnedRows,
  validateOwnedRows,
  validateRemoteChunks,
  verifyRuns,
  applyForkEvidence,
  type ForkEvidenceResult,
  type ValidatedRun,
  type VerifiedRun,
} from './remote-apply.js';
import { type Fork, forkedOrigins, forkedRunsFor, forkSeq, provesFork, recordedFork, recordForks } from './forked-runs.js';
import type { RemoteCounts } from './counts.js';
import { signOwnRowsFrom } from './sign-own-rows.js';
import { OwnRunSignatures } from './own-run-signatures.js';
import { type SyncCounters, WriteBatch } from './write-batch.js';
import { KEPT_MODEL, MEMBERS_MODEL, REMOVALS_MODEL } from '../models/system.js';
import type { LibraryStatus } from './status.js';
import type { InviteInfo, LibraryEvents, LibraryTransaction, ListOptions, Member, MemberRow, SyncProgress } from './types.js';
import type { OriginFork } from './status.js';
import { insertInvite, MAX_PENDING_INVITES, markInviteUsed, type NewInvite, pendingInvites, readInvite, type RevokeOutcome, revokeInvite, type StoredInvite } from './invite-store.js';
import { LastSeenStore } from './last-seen-store.js';
import { type OwnedPage, readOwnedAfter } from './owned-reads.js';
import {
  applySnapshotRows,
  checkpointValue,
  headsOf,
  parseCheckpoint,
  proveVector,
  type VectorProof,
  readSnapshot,
  type SnapshotCheckpoint,
  type SnapshotPage,
  type SnapshotPosition,
  type SnapshotRow,
  validateSnapshotRows,
} from './snapshot.js';
import { RunStore, type SyncRun } from './run-store.js';
import { OWNED_CONFIRMED_META_KEY } from './open-library.js';
import { deleteMeta, putMeta, readMeta } from '../storage/meta.js';
import { mergeOwnRows, restampOwnRows } from './own-rows.js';
import { heldOwnedDigests } from './owned-digests.js';
import { readKept, recordKept } from './kept-changes.js';
import { appendedWriter, isWriterOf, type WriterCheck } from './writers.js';
import { CLOSED_ORIGINS_META_KEY, noLongerMemberError, type Removal, removalInfo, Removals } from './removals.js';

/** `sync_meta` key: this device is no longer a member (`RemovalInfo` as JSON), also when told by a refusal. */
const REMOVED_META_KEY = 'removed';
/** `sync_meta` key: the log position of this device's leave until a partner acknowledged it. */
const LEAVE_PENDING_META_KEY = 'leave_pending';
/** `sync_meta` key: the inviter a joined library bootstraps from (a `Member` as JSON), until its row arrives. */
const BOOTSTRAP_META_KEY = 'bootstrap_member';
/** `sync_meta` key: present while a joined library has not completed its first sync (its backfill). */
const BACKFILL_META_KEY = 'backfill_pending';

/** The settings a library joined through `bootstrap` starts with (`prepareLibrary`'s `create.meta`). */
export function joinedLibraryMeta(bootstrap: Member): Record<string, string> {
  return { [BOOTSTRAP_META_KEY]: JSON.stringify(bootstrap), [BACKFILL_META_KEY]: 'pending' };
}

export interface LibraryEngineOptions {
  readonly id: string;
  readonly name: string;
  readonly db: Kysely<InternalTables>;
  readonly deviceId: string;
  readonly clock: HlcClock;
  readonly registry: ModelRegistry;
  readonly tables: ReadonlyMap<string, ModelTable>;
  readonly counters: SyncCounters;
  /** Own device-owned version known to be held alike by partners (`prepareLibrary`). */
  readonly ownedConfirmed: number;
  /** Releases the database; called once by `close()`. */
  readonly release: () => Promise<void>;
  /** The node's timers and randomness (event-loop turns, writer ids). */
  readonly runtime: Runtime;
  /** The node's record ids, shared by its libraries. */
  readonly recordIds: RecordIds;
  /** Signs this device's runs and verifies those of others (`runtime/signatures.ts`). */
  readonly signatures: Signatures;
}

const DIGEST_PAGE = 1_000;
const SNAPSHOT_META_KEY = 'snapshot_checkpoint';

const MAX_LIST_LIMIT = 10_000;
/** Signatures of this device's runs are stored once this many are made (`storeRunSignatures`). */
const STORE_RUN_SIGNATURES_EVERY = 256;

/**
 * The engine of one library: it owns the library's SQLite database and everything stored in it
 * (rows, the peer log, counters, acks, removals, invites, runs, settings) and offers typed
 * operations on them; no query builder leaves it. All writes go through the model registry
 * inside one transaction per call; the HLC high-water mark and sync counters are persisted in
 * that same transaction.
 *
 * Internal: the user's API is the `Library` facade built on it; replication and backfill use it
 * through the narrow interfaces they declare (`ReplicationLibrary`, `BackfillTarget`).
 */
export class LibraryEngine {
  readonly id: string;
  readonly name: string;
  /** This device's id (the origin of its own changes, the owner of its own rows). */
  readonly deviceId: string;
  private readonly db: Kysely<InternalTables>;
  private readonly ctx: WriteContext;
  private readonly release: () => Promise<void>;
  private readonly events = new EventEmitter<LibraryEvents>();
  private readonly turns: EventLoopTurns;
  private readonly runtime: Runtime;
  private readonly signatures: Signatures;
  private counters: SyncCounters;
  /** The signing of this device's own rows that runs, if one does (`signOwnRows`). */
  private signingOwnRows: Promise<void> | undefined;
  /** Per origin, the proof of the run its log ended at when a snapshot last asked (`snapshotProofs`). */
  private readonly proofs = new Map<string, RunProof>();
  /** Per owner, the summaries of its rows at a version (`ownedDigests`), until a transaction writes its rows. */
  private readonly ownedDigestCache = new Map<string, { version: number; digests: Promise<ReadonlyMap<string, Uint8Array>> }>();
  private ownedConfirmedVersion: number;
  /** The clock's time part when this run opened the library (see `checkConcurrentCopy`). */
  private readonly openedAt: string;
  private forkedBy: DeviceForkedError | undefined;
  private readonly removalState = new Removals();
  /** Set once this device is no longer a member (removed, or it left). */
  private ownRemoval: RemovalInfo | null = null;
  private closed = false;
  /** Set once the database is let go, after the close stored the signatures made (`storeRunSignatures`). */
  private released = false;
  /** Set when closing begins, to the close itself: from then on no user operation starts (see `whileOpen`). */
  private closing: Promise<void> | undefined;
  /** The user's operations running now, and who waits for them to end. */
  private userOperations = 0;
  private idle: (() => void) | undefined;
  /** Signatures of this device's runs, which writes store unsigned (`own-run-signatures.ts`). */
  private readonly ownRunSignatures: OwnRunSignatures;
  /** The storing of signatures made, once the last one started has ended. */
  private storingRunSignatures: Promise<void> = Promise.resolve();
  /** Backfill and catch-up runs (sync history). */
  readonly runs: RunStore;
  /** When each partner device was last heard from. */
  readonly lastSeen: LastSeenStore;

  constructor(options: LibraryEngineOptions) {
    this.id = options.id;
    this.name = options.name;
    this.deviceId = options.deviceId;
    this.db = options.db;
    this.release = options.release;
    this.runtime = options.runtime;
    this.signatures = options.signatures;
    this.turns = new EventLoopTurns(options.runtime.scheduler);
    this.counters = options.counters;
    this.ownedConfirmedVersion = options.ownedConfirmed;
    const macrotask = (fn: () => void) => options.runtime.scheduler.macrotask(fn);
    this.ownRunSignatures = new OwnRunSignatures(this.signatures, this.id, () => void this.storeRunSignatures(), STORE_RUN_SIGNATURES_EVERY, macrotask);
    this.runs = new RunStore(options.db);
    this.lastSeen = new LastSeenStore(options.db);
    // What the clock would issue now (not issued: it would cost a tick): past everything this
    // directory ever stamped, and past the wall time of the open.
    const last = options.clock.last();
    const wall = options.clock.wallTime();
    this.openedAt = encodeHlc(wall > last.wallMs ? { ...last, wallMs: wall, counter: 0 } : last).slice(0, HLC_TIME_LENGTH);
    this.ctx = {
      libraryId: options.id,
      deviceId: options.deviceId,
      clock: options.clock,
      registry: options.registry,
      tables: options.tables,
      recordIds: options.recordIds,
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

  /**
   * Runs `fn` in one SQLite transaction. Writes made through `tx` commit together or not at
   * all. Use `tx`, not the library, inside `fn`: the library's own methods wait for this
   * transaction to finish and would deadlock.
   */
  async transaction<T>(fn: (tx: LibraryTransaction) => Promise<T>): Promise<T> {
    this.assertMember();
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

  /**
   * The origin this device's shared changes go to now (its writer: the device id, or a writer id
   * derived from it after a restart that wrote before meeting a partner; docs/architecture.md).
   */
  writer(): string {
    return this.counters.writer.id;
  }

  /** The writer no partner may move (`appendedWriter`): none while the current one is retired. */
  appendedWriter(): string | undefined {
    return appendedWriter(this.counters.writer);
  }

  /**
   * Checks this device's writers against what a partner's hello says it holds of them: confirms
   * the current writer, or retires it if the partner holds more of it (a restored or copied data
   * directory, or a claim: partners that believe they hold positions of it would drop this
   * device's next writes there, so it writes on to a fresh writer). What the partner holds of it
   * beyond is signed by this device's key, so pulling it shows what it is (`applyRemoteEntries`):
   * a tail this device lost, taken like any, or another branch, a fork, which converges by its
   * evidence; neither refuses the session. Serialised with local writes.
   */
  async checkOwnWriters(partner: VersionVector): Promise<WriterCheck> {
    this.assertOpen();
    return this.write(async (batch) => {
      const writer = batch.currentWriter;
      if (writer.retired) return 'unchanged';
      if ((partner[writer.id] ?? 0) > batch.seqOf(writer.id)) {
        batch.setWriter({ ...writer, retired: true });
        return 'retired';
      }
      if (writer.confirmed) return 'unchanged';
      batch.setWriter({ ...writer, confirmed: true });
      return 'confirmed';
    });
  }

  /**
   * A device's writers follow one another: it appends to one writer at a time, and only to a
   * fresh one after the previous one. Entries of another writer of this device, stamped after
   * this run opened the library, therefore come from another copy of this data directory
   * running at the same time (a cloned machine; a restored backup's predecessor stopped before
   * the restore, so its entries are older). Of the two copies, the one whose current writer
   * began later (or that has not written yet) gives way: it refuses changes from now on
   * (`DeviceForkedError`, and a `forked` event that stops its replication). The other applies
   * the changes like any.
   */
  private async checkConcurrentCopy(entries: readonly LogEntry[]): Promise<void> {
    if (this.forkedBy) throw this.forkedBy;
    const writer = this.counters.writer.id;
    const other = entries.find(
      (e) => e.origin !== writer && isWriterOf(e.origin, this.deviceId) && e.hlc.slice(0, HLC_TIME_LENGTH) > this.openedAt,
    );
    if (!other) return;
    const began = async (origin: string) =>
      entries.find((e) => e.origin === origin && e.seq === 1)?.hlc ?? (await entryAt(this.db, origin, 1))?.hlc;
    // A current writer whose first entry was pruned is old: it began before any other.
    const mine = (this.counters.vector.get(writer) ?? 0) === 0 ? undefined : ((await began(writer)) ?? '');
    const theirs = await began(other.origin);
    if (mine !== undefined && (theirs === undefined || theirs > mine)) return;
    this.forkedBy = new DeviceForkedError(
      `another copy of this data directory runs as device ${this.deviceId} at the same time (it writes as ${other.origin}): ` +
        `this copy stops syncing library ${this.id}. Only one copy can be device ${this.deviceId}: stop this one, ` +
        `and give a machine that must stay a device of its own a fresh data directory (joined by invite)`,
    );
    this.events.emit('forked', this.forkedBy);
    throw this.forkedBy;
  }

  /** The HLC high-water mark of this device's clock, encoded. */
  clockHighWater(): string {
    return encodeHlc(this.ctx.clock.last());
  }

  async entriesAfter(vector: VersionVector, limits: ReadLimits): Promise<EntriesAfterResult> {
    this.assertOpen();
    return entriesAfter(this.db, this.ownRunSignatures.signStored, vector, limits);
  }

  /** `entriesAfter` in the log's stored form (what the wire carries), not decoded. */
  async chunksAfter(vector: VersionVector, limits: ReadLimits): Promise<ChunksAfterResult> {
    this.assertOpen();
    return chunksAfter(this.db, this.ownRunSignatures.signStored, vector, limits);
  }

  /**
   * Applies signed runs as the wire carries them, in one transaction: decoded (a malformed run
   * is a `ProtocolError`), validated (`ValidationError`) and drift-checked (`ClockDriftError`),
   * then verified against their authors' member rows (`ProtocolError`), before anything is
   * touched. Runs are stored as received. Forks found are recorded (`forks()`, `origin-forked`).
   */
  async applyRemoteChunks(chunks: readonly Chunk[], counts?: RemoteCounts): Promise<ApplyResult> {
    this.assertOpen();
    const { runs, newest } = validateRemoteChunks(this.ctx, chunks);
    if (newest) this.ctx.clock.checkDrift(newest);
    await this.checkConcurrentCopy(runs.flatMap((run) => run.entries));
    const { verified, withheld } = await this.verify(runs);
    // Forks are recorded in the transaction that applies their runs: a crash keeps both or neither.
    const { result, recorded } = await this.write(async (batch) => {
      const applied = await applyRemoteEntries(this.ctx, batch, verified, counts, withheld);
      return { result: applied, recorded: await recordForks(batch.db, applied.forks, this.runtime.wallClock()) };
    });
    this.reportForks(recorded, result.forkedRuns);
    return result;
  }

  /** `verifyRuns` against the member rows held (read only if some run is of a pre-2.0 origin). */
  private async verify(runs: readonly ValidatedRun[]): Promise<{ verified: VerifiedRun[]; withheld: number }> {
    // Key-derived origins prove their authors alone: the member list is read only for others.
    const needsMembers = runs.some((run) => !isKeyDerivedId(run.chunk.origin));
    const members = new Map(needsMembers ? (await this.memberRows()).map((m) => [m.device, m.peer]) : []);
    return verifyRuns(this.signatures, this.id, runs, members);
  }

  /**
   * Applies fork evidence a partner relays (docs/protocol.md, "Fork evidence"): signed runs of
   * `origin` it holds from the fork on. Where the origin is not known forked here, `evidence`
   * must prove the fork (two runs of its author for one place: `provesFork`), or the message is
   * a `ProtocolError`; evidence whose author is not known here yet is left for a later session
   * (`withheld`). Runs not held here yet are applied and kept (`forked-runs.ts`), and relayed on
   * (`forked-runs` event; a new fork is `origin-forked`).
   */
  async applyForkEvidence(origin: string, evidence: readonly [Chunk, Chunk] | null, chunks: readonly Chunk[], counts?: RemoteCounts): Promise<ForkEvidenceResult & { withheld: number }> {
    this.assertOpen();
    const all = [...(evidence ?? []), ...chunks];
    if (all.some((chunk) => chunk.origin !== origin)) throw new ProtocolError(`fork evidence of ${origin} carries runs of another origin`);
    const { runs, newest } = validateRemoteChunks(this.ctx, all);
    if (newest) this.ctx.clock.checkDrift(newest);
    const { verified, withheld } = await this.verify(runs);
    const [a, b] = evidence ? runs.slice(0, 2).map((run) => verified.find((v) => v.chunk === run.chunk)) : [];
    if (a && b && !provesFork(a, b)) throw new ProtocolError(`fork evidence of ${origin} shows no fork: its two runs are of one history`);
    const fork = a && b ? { origin, seq: forkSeq(a.chunk, b.chunk), held: a.chunk, other: b.chunk } : undefined;
    const result = await this.write((batch) => applyForkEvidence(this.ctx, batch, origin, verified, fork, this.runtime.wallClock(), counts));
    this.reportForks(result.recorded, [...result.taken, ...result.relay]);
    return { ...result, withheld };
  }

  /**
   * Once committed: reports forks new here (`origin-forked`, which has every session relay their
   * evidence in full) and has the sessions relay `runs` of forked origins (`forked-runs`).
   */
  private reportForks(recorded: readonly OriginFork[], runs: readonly Chunk[]): void {
    for (const fork of recorded) this.events.emit('origin-forked', fork);
    for (const origin of new Set(runs.map((run) => run.origin))) {
      this.events.emit('forked-runs', { origin, runs: runs.filter((run) => run.origin === origin) });
    }
  }

  /** The two runs that prove `origin`'s fork, and the position the fork was found at; undefined if it did not fork. */
  async forkEvidence(origin: string): Promise<Fork | undefined> {
    this.assertOpen();
    return recordedFork(this.db, origin);
  }

  /** Every run of a forked origin held here from `seq` (its fork) on, or from `after` on if less, a few at a time. */
  forkedRuns(origin: string, seq: number, after: number): AsyncGenerator<Chunk[]> {
    this.assertOpen();
    return forkedRunsFor(this.db, this.ownRunSignatures.signStored, origin, seq, after);
  }

  /** Per origin, the position held and the id of the run ending there, where known (`heads` message). */
  heads(): [origin: string, seq: number, id: Uint8Array][] {
    const heads: [string, number, Uint8Array][] = [];
    for (const [origin, id] of this.counters.heads) heads.push([origin, this.counters.vector.get(origin) ?? 0, id]);
    return heads;
  }

  /**
   * A partner's head of `origin` (the run ending at `seq` has id `id` there) against this
   * device's log (`HeadComparison`). A contradicting run, sent to the partner, shows it a fork it
   * cannot see by positions alone (two members that hold one position each of an equivocating
   * device's log).
   */
  async compareHead(origin: string, seq: number, id: Uint8Array): Promise<HeadComparison> {
    this.assertOpen();
    const held = this.counters.vector.get(origin) ?? 0;
    if (held < seq) return { kind: 'beyond' };
    const own = held === seq ? this.counters.heads.get(origin) : undefined;
    if (own !== undefined && equalBytes(own, id)) return { kind: 'same' };
    const run = await runCovering(this.db, this.ownRunSignatures.signStored, origin, seq);
    if (!run) return { kind: 'unheld' };
    return run.lastSeq === seq && equalBytes(runId(this.signatures, this.id, run, run.prev), id) ? { kind: 'same' } : { kind: 'contradicted', run };
  }

  /** The origins found forked here. */
  async forkedOrigins(): Promise<string[]> {
    this.assertOpen();
    return forkedOrigins(this.db);
  }

  /** The forks found of any origin (the first of each), oldest first. */
  async forks(): Promise<OriginFork[]> {
    this.assertOpen();
    const rows = await this.db.selectFrom('sync_forks').select(['origin', 'device', 'seq', 'detected_at']).orderBy('detected_at').execute();
    return rows.map((r) => ({ origin: r.origin, device: r.device, seq: r.seq, detectedAt: r.detected_at }));
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
    // The first page proved the vector (`proveSnapshotVector`, by the catch-up); the checkpoint holds the proofs that verified.
    const proven = checkpoint.next === null ? headsOf(this.signatures, this.id, checkpoint.proofs) : undefined;
    await this.write(async (batch) => {
      await applySnapshotRows(this.ctx, batch, rows, counts ?? { added: 0, updated: 0, deleted: 0 });
      if (proven) {
        // A closed origin is held no further than accepted, whatever the partner took.
        for (const [origin, through] of Object.entries(this.removalState.cap(checkpoint.vector))) {
          // A snapshot never moves the counter this device appends to: only its own writes do
          // (a position it adopted would be one it then skips or reuses). A retired writer's
          // tail is an origin like any other, also while it is still the current writer.
          if (origin === appendedWriter(batch.currentWriter)) continue;
          const head = proven.get(origin);
          batch.adoptPrunedPrefix(origin, through, head?.proof.lastSeq === through ? head : null);
        }
        await deleteMeta(batch.db, SNAPSHOT_META_KEY);
      } else {
        await putMeta(batch.db, SNAPSHOT_META_KEY, checkpointValue(checkpoint));
      }
    });
  }

  /**
   * Checks the proofs of a snapshot's vector for the positions it would adopt here
   * (`proveVector`): a `ProtocolError` for a wrong proof, else the heads proven and the origins
   * claimed without the proof they need.
   */
  async proveSnapshotVector(vector: VersionVector, proofs: readonly RunProof[]): Promise<VectorProof> {
    this.assertOpen();
    const needsMembers = proofs.some((proof) => !isKeyDerivedId(proof.origin));
    const authors = new OriginAuthors(new Map(needsMembers ? (await this.memberRows()).map((m) => [m.device, m.peer]) : []));
    // The counter this device appends to is never adopted (`applySnapshot`): nothing to prove of it.
    const writer = this.appendedWriter();
    const adopted = Object.fromEntries(Object.entries(vector).filter(([origin]) => origin !== writer));
    return proveVector(this.signatures, this.id, adopted, proofs, this.versionVector(), new Set(this.counters.heads.keys()), authors);
  }

  /**
   * Proofs of the positions of `vector` held beyond `known` (what the partner holds), for a
   * snapshot's first page. Each is kept per origin until the origin moves on: a proof hashes its
   * run's entries (up to 512 KiB), and first pages can be asked for again and again.
   */
  async snapshotProofs(vector: VersionVector, known: VersionVector): Promise<RunProof[]> {
    this.assertOpen();
    const wanted = Object.entries(vector).filter(([origin, seq]) => seq > (known[origin] ?? 0));
    const missing = wanted.filter(([origin, seq]) => this.proofs.get(origin)?.lastSeq !== seq);
    for (const proof of await readProofs(this.db, this.signatures, this.ownRunSignatures.signStored, Object.fromEntries(missing))) this.proofs.set(proof.origin, proof);
    return wanted.flatMap(([origin, seq]) => {
      const proof = this.proofs.get(origin);
      return proof?.lastSeq === seq ? [proof] : [];
    });
  }

  /** Where an unfinished snapshot read stands, if one is in progress. */
  async snapshotCheckpoint(): Promise<SnapshotCheckpoint | undefined> {
    this.assertOpen();
    const value = await readMeta(this.db, SNAPSHOT_META_KEY);
    return value === undefined ? undefined : parseCheckpoint(value);
  }

  /** Past and running backfill and catch-up runs, oldest first (at most the last 1 000). */
  async syncHistory(): Promise<SyncRun[]> {
    this.assertOpen();
    return this.runs.read();
  }

  /**
   * Applies replicated device-owned rows (state-based sync), in one transaction. With
   * `coverage`, the rows are all of the owner's rows in that version range, and the owner's
   * cursor moves forward when it is contiguous with what is held. Each row must be signed by its
   * owner (`page.author`, checked against the owner: `checkOwnedRows`); rows of an owner whose
   * key is not known here yet (a pre-2.0 device whose member row has not arrived) are withheld,
   * and the cursor stays.
   */
  async applyRemoteOwned(page: SignedOwnedRows, coverage?: OwnedCoverage, counts?: RemoteCounts): Promise<OwnedApplyResult> {
    this.assertOpen();
    const rows = await this.checkOwnedRows(page);
    if (rows === 'withheld') return { applied: 0, stale: 0, advanced: false, withheld: page.rows.length };
    return this.write(async (batch) => {
      if (rows.length > 0) batch.setOwnerAuthor(rows[0]!.owner, page.author!);
      return applyRemoteOwned(this.ctx, batch, rows, coverage, counts);
    });
  }

  /**
   * Merges a page of this device's own device-owned rows as a partner holds them (after
   * `ownedConfirmed()`; see `own-rows.ts`); returns whether they differ from the rows held.
   */
  async mergeOwnRows(page: SignedOwnedRows, coverage: OwnedCoverage, counts?: RemoteCounts): Promise<boolean> {
    this.assertOpen();
    const rows = await this.checkOwnedRows(page);
    if (rows === 'withheld') throw new InternalError('internal: this device always knows its own key');
    return this.write((batch) => mergeOwnRows(this.ctx, batch, rows, coverage, counts));
  }

  /**
   * Validates received owned rows (shapes, clock drift) and checks that each is its owner's:
   * all of one owner, `author` a key that may sign for it (the PeerId a key-derived id derives
   * from, else the one of the owner's member row, which may not be held yet: 'withheld'), and
   * each row's certificate proves it signed by that key. Anything else is a `ProtocolError` or
   * `ValidationError`, before anything is written.
   */
  private async checkOwnedRows(page: SignedOwnedRows): Promise<OwnedRowUpdate[] | 'withheld'> {
    const hlcs = validateOwnedRows(this.ctx, page.rows);
    for (const hlc of hlcs) this.ctx.clock.checkDrift(hlc);
    const rows = page.rows as OwnedRowUpdate[];
    if (rows.length === 0) return rows;
    const owner = rows[0]!.owner;
    if (rows.some((row) => row.owner !== owner)) throw new ValidationError('owned rows of one message must be of one owner');
    const { author } = page;
    if (author === null) throw new ProtocolError(`rows of ${owner} come without the key that signed them`);
    const may = await this.maySignFor(owner, author);
    if (may === 'unknown') return 'withheld';
    if (may === 'no') throw new ProtocolError(`rows of ${owner} are signed by ${author}, which is not its key`);
    const verifier = new OwnedRowVerifier(this.signatures, this.id, owner, author);
    for (const row of rows) {
      if (!(row.cert instanceof Uint8Array)) throw new ValidationError(`${row.model} ${row.id}: cert must be bytes`);
      verifier.verify(row, row.cert);
    }
    return rows;
  }

  /** Whether `author` (a PeerId) may sign the rows of `owner`: yes, no, or not known here yet. */
  private async maySignFor(owner: string, author: string): Promise<'yes' | 'no' | 'unknown'> {
    if (owner === this.deviceId) return author === this.signatures.peer ? 'yes' : 'no';
    if (isKeyDerivedId(owner)) return deviceIdForPeer(author) === owner ? 'yes' : 'no';
    const held = this.counters.ownerAuthors.get(owner) ?? (await this.memberRows()).find((m) => m.device === owner)?.peer;
    if (held === undefined) return 'unknown';
    return held === author ? 'yes' : 'no';
  }

  /**
   * Ends a merge of the partner's own rows through `through`: this device's version moves past
   * it and, if they `diverged`, the own rows after the confirmed version get new versions
   * beyond it. Returns how many rows were given a new version.
   */
  async settleOwnRows(through: number, diverged: boolean): Promise<number> {
    this.assertOpen();
    return this.write((batch) => restampOwnRows(this.ctx, batch, this.ownedConfirmedVersion, through, diverged));
  }

  /** Own device-owned version known to be held alike by partners. */
  ownedConfirmed(): number {
    return this.ownedConfirmedVersion;
  }

  /** Records that a partner holds this device's own rows alike through `version` (only forward). */
  async confirmOwned(version: number): Promise<void> {
    this.assertOpen();
    if (version <= this.ownedConfirmedVersion) return;
    await putMeta(this.db, OWNED_CONFIRMED_META_KEY, String(version));
    this.ownedConfirmedVersion = version;
  }

  /** Per owner, the version through which every device-owned row is held. */
  ownedVector(): VersionVector {
    return Object.fromEntries(this.counters.ownerVersions);
  }

  /** Device-owned rows of `owner` after `after`, as far as they are held contiguously. */
  async ownedAfter(owner: string, after: number, limits: ReadLimits): Promise<OwnedPage> {
    this.assertOpen();
    if (owner === this.deviceId) await this.signOwnRows();
    let through = this.counters.ownerVersions.get(owner) ?? 0;
    // A write since the signing left rows unsigned: a page never claims them (it would carry none).
    const unsigned = owner === this.deviceId ? this.counters.unsignedOwnFrom : null;
    if (unsigned !== null) through = Math.min(through, unsigned - 1);
    const tables = this.ownedTables();
    const author = owner === this.deviceId ? this.signatures.peer : (this.counters.ownerAuthors.get(owner) ?? null);
    return readOwnedAfter(this.db, tables, owner, after, through, author, limits);
  }

  /**
   * Per device-owned model, the summary of `owner`'s rows this device serves through `version`
   * (`owned-digests.ts`), or undefined unless it holds `owner` through exactly `version`.
   */
  async ownedDigests(owner: string, version: number): Promise<ReadonlyMap<string, Uint8Array> | undefined> {
    this.assertOpen();
    if ((this.counters.ownerVersions.get(owner) ?? 0) !== version) return undefined;
    if (owner === this.deviceId) await this.signOwnRows();
    const cached = this.ownedDigestCache.get(owner);
    if (cached?.version === version) return cached.digests;
    const digests = heldOwnedDigests(this.db, this.ownedTables(), owner, version, () => this.turns.turn());
    this.ownedDigestCache.set(owner, { version, digests });
    // A failed read is not remembered.
    digests.catch(() => {
      if (this.ownedDigestCache.get(owner)?.digests === digests) this.ownedDigestCache.delete(owner);
    });
    return digests;
  }

  /**
   * The member rows of devices that are members, and the PeerIds of removed devices
   * (`Removals.peersOf`): every row naming one of those PeerIds is left out.
   */
  async currentMembers(): Promise<{ rows: MemberRow[]; removedPeers: Map<string, Removal> }> {
    const all = await this.memberRows();
    const removedPeers = this.removalState.peersOf(all);
    return { rows: all.filter((m) => !removedPeers.has(m.peer)), removedPeers };
  }

  /** The library's member rows, as the synced member list records them (removed devices included). */
  async memberRows(): Promise<MemberRow[]> {
    const members: MemberRow[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await this.list(MEMBERS_MODEL.name, { limit: MAX_LIST_LIMIT, after });
      for (const row of page) {
        const name = (row.name as string | null) ?? null;
        members.push({ device: row.id, peer: row.peer as string, addrs: row.addrs as string[], name });
      }
      if (page.length < MAX_LIST_LIMIT) return members;
      after = page[page.length - 1]!.id;
    }
  }

  /** Writes a member row (the replication writes this device's own: its PeerId, addresses and name). */
  async writeMemberRow(row: MemberRow): Promise<void> {
    await this.system(async (writer) => {
      await writer.upsert(MEMBERS_MODEL.name, { id: row.device, peer: row.peer, addrs: row.addrs, name: row.name });
    });
  }

  /** Records an invite this device issues. */
  /**
   * Stores a new invite, unless the library holds MAX_PENDING_INVITES pending at its creation
   * time (`INVITE_LIMIT`): counted in the same transaction, so concurrent calls cannot pass it.
   */
  async issueInvite(invite: NewInvite): Promise<void> {
    await this.system(async (_, trx) => {
      if ((await pendingInvites(trx, invite.createdAt ?? 0)).length >= MAX_PENDING_INVITES) {
        throw new InviteError('INVITE_LIMIT', `library ${this.id} has ${MAX_PENDING_INVITES} pending invites: revoke some or let them expire first`);
      }
      await insertInvite(trx, invite);
    });
  }

  /** This device's invites not used, revoked or expired at `now`, newest first. */
  async pendingInvites(now: number): Promise<InviteInfo[]> {
    this.assertOpen();
    return pendingInvites(this.db, now);
  }

  /** Revokes invite `id` at `now` if it is unused and unrevoked; says what it found. */
  async revokeInvite(id: string, now: number): Promise<RevokeOutcome> {
    return this.system((_, trx) => revokeInvite(trx, id, now));
  }

  /**
   * Admits a device with invite `inviteId`, in one transaction: `vet` sees the invite as held
   * (or undefined) and throws if the join is refused; then the invite is marked used by
   * `member.peer` and the member row is written (it syncs to every member).
   */
  async admitMember(inviteId: string, vet: (invite: StoredInvite | undefined) => StoredInvite, member: MemberRow): Promise<void> {
    await this.system(async (writer, trx) => {
      const invite = vet(await readInvite(trx, inviteId));
      await markInviteUsed(trx, invite.id, member.peer);
      await writer.upsert(MEMBERS_MODEL.name, { id: member.device, peer: member.peer, addrs: member.addrs, name: member.name });
    });
  }

  /** The inviter a joined library bootstraps from, as stored when it joined. */
  async bootstrapMember(): Promise<Member | undefined> {
    this.assertOpen();
    const value = await readMeta(this.db, BOOTSTRAP_META_KEY);
    return value === undefined ? undefined : (JSON.parse(value) as Member);
  }

  /** Whether this library, joined by invite, has not completed its first sync yet. */
  async backfillPending(): Promise<boolean> {
    this.assertOpen();
    return (await readMeta(this.db, BACKFILL_META_KEY)) !== undefined;
  }

  /** Records that the first sync after joining completed. */
  async backfillDone(): Promise<void> {
    this.assertOpen();
    await deleteMeta(this.db, BACKFILL_META_KEY);
  }

  /**
   * Removes member device `deviceId` from the library (any member may remove any other: see
   * docs/operations.md). Synced data: from then on every member refuses the device and every
   * change it made after this removal. Resolves once the removal is committed here; removing a
   * device already removed writes nothing (its cutoff never moves).
   */
  async removeMember(deviceId: string): Promise<void> {
    this.assertMember();
    if (deviceId === this.deviceId) {
      throw new ValidationError('lib.removeMember() cannot remove this device itself: use lib.leave() to leave the library');
    }
    await this.system(async (writer, trx) => {
      if (this.removalState.of(deviceId)) return;
      if (typeof deviceId !== 'string' || !(await this.readRow(trx, MEMBERS_MODEL.name, deviceId).catch(() => undefined))) {
        throw new NotFoundError(`device ${JSON.stringify(deviceId)} is not a member of library ${this.id}`);
      }
      await writer.upsert(REMOVALS_MODEL.name, { id: deviceId, by: this.deviceId, kind: 'removed' });
    });
  }

  /**
   * Writes this device's own removal (`kind: 'left'`) and, in the same transaction, the log
   * position a partner must acknowledge before this device stops syncing (`leavePending`).
   */
  async writeLeave(): Promise<void> {
    this.assertMember();
    await this.write(async (batch) => {
      await new LocalWriter(this.ctx, batch, true).upsert(REMOVALS_MODEL.name, { id: this.deviceId, by: this.deviceId, kind: 'left' });
      const origin = batch.currentWriter.id;
      await putMeta(batch.db, LEAVE_PENDING_META_KEY, JSON.stringify({ origin, seq: batch.seqOf(origin) }));
    });
  }

  /** The position of this device's leave that no partner has acknowledged yet, if any. */
  async leavePending(): Promise<{ origin: string; seq: number } | undefined> {
    this.assertOpen();
    const value = await readMeta(this.db, LEAVE_PENDING_META_KEY);
    return value === undefined ? undefined : (JSON.parse(value) as { origin: string; seq: number });
  }

  /** A partner acknowledged this device's leave: nothing is pending any more. */
  async clearLeavePending(): Promise<void> {
    this.assertOpen();
    await deleteMeta(this.db, LEAVE_PENDING_META_KEY);
  }

  /** How this device stopped being a member, or null while it is one. */
  removal(): RemovalInfo | null {
    return this.ownRemoval;
  }

  /** Removed devices, with their cutoffs (`sync_removals`). */
  removals(): Removal[] {
    return this.removalState.all();
  }

  /** The removal of `device`, if it was removed. */
  removalOf(device: string): Removal | undefined {
    return this.removalState.of(device);
  }

  /** Caps a partner's advertised vector at what this device accepts of closed origins. */
  acceptable(vector: VersionVector): VersionVector {
    return this.removalState.cap(vector);
  }

  /**
   * `vector` without removed devices' writers: what a partner holding the removals must hold
   * (it refuses what of them was stamped after the cutoff, so it may never reach their tails).
   */
  withoutRemovedWriters(vector: VersionVector): VersionVector {
    return this.removalState.withoutRemoved(vector);
  }

  /** The vector to pull after (`vector`, by default the one held): closed origins are never asked for again. */
  pullAfter(vector: VersionVector = this.versionVector()): VersionVector {
    return this.removalState.pullAfter(vector);
  }

  /** Reads removals and closed origins as held (the replication layer calls it at start). */
  async loadRemovals(): Promise<void> {
    this.assertOpen();
    const closed = await readMeta(this.db, CLOSED_ORIGINS_META_KEY);
    const closedOrigins = closed === undefined ? {} : (JSON.parse(closed) as Record<string, number>);
    for (const [origin, through] of Object.entries(closedOrigins)) this.removalState.close(origin, through);
    const own = await this.readRemovals(this.db, this.removalState);
    this.removalState.setKept(await readKept(this.db, this.table(KEPT_MODEL.name)));
    if (own && !this.ownRemoval) this.ownRemoval = removalInfo(own);
    const told = await readMeta(this.db, REMOVED_META_KEY);
    if (!this.ownRemoval && told !== undefined) this.ownRemoval = JSON.parse(told) as RemovalInfo;
  }

  /**
   * Records that this device is no longer a member as a member's refusal said (`REMOVED`):
   * persisted, so it survives restarts. Emits `removed` once.
   */
  async markRemoved(info: RemovalInfo): Promise<void> {
    if (this.ownRemoval) return;
    this.assertOpen();
    await putMeta(this.db, REMOVED_META_KEY, JSON.stringify(info));
    this.setOwnRemoval(info);
  }

  /**
   * Reads the `sync_removal_kept` rows into `into`, and opens again the origins closed below what
   * a member kept (not those closed for a fork), so their kept changes are pulled.
   */
  private async takeKept(db: Kysely<InternalTables>, into: Removals): Promise<void> {
    into.setKept(await readKept(db, this.table(KEPT_MODEL.name)));
    const forked = new Set(await forkedOrigins(db));
    if (into.reopenKept((origin) => forked.has(origin))) await putMeta(db, CLOSED_ORIGINS_META_KEY, into.closedValue());
  }

  /** Reads the `sync_removals` rows into `into`; returns this device's own removal, if any. */
  private async readRemovals(db: Kysely<InternalTables>, into: Removals): Promise<Removal | undefined> {
    const table = this.table(REMOVALS_MODEL.name);
    const removals: Removal[] = [];
    let after: string | undefined;
    for (;;) {
      const params = after === undefined ? [DIGEST_PAGE] : [after, DIGEST_PAGE];
      const rows = await runSql<SqlRow>(db, table.liveRowsSql(after !== undefined), params);
      for (const row of rows) {
        const { id, values, hlc } = table.sharedFromRow(row);
        removals.push({ device: id, by: values.by as string, kind: values.kind as Removal['kind'], cutoff: hlc });
        after = id;
      }
      if (rows.length < DIGEST_PAGE) break;
    }
    into.set(removals);
    return into.of(this.deviceId);
  }

  private setOwnRemoval(info: RemovalInfo): void {
    if (this.ownRemoval) return;
    this.ownRemoval = info;
    this.events.emit('removed', info);
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

  /**
   * Closes the database once the user's operations in flight have ended: a read or write that
   * began before `stop()` completes (a multi-step read such as `digest` would otherwise meet a
   * destroyed driver halfway); one that begins after fails with `STOPPED`.
   */
  close(): Promise<void> {
    this.closing ??= this.closeWhenIdle();
    return this.closing;
  }

  private async closeWhenIdle(): Promise<void> {
    // Listeners stay until the operations in flight end: a write that commits meanwhile still
    // tells them about its change.
    if (this.userOperations > 0) await new Promise<void>((resolve) => (this.idle = resolve));
    this.events.removeAllListeners();
    this.closed = true;
    // What the thread pool still signs, then every signature made, before the file is let go.
    await this.ownRunSignatures.settled();
    await this.storeRunSignatures();
    this.released = true;
    await this.release();
  }

  /** Runs one operation of the user's API; `close` waits for it. Fails with `STOPPED` once closed. */
  async whileOpen<T>(operation: () => Promise<T>): Promise<T> {
    if (this.closing) throw this.closedError();
    this.userOperations += 1;
    try {
      return await operation();
    } finally {
      this.userOperations -= 1;
      if (this.userOperations === 0) this.idle?.();
    }
  }

  /**
   * A write of the engine itself: it may write system models (membership, removals) and its own
   * tables in the same transaction. Refused once this device is no longer a member.
   */
  private async system<T>(fn: (writer: LocalWriter, trx: Kysely<InternalTables>) => Promise<T>): Promise<T> {
    this.assertMember();
    return this.write(async (batch) => fn(new LocalWriter(this.ctx, batch, true), batch.db));
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
    let ownRemoval: Removal | undefined;
    const { value, batch } = await this.db.transaction().execute(async (trx) => {
      const batch = new WriteBatch(trx, this.counters, this.ctx.clock, this.deviceId, this.removalState, this.runtime.random, {
        library: this.id,
        signatures: this.signatures,
        signStored: this.ownRunSignatures.signUncommitted,
      });
      const value = await fn(batch);
      await batch.flush();
      // Into the batch's copy: the library adopts it with the counters once committed.
      const removalsIn = batch.events.some((e) => e.model === REMOVALS_MODEL.name);
      if (removalsIn) {
        ownRemoval = await this.readRemovals(trx, batch.removals);
        // What this device took of a device now known removed, after its cutoff: recorded with
        // the removal, so no crash comes between (`kept-changes.ts`).
        if (!batch.removals.of(this.deviceId)) {
          await recordKept(batch, new LocalWriter(this.ctx, batch, true), batch.removals.all(), this.deviceId, {
            kept: this.table(KEPT_MODEL.name),
            owned: this.ownedTables(),
          });
          await batch.flush();
        }
      }
      if (removalsIn || batch.events.some((e) => e.model === KEPT_MODEL.name)) await this.takeKept(trx, batch.removals);
      await putMeta(trx, 'hlc', batch.highWater());
      return { value, batch };
    });
    this.counters = batch.counters();
    this.ownRunSignatures.signCommitted(batch.ownRunsWritten);
    for (const owner of batch.ownersWritten) this.ownedDigestCache.delete(owner);
    // Removals and closed origins, like the counters, only once committed (a transaction that
    // rolled back must leave no device refused, no origin closed, no removal to skip rewriting).
    this.removalState.adopt(batch.removals);
    // Emitted once committed, like change events: this device's own removal arrived or was written.
    if (ownRemoval) this.setOwnRemoval(removalInfo(ownRemoval));
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

  /**
   * Stores the signatures of this device's runs made since the last store, after that one: in
   * the background, one statement per thousand. One that fails is lost only until its run is
   * next read, which signs it again.
   */
  private storeRunSignatures(): Promise<void> {
    this.storingRunSignatures = this.storingRunSignatures.then(async () => {
      const made = this.ownRunSignatures.take();
      if (made.length === 0 || this.released) return;
      await storeRunSignatures(this.db, made).catch(() => undefined);
    });
    return this.storingRunSignatures;
  }

  /**
   * Signs this device's rows written since the last signing (`sign-own-rows.ts`), before they are
   * read to be served: one signing at a time (a reader waits for the one running, which may fail),
   * a tree per transaction, with turns of the event loop between. The mark is cleared inside each
   * transaction: a write that committed before it began is signed by it, and one after it marks
   * its rows again.
   */
  private signOwnRows(): Promise<void> {
    if (!this.signingOwnRows && this.counters.unsignedOwnFrom === null) return Promise.resolve();
    this.signingOwnRows ??= this.signMarkedOwnRows().finally(() => (this.signingOwnRows = undefined));
    return this.signingOwnRows;
  }

  private async signMarkedOwnRows(): Promise<void> {
    while (this.counters.unsignedOwnFrom !== null) {
      await this.turns.turn();
      const taken: { from: number | null; next: number | null } = { from: null, next: null };
      try {
        await this.db.transaction().execute(async (trx) => {
          taken.from = this.counters.unsignedOwnFrom;
          if (taken.from === null) return;
          this.counters = { ...this.counters, unsignedOwnFrom: null };
          taken.next = await signOwnRowsFrom(trx, this.ownedTables(), this.deviceId, this.id, this.signatures, taken.from);
        });
      } catch (err) {
        // Rolled back: those rows are still unsigned.
        this.markUnsignedFrom(taken.from);
        throw err;
      }
      this.markUnsignedFrom(taken.next);
    }
  }

  private markUnsignedFrom(from: number | null): void {
    const later = this.counters.unsignedOwnFrom;
    if (from !== null) this.counters = { ...this.counters, unsignedOwnFrom: later === null ? from : Math.min(later, from) };
  }

  /** The tables of device-owned models. */
  private ownedTables(): ModelTable[] {
    return [...this.ctx.tables.values()].filter((t) => t.model.ownership === 'device');
  }

  private table(name: string): ModelTable {
    return this.ctx.tables.get(name)!;
  }

  /** Local writes of a device that is no longer a member could reach no one: refused. */
  private assertMember(): void {
    if (this.ownRemoval) throw noLongerMemberError(this.id, this.ownRemoval);
  }

  /** Every operation on a closed library fails with `STOPPED`. */
  assertOpen(): void {
    if (this.closed) throw this.closedError();
  }

  private closedError(): StoppedError {
    return new StoppedError(`library ${this.id} is closed`);
  }
}
