import { BusyError, ProtocolError, SyncError, TimeoutError, toSyncError } from '../errors.js';
import type { ForkedRuns, LibraryEventSource } from '../library/types.js';
import type { OriginFork } from '../library/status.js';
import type { OwnedPage } from '../library/owned-reads.js';
import type { ApplyResult, OwnedApplyResult, OwnedCoverage, OwnedRowUpdate, SignedOwnedRows } from '../library/remote-apply.js';
import type { SnapshotPage } from '../library/snapshot.js';
import type { RemoteCounts } from '../library/counts.js';
import { type Chunk, CHUNK_OVERHEAD_BYTES, type ChunksAfterResult, type HeadComparison } from '../peer-log/chunk.js';
import type { ReadLimits, VersionVector } from '../peer-log/types.js';
import { decodeMessage, encodeMessage } from '../protocol/codec.js';
import { refuseStream } from './refuse-stream.js';
import type { ChunkTuple, Message, MessageOf, OwnedRowTuple, SnapshotPosition, SnapshotRowTuple } from '../protocol/messages.js';
import type { SnapshotRow } from '../library/snapshot.js';
import type { StoredValues } from '../models/types.js';
import { coalescing } from '../util/coalescing.js';
import { MAX_OWNED_DIGESTS, MAX_PAGE_BYTES, OWNED_DIGESTS_MINOR, SNAPSHOT_PROOFS_MINOR, MAX_PAGE_RECORDS, MAX_VECTOR_ORIGINS } from '../protocol/messages.js';
import { equalBytes } from '../util/bytes.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import type { RepairLedger } from './repair-ledger.js';
import { proofToTuple, type RunProof } from '../peer-log/signed-runs.js';
import type { FrameStream } from '../protocol/transport.js';
import type { CancelTimer, Scheduler } from '../runtime/runtime.js';
import { filterOrigins, isBehind, mergeMax } from './vectors.js';
import { errorFromWire, isPeerReported } from './wire-errors.js';

export interface SessionTuning {
  /** A heartbeat (with both vectors) is sent this often, in ms. */
  heartbeatMs: number;
  /** A partner silent for this long is considered dead; the session closes. */
  peerTimeoutMs: number;
  /** A pull request unanswered for this long fails the session. */
  requestTimeoutMs: number;
  /** Unacknowledged push batches allowed in flight; beyond it new changes wait in the log. */
  pushWindow: number;
  /** Limits of one push batch or pull page. */
  batchRecords: number;
  batchBytes: number;
}

/**
 * What a session uses of its library (the library engine provides it): vectors, log and row
 * reads to serve and push, and the applies of what the partner sends.
 */
export interface SessionLibrary extends LibraryEventSource {
  readonly id: string;
  readonly deviceId: string;
  versionVector(): VersionVector;
  ownedVector(): VersionVector;
  /** Own device-owned version known to be held alike by partners. */
  ownedConfirmed(): number;
  /** A partner's advertised vector capped at what this device accepts of closed origins. */
  acceptable(vector: VersionVector): VersionVector;
  /** `vector` without removed devices' writers. */
  withoutRemovedWriters(vector: VersionVector): VersionVector;
  chunksAfter(vector: VersionVector, limits: ReadLimits): Promise<ChunksAfterResult>;
  ownedAfter(owner: string, after: number, limits: ReadLimits): Promise<OwnedPage>;
  /** Per model, the summary of `owner`'s rows served here through `version`, unless it holds another version. */
  ownedDigests(owner: string, version: number): Promise<ReadonlyMap<string, Uint8Array> | undefined>;
  snapshotAfter(after: SnapshotPosition | null, limits: ReadLimits): Promise<SnapshotPage>;
  snapshotProofs(vector: VersionVector, known: VersionVector): Promise<RunProof[]>;
  sharedRowCount(): Promise<number>;
  applyRemoteChunks(chunks: readonly Chunk[], counts?: RemoteCounts): Promise<ApplyResult>;
  applyRemoteOwned(page: SignedOwnedRows, coverage?: OwnedCoverage, counts?: RemoteCounts): Promise<OwnedApplyResult>;
  /** Fork evidence a partner relays (`forked`). */
  applyForkEvidence(origin: string, evidence: readonly [Chunk, Chunk] | null, chunks: readonly Chunk[]): Promise<unknown>;
  /** The two runs that prove `origin`'s fork, and where it was found (`Fork`), if it forked. */
  forkEvidence(origin: string): Promise<{ seq: number; held: Chunk; other: Chunk } | undefined>;
  /** What this device relays of a forked origin to a partner holding it through `after`, a few runs at a time. */
  forkedRuns(origin: string, seq: number, after: number): AsyncIterable<Chunk[]>;
  forkedOrigins(): Promise<string[]>;
  /** Per origin, the position held and the id of the run ending there (`heads`). */
  heads(): [string, number, Uint8Array][];
  /** A partner's head of `origin` against this device's log. */
  compareHead(origin: string, seq: number, id: Uint8Array): Promise<HeadComparison>;
}

/** What a session reports to the library's replicator. */
export interface SessionHost {
  readonly library: SessionLibrary;
  readonly tuning: SessionTuning;
  /** The node's timers (heartbeats, request timeouts). */
  readonly scheduler: Scheduler;
  now(): number;
  /** The partner (authenticated) advertises holding at least `shared` (`Session.remoteShared`). */
  onAck(session: Session, shared: VersionVector): void;
  /**
   * The partner holds this device's history of each origin through `confirmed` (its `heads`
   * named the runs held here, `Session.confirm`): what may be pruned of it.
   */
  onConfirmed(session: Session, confirmed: VersionVector): void;
  /** Whether a vector entry the partner sends names an origin (or owner) known here. */
  isKnownOrigin(origin: string): boolean;
  /** Whether a vector entry may be kept in push cursors (members, this device, held origins). */
  isRecordedOrigin(origin: string): boolean;
  /** The partner holds changes this device lacks (hello, a gap, or a heartbeat): pull them. */
  onPartnerAhead(session: Session): void;
  /** Whether a pull from this session may be served now (otherwise it is answered `busy`). */
  mayServe(session: Session): boolean;
  /** Summary mismatches already answered by a repair, across sessions. */
  readonly repairLedger: RepairLedger;
  onStateChange(session: Session): void;
  onClosed(session: Session, reason: Error | undefined): void;
}

export type SessionState = 'catching-up' | 'live' | 'closed';

/**
 * Entries of origins (or owners) not known here that a session keeps in its partner's vectors,
 * at most. Catch-up needs them: a joiner knows few members yet while its partners advertise all
 * of them. Bounded, they cost at most this much per session, whatever a partner invents.
 */
