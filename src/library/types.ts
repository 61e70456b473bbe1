import type { DeviceForkedError, RemovalInfo } from '../errors.js';
import type { Row } from '../models/types.js';
import type { LibraryStatus, OriginFork } from './status.js';
import type { SyncRun } from './run-store.js';
import type { Chunk } from '../peer-log/chunk.js';
import type { ChangeEvent } from './write-batch.js';

/*
 * Types the user-facing `Library`, the library engine and the sync side (replication,
 * backfill) all speak. They live below all three so none of them imports another for a type.
 */

/**
 * The events of a library (`lib.on(event, listener)`).
 *
 * @example
 * ```ts
 * lib.on('change', (e) => console.log(e.model, e.id, e.op, e.origin));
 * lib.on('status', (s) => console.log('sync state', s.state));
 * lib.on('removed', (r) => console.log('no longer a member:', r.kind, 'by', r.by));
 * ```
 */
export interface LibraryEvents {
  /** A row changed, by a local write or one received from a partner (emitted once committed). */
  change: [ChangeEvent];
  /** A transaction committed that grew the peer log or advanced a device-owned cursor. */
  appended: [];
  /** The sync state changed (at once), or acks, pruning or members did (coalesced). */
  status: [LibraryStatus];
  /** A backfill or catch-up run received a page. */
  progress: [SyncProgress];
  /**
   * Another copy of this data directory runs as this device at the same time, and this copy is
   * the one that gives way: it refuses every change from partners from now on.
   */
  forked: [DeviceForkedError];
  /**
   * A member's origin forked: its author signed two different runs for one place in its log
   * (a copy of its data directory wrote there too, or the device is buggy or hostile). Both are
   * applied, and the evidence relayed to every partner; see docs/operations.md, "A fork is reported".
   */
  'origin-forked': [OriginFork];
  /**
   * Runs of an origin known forked that this device newly holds (from a partner's fork
   * evidence or a push), applied; its sessions relay them to their partners (docs/protocol.md,
   * "Fork evidence"). A new fork is `origin-forked` instead.
   */
  'forked-runs': [ForkedRuns];
  /**
   * This device is no longer a member of the library: a member removed it, or it left
   * (`lib.leave()`). It stops syncing the library; its local data stays readable.
   */
  removed: [RemovalInfo];
}

/** Runs of a forked origin newly held here (`forked-runs`), as their author signed them. */
export interface ForkedRuns {
  origin: string;
  runs: Chunk[];
}

/** Subscription to a library's events (the engine is their source; the facade passes them on). */
export interface LibraryEventSource {
  on<E extends keyof LibraryEvents>(event: E, listener: (...args: LibraryEvents[E]) => void): unknown;
  off<E extends keyof LibraryEvents>(event: E, listener: (...args: LibraryEvents[E]) => void): unknown;
}

/** Progress of a running backfill or catch-up (`lib.on('progress', ...)`). */
export interface SyncProgress {
  kind: SyncRun['kind'];
  /** What is being pulled: device-owned rows, a snapshot of shared rows, or shared log entries. */
  phase: 'owned' | 'snapshot' | 'shared';
  /** Records (entries or rows) received so far in this run. */
  done: number;
  /** Estimate of the records this run will receive in all, from the partners' vectors. */
  total: number;
}

/** A member device of the library, as the synced member list records it. */
export interface Member {
  device: string;
  peer: string;
  addrs: string[];
}

/** A member row: a `Member` with its device name (null in rows written by 1.1 devices). */
export interface MemberRow extends Member {
  name: string | null;
}

/** A member as `lib.members()` shows it. */
export interface MemberInfo extends MemberRow {
  /**
   * Wall ms of the last frame this device heard from that member (device-local, kept across
   * restarts), or null if never; null for this device's own entry.
   */
  lastSeenAt: number | null;
  /** Whether this is this device's own entry. */
  self: boolean;
}

export interface InviteOptions {
  /** How long the invite can be used, in ms (default 24 hours). */
  ttlMs?: number;
}

/** A pending invite this device issued (`lib.invites()`): its secret is not kept, so not the string. */
export interface InviteInfo {
  id: string;
  /** Wall ms of its creation; null for an invite created before this was recorded. */
  createdAt: number | null;
  expiresAt: number;
}

export interface SyncedOptions {
  /** Abandons the wait (the promise rejects with `ABORTED`); the sync itself goes on. */
  signal?: AbortSignal;
}

/** What the replication layer provides to a library's facade once the node is networked. */
export interface LibrarySync {
  createInvite(options: InviteOptions): Promise<string>;
  invites(): Promise<InviteInfo[]>;
  revokeInvite(codeOrId: string): Promise<void>;
  /** When `device` was last heard from, as far as this device knows. */
  lastSeenAt(device: string): number | null;
  status(): Promise<LibraryStatus>;
  synced(options: SyncedOptions): Promise<void>;
  leave(options: SyncedOptions): Promise<void>;
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
