import {
  AbortedError,
  DeviceForkedError,
  InviteError,
  NotFoundError,
  NotMemberError,
  type RemovalInfo,
  RemovedError,
  StoppedError,
  SyncError,
  type SyncErrorCode,
} from '../errors.js';
import { CatchUp } from '../backfill/catch-up.js';
import type { InviteInfo, InviteOptions, LibrarySync, Member, SyncedOptions } from '../library/types.js';
import type { StoredInvite } from '../library/invite-store.js';
import type { ReplicationLibrary } from './replication-library.js';
import { KEPT_MODEL, MEMBERS_MODEL, REMOVALS_MODEL } from '../models/system.js';
import { mayBind } from '../membership/device-id.js';
import { noLongerMemberError, removalInfo } from '../library/removals.js';
import type { VersionVector } from '../peer-log/types.js';
import type { Hello, MessageOf } from '../protocol/messages.js';
import type { ConnectionKind } from '../protocol/transport.js';
import { isWriterOf } from '../library/writers.js';
import { isDeviceId } from '../hlc/index.js';
import { decodeInvite, encodeInvite, hashSecret, inviteProof, newInviteSecret, proofsEqual } from './invite-code.js';
import { LAST_SEEN_SAVE_MS, LastSeen } from './last-seen.js';
import { RepairLedger } from './repair-ledger.js';
import type { Session, SessionHost, SessionTuning } from './session.js';
import { filterOrigins, mergeMax } from './vectors.js';
import type { CancelTimer, Runtime, Scheduler } from '../runtime/runtime.js';
import { coalescing } from '../util/coalescing.js';
import { randomUuid } from '../util/ids.js';
import { sameList } from '../util/lists.js';
import { isPeerReported, notMember, type SessionErrorEvent } from './wire-errors.js';
import type { LibraryStatus, PartnerDialStatus, PartnerStatus } from '../library/status.js';

export interface ReplicationTuning extends SessionTuning {
  /** How often acknowledged log entries are pruned, in ms. */
  pruneIntervalMs: number;
  /**
   * Retention bound: per origin, at most this many entries are kept for a partner that has not
   * acknowledged them. A partner lagging further no longer holds pruning back (see
   * docs/protocol.md, "Lagging beyond retention").
   */
  retainLogEntries: number;
  /** Status events are coalesced over this many ms. */
  statusThrottleMs: number;
}

/** What a library's replicator needs from the node's networking. */
export interface ReplicatorNetwork {
  readonly localPeer: string;
  /** This device's name (`deviceName`), written to its member row. */
  readonly deviceName: string | null;
  addresses(): string[];
  /** How dialling `peer` goes (addresses tried, last error, next attempt). */
  dialStatus(peer: string): PartnerDialStatus;
  connectionKind(peer: string): ConnectionKind | null;
  disconnect(peer: string): void;
  reportSessionError(event: SessionErrorEvent): void;
  /** Whether this node serves one more pull now (it serves a bounded number of catch-ups). */
  mayServe(library: string, peer: string): boolean;
  sessionFailed(library: string, peer: string): void;
  sessionLive(library: string, peer: string): void;
  /** Re-examines connections and sessions soon (membership or a session changed). */
  reconcileSoon(): void;
  protocolErrors(): number;
  now(): number;
  /** The node's timers, randomness and wall clock (`now()` reads the latter). */
  readonly runtime: Runtime;
}

const DEFAULT_INVITE_TTL_MS = 24 * 60 * 60 * 1000;
const MAX_INVITE_TTL_MS = 30 * 24 * 60 * 60 * 1000;

/**
 * Replication of one library: its partner sessions, membership and invites, ack bookkeeping,
 * pruning and status. The node's network layer opens and accepts sessions; this decides who
 * may sync and what happens with what they report.
 */
