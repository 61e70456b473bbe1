import { BusyError, ProtocolError, type SyncError, toSyncError } from '../errors.js';
import type { SnapshotCheckpoint, SnapshotPosition, SnapshotRow, VectorProof } from '../library/snapshot.js';
import { proofFromTuple, type RunProof } from '../peer-log/signed-runs.js';
import type { ApplyResult, OwnedApplyResult, OwnedCoverage, OwnedRowUpdate, SignedOwnedRows } from '../library/remote-apply.js';
import type { RemoteCounts } from '../library/counts.js';
import type { SyncCheckpoint, SyncRun } from '../library/run-store.js';
import type { SyncProgress } from '../library/types.js';
import type { Chunk } from '../peer-log/chunk.js';
import type { VersionVector } from '../peer-log/types.js';
import { checkClaim, chunksOf, ownedFromTuple, provenCoverage, type Session, snapshotRowFromTuple } from '../replication/session.js';
import { isBehind } from '../replication/vectors.js';
import { isBadInput, isPeerReported } from '../replication/wire-errors.js';
import type { Scheduler } from '../runtime/runtime.js';
import { coalescing } from '../util/coalescing.js';

/**
 * What a catch-up uses of its library (the library engine provides it): the vectors held, the
 * applies of pulled pages (each with its checkpoint, in one transaction), the merge of this
 * device's own rows as a partner holds them, and the sync history.
 */
export interface BackfillTarget {
  readonly deviceId: string;
  versionVector(): VersionVector;
  ownedVector(): VersionVector;
  /** The vector to pull after (by default the one held): closed origins are never asked for again. */
  pullAfter(vector?: VersionVector): VersionVector;
  /** The writer no partner may move (none while the current one is retired). */
  appendedWriter(): string | undefined;
  ownedConfirmed(): number;
  applyRemoteChunks(chunks: readonly Chunk[], counts?: RemoteCounts): Promise<ApplyResult>;
  applyRemoteOwned(page: SignedOwnedRows, coverage?: OwnedCoverage, counts?: RemoteCounts): Promise<OwnedApplyResult>;
  applySnapshot(rows: readonly SnapshotRow[], checkpoint: SnapshotCheckpoint, counts?: RemoteCounts): Promise<void>;
  proveSnapshotVector(vector: VersionVector, proofs: readonly RunProof[]): Promise<VectorProof>;
  snapshotCheckpoint(): Promise<SnapshotCheckpoint | undefined>;
  mergeOwnRows(page: SignedOwnedRows, coverage: OwnedCoverage, counts?: RemoteCounts): Promise<boolean>;
  settleOwnRows(through: number, diverged: boolean): Promise<number>;
  /** Whether this library, joined by invite, has not completed its first sync yet. */
  backfillPending(): Promise<boolean>;
  backfillDone(): Promise<void>;
  readonly runs: {
    insert(run: Omit<SyncRun, 'id'>): Promise<number>;
    update(id: number, run: Omit<SyncRun, 'id'>): Promise<void>;
    markInterrupted(): Promise<void>;
  };
}

export interface CatchUpHost {
  readonly library: BackfillTarget;
  /** The library's open sessions, whatever their state. */
  sessions(): Session[];
  /** The node's timers (waiting out a busy partner). */
  readonly scheduler: Scheduler;
  now(): number;
  onProgress(progress: SyncProgress): void;
  /** Pulling `owner`'s rows again from `session`'s partner took `rows` this device lacked (`repairOwned`). */
  onOwnedRepaired(session: Session, owner: string, rows: number): void;
  /** The state or a run changed: report status. */
  onChange(): void;
}

/** Page latencies are averaged with this weight on the newest one. */
const LATENCY_WEIGHT = 0.3;

type Run = Omit<SyncRun, 'id'> & {
  id: number;
  counts: RemoteCounts;
  done: number;
  total: number;
  phase: SyncProgress['phase'];
  /** When the run's record was last written (it is kept current while the run goes on). */
  savedAt: number;
};

/** A running run's record is rewritten at most this often, so a killed run keeps its figures. */
const SAVE_RUN_EVERY_MS = 1_000;

