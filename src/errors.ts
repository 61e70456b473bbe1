/**
 * Typed errors. Every error the library throws on purpose is a `SyncError` with a stable
 * `code`, so hosts can branch on `err.code` without parsing messages.
 */
export const SYNC_ERROR_CODES = [
  'VALIDATION',
  'OWNERSHIP',
  'NOT_FOUND',
  'CLOCK_DRIFT',
  'CLOCK_RANGE',
  'HLC_DECODE',
  'MODEL_DEFINITION',
  'SCHEMA_MISMATCH',
  'STOPPED',
  'INTERNAL',
  'PROTOCOL',
  'PROTOCOL_VERSION',
  'NOT_MEMBER',
  'INVITE_INVALID',
  'INVITE_EXPIRED',
  'INVITE_USED',
  'INVITE_REVOKED',
  'INVITE_LIMIT',
  'INVITE_BACKFILLING',
  'NETWORK',
  'TIMEOUT',
  'LOG_PRUNED',
  'BUSY',
  'ABORTED',
  'DEVICE_FORKED',
  'REMOVED',
] as const;

export type SyncErrorCode = (typeof SYNC_ERROR_CODES)[number];

export class SyncError extends Error {
  readonly code: SyncErrorCode;

  constructor(code: SyncErrorCode, message: string) {
    super(message);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A write or a remote change does not match its model (unknown field, wrong type, missing field). */
export class ValidationError extends SyncError {
  constructor(message: string) {
    super('VALIDATION', message);
  }
}

/** A device tried to write a device-owned row that belongs to another device. */
export class OwnershipError extends SyncError {
  constructor(message: string) {
    super('OWNERSHIP', message);
  }
}

/** A record, model or library that the caller named does not exist (or is deleted). */
export class NotFoundError extends SyncError {
  constructor(message: string) {
    super('NOT_FOUND', message);
  }
}

/** A remote HLC is further ahead of local wall time than `maxClockDriftMs` allows. */
export class ClockDriftError extends SyncError {
  readonly remoteWallMs: number;
  readonly localWallMs: number;
  readonly maxDriftMs: number;

  constructor(remoteWallMs: number, localWallMs: number, maxDriftMs: number) {
    super(
      'CLOCK_DRIFT',
      `remote clock is ${remoteWallMs - localWallMs} ms ahead of local wall time ` +
        `(maximum allowed drift is ${maxDriftMs} ms); change refused, local clock unchanged`,
    );
    this.remoteWallMs = remoteWallMs;
    this.localWallMs = localWallMs;
    this.maxDriftMs = maxDriftMs;
  }
}

/**
 * The clock would have to issue a value past the end of the encodable range (year 10889): only
 * reachable with a broken wall clock, and refused rather than breaking the order of encodings.
 */
export class ClockRangeError extends SyncError {
  constructor() {
    super('CLOCK_RANGE', 'the HLC cannot advance past the largest encodable wall time (48-bit milliseconds)');
  }
}

/** An encoded HLC string is malformed. */
export class HlcDecodeError extends SyncError {
  constructor(message: string) {
    super('HLC_DECODE', message);
  }
}

/** A model definition is invalid (bad name, bad field, conflict rule that does not fit). */
export class ModelDefinitionError extends SyncError {
  constructor(message: string) {
    super('MODEL_DEFINITION', message);
  }
}

/** The models a node was started with do not fit the tables already stored in a library. */
export class SchemaMismatchError extends SyncError {
  constructor(message: string) {
    super('SCHEMA_MISMATCH', message);
  }
}

/** The node or library was stopped; no further operations are accepted. */
export class StoppedError extends SyncError {
  constructor(message = 'the sync node is stopped') {
    super('STOPPED', message);
  }
}

/**
 * A failure of this node itself (its storage, a bug), not of a peer or of the network: what a
 * foreign error (one that is not a `SyncError`) thrown inside the node is reported as.
 */
export class InternalError extends SyncError {
  constructor(message: string) {
    super('INTERNAL', message);
  }
}

/** A peer sent a frame that is not a valid message (size, encoding, shape, library, order). */
export class ProtocolError extends SyncError {
  constructor(message: string) {
    super('PROTOCOL', message);
  }
}

/** The two sides speak incompatible major versions of the sync protocol. */
export class ProtocolVersionError extends SyncError {
  constructor(
    readonly localVersion: string,
    readonly remoteVersion: string,
  ) {
    super(
      'PROTOCOL_VERSION',
      `incompatible sync protocol: this node speaks ${localVersion}, the peer speaks ${remoteVersion} (major versions must match)`,
    );
  }
}

/** The peer is not a member of the library (or this node is not a member in the peer's view). */
export class NotMemberError extends SyncError {
  constructor(message: string) {
    super('NOT_MEMBER', message);
  }
}

export type InviteErrorCode = 'INVITE_INVALID' | 'INVITE_EXPIRED' | 'INVITE_USED' | 'INVITE_REVOKED' | 'INVITE_LIMIT' | 'INVITE_BACKFILLING';

/**
 * An invite was refused: malformed or unknown, expired, already used, or revoked by its inviter;
 * or not created, as the library holds `MAX_PENDING_INVITES` pending ones already.
 */
export class InviteError extends SyncError {
  constructor(code: InviteErrorCode, message: string) {
    super(code, message);
  }
}

/** A peer could not be reached, or the connection or stream failed. */
export class NetworkError extends SyncError {
  constructor(message: string) {
    super('NETWORK', message);
  }
}

/** A request to a peer got no answer in time. */
export class TimeoutError extends SyncError {
  constructor(message: string) {
    super('TIMEOUT', message);
  }
}

/** A partner is serving as many catch-ups as it allows; ask again after `retryAfterMs`. */
export class BusyError extends SyncError {
  constructor(
    readonly partner: string,
    readonly retryAfterMs: number,
  ) {
    super('BUSY', `partner ${partner} is busy; retry after ${retryAfterMs} ms`);
  }
}

/** A wait (such as `lib.synced()`) was abandoned through its AbortSignal. */
export class AbortedError extends SyncError {
  constructor(message = 'aborted') {
    super('ABORTED', message);
  }
}

/**
 * What a thrown value says, never empty: libp2p throws errors that have a name and no message
 * (`StreamClosedError`), and some of its failures arrive as events rather than Errors.
 */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const name = err.name || 'Error';
    return err.message ? `${name}: ${err.message}` : name;
  }
  const type = (err as { type?: unknown } | null)?.type;
  if (typeof type === 'string' && type !== '') return `${type} event`;
  return String(err) || 'an error without a description';
}