export class LibraryReplicator implements SessionHost, LibrarySync {
  readonly sessions = new Map<string, Session>();
  readonly repairLedger = new RepairLedger();
  /** Member rows (and the bootstrap inviter until its row arrives), and the same by PeerId. */
  private members: Member[] = [];
  private membersByPeer = new Map<string, Member[]>();
  private memberDevices = new Set<string>();
  /** PeerIds of removed member devices (refused with `REMOVED`), with the removal held. */
  private removedByPeer = new Map<string, RemovalInfo>();
  /** This device's leave, until a partner acknowledged it (it syncs until then). */
  private leaving: { origin: string; seq: number } | undefined;
  private readonly leaveWaiters = new Set<() => void>();
  /**
   * What each partner device acknowledged (max-merged). Acks arrive with every batch, so they
   * are kept here and written out before pruning and on stop, not one commit per ack: a lost ack
   * only means pruning waits for the next one.
   */
  private readonly acks = new Map<string, VersionVector>();
  private readonly unsavedAcks = new Set<string>();
  private stopPruning: CancelTimer | undefined;
  private lastSeen!: LastSeen;
  private stopSavingLastSeen: CancelTimer | undefined;
  private cancelStatus: CancelTimer | undefined;
  private stopped = false;
  private everLive = false;
  /** Rows taken by pulling an owner's rows again after a partner's summary differed (`status().ownedRepairs`). */
  private ownedRowsRepaired = 0;
  private catchUp!: CatchUp;
  /** This device's member row is to be refreshed once it can be (see `refreshSelfIfDue`). */
  private selfRefreshDue = false;
  /** A partner's hello confirmed (or retired) this device's writer in this run, or it had no partner to ask. */
  private writerChecked = false;
  /** The last fork of this device's log a partner's hello showed, with that partner. */
  private fork: { partner: string; error: SyncError } | undefined;
  /** Set when this copy of the device gave way to another one running at the same time. */
  refusal: DeviceForkedError | undefined;
  /** Pending `synced()` calls, rejected with `STOPPED` when the node stops. */
  private readonly syncedWaiters = new Set<() => void>();
  private readonly onChange = (event: { model: string }) => {
    if (event.model === MEMBERS_MODEL.name || event.model === REMOVALS_MODEL.name) void this.refreshMembers();
    // A member kept a removed device's changes this device refused: they may be pulled now.
    if (event.model === KEPT_MODEL.name) this.catchUp.trigger();
  };
  /** Removed by a member: this device stops syncing (a leave stops once acknowledged: `leave`). */
  private readonly onRemoved = (removal: RemovalInfo) => {
    if (removal.kind === 'removed') this.stopSyncing(this.notMemberAnyMore());
  };
  /** Another copy of this device runs: this one stops syncing the library (sessions end, none open). */
  private readonly onForked = (error: DeviceForkedError) => {
    this.refusal = error;
    this.stopSyncing(error);
  };

  constructor(
    readonly library: ReplicationLibrary,
    readonly tuning: ReplicationTuning,
    private readonly network: ReplicatorNetwork,
    /** The inviter this device joined through: a member until the synced list arrives. */
    private readonly bootstrap: Member | undefined,
  ) {}

  async start(): Promise<void> {
    this.catchUp = await CatchUp.open({
      library: this.library,
      sessions: () => [...this.sessions.values()],
      scheduler: this.scheduler,
      now: () => this.now(),
      onProgress: (progress) => this.library.emitProgress(progress),
      onOwnedRepaired: (_session, _owner, rows) => {
        this.ownedRowsRepaired += rows;
        this.scheduleStatus();
      },
      onChange: () => this.scheduleStatus(true),
    });
    this.lastSeen = await LastSeen.open(this.library.lastSeen);
    await this.library.loadRemovals();
    if (this.library.removal()?.kind === 'left') this.leaving = await this.library.leavePending();
    if (this.library.removal() && !this.leaving) this.catchUp.stop();
    this.library.on('change', this.onChange);
    this.library.on('forked', this.onForked);
    this.library.on('removed', this.onRemoved);
    await this.refreshMembers();
    // Saved acks may predate the origin check: keep their recorded origins only. A session may
    // have acked meanwhile: merge.
    for (const [device, vector] of await this.library.acks()) {
      const merged = { ...this.acks.get(device) };
      mergeMax(merged, this.recordedOnly(vector));
      this.acks.set(device, merged);
    }
    // Nobody else can hold a position of this device's log: its writer is confirmed at once.
    if (this.partners().length === 0) {
      await this.library.checkOwnWriters({});
      this.writerChecked = true;
    }
    this.stopPruning = this.scheduler.setInterval(() => void this.prune().catch(() => undefined), this.tuning.pruneIntervalMs);
    this.stopSavingLastSeen = this.scheduler.setInterval(() => void this.saveLastSeen().catch(() => undefined), LAST_SEEN_SAVE_MS);
  }