/**
 * Catch-up of one library, backfill included: pulls what partners hold and this device lacks,
 * from one partner at a time, page by page. Each page is applied in one transaction together
 * with the position it reaches (version vectors, per-owner versions, or the snapshot
 * checkpoint), so a crash or a lost partner costs at most the page in flight: the next run,
 * from any partner, continues from there.
 *
 * Order: device-owned rows of every owner the partner holds, then shared changes after this
 * device's vector — or, where the partner's log was pruned past it, a snapshot of the current
 * shared rows followed by the log after the snapshot's vector.
 *
 * Partner choice: the partner that served the previous page while it still has something to
 * give; otherwise, among partners ahead of this device and not busy, the one with the lowest
 * average page latency (one never asked counts as the fastest, so every partner gets tried).
 */
export class CatchUp {
  private pending: boolean;
  private failure: SyncError | null = null;
  private running = false;
  private stopped = false;
  /** The run in progress, so `stop()` can wait for it to record how it ended. */
  private finished: Promise<void> = Promise.resolve();
  private current: string | undefined;
  private readonly busyUntil = new Map<string, number>();
  private readonly latencyMs = new Map<string, number>();
  private wake: (() => void) | undefined;
  /** Repairs of an owner's rows run so far (`repairOwned`). */
  private repairs = 0;
  /** Starts a run, or asks the running one to look again (coalesced). */
  readonly trigger = coalescing(
    () => (this.finished = this.run()),
    () => undefined,
  );

  private constructor(
    private readonly host: CatchUpHost,
    backfillPending: boolean,
  ) {
    this.pending = backfillPending;
  }

  static async open(host: CatchUpHost): Promise<CatchUp> {
    await host.library.runs.markInterrupted();
    return new CatchUp(host, await host.library.backfillPending());
  }

  /** `backfilling` until the first sync after joining completed, `error` after a failed run. */
  get state(): 'backfilling' | 'catching-up' | 'error' | 'idle' {
    if (this.failure) return 'error';
    if (this.pending) return 'backfilling';
    return this.running ? 'catching-up' : 'idle';
  }

  get error(): SyncError | null {
    return this.failure;
  }

  /** Stops pulling: the run in flight ends (as `interrupted`) once its page settles. */
  stop(): void {
    this.stopped = true;
    this.wake?.();
  }

  /** Resolves once no run is in progress any more. */
  async settled(): Promise<void> {
    await this.finished;
  }

  /** A session opened: look again at once, also if the run is waiting out busy partners. */
  poke(): void {
    this.wake?.();
    this.trigger();
  }

  private async run(): Promise<void> {
    let run: Run | undefined;
    let completed = false;
    try {
      for (;;) {
        if (this.stopped) break;
        const sessions = this.host.sessions().filter((s) => s.state !== 'closed');
        for (const session of sessions) {
          if (session.state === 'catching-up' && !session.partnerAhead()) {
            await session.caughtUp().catch((err: unknown) => session.close(toSyncError(err)));
          }
        }
        const ahead = sessions.filter((s) => s.partnerAhead());
        if (ahead.length === 0) {
          // Caught up with every open session; with none open, or with changes held by a
          // partner that cannot hand them over (before 3.2), the run could not finish.
          completed = sessions.length > 0 && !sessions.some((s) => s.holdsOutOfReach());
          if (this.pending && completed) await this.completeBackfill();
          break;
        }
        const session = this.choose(ahead);
        if (!session) {
          await this.untilSomeoneIsFree(ahead);
          continue;
        }
        run ??= await this.startRun();
        this.running = true;
        this.host.onChange();
        run.total = Math.max(run.total, run.done + estimate(this.host.library, session));
        const pulling = run;
        await this.pullFrom(session, pulling).catch((err: unknown) => this.onPullFailed(session, pulling, err));
      }
      if (run) await this.endRun(run, completed ? 'done' : 'interrupted');
      if (this.failure) {
        this.failure = null;
        this.host.onChange();
      }
    } catch (err) {
      this.failure = toSyncError(err);
      if (run) await this.endRun(run, 'failed', this.failure.message).catch(() => undefined);
    } finally {
      this.running = false;
      this.current = undefined;
      this.host.onChange();
    }
  }

  /**
   * Busy: ask again after its delay, or another partner meanwhile. A lost or silent partner
   * (its session closed, whether before or after the pull failed: `NETWORK`, `TIMEOUT`,
   * `STOPPED`), one that sent bad data, or one that reported an error: end its session
   * (reported like any failed session) and go on with another. Anything else is this device's
   * own failure and ends the run.
   */
  private onPullFailed(session: Session, run: Run, err: unknown): void {
    this.current = undefined;
    if (err instanceof BusyError) {
      this.busyUntil.set(session.peer, this.host.now() + err.retryAfterMs);
      run.busyReplies += 1;
      return;
    }
    const error = toSyncError(err);
    if (session.state === 'closed' || isTransient(error) || isBadInput(error) || isPeerReported(error)) {
      session.close(error);
      return;
    }
    throw error;
  }

