/**
 * Helpers for the backfill tests: bulk datasets written in large transactions, progress
 * recording, and reading a library file's log chunks directly.
 */
import Database from 'better-sqlite3';
import { join } from 'node:path';
import type { Library, SyncProgress, SyncRun, VersionVector } from '../../src/index.js';

/** How many records of each kind a dataset writes (all optional, default 0). */
export interface DatasetSpec {
  /** Row-level LWW notes created, then overwritten (whole-row upsert) and deleted. */
  notes?: number;
  noteOverwrites?: number;
  noteDeletes?: number;
  /** Field-level LWW profiles created, then partially updated. */
  profiles?: number;
  profileUpdates?: number;
  /** Union tags (id from the natural key). */
  tags?: number;
  /** Device-owned volumes of the writing device, then updated and deleted. */
  volumes?: number;
  volumeUpdates?: number;
  volumeDeletes?: number;
}

/** What a dataset wrote: its ids, and how many writes of each kind (shared ones hit the log). */
export interface Dataset {
  prefix: string;
  spec: Required<DatasetSpec>;
  noteIds: string[];
  profileIds: string[];
  tagIds: string[];
  volumeIds: string[];
  /** Shared rows created (each once; none is recreated after a delete). */
  sharedCreates: number;
  /** Shared writes that changed a live row (overwrites, partial updates). */
  sharedUpdates: number;
  sharedDeletes: number;
  /** Device-owned rows written (live or tombstone: each is one row of the owner). */
  ownedRows: number;
  ownedLive: number;
}

const pad = (i: number) => String(i).padStart(7, '0');

/** Operations of a dataset, to be run `perTransaction` at a time. */
type Op = (tx: Parameters<Parameters<Library['transaction']>[0]>[0]) => Promise<unknown>;

/**
 * Writes a dataset with `prefix` in its ids: every create first, then overwrites, updates and
 * deletes of rows created before, `perTransaction` writes per transaction (a bulk import).
 */
export async function writeDataset(lib: Library, prefix: string, input: DatasetSpec, perTransaction = 5_000): Promise<Dataset> {
  const spec: Required<DatasetSpec> = {
    notes: 0,
    noteOverwrites: 0,
    noteDeletes: 0,
    profiles: 0,
    profileUpdates: 0,
    tags: 0,
    volumes: 0,
    volumeUpdates: 0,
    volumeDeletes: 0,
    ...input,
  };
  if (spec.noteOverwrites + spec.noteDeletes > spec.notes) throw new Error('more note overwrites and deletes than notes');
  if (spec.profileUpdates > spec.profiles || spec.volumeUpdates + spec.volumeDeletes > spec.volumes) throw new Error('bad dataset');
  const noteIds = Array.from({ length: spec.notes }, (_, i) => `${prefix}-n-${pad(i)}`);
  const profileIds = Array.from({ length: spec.profiles }, (_, i) => `${prefix}-p-${pad(i)}`);
  const volumeIds = Array.from({ length: spec.volumes }, (_, i) => `${prefix}-v-${pad(i)}`);
  const tagIds: string[] = [];
  const ops: Op[] = [];
  for (const id of noteIds) ops.push((tx) => tx.upsert('note', { id, title: `title ${id}`, body: id.length % 2 ? null : `body of ${id}` }));
  for (const id of profileIds) ops.push((tx) => tx.upsert('profile', { id, name: `name ${id}`, color: 'red', score: 1 }));
  for (let i = 0; i < spec.tags; i++) {
    ops.push(async (tx) => tagIds.push((await tx.upsert('tag', { label: `${prefix}-t-${pad(i)}` })).id));
  }
  for (const id of volumeIds) ops.push((tx) => tx.upsert('volume', { id, path: `/vol/${id}`, bytes: 1 }));
  // Overwrites from the start of the id range, deletes from its end: disjoint rows.
  for (const id of noteIds.slice(0, spec.noteOverwrites)) ops.push((tx) => tx.upsert('note', { id, title: `overwritten ${id}`, body: 'v2' }));
  for (const id of noteIds.slice(noteIds.length - spec.noteDeletes)) ops.push((tx) => tx.delete('note', id));
  for (const id of profileIds.slice(0, spec.profileUpdates)) ops.push((tx) => tx.update('profile', id, { color: 'blue' }));
  for (const id of volumeIds.slice(0, spec.volumeUpdates)) ops.push((tx) => tx.update('volume', id, { bytes: 2 }));
  for (const id of volumeIds.slice(volumeIds.length - spec.volumeDeletes)) ops.push((tx) => tx.delete('volume', id));
  for (let start = 0; start < ops.length; start += perTransaction) {
    const slice = ops.slice(start, start + perTransaction);
    await lib.transaction(async (tx) => {
      for (const op of slice) await op(tx);
    });
  }
  return {
    prefix,
    spec,
    noteIds,
    profileIds,
    tagIds,
    volumeIds,
    sharedCreates: spec.notes + spec.profiles + spec.tags,
    sharedUpdates: spec.noteOverwrites + spec.profileUpdates,
    sharedDeletes: spec.noteDeletes,
    ownedRows: spec.volumes,
    ownedLive: spec.volumes - spec.volumeDeletes,
  };
}

export interface ProgressRecord extends SyncProgress {
  /** Date.now() when the event was emitted. */
  at: number;
}

/** Records every 'progress' event of `lib` from now on. */
export function recordProgress(lib: Library): ProgressRecord[] {
  const events: ProgressRecord[] = [];
  lib.on('progress', (p) => events.push({ ...p, at: Date.now() }));
  return events;
}

export function totalOf(vector: VersionVector): number {
  return Object.values(vector).reduce((n, v) => n + v, 0);
}

/** Every run of `lib`'s history with its kind, for readable failures. */
export function describeRuns(runs: readonly SyncRun[]): string {
  return JSON.stringify(runs.map((r) => ({ ...r, resumedFrom: r.resumedFrom && '…' })));
}

/** The `sync_log` chunks of a library file (its node stopped), as [origin, firstSeq, lastSeq]. */
export function storedChunks(dataDir: string, library: string): Array<[string, number, number]> {
  const db = new Database(join(dataDir, 'libraries', `${library}.sqlite`), { readonly: true, fileMustExist: true });
  try {
    const rows = db.prepare('SELECT origin, first_seq, last_seq FROM sync_log ORDER BY origin, first_seq').all() as Array<{
      origin: string;
      first_seq: number;
      last_seq: number;
    }>;
    return rows.map((r) => [r.origin, r.first_seq, r.last_seq]);
  } finally {
    db.close();
  }
}

/** A `sync_meta` value of a library file (its node stopped or killed). */
export function storedMeta(dataDir: string, library: string, key: string): string | undefined {
  const db = new Database(join(dataDir, 'libraries', `${library}.sqlite`), { readonly: true, fileMustExist: true });
  try {
    const row = db.prepare('SELECT value FROM sync_meta WHERE key = ?').get(key) as { value: string } | undefined;
    return row?.value;
  } finally {
    db.close();
  }
}

/** Whether `chunks` of `origin` tile exactly 1..n: no gap, no overlap (no entry held twice). */
export function tilesExactly(chunks: ReadonlyArray<[string, number, number]>, origin: string, n: number): boolean {
  let next = 1;
  for (const [o, first, last] of chunks) {
    if (o !== origin) continue;
    if (first !== next || last < first) return false;
    next = last + 1;
  }
  return next === n + 1;
}