/**
 * `err` if it is a `SyncError`; else a typed error, made by `wrap`, with what `err` says. By
 * default a foreign error is this node's own failure (`INTERNAL`): the edges (the transport)
 * turn theirs into typed errors before they reach the core.
 */
export function toSyncError(err: unknown, wrap: (description: string) => SyncError = (d) => new InternalError(d)): SyncError {
  return err instanceof SyncError ? err : wrap(describeError(err));
}

/**
 * Two copies of one data directory (a cloned machine, or a backup restored while the original
 * still runs) wrote different changes at the same position of this device's log: the copies
 * cannot both be this device. Sessions with the partner that holds the other copy's changes are
 * refused while the fork persists.
 */
export class DeviceForkedError extends SyncError {
  constructor(message: string) {
    super('DEVICE_FORKED', message);
  }
}

/** How a device stopped being a member of a library: removed by a member, or it left. */
export interface RemovalInfo {
  kind: 'removed' | 'left';
  /** The device that wrote the removal (the leaver itself for `left`). */
  by: string;
  /** Wall-clock ms of the removal's clock (its cutoff). */
  at: number;
}

/**
 * A device is no longer a member of the library (`lib.removeMember`, `lib.leave`): a partner
 * refuses it, and the device itself refuses local writes (they could reach no one). `removal`
 * says by whom and when, where known.
 */
export class RemovedError extends SyncError {
  constructor(
    message: string,
    readonly removal: RemovalInfo | null = null,
  ) {
    super('REMOVED', message);
  }
}
