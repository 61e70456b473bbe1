import type { RemovalInfo } from '../errors.js';
import type { Row } from '../models/types.js';
import type { VersionVector } from '../peer-log/types.js';
import type { LibraryEngine } from './engine.js';
import type { Removal } from './removals.js';
import type { SyncRun } from './run-store.js';
import type { LibraryStatus } from './status.js';
import type {
  InviteInfo,
  InviteOptions,
  LibraryEvents,
  LibrarySync,
  LibraryTransaction,
  ListOptions,
  MemberInfo,
  SyncedOptions,
} from './types.js';

/** The engine behind each facade, for the node and for tests (`engineOf`); never exported by the package. */
const engines = new WeakMap<Library, LibraryEngine>();

/** The engine behind `library`. Internal: the package does not export it. */
export function engineOf(library: Library): LibraryEngine {
  return engines.get(library)!;
}

/**
 * One library: a set of application records kept in sync across the member devices, stored in
 * its own SQLite database. This is the user's API; it is built from the library's engine
 * (storage, writes, reads) and the node's replication of the library (invites, status, sync).
 */
export class Library {
  readonly id: string;
  readonly name: string;
  /** This device's id (the origin of its own changes, the owner of its own rows). */
  readonly deviceId: string;
  readonly #engine: LibraryEngine;
  readonly #sync: LibrarySync;

  constructor(engine: LibraryEngine, sync: LibrarySync) {
    this.id = engine.id;
    this.name = engine.name;
    this.deviceId = engine.deviceId;
    this.#engine = engine;
    this.#sync = sync;
    engines.set(this, engine);
  }

  on<E extends keyof LibraryEvents>(event: E, listener: (...args: LibraryEvents[E]) => void): this {
    this.#engine.on(event, listener);
    return this;
  }

  off<E extends keyof LibraryEvents>(event: E, listener: (...args: LibraryEvents[E]) => void): this {
    this.#engine.off(event, listener);
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
   *
   * @example
   * ```ts
   * await lib.transaction(async (tx) => {
   *   const note = await tx.upsert('note', { title: 'Groceries', body: null });
   *   await tx.upsert('tag', { label: 'home', color: 'green' });
   *   await tx.update('note', note.id, { body: 'milk, bread' });
   * });
   * ```
   */
  transaction<T>(fn: (tx: LibraryTransaction) => Promise<T>): Promise<T> {
    return this.#engine.whileOpen(() => this.#engine.transaction(fn));
  }

  /** The live row `id` of `model`, or undefined (deleted rows are undefined). */
  get(model: string, id: string): Promise<Row | undefined> {
    return this.#engine.whileOpen(() => this.#engine.get(model, id));
  }

  /** Live rows of `model` in id order, one keyset page at a time. */
  list(model: string, options: ListOptions = {}): Promise<Row[]> {
    return this.#engine.whileOpen(() => this.#engine.list(model, options));
  }

  /**
   * SHA-256 (hex) over every live row of every model, with its winning clocks and sync
   * metadata, in canonical order (models by name, rows by id). Two devices that hold the same
   * set of changes have equal digests. Reads page by page, so memory stays bounded.
   */
  digest(): Promise<string> {
    return this.#engine.whileOpen(() => this.#engine.digest());
  }

  /** The contiguous prefix of every origin's changes held here. */
  versionVector(): VersionVector {
    return this.#engine.versionVector();
  }

  /**
   * The origin this device's shared changes go to now (its writer: the device id, or a writer id
   * derived from it after a restart that wrote before meeting a partner; docs/architecture.md).
   */
  writer(): string {
    return this.#engine.writer();
  }

  /**
   * The library's members with their names and when this device last heard from each (names
   * and devices are synced data: every member learns of a new one; last-seen is this device's).
   * Removed devices are gone from it, and so is any row naming a removed device's PeerId.
   */
  async members(): Promise<MemberInfo[]> {
    const { rows } = await this.#engine.whileOpen(() => this.#engine.currentMembers());
    return rows.map((m) => {
      const self = m.device === this.deviceId;
      return { ...m, lastSeenAt: self ? null : this.#sync.lastSeenAt(m.device), self };
    });
  }

  /**
   * Creates a one-time invite another device can join this library with. Refused with
   * `INVITE_BACKFILLING` until this device completed its first sync after joining.
   */
  createInvite(options: InviteOptions = {}): Promise<string> {
    return this.#engine.whileOpen(() => this.#sync.createInvite(options));
  }

  /** This device's pending invites (not used, revoked or expired), newest first. */
  invites(): Promise<InviteInfo[]> {
    return this.#engine.whileOpen(() => this.#sync.invites());
  }

  /**
   * Revokes one of this device's invites, by its string or its id: a join with it is refused
   * with `INVITE_REVOKED`. Idempotent; an invite this device did not issue is `NOT_FOUND`.
   */
  revokeInvite(codeOrId: string): Promise<void> {
    return this.#engine.whileOpen(() => this.#sync.revokeInvite(codeOrId));
  }

  /**
   * Removes member device `deviceId` from the library (any member may remove any other: see
   * docs/operations.md). Synced data: from then on every member refuses the device and every
   * change it made after this removal. Resolves once the removal is committed here; removing a
   * device already removed writes nothing (its cutoff never moves).
   */
  removeMember(deviceId: string): Promise<void> {
    return this.#engine.whileOpen(() => this.#engine.removeMember(deviceId));
  }

  /**
   * Leaves the library: writes this device's own removal (kind `left`), refuses local writes
   * from then on, and keeps syncing until a partner acknowledged the removal (at once if it has
   * none; resumed after a restart), then stops. `signal` abandons the wait, not the leave.
   */
  leave(options: SyncedOptions = {}): Promise<void> {
    return this.syncing().leave(options);
  }

  /** How this device stopped being a member, or null while it is one. */
  removal(): RemovalInfo | null {
    return this.#engine.removal();
  }

  /** Removed devices, with their cutoffs. */
  removals(): Removal[] {
    return this.#engine.removals();
  }

  /** Partners, their acknowledged vectors, this device's vectors, log size and sync state. */
  status(): Promise<LibraryStatus> {
    return this.#engine.whileOpen(() => this.#sync.status());
  }

  /**
   * Resolves once the library is `ready` (backfilled and caught up with its connected
   * partners); rejects if it reports `error`, or with `ABORTED` when `signal` aborts.
   */
  synced(options: SyncedOptions = {}): Promise<void> {
    return this.syncing().synced(options);
  }

  /** Past and running backfill and catch-up runs, oldest first (at most the last 1 000). */
  syncHistory(): Promise<SyncRun[]> {
    return this.#engine.whileOpen(() => this.#engine.syncHistory());
  }

  /** The sync side, once the library is open (a closed library fails with `STOPPED`). */
  private syncing(): LibrarySync {
    this.#engine.assertOpen();
    return this.#sync;
  }
}