const MAX_UNKNOWN_ORIGINS = 2 * MAX_VECTOR_ORIGINS;

/**
 * Heartbeats between two `heads` of a session (after the first, at its start): a fork found
 * within seconds, and a log read per moved origin that stays off most heartbeats.
 */
const HEADS_EVERY_HEARTBEATS = 5;

/** How long a partner answering `busy` asks the puller to wait, in ms. */
const BUSY_RETRY_MS = 500;

/**
 * Pages served on a session that the transport has not taken yet (back-pressure), at most; a
 * further pull is answered `busy`. The read loop never waits for the transport (see
 * `sendBeside`), so this bounds what a partner that pulls without reading makes this node hold:
 * an honest catch-up has two pulls outstanding (one prefetched), like `pushWindow` for pushes.
 */
const MAX_QUEUED_PAGES = 4;
/**
 * Frames the read loop sent that the transport has not taken yet (pages, acks, `busy`,
 * heartbeats), beyond which it waits for the transport again: only a partner that reads nothing
 * while it sends on makes that many (an honest one has at most its push window of batches to
 * ack, and a few pulls), and it then waits on itself alone, with what this node holds for it
 * bounded.
 */
const MAX_QUEUED_FRAMES = 64;

type PageReply = MessageOf<'shared-page'> | MessageOf<'state-page'> | MessageOf<'snapshot-page'>;
type PullRequest = MessageOf<'pull-shared'> | MessageOf<'pull-state'> | MessageOf<'pull-snapshot'>;

/** A page a partner sent, with the size of its frame. */
export interface Reply<R extends PageReply> {
  page: R;
  bytes: number;
}

interface PendingRequest {
  resolve(reply: Reply<PageReply>): void;
  reject(err: Error): void;
  cancelTimer: CancelTimer;
}

/**
 * One sync session: a library shared with one partner device over one stream. Symmetric: both
 * sides push their new changes, pull what they lack and answer the other's pulls.
 *
 * - Catch-up: while the partner advertises (hello, acks, heartbeats) more than this device
 *   holds, pull pages after this device's vectors and apply each in one transaction.
 * - Live push: once the partner has caught up with what this device had at hello, every
 *   committed change is read from the log and pushed. The log is the queue: at most
 *   `pushWindow` batches are in flight, so a slow partner costs no memory; it receives the
 *   rest as its acks arrive, or by pull after a reconnect.
 */
export class Session {
  state: SessionState = 'catching-up';
  /** What the partner holds, as far as this side knows (max-merged). */
  readonly remoteShared: VersionVector;
  readonly remoteOwned: VersionVector;
  lastSeenAt: number;
  /** When the heartbeat timer last fired (`tick`). */
  private lastTickAt: number;
  /** Since when the partner counts as silent: its last frame, moved on by this node's own stalls. */
  private silentSince: number;
  /** Whether a frame of the partner is being handled (the next ones wait, unread). */
  private handling = false;
  /**
   * Whether this device's own device-owned rows as the partner holds them are known to be alike
   * (see `ownRowsToCheck`): from the start if its hello held no more of them than confirmed,
   * else once the catch-up compared them.
   */
  ownRowsChecked: boolean;

  private readonly library: SessionLibrary;
  /**
   * Per owner (never this device), how far the partner's pages and pushes covered the owner's
   * rows from this device's cursor on: whatever the partner holds of them through there has
   * arrived. A coverage beyond the partner's newest row moves no cursor (`provenCoverage`), yet
   * it answers what the partner advertised: a partner that holds such a cursor (one synced by an
   * earlier version took them from owners' claims of their own rows) then neither looks ahead
   * for ever nor is refused as advertising what it does not serve, which cut it off.
   */
  private readonly coveredOwned = new Map<string, number>();
  /** How often `coveredOwned` grew: a page that covers more is progress (`CatchUp.pullFrom`). */
  ownedCoverageGrowth = 0;
  /**
   * Per owner, how far this device's pages covered the owner's rows for the partner, from its
   * cursor on: the partner then holds all this device holds of them, even where its cursor stays
   * below a version no row here carries (a row over the record limit, left out of pages, or a
   * removed device's row refused after its cutoff). Live push waits for it (`checkPartnerCaughtUp`).
   */
  private readonly servedOwned: VersionVector = {};
  /**
   * Per origin, the last position this device sent the partner on this session (pushed, served
   * in a page, or covered by a snapshot served): an ack of a position is evidence that the
   * partner holds it only once it was sent (see `sentThrough`).
   */
  private readonly sentShared: VersionVector = {};
  private readonly helloShared: VersionVector;
  private readonly helloOwned: VersionVector;
  private pushedShared: VersionVector | undefined;
  private readonly pushedOwned = new Map<string, number>();
  private inFlight = 0;
  /** Entries of unknown origins added to `remoteShared` / `remoteOwned` (MAX_UNKNOWN_ORIGINS). */
  private unknownOrigins = 0;
  private batchSeq = 0;
  private requestSeq = 0;
  private readonly pending = new Map<number, PendingRequest>();
  /** Size of the frame being handled (for page replies). */
  private frameBytes = 0;
  /** Pages served that the transport has not taken yet (MAX_QUEUED_PAGES). */
  private queuedPages = 0;
  /** Frames the read loop sent that the transport has not taken yet (MAX_QUEUED_FRAMES). */
  private queuedFrames = 0;
  /** Pushes committed changes the partner lacks, within the in-flight window (coalesced). */
  private readonly pump = coalescing(
    () => this.pushRound(),
    (err) => this.close(toSyncError(err)),
  );
  private stopHeartbeat: CancelTimer | undefined;
  private markEnded!: () => void;
  private readonly ended = new Promise<void>((resolve) => (this.markEnded = resolve));
  private previousHeartbeat: MessageOf<'heartbeat'> | undefined;
  /**
   * The vectors this side last sent (in an ack or a heartbeat; they only grow). A position this
   * side claims (a snapshot's vector, a coverage's `to`) must not exceed what it advertised, and
   * the partner holds it to that, so such a claim is preceded by a heartbeat where needed.
   */
  private advertised: { shared: VersionVector; owned: VersionVector } = { shared: {}, owned: {} };
  private readonly onAppended = () => this.pump();
  /** Per origin, the position of the last `heads` entry sent on this session. */
  private readonly headsSent = new Map<string, number>();
  /** The partner's heads waiting to be checked (per origin the highest), and whether a check runs. */
  private readonly headsToCheck = new Map<string, [number, Uint8Array]>();
  private checkingHeads = false;
  /** Heartbeats since this side last sent `heads`. */
  private heartbeatsSinceHeads = 0;
  /** Per origin, the highest position of the partner's `heads` checked on this session. */
  private readonly headsChecked = new Map<string, number>();
  /**
   * The partner's heads past what this device held when they were checked, checked again once it
   * holds them: per origin the first waiting (held first, so a partner that keeps writing while
   * this device lags is still confirmed step by step) and the latest (confirmed once writes stop).
   */
  private readonly headsBeyond = new Map<string, { first: [number, Uint8Array]; latest?: [number, Uint8Array] }>();
  /** Per owner, the version whose summary (`owned-digests`) went out on this session. */
  private readonly ownedDigestsSent = new Map<string, number>();
  /** Whether the partner takes `owned-digests` (3.1 or later: a 3.0 peer would end the session over one). */
  private readonly sendsOwnedDigests: boolean;
  /** The partner's summaries waiting to be compared (per owner the latest), and whether a comparison runs. */
  private readonly ownedDigestsToCheck = new Map<string, { version: number; claimed: Map<string, Uint8Array> }>();
  private checkingOwnedDigests = false;
  /** Per owner, the version of the partner's summary last compared on this session (each compared once). */
  private readonly ownedDigestsChecked = new Map<string, number>();
  /**
   * Owners whose rows the partner summarised otherwise than this device, with the version both
   * held: the catch-up pulls the partner's rows of them again, from the start.
   */
  private readonly ownedRepairs = new Map<string, { version: number; mismatch: string }>();
  /** Whether the partner's snapshots prove their vectors (3.2 or later: `proofs` of `snapshot-page`). */
  readonly provesSnapshots: boolean;
  /**
   * The partner's log no longer reaches back to this device, and its snapshots prove nothing
   * (before 3.2): it is not pulled for shared changes again on this session.
   */
  private sharedOutOfReach = false;
  /** Forked origins whose evidence pair went out on this session. */
  private readonly forkEvidenceSent = new Set<string>();
  /** Relays fork evidence: all of a fork new here, or the runs newly held of a known one. */
  private readonly onOriginForked = ({ origin }: OriginFork) => this.relayFork(origin);
  private readonly onForkedRuns = ({ origin, runs }: ForkedRuns) => this.relayFork(origin, runs);

