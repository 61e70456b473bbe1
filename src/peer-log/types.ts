import type { ChangeOp, StoredValues } from '../models/types.js';

/**
 * One entry of the peer log: a change to a shared record, identified by its origin device and
 * that device's dense sequence number (1, 2, 3 …).
 */
export interface LogEntry {
  readonly origin: string;
  readonly seq: number;
  /** Encoded HLC of the change. */
  readonly hlc: string;
  readonly model: string;
  readonly id: string;
  readonly op: ChangeOp;
  /** `upsert`: every field; `update`: the changed fields; `delete`: null. */
  readonly fields: StoredValues | null;
}

/** For each origin, the last sequence number of the contiguous prefix held. */
export type VersionVector = Record<string, number>;

/**
 * Entries of one version vector (origins, or owners of device-owned rows) at most, on the wire
 * and held: a library holds at most this many origins and as many owners, its own device
 * included (`WriteBatch` refuses more), so every vector it sends (hello, ack, heartbeat,
 * snapshot-page) fits the schema. This bounds a library's devices over its lifetime; it also
 * keeps a `hello` small enough for the handshake frame limit.
 */
export const MAX_VECTOR_ORIGINS = 1_024;

export interface ReadLimits {
  maxRecords: number;
  maxBytes: number;
}

/**
 * Origins for which a requester's position is older than what this log still holds: those
 * changes were pruned here and must come from a snapshot or another peer.
 */
export interface PrunedOrigin {
  origin: string;
  requestedAfter: number;
  prunedThrough: number;
}

export interface EntriesAfterResult {
  entries: LogEntry[];
  /** More entries after the vector exist than fitted the limits. */
  hasMore: boolean;
  pruned: PrunedOrigin[];
}