  /** Ends every session and saves the acks received; the library stays open. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const stopWaiting of [...this.syncedWaiters]) stopWaiting();
    this.stopPruning?.();
    this.stopSavingLastSeen?.();
    this.cancelStatus?.();
    this.library.off('change', this.onChange);
    this.library.off('forked', this.onForked);
    this.library.off('removed', this.onRemoved);
    this.catchUp.stop();
    const ownAlike = this.ownRowsAlike();
    for (const session of [...this.sessions.values()]) session.close();
    await this.catchUp.settled();
    await this.saveAcks(ownAlike);
    await this.saveLastSeen();
  }

  /** The node's timers, for sessions and catch-up (`SessionHost`). */
  get scheduler(): Scheduler {
    return this.network.runtime.scheduler;
  }

  now(): number {
    return this.network.now();
  }

  /**
   * Whether this library syncs no more here: this copy gave way to another one (`refusal`), or
   * this device is no longer a member (once a partner acknowledged its own leave).
   */
  get inactive(): boolean {
    return this.refusal !== undefined || (this.library.removal() !== null && !this.leaving);
  }

  /** Stops syncing the library: sessions end with `reason` and none open. */
  private stopSyncing(reason: SyncError): void {
    this.catchUp.stop();
    for (const session of [...this.sessions.values()]) session.close(reason);
    this.scheduleStatus(true);
  }

  /** PeerIds of removed devices, with the removal held (they are told so when they connect). */
  removedPeers(): ReadonlyMap<string, RemovalInfo> {
    return this.removedByPeer;
  }

  /**
   * A peer refused this device as removed (`REMOVED`). Believed only from a peer that is a
   * member in this device's own list (a stranger's word changes nothing): this device is no
   * longer a member and stops syncing the library; for a leave, the refusal shows the partner
   * holds a removal of this device (an acknowledgement), also an earlier one by another member
   * that stands instead of the leave (the leave would never be acknowledged otherwise).
   */
  async onRefusedAsRemoved(peer: string, error: SyncError): Promise<void> {
    if (!(error instanceof RemovedError) || !isPeerReported(error) || !this.isMemberPeer(peer) || peer === this.network.localPeer) return;
    const told = error.removal;
    const info = told ?? { kind: 'removed' as const, by: this.devicesOf(peer)[0]!, at: this.now() };
    await this.library.markRemoved(info);
    if (this.leaving) await this.leaveAcknowledged();
  }

  /** Other member devices. */
  partners(): Member[] {
    return this.members.filter((m) => m.peer !== this.network.localPeer);
  }

  /** The devices whose member rows name `peer`. */
  devicesOf(peer: string): string[] {
    return (this.membersByPeer.get(peer) ?? []).map((m) => m.device);
  }

  /** Whether some member row names `peer`. */
  isMemberPeer(peer: string): boolean {
    return this.membersByPeer.has(peer);
  }

  /**
   * The member row of `device` under `peer`, if any. A PeerId may be named by several rows (any
   * member can write member rows): each of them lets that peer in as its own device only, so a
   * row naming another member's PeerId cannot take that member's place.
   */
  member(peer: string, device: string): Member | undefined {
    return this.membersByPeer.get(peer)?.find((m) => m.device === device);
  }

  /**
   * Whether a vector entry (origin, or owner of device-owned rows) that a partner sends names a
   * known origin: a log origin of a member (its device id or a writer id derived from it,
   * `library/writers.ts`; the bootstrap inviter and this device included), or an origin or owner
   * this library holds (a former member). A session keeps a bounded number of unknown entries
   * for catch-up (see `Session`): right after a join, a new member's origin can reach this node
   * before its member row, and the partner's next heartbeat carries the entry again.
   */
  isKnownOrigin(origin: string): boolean {
    if (isWriterOf(origin, this.library.deviceId) || this.library.holdsOrigin(origin)) return true;
    for (const device of this.memberDevices) if (isWriterOf(origin, device)) return true;
    return false;
  }

  /**
   * Whether a vector entry may be kept in what this device records of a partner (its acks:
   * saved, used for pruning, shown by `status()`; push cursors): a member's device id, this
   * device's, or an origin or owner this library holds. Bounded by the members and what is held:
   * a writer id derived from a member's device id counts only once its changes are held here,
   * so invented ones, also shaped like a member's writer ids, cannot grow them.
   */
  isRecordedOrigin(origin: string): boolean {
    return this.memberDevices.has(origin) || origin === this.library.deviceId || this.library.holdsOrigin(origin);
  }