  constructor(
    private readonly host: SessionHost,
    private readonly stream: FrameStream,
    private readonly frames: AsyncIterator<Uint8Array>,
    readonly device: string,
    remoteHello: MessageOf<'hello'>,
    /** `outbound` if this node opened the stream. */
    readonly direction: 'inbound' | 'outbound',
  ) {
    this.library = host.library;
    this.remoteShared = {};
    this.remoteOwned = {};
    this.learnAdvertised(this.remoteShared, remoteHello.shared);
    this.learnAdvertised(this.remoteOwned, remoteHello.owned);
    this.helloShared = this.library.versionVector();
    this.helloOwned = this.library.ownedVector();
    for (const [owner, version] of Object.entries(this.recorded(remoteHello.owned))) this.pushedOwned.set(owner, version);
    this.ownRowsChecked = (remoteHello.owned[this.library.deviceId] ?? 0) <= this.library.ownedConfirmed();
    this.sendsOwnedDigests = remoteHello.v[1] >= OWNED_DIGESTS_MINOR;
    this.provesSnapshots = remoteHello.v[1] >= SNAPSHOT_PROOFS_MINOR;
    this.lastSeenAt = host.now();
    this.lastTickAt = this.lastSeenAt;
    this.silentSince = this.lastSeenAt;
  }

  get peer(): string {
    return this.stream.remotePeer;
  }

  /** Runs the session until the stream ends or fails; errors are reported through the host. */
  start(): void {
    this.library.on('appended', this.onAppended);
    this.library.on('origin-forked', this.onOriginForked);
    this.library.on('forked-runs', this.onForkedRuns);
    this.stopHeartbeat = this.host.scheduler.setInterval(() => this.tick(), this.host.tuning.heartbeatMs);
    this.host.onAck(this, this.remoteShared);
    void this.readLoop();
    this.host.onPartnerAhead(this);
    this.checkPartnerCaughtUp();
    this.relayForks().catch((err) => this.close(toSyncError(err)));
    this.sendHeads().catch((err) => this.close(toSyncError(err)));
  }

  /**
   * What the partner holds of the shared log that this device may accept: `remoteShared` with
   * closed origins (a removed device's changes after its cutoff) left out, so their positions
   * are never pulled or waited for.
   */
  acceptableShared(): VersionVector {
    return this.library.acceptable(this.remoteShared);
  }

  /** Whether the partner advertises changes (shared or device-owned) this device lacks. */
  partnerAhead(): boolean {
    return (
      (!this.sharedOutOfReach && this.sharedLead()) ||
      this.ownedBehind(this.remoteOwned) ||
      this.ownRowsToCheck() !== undefined ||
      this.ownedRepairs.size > 0
    );
  }

  /** The catch-up needs a snapshot from a partner whose snapshots prove nothing: see `sharedOutOfReach`. */
  snapshotUnproven(): void {
    this.sharedOutOfReach = true;
  }

  /** Whether the partner holds shared changes this device lacks and cannot take from it (`snapshotUnproven`). */
  holdsOutOfReach(): boolean {
    return this.sharedOutOfReach && this.sharedLead();
  }

  /** Whether the partner holds shared changes this device lacks and may accept. */
  private sharedLead(): boolean {
    return isBehind(this.library.versionVector(), this.acceptableShared());
  }

  /** The owners whose rows the partner summarised otherwise than this device (see `receiveOwnedDigests`). */
  ownedToRepair(): [owner: string, version: number][] {
    return [...this.ownedRepairs].map(([owner, { version }]) => [owner, version]);
  }

  /** The catch-up pulled `owner`'s rows again: that mismatch is answered, also for later sessions (`RepairLedger`). */
  ownedRepaired(owner: string): void {
    const repair = this.ownedRepairs.get(owner);
    if (repair) this.host.repairLedger.add(repair.mismatch);
    this.ownedRepairs.delete(owner);
  }

  /**
   * The version of this device's own device-owned rows the partner holds, when the catch-up must
   * compare them with this device's first: the partner holds more of them than this device
   * knows to be alike (a restored or copied data directory; `Library.mergeOwnRows`), or, once
   * compared, more than this device ever wrote (another copy writes them).
   */
  ownRowsToCheck(): number | undefined {
    const self = this.library.deviceId;
    const theirs = this.remoteOwned[self] ?? 0;
    const alike = this.ownRowsChecked ? (this.library.ownedVector()[self] ?? 0) : this.library.ownedConfirmed();
    return theirs > alike ? theirs : undefined;
  }