  private choose(ahead: Session[]): Session | undefined {
    const now = this.host.now();
    const free = ahead.filter((s) => (this.busyUntil.get(s.peer) ?? 0) <= now);
    const sticky = free.find((s) => s.peer === this.current);
    if (sticky) return sticky;
    free.sort((a, b) => (this.latencyMs.get(a.peer) ?? 0) - (this.latencyMs.get(b.peer) ?? 0));
    this.current = free[0]?.peer;
    return free[0];
  }

  private async untilSomeoneIsFree(ahead: Session[]): Promise<void> {
    const now = this.host.now();
    const soonest = Math.min(...ahead.map((s) => this.busyUntil.get(s.peer) ?? now));
    await new Promise<void>((resolve) => {
      const cancel = this.host.scheduler.setTimeout(resolve, Math.max(0, soonest - now));
      this.wake = () => {
        cancel();
        resolve();
      };
    });
    this.wake = undefined;
  }

  /**
   * Pulls everything `session`'s partner advertises. A partner that advertises changes but
   * serves none of them would keep this loop spinning: that is bad input. Serving is bringing
   * records, moving a cursor or covering more of an owner's rows: a device-owned page may rightly
   * bring no row (one over the record limit is left out of pages) and a partner may advertise
   * more meanwhile (it holds more).
   */
  private async pullFrom(session: Session, run: Run): Promise<void> {
    const library = this.host.library;
    const before = { done: run.done, shared: library.versionVector(), owned: library.ownedVector(), covered: session.ownedCoverageGrowth, repairs: this.repairs };
    await this.pullAll(session, run);
    const served =
      run.done > before.done ||
      isBehind(before.shared, library.versionVector()) ||
      isBehind(before.owned, library.ownedVector()) ||
      session.ownedCoverageGrowth > before.covered ||
      // A repair answers a summary, not an advertised lead: it may rightly bring nothing.
      this.repairs > before.repairs;
    if (!this.stopped && !served && session.state !== 'closed' && session.partnerAhead()) {
      throw new ProtocolError(`partner ${session.device} advertises changes it does not serve`);
    }
  }

  private async pullAll(session: Session, run: Run): Promise<void> {
    const library = this.host.library;
    await this.checkOwnRows(session, run);
    for (const [owner, advertised] of session.ownedToPull()) {
      await this.pullOwned(session, run, owner, library.ownedVector()[owner] ?? 0, advertised, async (page, coverage) => {
        const to = provenCoverage(coverage.from, page.rows);
        const { withheld } = await library.applyRemoteOwned(page, { ...coverage, to }, run.counts);
        session.noteOwnedCoverage(owner, coverage.to);
        // Rows withheld (their owner's key is not known yet) come again with a later pull.
        return withheld > 0 ? coverage.from : to;
      });
    }
    await this.pullShared(session, run);
    // After what the partner advertises: a summary (false, or of rows no repair changes) never
    // holds the log up.
    for (const [owner, version] of session.ownedToRepair()) {
      if (this.stopped || session.state === 'closed') return;
      await this.repairOwned(session, run, owner, version);
    }
  }

  /** The partner's shared log after this device's vector, or its snapshot where the log no longer reaches back. */
  private async pullShared(session: Session, run: Run): Promise<void> {
    const library = this.host.library;
    while (!this.stopped && session.state !== 'closed' && isBehind(library.versionVector(), session.acceptableShared())) {
      const checkpoint = await library.snapshotCheckpoint();
      const before = run.done;
      if (!checkpoint && (await this.pullLog(session, run))) {
        // An empty page: the partner serves nothing more; `pullFrom` judges what it advertised.
        if (run.done === before) return;
        continue;
      }
      // Before 3.2 a snapshot's vector could claim an honest device's origin beyond what it wrote.
      if (!session.provesSnapshots || !(await this.snapshotFrom(session, run, checkpoint))) {
        // Another partner serves what this one cannot prove.
        session.snapshotUnproven();
        return;
      }
    }
  }

