// The package's public API: what an application uses. The library engine, replication and
// backfill are internal (tests and benchmarks import them from their modules directly).
export { createSyncNode, type DiscoveryOptions, type SyncNodeOptions } from './node/sync-node.js';
// Types only: `SyncNode.create` and `new Library` take engine parts; `createSyncNode` makes both.
export type { SyncNode, SyncNodeEvents, CreateLibraryOptions } from './core/sync-node.js';
export { DEFAULT_SYNC_TUNING, type SyncTuning } from './core/tuning.js';
export type { Library } from './library/library.js';
export type {
  LibraryTransaction,
  ListOptions,
  LibraryEvents,
  Member,
  MemberInfo,
  InviteOptions,
  InviteInfo,
  SyncedOptions,
  SyncProgress,
} from './library/types.js';
export type { Removal } from './library/removals.js';
export type { LibraryStatus, LibrarySyncState, OriginFork, PartnerDialStatus, PartnerStatus, PartnerSyncState } from './library/status.js';
export type { SessionErrorEvent } from './replication/wire-errors.js';
export type { SyncRun, SyncRunOutcome, SyncCheckpoint } from './library/run-store.js';
export type { ChangeEvent } from './library/write-batch.js';
export { PROTOCOL_ID, PROTOCOL_VERSION, MAX_FRAME_BYTES } from './protocol/messages.js';
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
export type { VersionVector } from './peer-log/types.js';
export { type Hlc, compareHlc, encodeHlc, decodeHlc, DEFAULT_MAX_CLOCK_DRIFT_MS } from './hlc/index.js';
export {
  SYNC_ERROR_CODES,
  type SyncErrorCode,
  SyncError,
  ValidationError,
  OwnershipError,
  NotFoundError,
  ClockDriftError,
  ClockRangeError,
  HlcDecodeError,
  ModelDefinitionError,
  SchemaMismatchError,
  StoppedError,
  InternalError,
  ProtocolError,
  ProtocolVersionError,
  NotMemberError,
  type InviteErrorCode,
  InviteError,
  NetworkError,
  TimeoutError,
  BusyError,
  AbortedError,
  DeviceForkedError,
  type RemovalInfo,
  RemovedError,
} from './errors.js';
