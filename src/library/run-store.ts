import type { Kysely } from 'kysely';
import type { VersionVector } from '../peer-log/types.js';
import type { InternalTables } from '../storage/schema.js';

/** What a run resumed from: the vectors held when it started (a backfill's checkpoint). */
export interface SyncCheckpoint {
  shared: VersionVector;
  owned: VersionVector;
  /** A snapshot read in progress: rows after this position are still to come. */
  snapshot: { model: string; id: string } | null;
}

export type SyncRunOutcome = 'running' | 'done' | 'failed' | 'interrupted';

/** One backfill or catch-up run, as `lib.syncHistory()` lists it. */
export interface SyncRun {
  id: number;
  /** `backfill`: the library's first complete sync after joining; `catch-up`: any later one. */
  kind: 'backfill' | 'catch-up';
  startedAt: number;
  endedAt: number | null;
  /** Partner PeerIds pulled from, in the order they served (several after a failover). */
  peers: string[];
  added: number;
  updated: number;
  deleted: number;
  /** Bytes of the pages received. */
  bytes: number;
  /** Pulls a partner answered `busy` (it was serving as many catch-ups as it allows). */
  busyReplies: number;
  outcome: SyncRunOutcome;
  /** The checkpoint the run started from; null when it started from nothing. */
  resumedFrom: SyncCheckpoint | null;
  /** Why the run failed, for `failed`. */
  error?: string;
}

type Db = Kysely<InternalTables>;

const MAX_RUNS_KEPT = 1_000;

/** The columns a run's progress changes (everything but its identity and start). */
function progressColumns(run: Omit<SyncRun, 'id'>) {
  return {
    ended_at: run.endedAt,
    peers: JSON.stringify(run.peers),
    added: run.added,
    updated: run.updated,
    deleted: run.deleted,
    bytes: run.bytes,
    busy_replies: run.busyReplies,
    outcome: run.outcome,
    error: run.error ?? null,
  };
}

/**
 * The library's backfill and catch-up runs (`sync_runs`), as sync history: the catch-up writes
 * them while it runs, `lib.syncHistory()` reads them.
 */
export class RunStore {
  constructor(private readonly db: Db) {}

  /** Records a run that starts; returns its id. */
  async insert(run: Omit<SyncRun, 'id'>): Promise<number> {
    const row = await this.db
      .insertInto('sync_runs')
      .values({
        kind: run.kind,
        started_at: run.startedAt,
        resumed_from: run.resumedFrom === null ? null : JSON.stringify(run.resumedFrom),
        ...progressColumns(run),
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    // History is bounded: the oldest runs go.
    await this.db.deleteFrom('sync_runs').where('id', '<=', row.id - MAX_RUNS_KEPT).execute();
    return row.id;
  }

  /** Rewrites the progress of run `id`. */
  async update(id: number, run: Omit<SyncRun, 'id'>): Promise<void> {
    await this.db.updateTable('sync_runs').set(progressColumns(run)).where('id', '=', id).execute();
  }

  /** Runs a crash or kill left `running` did not end well: they were interrupted. */
  async markInterrupted(): Promise<void> {
    await this.db.updateTable('sync_runs').set({ outcome: 'interrupted' }).where('outcome', '=', 'running').execute();
  }

  /** Past and running runs, oldest first (at most the last `MAX_RUNS_KEPT`). */
  async read(): Promise<SyncRun[]> {
    const rows = await this.db.selectFrom('sync_runs').selectAll().orderBy('id').execute();
    return rows.map((r) => ({
      id: r.id,
      kind: r.kind as SyncRun['kind'],
      startedAt: r.started_at,
      endedAt: r.ended_at,
      peers: JSON.parse(r.peers) as string[],
      added: r.added,
      updated: r.updated,
      deleted: r.deleted,
      bytes: r.bytes,
      busyReplies: r.busy_replies,
      outcome: r.outcome as SyncRunOutcome,
      resumedFrom: r.resumed_from === null ? null : (JSON.parse(r.resumed_from) as SyncCheckpoint),
      ...(r.error === null ? {} : { error: r.error }),
    }));
  }
}