  private recordedOnly(vector: VersionVector): VersionVector {
    return filterOrigins(vector, (origin) => this.isRecordedOrigin(origin));
  }

  /**
   * Before a session with `partner` starts: checks this device's writers against its hello
   * (`Library.checkOwnWriters`). Once the writer is confirmed (or retired), this device's member
   * row is refreshed if it was waiting.
   */
  async checkWriters(hello: Hello, partner: string): Promise<void> {
    if (this.refusal) throw this.refusal;
    if (this.inactive) throw this.notMemberAnyMore();
    await this.library.checkOwnWriters(hello.shared);
    if (this.fork?.partner === partner) {
      this.fork = undefined;
      this.scheduleStatus(true);
    }
    this.writerChecked = true;
    // Not part of the handshake: the refresh runs on its own.
    this.refreshSelf();
  }

  /**
   * A hello from `peer` while a session with it is open: two copies of one data directory
   * (same PeerId) would replace each other's session for good, each restarting its catch-up.
   * The open one wins if the partner is still heard on it over two heartbeats (a restarted
   * device's old session closes or falls silent); the newcomer is refused with `DEVICE_FORKED`.
   */
  async checkSingleCopy(peer: string): Promise<void> {
    const current = this.sessions.get(peer);
    if (!current || !(await current.heardFor(2 * this.tuning.heartbeatMs))) return;
    throw new DeviceForkedError(
      `device ${current.device} (PeerId ${peer}) already syncs library ${this.library.id} over another connection, and is still ` +
        `heard there: two copies of its data directory run at the same time. Only one copy can be device ${current.device}`,
    );
  }

  /** Shows a fork a partner reported or a hello revealed in `status()` until a session with it passes. */
  recordFork<E extends SyncError>(partner: string, error: E): E {
    this.fork = { partner, error };
    this.scheduleStatus(true);
    return error;
  }

  /**
   * At every start: this device's member row is refreshed (listen addresses or the name may
   * differ from the last run) as soon as it can be (`refreshSelfIfDue`), at once if it can now.
   */
  async refreshSelfWhenConfirmed(): Promise<void> {
    this.selfRefreshDue = true;
    await this.refreshSelfIfDue();
  }

  /**
   * This node's addresses changed while running (a relay reservation made or lost, a listener
   * closed, the interfaces under a wildcard listen changed): the member row follows as soon as it can.
   */
  addressesChanged(): void {
    if (this.stopped) return;
    this.selfRefreshDue = true;
    this.refreshSelf();
  }

  /** Rounds never overlap, so a burst of address events or member changes writes the row once per change. */
  private readonly refreshSelf = coalescing(
    () => this.refreshSelfIfDue(),
    // A failure (the node stopping) only leaves the row as it was; the next change retries.
    () => undefined,
  );

  /**
   * Writes a due refresh of this device's member row once the row is here and the writer is
   * checked, whichever comes last. Before the writer is checked, the write would cost a fresh
   * writer, and no partner could learn the new addresses before meeting this device anyway. A
   * joiner that restarted before its own row (written by its inviter) arrived refreshes it
   * when it arrives; until then it has no row to refresh, and a creator none before it invites.
   */
  private async refreshSelfIfDue(): Promise<void> {
    if (!this.selfRefreshDue || !this.writerChecked || this.stopped) return;
    if (!this.members.some((m) => m.device === this.library.deviceId)) return;
    this.selfRefreshDue = false;
    await this.registerSelf();
  }

  /** Refuses a peer that is not a member, or whose hello names another device than it is. */
  requireMember(peer: string, device: string): Member {
    const rows = this.membersByPeer.get(peer);
    const removal = this.library.removalOf(device);
    const removedPeer = this.removedByPeer.get(peer);
    if (removal || (!rows && removedPeer)) {
      throw new RemovedError(
        `device ${removal?.device ?? device} was removed from this library and may sync it no more`,
        removal ? removalInfo(removal) : removedPeer!,
      );
    }
    if (!rows || peer === this.network.localPeer) throw notMember(peer);
    const member = rows.find((m) => m.device === device);
    if (!member) throw new NotMemberError(`peer ${peer} is member device ${rows.map((m) => m.device).join(', ')}, not ${device}`);
    return member;
  }

  adopt(session: Session): void {
    const previous = this.sessions.get(session.peer);
    this.sessions.set(session.peer, session);
    previous?.close();
    session.start();
    this.catchUp.poke();
    this.scheduleStatus();
  }