  /**
   * This device holds what the partner advertised: tell it (an ack, so it starts pushing) and
   * go live.
   */
  async caughtUp(): Promise<void> {
    await this.sendAck(null);
    // What was pulled may have been a removal: what the partner must hold before live push is less.
    this.checkPartnerCaughtUp();
    if (this.state !== 'catching-up') return;
    this.state = 'live';
    this.host.onStateChange(this);
  }

  /** Pulls one page of shared changes after `after` (a partner under load may answer busy). */
  pullShared(after: VersionVector): Promise<Reply<MessageOf<'shared-page'>>> {
    return this.request({ t: 'pull-shared', library: this.library.id, req: 0, after, ...this.limits() });
  }

  /** Pulls one page of `owner`'s device-owned rows after version `after`. */
  pullState(owner: string, after: number): Promise<Reply<MessageOf<'state-page'>>> {
    return this.request({ t: 'pull-state', library: this.library.id, req: 0, owner, after, ...this.limits() });
  }

  /** Pulls one page of the partner's current shared rows after `after` (null: from the start). */
  pullSnapshot(after: SnapshotPosition | null): Promise<Reply<MessageOf<'snapshot-page'>>> {
    return this.request({ t: 'pull-snapshot', library: this.library.id, req: 0, after, ...this.limits() });
  }

  /**
   * Whether the partner is still heard on this session `ms` from now: it stays open and some
   * frame arrives meanwhile (it resolves early, false, if the session closes first).
   */
  async heardFor(ms: number): Promise<boolean> {
    const since = this.host.now();
    let cancel: CancelTimer | undefined;
    await Promise.race([this.ended, new Promise<void>((resolve) => (cancel = this.host.scheduler.setTimeout(resolve, ms)))]);
    cancel?.();
    return this.state !== 'closed' && this.lastSeenAt > since;
  }

