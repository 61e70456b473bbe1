export { createSyncNode, type DiscoveryOptions, type SyncNodeOptions } from './node/sync-node.js';
export { SyncNode, type SyncNodeEvents, type CreateLibraryOptions } from './core/sync-node.js';
export { DEFAULT_SYNC_TUNING, type SyncTuning } from './core/tuning.js';
export {
  Library,
  type LibraryTransaction,
  type ListOptions,
  type LibraryEvents,
  type Member,
  type MemberInfo,
  type InviteOptions,
  type InviteInfo,
} from './library/library.js';
export type { LibraryStatus, LibrarySyncState, PartnerDialStatus, PartnerStatus, PartnerSyncState } from './replication/status.js';
export type { SessionErrorEvent } from './replication/network.js';
export type { SyncedOptions } from './replication/replicator.js';
export type { SyncProgress } from './backfill/catch-up.js';
export type { SyncRun, SyncRunOutcome, SyncCheckpoint } from './backfill/history.js';
export { PROTOCOL_ID, PROTOCOL_VERSION, MAX_FRAME_BYTES } from './protocol/messages.js';
export type { ChangeEvent } from './library/write-batch.js';
export type { ApplyResult, GapReport, OwnedApplyResult, OwnedCoverage, OwnedRowUpdate, RemoteCounts } from './library/remote-apply.js';
export {
  defineModel,
  type ModelInput,
  type DeviceModelInput,
  type SharedModelInput,
  type Model,
  type FieldSpec,
  type FieldInput,
  type ConflictRule,
  type ApplyFunction,
  MAX_FIELDS,
} from './models/define.js';
export { MAX_RECORD_BYTES } from './models/values.js';
export type {
  Row,
  FieldType,
  FieldValue,
  JsonValue,
  StoredValue,
  StoredValues,
  Change,
  ChangeOp,
  SharedRowState,
} from './models/types.js';
export type { LogEntry, VersionVector, ReadLimits, EntriesAfterResult } from './peer-log/types.js';
export { type Hlc, compareHlc, encodeHlc, decodeHlc, HlcClock, DEFAULT_MAX_CLOCK_DRIFT_MS } from './hlc/index.js';
export * from './errors.js';
