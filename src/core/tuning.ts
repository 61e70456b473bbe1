import type { ReplicationTuning } from '../replication/replicator.js';

export interface SyncTuning extends ReplicationTuning {
  /** Bounds of the exponential backoff (with jitter) between redials of a partner. */
  redialMinMs: number;
  redialMaxMs: number;
  /** How often connections and sessions are checked against the member lists. */
  reconcileMs: number;
  /** Catch-ups (backfills included) this node serves at once; more pullers are answered busy. */
  maxConcurrentServes: number;
}

export const DEFAULT_SYNC_TUNING: SyncTuning = {
  heartbeatMs: 1_000,
  peerTimeoutMs: 5_000,
  requestTimeoutMs: 30_000,
  pushWindow: 4,
  // Batches fill only while a partner lags: then large ones let it apply (and fsync) the
  // backlog in few transactions. A lone write still goes out at once, alone.
  batchRecords: 4_000,
  batchBytes: 1024 * 1024,
  pruneIntervalMs: 10_000,
  retainLogEntries: 1_000_000,
  statusThrottleMs: 50,
  redialMinMs: 250,
  redialMaxMs: 15_000,
  reconcileMs: 1_000,
  maxConcurrentServes: 4,
};