  /** Whether the library is in its first sync after joining: its member list is still arriving. */
  get backfilling(): boolean {
    // Undefined until start(): the network may refuse a hello for the library before that.
    return this.catchUp?.state === 'backfilling';
  }

  /** Stops a backfill in progress (after the page in flight); it resumes at the next start. */
  interruptBackfill(): void {
    if (this.backfilling) this.catchUp.stop();
  }

  onPartnerAhead(): void {
    this.catchUp.trigger();
  }

  mayServe(session: Session): boolean {
    return this.network.mayServe(this.library.id, session.peer);
  }

  /** Resolves once the library is `ready`; rejects if it reports `error` or on abort. */
  synced(options: SyncedOptions = {}): Promise<void> {
    const { signal } = options;
    return new Promise<void>((resolve, reject) => {
      const settle = (status: LibraryStatus) => {
        if (status.state === 'ready') finish(() => resolve());
        else if (status.state === 'removed') finish(() => reject(this.removedError()));
        else if (status.state === 'error') finish(() => reject(new SyncError(status.error!.code as SyncErrorCode, status.error!.message)));
      };
      const onAbort = () => finish(() => reject(new AbortedError('lib.synced() was aborted')));
      const onStop = () => finish(() => reject(new StoppedError('the node stopped before the library was synced')));
      const finish = (settleWith: () => void) => {
        this.library.off('status', settle);
        signal?.removeEventListener('abort', onAbort);
        this.syncedWaiters.delete(onStop);
        settleWith();
      };
      if (this.stopped) return onStop();
      if (signal?.aborted) return onAbort();
      this.syncedWaiters.add(onStop);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.library.on('status', settle);
      void this.status().then(settle, (err: unknown) => finish(() => reject(err)));
    });
  }

  onConfirmed(session: Session, confirmed: VersionVector): void {
    const merged = { ...this.acks.get(session.device) };
    if (mergeMax(merged, this.recordedOnly(confirmed))) {
      this.acks.set(session.device, merged);
      this.unsavedAcks.add(session.device);
      this.scheduleStatus();
    }
  }

  onAck(session: Session, shared: VersionVector): void {
    // The leave is acknowledged by a partner this session sent it to: the ack alone could be a
    // false claim, and the leave then reached no one.
    const leaving = this.leaving;
    if (leaving && Math.min(shared[leaving.origin] ?? 0, session.sentThrough(leaving.origin)) >= leaving.seq) {
      void this.leaveAcknowledged().catch(() => undefined);
    }
  }