  close(reason?: Error): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.markEnded();
    this.stopHeartbeat?.();
    this.library.off('appended', this.onAppended);
    this.library.off('origin-forked', this.onOriginForked);
    this.library.off('forked-runs', this.onForkedRuns);
    for (const request of this.pending.values()) {
      request.cancelTimer();
      request.reject(reason ?? new SyncError('STOPPED', 'session closed'));
    }
    this.pending.clear();
    if (reason instanceof SyncError && reason.code !== 'STOPPED' && !isPeerReported(reason)) {
      // Tell the partner why, best effort, then reset: nothing more will be read.
      void refuseStream(this.stream, this.library.id, reason, this.host.scheduler);
    } else {
      void this.stream.close();
    }
    this.host.onClosed(this, reason);
  }

  private async readLoop(): Promise<void> {
    try {
      for (;;) {
        const next = await this.frames.next();
        if (next.done) break;
        this.lastSeenAt = this.host.now();
        this.frameBytes = next.value.byteLength;
        const message = decodeMessage(next.value);
        if (message.library !== this.library.id) throw new ProtocolError('message names another library');
        this.handling = true;
        try {
          await this.handle(message);
        } finally {
          this.handling = false;
          this.lastSeenAt = this.host.now();
        }
        if (this.state === 'closed') return;
      }
      this.close();
    } catch (err) {
      this.close(toSyncError(err));
    }
  }

  private async handle(message: Message): Promise<void> {
    switch (message.t) {
      case 'changes':
        return this.receiveChanges(message);
      case 'state':
        return this.receiveState(message);
      case 'ack':
        if (message.batch !== null) this.inFlight = Math.max(0, this.inFlight - 1);
        this.learnRemote(message.shared, message.owned);
        this.pump();
        return;
      case 'heartbeat':
        this.learnRemote(message.shared, message.owned);
        this.antiEntropy(message);
        return;
      case 'forked':
        return this.receiveForked(message);
      case 'heads':
        // Checked beside the read loop: the check reads the log, which waits for any write
        // transaction, and frames (acks, pulls) must not wait for it.
        this.receiveHeads(message);
        return;
      case 'owned-digests':
        // Compared beside the read loop too: a summary not cached reads the owner's rows.
        this.receiveOwnedDigests(message);
        return;
      case 'pull-shared':
      case 'pull-state':
      case 'pull-snapshot':
        if (this.queuedPages >= MAX_QUEUED_PAGES || !this.host.mayServe(this)) {
          return this.sendBeside({ t: 'busy', library: this.library.id, req: message.req, retryAfterMs: BUSY_RETRY_MS });
        }
        return this.serve(message);
      case 'shared-page':
      case 'state-page':
      case 'snapshot-page': {
        const bytes = this.frameBytes;
        return this.settle(message.req, (p) => p.resolve({ page: message, bytes }));
      }
      case 'busy':
        return this.settle(message.req, (p) => p.reject(new BusyError(this.device, message.retryAfterMs)));
      case 'error': {
        const err = errorFromWire(message.code, message.message, message.removal);
        if (message.req !== null) return this.settle(message.req, (p) => p.reject(err));
        throw err;
      }
      default:
        throw new ProtocolError(`unexpected ${message.t} message in a running session`);
    }
  }

  private async serve(message: PullRequest): Promise<void> {
    const limits = {
      maxRecords: Math.min(message.maxRecords, MAX_PAGE_RECORDS),
      maxBytes: Math.min(message.maxBytes, MAX_PAGE_BYTES),
    };
    switch (message.t) {
      case 'pull-shared': {
        const page = await this.library.chunksAfter(message.after, limits);
        this.noteSent(page.chunks);
        return this.sendPage({
          t: 'shared-page',
          library: this.library.id,
          req: message.req,
          chunks: page.chunks.map(chunkToTuple),
          hasMore: page.hasMore,
          pruned: page.pruned.map((p) => [p.origin, p.requestedAfter, p.prunedThrough]),
        });
      }
      case 'pull-state': {
        const page = await this.library.ownedAfter(message.owner, message.after, limits);
        await this.advertise({}, { [message.owner]: page.to });
        mergeMax(this.servedOwned, { [message.owner]: page.to });
        this.checkPartnerCaughtUp();
        return this.sendPage({
          t: 'state-page',
          library: this.library.id,
          req: message.req,
          owner: message.owner,
          from: page.from,
          to: page.to,
          author: page.author,
          rows: page.rows.map(ownedToTuple),
          hasMore: page.hasMore,
        });
      }
      case 'pull-snapshot': {
        // Taken before the read: every change it covers is then in the rows read.
        const vector = this.library.versionVector();
        const page = await this.library.snapshotAfter(message.after, limits);
        mergeMax(this.sentShared, vector);
        const first = message.after === null;
        const total = first ? await this.library.sharedRowCount() : null;
        // The first page proves the positions the requester would adopt (what it advertised is at most what it holds).
        const proofs = first ? (await this.library.snapshotProofs(vector, this.remoteShared)).map(proofToTuple) : undefined;
        await this.advertise(vector, {});
        return this.sendPage({
          t: 'snapshot-page',
          library: this.library.id,
          req: message.req,
          vector,
          rows: page.rows.map(snapshotRowToTuple),
          next: page.next,
          total,
          ...(proofs ? { proofs } : {}),
        });
      }
    }
  }

  private async receiveChanges(message: MessageOf<'changes'>): Promise<void> {
    // The partner holds what it sends: never push those entries back to it.
    const sent: VersionVector = {};
    for (const [origin, , lastSeq] of message.chunks) sent[origin] = Math.max(sent[origin] ?? 0, lastSeq);
    this.learnRemote(sent, {});
    const result = await this.library.applyRemoteChunks(chunksOf(message.chunks));
    // An origin new here is known once its entries are held: its push cursor starts now, and
    // the partner's ack of it is recorded (both keep recorded origins only).
    this.learnRemote(sent, {});
    await this.sendBeside(this.ackMessage(message.batch));
    // A gap means this device is behind the partner: its pull fills the gap.
    if (result.gaps.length > 0) this.host.onPartnerAhead(this);
  }

  private async receiveState(message: MessageOf<'state'>): Promise<void> {
    const { owner, from, to } = message;
    checkClaim(this, owner, to);
    this.learnRemote({}, { [owner]: to });
    const held = this.library.ownedVector()[owner] ?? 0;
    if (from <= held && owner !== this.library.deviceId) {
      const rows = message.rows.map(ownedFromTuple);
      await this.library.applyRemoteOwned({ author: message.author, rows }, { owner, from, to: provenCoverage(from, rows) });
      this.noteOwnedCoverage(owner, to);
    }
    await this.sendBeside(this.ackMessage(message.batch));
    if (from > held) this.host.onPartnerAhead(this);
  }

  /**
   * Tells the partner the run this device's log ends at for each origin that moved since the
   * last `heads` of this session (all at its start), so a fork that positions do not show is
   * found within `HEADS_EVERY_HEARTBEATS` heartbeats (docs/protocol.md, "Fork evidence").
   */
  private async sendHeads(): Promise<void> {
    const moved = this.library.heads().filter(([origin, seq]) => this.headsSent.get(origin) !== seq);
    if (moved.length === 0) return;
    for (const [origin, seq] of moved) this.headsSent.set(origin, seq);
    await this.send({ t: 'heads', library: this.library.id, heads: moved });
  }

  /**
   * Summaries of owners' rows held here through the version the partner holds too, each owner
   * once per version on a session: the partner compares them with its own and pulls again what
   * it lacks (`owned-digests.ts`). Not the partner's own rows: it is their authority.
   */
  private async sendOwnedDigests(): Promise<void> {
    if (!this.sendsOwnedDigests) return;
    const digests: [string, number, string, Uint8Array][] = [];
    for (const [owner, version] of Object.entries(this.library.ownedVector())) {
      if (owner === this.device || version === 0 || this.remoteOwned[owner] !== version || this.ownedDigestsSent.get(owner) === version) continue;
      const held = await this.library.ownedDigests(owner, version);
      if (!held) continue;
      // The rest go with a later heartbeat.
      if (digests.length + held.size > MAX_OWNED_DIGESTS) break;
      this.ownedDigestsSent.set(owner, version);
      for (const [model, digest] of held) digests.push([owner, version, model, digest]);
    }
    if (digests.length > 0) await this.send({ t: 'owned-digests', library: this.library.id, digests });
  }

  /**
   * The partner's summaries of owners' rows, kept for comparison where this device holds the
   * owner through the same version (never its own rows: it is their authority), each owner and
   * version once per session, so a partner repeating a false summary gets one pull of the rows.
   */
  private receiveOwnedDigests(message: MessageOf<'owned-digests'>): void {
    const held = this.library.ownedVector();
    for (const [owner, version, model, digest] of message.digests) {
      if (owner === this.library.deviceId || held[owner] !== version || this.ownedDigestsChecked.get(owner) === version) continue;
      let claim = this.ownedDigestsToCheck.get(owner);
      if (claim?.version !== version) this.ownedDigestsToCheck.set(owner, (claim = { version, claimed: new Map() }));
      claim.claimed.set(model, digest);
    }
    if (this.checkingOwnedDigests || this.ownedDigestsToCheck.size === 0) return;
    this.checkingOwnedDigests = true;
    this.checkOwnedDigests()
      .catch((err) => this.close(toSyncError(err)))
      .finally(() => (this.checkingOwnedDigests = false));
  }

  private async checkOwnedDigests(): Promise<void> {
    for (const [owner, { version, claimed }] of this.ownedDigestsToCheck) {
      if (this.state === 'closed') return;
      this.ownedDigestsToCheck.delete(owner);
      // Undefined: this device holds another version of the owner by now.
      const held = await this.library.ownedDigests(owner, version);
      if (!held) continue;
      this.ownedDigestsChecked.set(owner, version);
      // Models this device does not have are not compared.
      const mine = (model: string) => held.get(model);
      const differing = [...claimed].filter(([model, digest]) => mine(model) !== undefined && !equalBytes(digest, mine(model)!));
      if (differing.length === 0) continue;
      const mismatch = [this.peer, owner, version, ...differing.sort(([a], [b]) => (a < b ? -1 : 1)).map(([m, d]) => `${m}:${bytesToHex(d)}:${bytesToHex(mine(m)!)}`)].join(' ');
      if (this.host.repairLedger.has(mismatch)) continue;
      this.ownedRepairs.set(owner, { version, mismatch });
      this.host.onPartnerAhead(this);
    }
  }

  /**
   * Shows the partner every fork its `heads` reveal: the run this device holds there instead,
   * pushed, one at a time. An origin is checked again on this session only at a later position
   * (an honest partner's heads only move forward), so no partner gets more this way than the
   * log it could pull. Heads arriving while a check runs wait, merged (one per origin).
   */
  private receiveHeads(message: MessageOf<'heads'>): void {
    for (const [origin, seq, id] of message.heads) {
      if (seq <= Math.max(this.headsChecked.get(origin) ?? 0, this.headsToCheck.get(origin)?.[0] ?? 0)) continue;
      if (this.headsToCheck.size >= MAX_VECTOR_ORIGINS && !this.headsToCheck.has(origin)) continue;
      this.headsToCheck.set(origin, [seq, id]);
    }
    this.checkHeadsSoon();
  }

  /** Heads the partner sent past what this device held are checked again once it holds them. */
  private recheckHeadsBeyond(): void {
    const held = this.library.versionVector();
    for (const [origin, { first, latest }] of this.headsBeyond) {
      const holds = held[origin] ?? 0;
      if (holds < first[0]) continue;
      const head = latest && holds >= latest[0] ? latest : first;
      if (head === first && latest) this.headsBeyond.set(origin, { first: latest });
      else this.headsBeyond.delete(origin);
      if (head[0] > (this.headsToCheck.get(origin)?.[0] ?? 0)) this.headsToCheck.set(origin, head);
    }
    this.checkHeadsSoon();
  }

  private checkHeadsSoon(): void {
    if (this.checkingHeads || this.headsToCheck.size === 0) return;
    this.checkingHeads = true;
    this.checkHeads()
      .catch((err) => this.close(toSyncError(err)))
      .finally(() => (this.checkingHeads = false));
  }

  private async checkHeads(): Promise<void> {
    while (this.headsToCheck.size > 0 && this.state !== 'closed') {
      const [origin, [seq, id]] = this.headsToCheck.entries().next().value!;
      this.headsToCheck.delete(origin);
      // Kept per origin held here only (and `headsBeyond` bounded): a partner can name origins without end.
      if (this.host.isRecordedOrigin(origin)) this.headsChecked.set(origin, seq);
      const head = await this.library.compareHead(origin, seq, id);
      if (head.kind === 'same') this.confirm(origin, seq);
      if (head.kind === 'beyond') this.waitForHead(origin, [seq, id]);
      if (head.kind !== 'contradicted') continue;
      // (A session closed meanwhile sends nothing: `send`.)
      this.inFlight += 1;
      await this.send({ t: 'changes', library: this.library.id, batch: ++this.batchSeq, chunks: [chunkToTuple(head.run)] });
    }
  }

  private waitForHead(origin: string, head: [number, Uint8Array]): void {
    const waiting = this.headsBeyond.get(origin);
    if (!waiting) {
      if (this.headsBeyond.size < MAX_VECTOR_ORIGINS) this.headsBeyond.set(origin, { first: head });
    } else if (head[0] > waiting.first[0]) {
      waiting.latest = head;
    }
  }

  /**
   * The partner's `heads` named the run this device holds ending at `seq`. Runs commit to the
   * ones before them, so the partner holds this device's history of the origin through there, and
   * only that is acknowledged for pruning. A position merely advertised (hello, acks, heartbeats)
   * may hold another history, a fork not found yet: pruning on it deleted this device's run at the
   * first forked position, the fork's evidence.
   */
  private confirm(origin: string, seq: number): void {
    this.host.onConfirmed(this, { [origin]: seq });
  }

  private async receiveForked(message: MessageOf<'forked'>): Promise<void> {
    const evidence = message.evidence && (chunksOf(message.evidence) as [Chunk, Chunk]);
    await this.library.applyForkEvidence(message.origin, evidence, chunksOf(message.runs));
  }

  /**
   * Sends the partner the fork evidence of `origin`: the runs that prove the fork, then `runs`
   * (by default every run held of it from the fork on, or from what the partner holds, read a
   * few at a time), in pages within the batch limits.
   */
  private relayFork(origin: string, runs?: readonly Chunk[]): void {
    this.sendForkEvidence(origin, runs).catch((err) => this.close(toSyncError(err)));
  }

  /** Relays every fork known here, one origin after another (reads stay a few runs at a time). */
  private async relayForks(): Promise<void> {
    for (const origin of await this.library.forkedOrigins()) {
      if (this.state === 'closed') return;
      await this.sendForkEvidence(origin);
    }
  }

  private async sendForkEvidence(origin: string, runs?: readonly Chunk[]): Promise<void> {
    const fork = await this.library.forkEvidence(origin);
    if (!fork) return;
    const base = { t: 'forked', library: this.library.id, origin } as const;
    // The proof once per session: the partner, reading in order, knows the fork from then on.
    if (!this.forkEvidenceSent.has(origin)) {
      this.forkEvidenceSent.add(origin);
      await this.send({ ...base, evidence: [chunkToTuple(fork.held), chunkToTuple(fork.other)], runs: [] });
    }
    const sendRuns = async (some: readonly Chunk[]) => {
      for (const page of runPages(some, this.limits())) await this.send({ ...base, evidence: null, runs: page.map(chunkToTuple) });
    };
    if (runs) return sendRuns(runs);
    for await (const some of this.library.forkedRuns(origin, fork.seq, this.remoteShared[origin] ?? 0)) {
      if (this.state === 'closed') return;
      await sendRuns(some);
    }
  }

  private async pushRound(): Promise<void> {
    await this.pushShared();
    await this.pushOwned();
  }

  private async pushShared(): Promise<void> {
    const limits = this.limits();
    while (this.pushedShared && this.state !== 'closed' && this.inFlight < this.host.tuning.pushWindow) {
      const page = await this.library.chunksAfter(this.pushedShared, limits);
      if (page.chunks.length === 0) return;
      for (const c of page.chunks) this.pushedShared[c.origin] = Math.max(this.pushedShared[c.origin] ?? 0, c.lastSeq);
      this.noteSent(page.chunks);
      this.inFlight += 1;
      await this.send({
        t: 'changes',
        library: this.library.id,
        batch: ++this.batchSeq,
        chunks: page.chunks.map(chunkToTuple),
      });
    }
  }

  private async pushOwned(): Promise<void> {
    if (!this.pushedShared) return;
    const limits = this.limits();
    for (const [owner, held] of Object.entries(this.library.ownedVector())) {
      if (owner === this.device) continue;
      let sent = this.pushedOwned.get(owner) ?? 0;
      while (sent < held && this.state !== 'closed' && this.inFlight < this.host.tuning.pushWindow) {
        const page = await this.library.ownedAfter(owner, sent, limits);
        if (page.to <= sent) break;
        await this.advertise({}, { [owner]: page.to });
        this.inFlight += 1;
        await this.send({
          t: 'state',
          library: this.library.id,
          batch: ++this.batchSeq,
          owner,
          from: page.from,
          to: page.to,
          author: page.author,
          rows: page.rows.map(ownedToTuple),
        });
        sent = Math.max(page.to, this.pushedOwned.get(owner) ?? 0);
        this.pushedOwned.set(owner, sent);
      }
    }
  }

  /**
   * Records what the partner holds. This never starts a pull by itself: pushes in flight make
   * the partner look ahead for a moment; gaps, hello and heartbeats decide when to pull.
   */
  private learnRemote(shared: VersionVector, owned: VersionVector): void {
    this.learnAdvertised(this.remoteShared, shared);
    this.learnAdvertised(this.remoteOwned, owned);
    // Push cursors concern only what this device holds: recorded origins and owners.
    for (const [owner, version] of Object.entries(this.recorded(owned))) {
      this.pushedOwned.set(owner, Math.max(this.pushedOwned.get(owner) ?? 0, version));
    }
    if (this.pushedShared) mergeMax(this.pushedShared, this.recorded(shared));
    if (Object.keys(shared).length > 0) this.host.onAck(this, this.remoteShared);
    this.checkPartnerCaughtUp();
  }

  /**
   * Periodic catch-up: what the partner already held at its previous heartbeat has had a
   * whole interval to arrive by push; if it has not, pull it.
   */
  private antiEntropy(heartbeat: MessageOf<'heartbeat'>): void {
    const previous = this.previousHeartbeat;
    this.previousHeartbeat = heartbeat;
    if (!previous) return;
    const behind = isBehind(this.library.versionVector(), this.library.acceptable(previous.shared));
    if (behind || this.ownedBehind(previous.owned) || this.ownRowsToCheck() !== undefined) {
      this.host.onPartnerAhead(this);
    }
  }

  /**
   * Live push starts once the partner holds everything this device had at hello, but for removed
   * devices' changes: this device may hold some stamped after the cutoff (taken before it learned
   * of the removal) that the partner refuses; live push sends it the others.
   */
  private checkPartnerCaughtUp(): void {
    if (this.pushedShared || this.state === 'closed') return;
    const heldOwned = { ...this.remoteOwned };
    mergeMax(heldOwned, this.servedOwned);
    if (isBehind(this.remoteShared, this.library.withoutRemovedWriters(this.helloShared)) || isBehind(heldOwned, this.helloOwned)) return;
    this.pushedShared = { ...this.remoteShared };
    this.pump();
  }

  /**
   * Raises one of the partner's vectors; an origin not known here (`host.isKnownOrigin`) is
   * added only while fewer than MAX_UNKNOWN_ORIGINS were.
   */
  private learnAdvertised(target: VersionVector, advertised: VersionVector): void {
    for (const [origin, seq] of Object.entries(advertised)) {
      if (seq <= (target[origin] ?? 0)) continue;
      if (!(origin in target) && !this.host.isKnownOrigin(origin)) {
        if (this.unknownOrigins >= MAX_UNKNOWN_ORIGINS) continue;
        this.unknownOrigins += 1;
      }
      target[origin] = seq;
    }
  }

  private recorded(vector: VersionVector): VersionVector {
    return filterOrigins(vector, (origin) => this.host.isRecordedOrigin(origin));
  }

  private ownedBehind(advertised: VersionVector): boolean {
    return this.ownedBeyond(advertised).length > 0;
  }

  /**
   * The owners (never this device) of which the partner advertises rows beyond both this
   * device's cursor and what the partner covered already, with the version it advertises.
   */
  ownedToPull(): [owner: string, advertised: number][] {
    return this.ownedBeyond(this.remoteOwned);
  }

  private ownedBeyond(advertised: VersionVector): [string, number][] {
    const held = this.library.ownedVector();
    return Object.entries(advertised).filter(
      ([owner, v]) => owner !== this.library.deviceId && v > Math.max(held[owner] ?? 0, this.coveredOwned.get(owner) ?? 0),
    );
  }

  /**
   * The last position of `origin` this device sent the partner on this session. A partner's
   * ack beyond it proves nothing it received from here: a member that acks changes it never
   * received (a false claim) made a leaving device stop before its leave reached anyone
   * (simulator seed 50131).
   */
  sentThrough(origin: string): number {
    return this.sentShared[origin] ?? 0;
  }

  private noteSent(chunks: readonly Chunk[]): void {
    for (const c of chunks) this.sentShared[c.origin] = Math.max(this.sentShared[c.origin] ?? 0, c.lastSeq);
  }

  /**
   * The partner's page or push covered `owner`'s rows through `to`, from at most this
   * device's cursor on (see `coveredOwned`).
   */
  noteOwnedCoverage(owner: string, to: number): void {
    if (owner === this.library.deviceId || to <= (this.coveredOwned.get(owner) ?? 0)) return;
    this.coveredOwned.set(owner, to);
    this.ownedCoverageGrowth += 1;
  }

  private tick(): void {
    // A tick that comes late found this node itself stalled (its host busy): frames that arrived
    // meanwhile wait unread, so that time is no silence of the partner.
    // Nor is the time this side spends handling a frame (applying a page under load): the next
    // frames wait for it, unread.
    const now = this.host.now();
    const stalled = Math.max(0, now - this.lastTickAt - this.host.tuning.heartbeatMs);
    this.lastTickAt = now;
    this.silentSince = this.handling ? now : Math.max(this.silentSince, this.lastSeenAt) + stalled;
    if (now - this.silentSince > this.host.tuning.peerTimeoutMs) {
      this.close(new TimeoutError(`partner ${this.device} sent nothing for ${this.host.tuning.peerTimeoutMs} ms`));
      return;
    }
    const withHeads = ++this.heartbeatsSinceHeads >= HEADS_EVERY_HEARTBEATS;
    if (withHeads) this.heartbeatsSinceHeads = 0;
    this.recheckHeadsBeyond();
    this.sendHeartbeat()
      .then(() => (withHeads ? this.sendHeads().then(() => this.sendOwnedDigests()) : undefined))
      .catch((err) => this.close(toSyncError(err)));
  }

  private sendHeartbeat(): Promise<void> {
    return this.send({ t: 'heartbeat', library: this.library.id, ...this.vectorsToAdvertise() });
  }

  private sendAck(batch: number | null): Promise<void> {
    return this.send(this.ackMessage(batch));
  }

  private ackMessage(batch: number | null): MessageOf<'ack'> {
    return { t: 'ack', library: this.library.id, batch, ...this.vectorsToAdvertise() };
  }

  private vectorsToAdvertise(): { shared: VersionVector; owned: VersionVector } {
    this.advertised = { shared: this.library.versionVector(), owned: this.library.ownedVector() };
    return this.advertised;
  }

  /**
   * Advertises this side's vectors first unless the partner already knows it holds these: the
   * heartbeat is queued before the frame that follows (`sendBeside`), which is all that matters.
   */
  private async advertise(shared: VersionVector, owned: VersionVector): Promise<void> {
    if (isBehind(this.advertised.shared, shared) || isBehind(this.advertised.owned, owned)) {
      await this.sendBeside({ t: 'heartbeat', library: this.library.id, ...this.vectorsToAdvertise() });
    }
  }

  /** Limits of a push batch or a pull; within the page bounds, so a batch always fits a frame. */
  private limits(): { maxRecords: number; maxBytes: number } {
    return {
      maxRecords: Math.min(this.host.tuning.batchRecords, MAX_PAGE_RECORDS),
      maxBytes: Math.min(this.host.tuning.batchBytes, MAX_PAGE_BYTES),
    };
  }

  private request<R extends PageReply>(message: PullRequest): Promise<Reply<R>> {
    const req = ++this.requestSeq;
    return new Promise<Reply<R>>((resolve, reject) => {
      const cancelTimer = this.host.scheduler.setTimeout(() => {
        this.pending.delete(req);
        reject(new TimeoutError(`partner ${this.device} did not answer ${message.t} in ${this.host.tuning.requestTimeoutMs} ms`));
      }, this.host.tuning.requestTimeoutMs);
      this.pending.set(req, { resolve: resolve as (reply: Reply<PageReply>) => void, reject, cancelTimer });
      this.send({ ...message, req }).catch((err) => {
        cancelTimer();
        this.pending.delete(req);
        reject(toSyncError(err));
      });
    });
  }

  private settle(req: number, fn: (pending: PendingRequest) => void): void {
    const pending = this.pending.get(req);
    if (!pending) throw new ProtocolError(`reply to unknown request ${req}`);
    this.pending.delete(req);
    pending.cancelTimer();
    fn(pending);
  }

  private async send(message: Message): Promise<void> {
    if (this.state === 'closed') return;
    await this.stream.send(encodeMessage(message));
  }

  /**
   * Sends a frame without waiting for the transport to take more. The read loop sends this way
   * (acks, pages, busy, the heartbeat before a claim): `stream.send` queues the frame at once, in
   * order, and only its promise waits for the partner to read. A read loop that waited would
   * deadlock with a partner doing the same: each stream's buffer full of frames (pushes, pages)
   * the other side does not read, because its read loop waits to send too.
   */
  private async sendBeside(message: Message, onTaken?: () => void): Promise<void> {
    if (this.queuedFrames >= MAX_QUEUED_FRAMES) {
      // A partner that reads nothing while it sends on: wait for it, as any send does.
      try {
        return await this.send(message);
      } finally {
        onTaken?.();
      }
    }
    this.queuedFrames += 1;
    this.send(message)
      .catch((err) => this.close(toSyncError(err)))
      .finally(() => {
        this.queuedFrames -= 1;
        onTaken?.();
      });
  }

  /** A page for a pull, sent beside the read loop and counted until the transport takes it. */
  private sendPage(message: PageReply): Promise<void> {
    this.queuedPages += 1;
    return this.sendBeside(message, () => (this.queuedPages -= 1));
  }
}

