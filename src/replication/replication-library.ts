import type { OriginFork } from '../library/status.js';
import type { RemovalInfo } from '../errors.js';
import type { NewInvite, RevokeOutcome, StoredInvite } from '../library/invite-store.js';
import type { Removal } from '../library/removals.js';
import type { LibraryStatus } from '../library/status.js';
import type { InviteInfo, MemberRow, SyncProgress } from '../library/types.js';
import type { WriterCheck } from '../library/writers.js';
import type { Row } from '../models/types.js';
import type { VersionVector } from '../peer-log/types.js';
import type { BackfillTarget } from '../backfill/catch-up.js';
import type { LastSeenStorage } from './last-seen.js';
import type { SessionLibrary } from './session.js';

/**
 * What the replication of a library uses of it (the library engine provides it): besides what
 * its sessions and its catch-up use, membership and removals, this device's writers, acks and
 * pruning, invites, last-seen times, and the events it reports to the user.
 */
export interface ReplicationLibrary extends SessionLibrary, BackfillTarget {
  readonly name: string;
  /** Whether this library holds changes of `origin`, or device-owned rows of it as owner. */
  holdsOrigin(origin: string): boolean;
  /** Checks this device's writers against what a partner's hello says it holds of them (`shared`). */
  checkOwnWriters(partner: VersionVector): Promise<WriterCheck>;
  get(model: string, id: string): Promise<Row | undefined>;

  /** Member rows of devices that are members, and the PeerIds of removed devices. */
  currentMembers(): Promise<{ rows: MemberRow[]; removedPeers: Map<string, Removal> }>;
  writeMemberRow(row: MemberRow): Promise<void>;
  loadRemovals(): Promise<void>;
  removal(): RemovalInfo | null;
  removalOf(device: string): Removal | undefined;
  markRemoved(info: RemovalInfo): Promise<void>;
  writeLeave(): Promise<void>;
  leavePending(): Promise<{ origin: string; seq: number } | undefined>;
  clearLeavePending(): Promise<void>;

  issueInvite(invite: NewInvite): Promise<void>;
  pendingInvites(now: number): Promise<InviteInfo[]>;
  revokeInvite(id: string, now: number): Promise<RevokeOutcome>;
  admitMember(inviteId: string, vet: (invite: StoredInvite | undefined) => StoredInvite, member: MemberRow): Promise<void>;

  acks(): Promise<Map<string, VersionVector>>;
  recordAck(partnerDevice: string, vector: VersionVector): Promise<void>;
  confirmOwned(version: number): Promise<void>;
  prune(partners: readonly string[], retainEntries?: number): Promise<number>;
  prunedVector(): Promise<VersionVector>;
  /** Forks of members' origins found here (`LibraryStatus.forks`). */
  forks(): Promise<OriginFork[]>;
  logSize(): Promise<number>;
  readonly lastSeen: LastSeenStorage;

  emitStatus(status: LibraryStatus): void;
  emitProgress(progress: SyncProgress): void;
}