  /**
   * This device's own device-owned rows as the partner holds them, when it holds more of them
   * than this device knows to be alike (a restored or copied data directory): merged page by
   * page from the confirmed version, then settled, so this device's rows in that range get
   * versions the partner does not hold yet (`own-rows.ts`). Until settled, the comparison
   * starts again with the next run.
   */
  private async checkOwnRows(session: Session, run: Run): Promise<void> {
    const library = this.host.library;
    const through = session.ownRowsToCheck();
    if (through === undefined) return;
    let diverged = false;
    let newestServed = 0;
    const reached = await this.pullOwned(session, run, library.deviceId, library.ownedConfirmed(), through, async (page, coverage) => {
      for (const row of page.rows) newestServed = Math.max(newestServed, row.version);
      if (await library.mergeOwnRows(page, coverage, run.counts)) diverged = true;
      // Judged as a whole once the pages reach `through` (below).
      return coverage.to;
    });
    if (session.state === 'closed' || this.stopped) return;
    // An honest partner's pages reach what it advertised: it holds at least that much, and its
    // last page covers all it holds. Pages that stop short would have this check begin again
    // at once, for ever.
    if (reached < through) {
      throw new ProtocolError(
        `partner ${session.device} advertises this device's own rows through version ${through} but its pages stop at ${reached}`,
      );
    }
    // This device's version moves past `through`: an honest partner holds the row that carries
    // version `through` (a cursor moves only through rows served, `provenCoverage`), so a claim
    // no row backs is refused before it can move the counter (a bare coverage could push it to
    // the position limit).
    if (newestServed < through) {
      throw new ProtocolError(
        `partner ${session.device} claims this device's own rows through version ${through} but serves rows only through ${newestServed}`,
      );
    }
    await library.settleOwnRows(through, diverged);
    session.ownRowsChecked = true;
  }

  /**
   * The partner summarised `owner`'s rows otherwise than this device, at the version both hold
   * (`owned-digests.ts`): a page served here before left some out, or either side holds older
   * versions of some. All of the partner's rows of `owner` are pulled again, from the start; each
   * one missing here, or newer than the one held, is taken (it is signed, so a partner can only
   * bring the owner's own rows). That summary is then settled for the session: a partner
   * repeating a false one costs one pull of its rows (pages through the newest row each serves,
   * as any pull: one without rows ends it), and the catch-up from others waits meanwhile. Whether
   * a summary was false cannot be told: the partner's rows may change at the same version
   * meanwhile (it repairs too), so its pages need not add up to what it summarised.
   */
  private async repairOwned(session: Session, run: Run, owner: string, version: number): Promise<void> {
    const library = this.host.library;
    let taken = 0;
    await this.pullOwned(session, run, owner, 0, version, async (page, coverage) => {
      const to = provenCoverage(coverage.from, page.rows);
      const { applied } = await library.applyRemoteOwned(page, { ...coverage, to }, run.counts);
      taken += applied;
      // Through the newest row served, as any pull: a page without rows ends the repair (a
      // partner claiming one version a page would otherwise take a round trip per version).
      return to;
    });
    this.repairs += 1;
    session.ownedRepaired(owner);
    if (taken > 0) this.host.onOwnedRepaired(session, owner, taken);
  }

  /**
   * Pulls `owner`'s device-owned rows after version `after` up to `through`, one page at a time,
   * each applied with `apply`, which returns the version the page took this device to; returns
   * the version reached (less than `through` when the session closed, the catch-up stopped or
   * the partner served, or proved, nothing more).
   */
  private async pullOwned(
    session: Session,
    run: Run,
    owner: string,
    after: number,
    through: number,
    apply: (page: { author: string | null; rows: OwnedRowUpdate[] }, coverage: OwnedCoverage) => Promise<number>,
  ): Promise<number> {
    let held = after;
    while (held < through && session.state !== 'closed' && !this.stopped) {
      const from = held;
      const { page, bytes } = await this.timed(session, () => session.pullState(owner, from));
      if (page.owner !== owner || page.from !== from) throw new ProtocolError('state page does not answer the request');
      checkClaim(session, owner, page.to);
      if (page.to <= from) break;
      const reached = await apply({ author: page.author, rows: page.rows.map(ownedFromTuple) }, { owner, from, to: page.to });
      this.advance(run, session, 'owned', page.rows.length, bytes);
      if (reached <= from) break;
      held = reached;
    }
    return held;
  }