/**
 * A partner's claim that it holds `owner` through `to` (a coverage) must not exceed what it
 * advertised before (hello, acks, heartbeats): an honest side advertises first, and a claim
 * beyond would move this device's cursor past versions the partner never showed it holds.
 */
export function checkClaim(session: Session, owner: string, to: number): void {
  const advertised = session.remoteOwned[owner] ?? 0;
  if (to > advertised) {
    throw new ProtocolError(`partner ${session.device} claims ${owner} through version ${to} but advertised ${advertised}`);
  }
}

/**
 * How far a coverage `(from, to]` of an owner's rows, sent with `rows`, may move this device's
 * cursor for the owner: through its newest row, whoever sends it, the owner included. An honest
 * holder serves the row that carries the version it holds (the row written last keeps the
 * newest version, and a cursor never moves past a row), so the rest of a coverage is a claim no
 * row backs. A cursor taken from one, even from the owner, would make this device skip the
 * owner's rows written at those versions later and advertise them: the owner then refuses it
 * as a partner claiming its rows without serving them, and its own partners the same way.
 */
export function provenCoverage(from: number, rows: readonly OwnedRowUpdate[]): number {
  return rows.reduce((newest, row) => Math.max(newest, row.version), from);
}

/** Runs in pages within `limits` (entries and bytes), each page holding one run at least. */
function runPages(runs: readonly Chunk[], limits: ReadLimits): Chunk[][] {
  const pages: Chunk[][] = [];
  let page: Chunk[] = [];
  let entries = 0;
  let bytes = 0;
  for (const run of runs) {
    const size = run.entries.byteLength + CHUNK_OVERHEAD_BYTES;
    const count = run.lastSeq - run.firstSeq + 1;
    if (page.length > 0 && (entries + count > limits.maxRecords || bytes + size > limits.maxBytes)) {
      pages.push(page);
      [page, entries, bytes] = [[], 0, 0];
    }
    page.push(run);
    entries += count;
    bytes += size;
  }
  if (page.length > 0) pages.push(page);
  return pages;
}