  /**
   * Leaves the library (`Library.leave`): writes this device's removal of itself, then waits
   * until a partner acknowledged it (at once without partners), and stops syncing.
   */
  async leave(options: SyncedOptions): Promise<void> {
    const removal = this.library.removal();
    if (removal?.kind === 'removed') throw this.removedError();
    if (!removal) {
      await this.library.writeLeave();
      this.leaving = await this.library.leavePending();
      if (this.partners().length === 0) await this.leaveAcknowledged();
      else this.network.reconcileSoon();
    }
    if (!this.leaving) return;
    const { signal } = options;
    await new Promise<void>((resolve, reject) => {
      const onAbort = () =>
        finish(() => reject(new AbortedError('lib.leave() stopped waiting; the leave stands and is sent at the next chance')));
      const onStop = () =>
        finish(() => reject(new StoppedError('the node stopped before a partner acknowledged the leave; it resumes at the next start')));
      const done = () => finish(() => resolve());
      const finish = (settleWith: () => void) => {
        this.leaveWaiters.delete(done);
        this.syncedWaiters.delete(onStop);
        signal?.removeEventListener('abort', onAbort);
        settleWith();
      };
      if (this.stopped) return onStop();
      if (signal?.aborted) return onAbort();
      this.leaveWaiters.add(done);
      this.syncedWaiters.add(onStop);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** A partner holds this device's leave: it is told, so this device stops syncing the library. */
  private async leaveAcknowledged(): Promise<void> {
    if (!this.leaving) return;
    this.leaving = undefined;
    await this.library.clearLeavePending();
    this.stopSyncing(this.notMemberAnyMore());
    for (const done of [...this.leaveWaiters]) done();
  }

  /**
   * What this device tells partners once it is no longer a member: `NOT_MEMBER`, never `REMOVED`
   * (which would tell the partner that it was removed).
   */
  private notMemberAnyMore(): NotMemberError {
    return new NotMemberError(`device ${this.library.deviceId} is no longer a member of library ${this.library.id}`);
  }

  private removedError(): RemovedError {
    return noLongerMemberError(this.library.id, this.library.removal()!);
  }

  onStateChange(session: Session): void {
    if (session.state === 'live') {
      this.everLive = true;
      this.network.sessionLive(this.library.id, session.peer);
    }
    this.scheduleStatus(true);
  }

  onClosed(session: Session, reason: Error | undefined): void {
    if (this.sessions.get(session.peer) === session) this.sessions.delete(session.peer);
    this.lastSeen.note(session.device, session.lastSeenAt);
    if (this.stopped) return;
    void this.saveLastSeen().catch(() => undefined);
    // Whatever it was pulling, another partner may serve.
    this.catchUp.trigger();
    if (reason instanceof RemovedError) void this.onRefusedAsRemoved(session.peer, reason).catch(() => undefined);
    if (reason) {
      this.network.sessionFailed(this.library.id, session.peer);
      this.network.reportSessionError({ peer: session.peer, library: this.library.id, direction: session.direction, error: reason });
    }
    // A silent partner is likely gone: drop the connection so it is redialled with backoff.
    if (reason && (reason as { code?: string }).code === 'TIMEOUT') this.network.disconnect(session.peer);
    this.scheduleStatus();
    this.network.reconcileSoon();
  }

  async createInvite(options: InviteOptions): Promise<string> {
    // A device joining through it would complete its own first sync from this device's part of
    // the history, and both would show `ready` without the rest (the simulator, seed 29).
    if (this.backfilling) {
      throw new InviteError(
        'INVITE_BACKFILLING',
        `this device has not completed its first sync of library ${this.library.id} yet: invite once lib.synced() resolves, or from another member`,
      );
    }
    const ttlMs = options?.ttlMs ?? DEFAULT_INVITE_TTL_MS;
    if (!Number.isSafeInteger(ttlMs) || ttlMs < 1 || ttlMs > MAX_INVITE_TTL_MS) {
      throw new InviteError('INVITE_INVALID', `ttlMs must be an integer from 1 to ${MAX_INVITE_TTL_MS}`);
    }
    await this.registerSelf();
    const secret = newInviteSecret(this.network.runtime.random);
    const id = randomUuid(this.network.runtime.random);
    const expiresAt = this.now() + ttlMs;
    await this.library.issueInvite({ id, secretHash: hashSecret(secret), expiresAt, createdAt: this.now() });
    return encodeInvite({
      library: this.library.id,
      name: this.library.name,
      inviterPeer: this.network.localPeer,
      inviterAddrs: this.network.addresses(),
      id,
      secret,
      expiresAt,
    });
  }

  /** This device's pending invites (not used, revoked or expired), newest first. */
  async invites(): Promise<InviteInfo[]> {
    return this.library.pendingInvites(this.now());
  }

  /**
   * Revokes an invite this device issued, named by its string or its id. Invites live in this
   * device's own table (only the inviter holds the secret's hash and admits with it), so only the
   * inviter can revoke one: the revocation is never synced, and needs no agreement.
   */
  async revokeInvite(codeOrId: string): Promise<void> {
    // An invite id is a uuid, as device ids are; anything else is taken as an invite string.
    const id = isDeviceId(codeOrId) ? codeOrId : this.ownInviteId(codeOrId);
    const outcome = await this.library.revokeInvite(id, this.now());
    if (outcome.kind === 'unknown') throw new NotFoundError(`no invite ${id} was issued by this device for library ${this.library.id}`);
    // Also the loser of a race with the join: the caller must learn that the joiner got in.
    if (outcome.kind === 'used') {
      throw new InviteError('INVITE_USED', `invite ${id} was already used (by peer ${outcome.by}): remove that device instead (lib.removeMember)`);
    }
  }

  /** The id of an invite string issued for this library (else `NOT_FOUND`; malformed: `INVITE_INVALID`). */
  private ownInviteId(code: string): string {
    const invite = decodeInvite(code);
    if (invite.library !== this.library.id || invite.inviterPeer !== this.network.localPeer) {
      throw new NotFoundError(`invite ${invite.id} was not issued by this device for library ${this.library.id}`);
    }
    return invite.id;
  }

  lastSeenAt(device: string): number | null {
    const open = [...this.sessions.values()].find((s) => s.device === device);
    if (open) this.lastSeen.note(device, open.lastSeenAt);
    return this.lastSeen.get(device);
  }

  /**
   * Honours a join request from the authenticated `joinerPeer`: the invite must exist, the proof
   * must match, and the invite must be unrevoked, unused and unexpired. Marking the invite used
   * and adding the member happen in one transaction; the member row then syncs to every member.
   */
  async admit(join: MessageOf<'join'>, joinerPeer: string): Promise<void> {
    const vet = (invite: StoredInvite | undefined): StoredInvite => {
      if (!invite) throw new InviteError('INVITE_INVALID', 'unknown invite');
      // The proof first: without the secret, nothing about the invite is revealed.
      if (!proofsEqual(inviteProof(invite.secretHash, joinerPeer, this.library.id), join.proof)) {
        throw new InviteError('INVITE_INVALID', 'the invite secret does not match');
      }
      if (invite.revokedAt !== null) throw new InviteError('INVITE_REVOKED', 'this invite was revoked by its inviter');
      if (invite.usedBy !== null) throw new InviteError('INVITE_USED', 'this invite was already used');
      if (invite.expiresAt < this.now()) throw new InviteError('INVITE_EXPIRED', 'this invite has expired');
      if (this.library.removalOf(join.device)) {
        throw new RemovedError(`device ${join.device} was removed from this library and cannot join it again under the same device id`);
      }
      // Its member row would be refused for good (`refreshMembers`): the invite stays unused.
      if (this.removedByPeer.has(joinerPeer)) {
        throw new RemovedError(`peer ${joinerPeer} is a device removed from this library and cannot join it again under the same key`);
      }
      // Every member would refuse the row (`checkMemberRecord`): say so before using the invite.
      if (!mayBind(join.device, joinerPeer)) {
        throw new InviteError('INVITE_INVALID', `device id ${join.device} is derived from another key than the joiner's (${joinerPeer})`);
      }
      // Every member counts, this device included: a joiner must not take over a device id.
      const existing = this.members.find((m) => m.device === join.device);
      if (existing && existing.peer !== joinerPeer) {
        throw new InviteError('INVITE_INVALID', `device ${join.device} is already a member under another key`);
      }
      return invite;
    };
    await this.library.admitMember(join.invite, vet, { device: join.device, peer: joinerPeer, addrs: join.addrs, name: join.name ?? null });
    await this.refreshMembers();
  }

  /**
   * Records this device as a member with its current addresses and name (no write if
   * unchanged). A library's creator is its only member until it first invites, so this runs then.
   */
  async registerSelf(): Promise<void> {
    const device = this.library.deviceId;
    const addrs = this.network.addresses();
    const name = this.network.deviceName;
    const current = await this.library.get(MEMBERS_MODEL.name, device);
    if (current?.peer === this.network.localPeer && sameList(current.addrs as string[], addrs) && current.name === name) return;
    await this.library.writeMemberRow({ device, peer: this.network.localPeer, addrs, name });
    await this.refreshMembers();
  }

  async status(): Promise<LibraryStatus> {
    const pruned = await this.library.prunedVector();
    const partners: PartnerStatus[] = this.partners().map((member) => {
      const open = this.sessions.get(member.peer);
      const session = open?.device === member.device ? open : undefined;
      const acked = { ...this.acks.get(member.device) };
      const connection = this.network.connectionKind(member.peer);
      const connected = connection !== null;
      const state = session && session.state !== 'closed' ? session.state : connected ? 'connecting' : 'offline';
      return {
        device: member.device,
        peer: member.peer,
        connected,
        connection,
        state,
        acked,
        ackedOwned: session ? this.recordedOnly(session.remoteOwned) : {},
        lastSeenAt: this.lastSeenAt(member.device),
        beyondRetention: Object.entries(pruned).some(([origin, through]) => through > (acked[origin] ?? 0)),
        dial: this.network.dialStatus(member.peer),
      };
    });
    const pulling = this.catchUp.state;
    // Until one partner session has gone live, a library with partners has not synced yet.
    const catchingUp =
      pulling === 'catching-up' ||
      [...this.sessions.values()].some((s) => s.state === 'catching-up') ||
      (partners.length > 0 && !this.everLive);
    const failure = this.refusal ?? this.catchUp.error ?? this.fork?.error;
    const removal = this.library.removal();
    return {
      library: this.library.id,
      state: removal ? 'removed' : failure ? 'error' : pulling === 'backfilling' ? pulling : catchingUp ? 'catching-up' : 'ready',
      removal,
      error: failure ? { code: failure.code, message: failure.message } : null,
      vector: this.library.versionVector(),
      ownedVector: this.library.ownedVector(),
      logSize: await this.library.logSize(),
      partners,
      protocolErrors: this.network.protocolErrors(),
      ownedRepairs: this.ownedRowsRepaired,
      forks: await this.library.forks(),
    };
  }

  /** Prunes what every member acknowledged (bounded by the retention bound). */
  async prune(): Promise<number> {
    const partnerDevices = this.partners().map((m) => m.device);
    // Alone, "acknowledged by every partner" would hold vacuously and empty the log that the
    // first device to join must catch up from.
    if (partnerDevices.length === 0) return 0;
    await this.saveAcks();
    const deleted = await this.library.prune(partnerDevices, this.tuning.retainLogEntries);
    if (deleted > 0) this.scheduleStatus();
    return deleted;
  }

  /**
   * Emits a status event for a change. A change of sync state (`urgent`: catch-up runs and
   * session states) is emitted at once, so `synced()` and hosts see `ready` without delay;
   * other changes (acks, pruning, members) are coalesced over `statusThrottleMs`.
   */
  scheduleStatus(urgent = false): void {
    if (this.stopped) return;
    if (this.cancelStatus) {
      if (!urgent) return;
      this.cancelStatus();
    }
    this.cancelStatus = this.scheduler.setTimeout(
      () => {
        this.cancelStatus = undefined;
        if (this.stopped) return;
        void this.status()
          .then((status) => this.library.emitStatus(status))
          .catch(() => undefined);
      },
      urgent ? 0 : this.tuning.statusThrottleMs,
    );
  }

  /** Saves when each partner was last heard, live sessions included. */
  private async saveLastSeen(): Promise<void> {
    for (const session of this.sessions.values()) this.lastSeen.note(session.device, session.lastSeenAt);
    await this.lastSeen.save();
  }

  /** Saves the acks received, and how far partners hold this device's own rows alike. */
  private async saveAcks(ownAlike = this.ownRowsAlike()): Promise<void> {
    for (const device of [...this.unsavedAcks]) {
      this.unsavedAcks.delete(device);
      await this.library.recordAck(device, this.acks.get(device)!);
    }
    await this.library.confirmOwned(ownAlike);
  }

  /** A partner whose copy of this device's own rows is known alike holds them alike through its ack. */
  private ownRowsAlike(): number {
    const self = this.library.deviceId;
    let alike = 0;
    for (const session of this.sessions.values()) {
      if (session.ownRowsToCheck() === undefined) alike = Math.max(alike, session.remoteOwned[self] ?? 0);
    }
    return alike;
  }

  private async refreshMembers(): Promise<void> {
    const { rows, removedPeers } = await this.library.currentMembers();
    this.removedByPeer = new Map([...removedPeers].map(([peer, r]) => [peer, removalInfo(r)]));
    const members: Member[] = rows;
    const bootstrap = this.bootstrap;
    // A removed inviter is no partner either, also before its member row arrives.
    if (bootstrap && !this.library.removalOf(bootstrap.device) && !members.some((m) => m.device === bootstrap.device)) members.push(bootstrap);
    const byPeer = new Map<string, Member[]>();
    for (const m of members) byPeer.set(m.peer, [...(byPeer.get(m.peer) ?? []), m]);
    this.members = members;
    this.membersByPeer = byPeer;
    this.memberDevices = new Set(members.map((m) => m.device));
    // A fork a partner showed stands until a session with it passes; one that is a member no
    // more can never retract it. Its claim is dropped then: a member's false claim left this
    // device in `error` for good once that member left (simulator seed 40453), and a real second
    // copy shows in the other members' hellos as well.
    if (this.fork && !this.memberDevices.has(this.fork.partner)) {
      this.fork = undefined;
      this.scheduleStatus(true);
    }
    // A member removed from the list (or re-keyed) loses its session at once; a removed device is told so.
    for (const [peer, session] of this.sessions) {
      const removal = this.library.removalOf(session.device);
      if (removal) session.close(new RemovedError(`device ${session.device} was removed from this library`, removalInfo(removal)));
      else if (!this.member(peer, session.device)) session.close();
    }
    // This device's own row may just have arrived, with a refresh due.
    this.refreshSelf();
    this.network.reconcileSoon();
    this.scheduleStatus();
  }
}