  /**
   * Pulls log pages while the partner has more, asking for the next page before applying the
   * current one (its position is known from the page), so the partner reads while this device
   * writes. Returns false when the partner's log no longer reaches back to this device.
   */
  private async pullLog(session: Session, run: Run): Promise<boolean> {
    const library = this.host.library;
    // What each page is asked after, as `pullAfter` was when the pull went out: so a page is
    // judged against what was closed when it was asked for.
    let requested = library.pullAfter();
    let reply = this.timed(session, () => session.pullShared(requested));
    for (;;) {
      const { page, bytes } = await reply;
      if (page.pruned.length > 0) return false;
      if (page.chunks.length === 0) return true;
      const reached = { ...requested };
      for (const [origin, , lastSeq] of page.chunks) reached[origin] = Math.max(reached[origin] ?? 0, lastSeq);
      // Origins closed since the last pull (a fork found meanwhile) are asked for no more.
      const next = library.pullAfter(reached);
      const more = page.hasMore && session.state !== 'closed';
      if (more) reply = prefetched(this.timed(session, () => session.pullShared(next)));
      // The page starts right after `requested`: if nothing moved past it, the page was bogus.
      // Refusing a removed device's changes made after its removal closes their origin (the
      // partner may have taken them before it learned of the removal): that moves the vector
      // pulled after, once; entries of an origin closed before are nothing new.
      // A fork found closes its origin the same way, also one found while the page was on its
      // way (fork evidence, a partner's heads): so a page is judged against what was closed when
      // it was asked for. Runs left out because their author's member row has not arrived yet
      // are nothing new either, and no fault of the partner: the row comes in a later page (of
      // another origin), and a later pull brings them again.
      const applied = await library.applyRemoteChunks(chunksOf(page.chunks), run.counts);
      if (applied.withheld === 0 && !isBehind(requested, library.pullAfter())) {
        throw new ProtocolError(`partner ${session.device} sent a page of nothing new`);
      }
      const records = page.chunks.reduce((n, [, first, last]) => n + last - first + 1, 0);
      this.advance(run, session, 'shared', records, bytes);
      if (!more || this.stopped) return true;
      requested = next;
    }
  }

  /**
   * Reads the partner's current shared rows page by page. The snapshot covers the vector the
   * partner held at its first page, which that page proves: every later page reflects at least
   * that. A page from a partner that does not hold that vector (after a failover) restarts the
   * snapshot from it. Returns false, having applied nothing, when the partner cannot prove its
   * vector (`proveSnapshotVector`: positions it holds without their proofs).
   */
  private async snapshotFrom(session: Session, run: Run, resumed: SnapshotCheckpoint | undefined): Promise<boolean> {
    const library = this.host.library;
    let checkpoint = resumed;
    let reply = this.timed(session, () => session.pullSnapshot(checkpoint?.next ?? null));
    for (;;) {
      const { page, bytes } = await reply;
      checkSnapshotVector(session, page.vector, library.appendedWriter(), library.versionVector());
      if (checkpoint && isBehind(page.vector, checkpoint.vector)) {
        checkpoint = undefined;
        reply = this.timed(session, () => session.pullSnapshot(null));
        continue;
      }
      if (page.next !== null && checkpoint?.next && !positionAfter(page.next, checkpoint.next)) {
        throw new ProtocolError(`partner ${session.device} sent a snapshot page that does not move forward`);
      }
      if (checkpoint) {
        checkpoint = { ...checkpoint, next: page.next };
      } else {
        // The snapshot's vector is proven before anything of it is applied (its first page).
        const { heads, unproven } = await library.proveSnapshotVector(page.vector, (page.proofs ?? []).map(proofFromTuple));
        if (unproven.length > 0) return false;
        checkpoint = { vector: page.vector, proofs: [...heads.values()].map((head) => head.proof), next: page.next };
      }
      // The next page is read by the partner while this one is applied.
      if (page.next !== null) reply = prefetched(this.timed(session, () => session.pullSnapshot(page.next)));
      if (page.total !== null) run.total = Math.max(run.total, run.done + page.total);
      await library.applySnapshot(page.rows.map(snapshotRowFromTuple), checkpoint, run.counts);
      this.advance(run, session, 'snapshot', page.rows.length, bytes);
      if (page.next === null || this.stopped) return true;
    }
  }

  private async timed<R>(session: Session, pull: () => Promise<R>): Promise<R> {
    const start = this.host.now();
    const reply = await pull();
    const took = this.host.now() - start;
    const average = this.latencyMs.get(session.peer);
    this.latencyMs.set(session.peer, average === undefined ? took : average + LATENCY_WEIGHT * (took - average));
    return reply;
  }