function snapshotRowToTuple({ model, state }: SnapshotRow): SnapshotRowTuple {
  return [model, state.id, state.hlc, state.deleted, state.values, state.fieldHlcs, state.upsertHlc, state.deleteHlc];
}

export function snapshotRowFromTuple([model, id, hlc, deleted, values, fieldHlcs, upsertHlc, deleteHlc]: SnapshotRowTuple): SnapshotRow {
  return { model, state: { id, hlc, deleted, values: values as StoredValues, fieldHlcs, upsertHlc, deleteHlc } };
}

export function chunkToTuple(c: Chunk): ChunkTuple {
  return [c.origin, c.firstSeq, c.lastSeq, c.entries, c.prev, c.sig, c.author];
}

export function chunksOf(tuples: readonly ChunkTuple[]): Chunk[] {
  return tuples.map(([origin, firstSeq, lastSeq, entries, prev, sig, author]) => ({ origin, firstSeq, lastSeq, entries, prev, sig, author }));
}

export function ownedToTuple(r: OwnedRowUpdate): OwnedRowTuple {
  return [r.model, r.id, r.owner, r.version, r.hlc, r.deleted, r.values, r.cert];
}

export function ownedFromTuple([model, id, owner, version, hlc, deleted, values, cert]: OwnedRowTuple): OwnedRowUpdate {
  return { model, id, owner, version, hlc, deleted, values: values as OwnedRowUpdate['values'], cert };
}
