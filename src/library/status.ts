import type { RemovalInfo } from '../errors.js';
import type { VersionVector } from '../peer-log/types.js';
import type { ConnectionKind } from '../protocol/transport.js';

/**
 * A partner session's phase: `catching-up` while this device pulls what the partner has and
 * it lacks, `live` once caught up (new changes are pushed as they commit).
 */
export type PartnerSyncState = 'offline' | 'connecting' | 'catching-up' | 'live';

/** How this device dials a partner: why it is unreachable, and when it tries again. */
export interface PartnerDialStatus {
  /** The addresses the last dial tried (member row first, then those libp2p learned). */
  addresses: string[];
  /** Why the last dial failed (libp2p error names, per address), or null. */
  lastError: string | null;
  /** Wall-clock ms of the last dial attempt, or null if there was none. */
  lastAttemptAt: number | null;
  /** Wall-clock ms when the next dial is due; null while connected. */
  nextAttemptAt: number | null;
}

export interface PartnerStatus {
  device: string;
  peer: string;
  connected: boolean;
  /** `direct`, or `relayed` while the partner is reached only through a relay (another member); null when not connected. */
  connection: ConnectionKind | null;
  state: PartnerSyncState;
  /**
   * Per origin, the highest position the partner's `heads` showed it holds with the same runs as
   * this device: what it acknowledged, and what pruning counts on (persisted; survives restarts).
   */
  acked: VersionVector;
  /** The device-owned versions the partner last reported holding (this session only). */
  ackedOwned: VersionVector;
  /**
   * Wall-clock ms of the last frame received from the partner, or null if never: the value
   * `lib.members()` shows (stored, so known while offline and after a restart).
   */
  lastSeenAt: number | null;
  /**
   * The partner's acknowledged position is older than what this log still holds: it lags
   * beyond the retention bound and cannot catch up from this device's log.
   */
  beyondRetention: boolean;
  dial: PartnerDialStatus;
}

/**
 * `backfilling`: the library was joined and has not completed its first sync yet (it resumes
 * after a restart). `catching-up`: some partner holds changes this device is pulling.
 * `ready`: every connected partner session is live. `error`: the last catch-up run failed on
 * this device (see `error`); the next change or partner starts another. `removed`: this device is
 * no longer a member (see `removal`); it no longer syncs the library.
 */
export type LibrarySyncState = 'backfilling' | 'catching-up' | 'ready' | 'error' | 'removed';

export interface LibraryStatus {
  library: string;
  state: LibrarySyncState;
  error: { code: string; message: string } | null;
  /** How this device stopped being a member (state `removed`), or null while it is one. */
  removal: RemovalInfo | null;
  vector: VersionVector;
  ownedVector: VersionVector;
  logSize: number;
  partners: PartnerStatus[];
  /** Streams closed because a peer sent something invalid, since the node started. */
  protocolErrors: number;
  /**
   * Rows of other devices this device lacked, or held at an older version, although it held their
   * owner through that version (a page served to it left them out), taken since the node started
   * because a partner's summary of the owner's rows differed (docs/protocol.md, `owned-digests`).
   */
  ownedRepairs: number;
  /**
   * Origins found forked here: their author signed two different runs for one place in its
   * log (the first found of each origin, oldest first; see docs/operations.md).
   */
  forks: OriginFork[];
}

/** A fork of an origin found here (`lib.status().forks`, the `origin-forked` event). */
export interface OriginFork {
  /** The forked origin (a writer of `device`). */
  origin: string;
  /** The member device the origin belongs to, or null if its member row is not held. */
  device: string | null;
  /** The first position of the origin that two signed runs disagree on. */
  seq: number;
  /** Wall-clock ms when this device found it. */
  detectedAt: number;
}