  private advance(run: Run, session: Session, phase: SyncProgress['phase'], records: number, bytes: number): void {
    if (!run.peers.includes(session.peer)) run.peers.push(session.peer);
    run.done += records;
    run.bytes += bytes;
    run.phase = phase;
    Object.assign(run, run.counts);
    this.host.onProgress({ kind: run.kind, phase, done: run.done, total: Math.max(run.total, run.done) });
    if (this.host.now() - run.savedAt >= SAVE_RUN_EVERY_MS) {
      run.savedAt = this.host.now();
      void this.host.library.runs.update(run.id, run).catch(() => undefined);
    }
  }

  private async startRun(): Promise<Run> {
    const library = this.host.library;
    const shared = library.versionVector();
    const owned = library.ownedVector();
    const checkpoint = await library.snapshotCheckpoint();
    const nothingHeld = Object.keys(shared).length === 0 && Object.keys(owned).length === 0 && !checkpoint;
    const resumedFrom: SyncCheckpoint | null = nothingHeld
      ? null
      : { shared, owned, snapshot: checkpoint?.next ? { model: checkpoint.next[0], id: checkpoint.next[1] } : null };
    const run = {
      kind: this.pending ? ('backfill' as const) : ('catch-up' as const),
      startedAt: this.host.now(),
      endedAt: null,
      peers: [],
      added: 0,
      updated: 0,
      deleted: 0,
      bytes: 0,
      busyReplies: 0,
      outcome: 'running' as const,
      resumedFrom,
      counts: { added: 0, updated: 0, deleted: 0 },
      done: 0,
      total: 0,
      phase: 'owned' as const,
      savedAt: this.host.now(),
    };
    return { ...run, id: await library.runs.insert(run) };
  }

  private async endRun(run: Run, outcome: 'done' | 'failed' | 'interrupted', error?: string): Promise<void> {
    Object.assign(run, run.counts, { endedAt: this.host.now(), outcome, ...(error === undefined ? {} : { error }) });
    await this.host.library.runs.update(run.id, run);
    // The estimate counts versions, not rows: a finished run reports what it really took.
    if (outcome === 'done' && run.done > 0) this.host.onProgress({ kind: run.kind, phase: run.phase, done: run.done, total: run.done });
  }

  private async completeBackfill(): Promise<void> {
    await this.host.library.backfillDone();
    this.pending = false;
    this.host.onChange();
  }
}

/**
 * A snapshot's vector is a claim of positions: it must not exceed what the partner advertised
 * (it advertises before each page), and it cannot hold changes of this device's current writer
 * that this device does not hold (a snapshot never moves the counter this device appends to: see
 * `LibraryEngine.applySnapshot`; a retired writer is an origin like any other, even while current).
 */
function checkSnapshotVector(session: Session, vector: VersionVector, writer: string | undefined, held: VersionVector): void {
  if (isBehind(session.remoteShared, vector)) {
    throw new ProtocolError(`partner ${session.device} sent a snapshot of a vector beyond what it advertised`);
  }
  if (writer !== undefined && (vector[writer] ?? 0) > (held[writer] ?? 0)) {
    throw new ProtocolError(`partner ${session.device} sent a snapshot claiming changes of this device that it does not hold`);
  }
}

/** A request made ahead of its use: if it fails and is never awaited, that is not an error. */
function prefetched<T>(reply: Promise<T>): Promise<T> {
  reply.catch(() => undefined);
  return reply;
}

/** Records the partner advertises beyond what this device holds (shared and device-owned). */
function estimate(library: BackfillTarget, session: Session): number {
  let total = 0;
  const shared = library.versionVector();
  for (const [origin, seq] of Object.entries(session.acceptableShared())) total += Math.max(0, seq - (shared[origin] ?? 0));
  const owned = library.ownedVector();
  for (const [owner, version] of session.ownedToPull()) total += version - (owned[owner] ?? 0);
  return total;
}

/** Whether `position` comes after `previous` in SQLite's order (text compares as UTF-8 bytes). */
function positionAfter([model, id]: SnapshotPosition, [prevModel, prevId]: SnapshotPosition): boolean {
  return model > prevModel || (model === prevModel && compareUtf8(id, prevId) > 0);
}

const utf8 = new TextEncoder();

function compareUtf8(a: string, b: string): number {
  const x = utf8.encode(a);
  const y = utf8.encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return x.length - y.length;
}

/** Failures of the partner or the link: another partner may serve. */
function isTransient(err: SyncError): boolean {
  return err.code === 'TIMEOUT' || err.code === 'NETWORK' || err.code === 'STOPPED';
}
