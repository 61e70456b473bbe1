/**
 * Backfill and catch-up (src/backfill/catch-up.ts): the in-memory network (real libp2p on
 * 127.0.0.1 where a node talks to a child process), real SQLite files, no sleeps as
 * synchronisation (every wait polls a condition with a deadline, or waits for a child's line).
 * Convergence is asserted as digest equality.
 *
 * 1. a 200 000-record library backfills into a joiner in the background: joinLibrary resolves
 *    while it is `backfilling`; synced(), progress (owned before shared), one history run;
 * 2. a joiner killed (SIGKILL) mid-backfill resumes from its checkpoint after a restart (log
 *    and snapshot);
 * 3. failover: the serving partner stops mid-backfill, another member finishes it (log and
 *    snapshot paths); the same when it stops answering (frozen with SIGSTOP, connection open);
 * 4. a member lagging past the pruned log catches up from a snapshot, and so does a new joiner;
 * 5. writes on two members during a backfill all reach the joiner (log and snapshot paths);
 * 6. a partner serving at most one catch-up answers the second joiner busy; both complete;
 * 7. synced({ signal }) rejects with ABORTED, and with STOPPED when the node stops; it resolves
 *    at once for a library with no partners.
 */
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Library, LibraryStatus, SyncProgress, SyncRun } from '../src/index.js';
import { ensureBuilt, killRunningChildren, LineChild, makeTempDir, removeTempDirs, REPO_ROOT } from './helpers/child-process.js';
import { type ClusterNodeOptions, fastSync, startNode, stopAllNodes, stopNode, useMemoryTransport, waitFor, waitForConvergence } from './helpers/cluster.js';
import { recordProgress, storedChunks, storedMeta, tilesExactly, totalOf, writeDataset } from './helpers/backfill.js';
import { engineOf } from '../src/library/library.js';

useMemoryTransport();
/** For the nodes that talk to a child process (which runs `createSyncNode`, on libp2p). */
const onLibp2p: ClusterNodeOptions = { transport: 'libp2p' };

afterEach(async () => {
  await killRunningChildren();
  await stopAllNodes();
  await removeTempDirs();
});

const CHILD = join(REPO_ROOT, 'test', 'fixtures', 'backfill-child.mjs');
/** The models of helpers/cluster.ts as plain inputs, for a child process. */
const MODEL_INPUTS = [
  { name: 'note', ownership: 'shared', conflict: 'lww', fields: { title: 'text', body: { type: 'text', nullable: true } } },
  {
    name: 'profile',
    ownership: 'shared',
    conflict: 'lww-field',
    fields: { name: 'text', color: { type: 'text', nullable: true }, score: { type: 'integer', nullable: true } },
  },
  { name: 'tag', ownership: 'shared', conflict: 'union', naturalKey: ['label'], fields: { label: 'text' } },
  { name: 'volume', ownership: 'device', fields: { path: 'text', bytes: 'integer' } },
];

let entry: string;
beforeAll(async () => {
  entry = await ensureBuilt();
}, 180_000);

type ChildLine =
  | { t: 'ready'; peerId: string; deviceId: string; libraryId: string; state: string }
  | ({ t: 'progress' } & SyncProgress)
  | {
      t: 'synced';
      digest: string;
      vector: Record<string, number>;
      owned: Record<string, number>;
      history: SyncRun[];
      log: { runs: Record<string, Array<[number, number]>>; pruned: unknown[] };
    }
  | { t: 'failed'; message: string; code?: string };

/** A backfill-child.mjs process and the lines it printed. */
function startChild(dataDir: string, invite?: string, sync: object = noPruning) {
  const lines: ChildLine[] = [];
  const child = new LineChild(CHILD, [JSON.stringify({ entry, dataDir, models: MODEL_INPUTS, invite, sync })], (line) => {
    lines.push(JSON.parse(line) as ChildLine);
  });
  const of = <T extends ChildLine['t']>(t: T) => lines.filter((l): l is Extract<ChildLine, { t: T }> => l.t === t);
  return { child, lines, of };
}

const SERVING_CHILD = join(REPO_ROOT, 'test', 'fixtures', 'serving-child.mjs');

type ServingLine =
  | { t: 'ready'; peerId: string; deviceId: string; libraryId: string; invites: [string, string] }
  | { t: 'written'; vector: Record<string, number>; owned: Record<string, number>; noteIds: [string, string]; volumeIds: [string, string] };

/** A serving-child.mjs process (a member writing `notes` and `volumes` rows) and its lines. */
async function startServingChild(spec: { notes: number; volumes: number }, sync: object = noPruning) {
  const lines: ServingLine[] = [];
  const options = { entry, dataDir: await makeTempDir('lsync-serving-'), models: MODEL_INPUTS, sync, ...spec };
  const child = new LineChild(SERVING_CHILD, [JSON.stringify(options)], (line) => {
    lines.push(JSON.parse(line) as ServingLine);
  });
  const line = <T extends ServingLine['t']>(t: T) => lines.find((l): l is Extract<ServingLine, { t: T }> => l.t === t);
  return { child, line };
}

/** Pruning effectively off. */
const noPruning = { ...fastSync, pruneIntervalMs: 3_600_000 };

/** Checks the progress events of one run: phases in order, done strictly increasing. */
function expectOrderedProgress(events: readonly SyncProgress[], phases: SyncProgress['phase'][]): void {
  expect(events.length).toBeGreaterThan(0);
  const seen: SyncProgress['phase'][] = [];
  for (const e of events) if (seen[seen.length - 1] !== e.phase) seen.push(e.phase);
  expect(seen).toEqual(phases);
  for (let i = 1; i < events.length; i++) {
    // A finished run ends with one more event: the same `done`, and `total` equal to it.
    const closing = i === events.length - 1 && events[i]!.done === events[i - 1]!.done && events[i]!.total === events[i]!.done;
    if (!closing) expect(events[i]!.done).toBeGreaterThan(events[i - 1]!.done);
  }
  for (const e of events) expect(e.total).toBeGreaterThanOrEqual(e.done);
}

function sameVector(x: Record<string, number>, y: Record<string, number>): boolean {
  const keys = new Set([...Object.keys(x), ...Object.keys(y)]);
  return [...keys].every((k) => x[k] === y[k]);
}

/**
 * Waits until the libraries hold the same vectors (cheap to poll), then for equal digests
 * (digests read every row: polling them while a partner applies a backlog slows it down).
 */
async function converge(libs: Library[], timeoutMs = 45_000): Promise<string> {
  await waitFor(
    () => libs.every((l) => sameVector(l.versionVector(), libs[0]!.versionVector()) && sameVector(engineOf(l).ownedVector(), engineOf(libs[0]!).ownedVector())),
    'equal vectors',
    timeoutMs,
  );
  return waitForConvergence(libs, timeoutMs);
}

/** Rejects if `promise` has not settled within `ms` (a deadline, not a synchronising sleep). */
async function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

async function stateOf(lib: Library): Promise<LibraryStatus['state']> {
  return (await lib.status()).state;
}

describe('backfill', () => {
  it('backfills 200 000 records in the background: join resolves at once, synced(), progress and history', async () => {
    const a = await startNode();
    const b = await startNode(undefined, { sync: noPruning });
    const libA = await a.createLibrary({ name: 'big' });
    const data = await writeDataset(libA, 'a', {
      notes: 90_000,
      noteOverwrites: 2_000,
      noteDeletes: 4_000,
      profiles: 40_000,
      profileUpdates: 4_000,
      tags: 20_000,
      volumes: 50_000,
      volumeUpdates: 2_000,
      volumeDeletes: 2_000,
    });
    expect(data.sharedCreates + data.ownedRows).toBe(200_000);

    const libB = await b.joinLibrary(await libA.createInvite());
    const progress = recordProgress(libB);
    const statuses: Array<{ at: number; state: LibraryStatus['state'] }> = [];
    libB.on('status', (s) => statuses.push({ at: Date.now(), state: s.state }));
    // joinLibrary resolved before the backfill: the library is backfilling and holds no shared
    // record yet (device-owned rows come first, so the notes come seconds later).
    expect(await stateOf(libB)).toBe('backfilling');
    expect(await libB.get('note', data.noteIds[0]!)).toBeUndefined();
    // A writes nothing more: its member rows (itself, B) were written by the invite and the join.
    const digestA = await libA.digest();

    await libB.synced();
    expect(await stateOf(libB)).toBe('ready');
    expect(await libB.digest()).toBe(digestA);
    expect(libB.versionVector()).toEqual(libA.versionVector());
    expect(engineOf(libB).ownedVector()).toEqual(engineOf(libA).ownedVector());

    const runs = await libB.syncHistory();
    expect(runs, JSON.stringify(runs.map(({ kind, outcome, error, peers }) => ({ kind, outcome, error, peers })))).toHaveLength(1);
    const [run] = runs as [SyncRun];
    const members = (await libA.members()).length;
    expect(members).toBe(2);
    expect(run).toMatchObject({
      kind: 'backfill',
      outcome: 'done',
      resumedFrom: null,
      peers: [a.peerId],
      // Every shared row once (members included), and the owner's live rows as they stand.
      added: data.sharedCreates + members + data.ownedLive,
      updated: data.sharedUpdates,
      deleted: data.sharedDeletes,
    });
    expect(run.bytes).toBeGreaterThan(0);
    expect(run.endedAt).toBeGreaterThanOrEqual(run.startedAt);

    // Device-owned rows first, then the shared log; done counts every record received.
    expectOrderedProgress(progress, ['owned', 'shared']);
    expect(progress.every((p) => p.kind === 'backfill')).toBe(true);
    const owned = progress.filter((p) => p.phase === 'owned');
    expect(owned[owned.length - 1]!.done).toBe(data.ownedRows);
    const last = progress[progress.length - 1]!;
    expect(last.done).toBe(data.ownedRows + totalOf(libA.versionVector()));
    // total is an estimate from the vectors (it counts owned versions, not rows) until the run
    // ends: then it is what the run took.
    expect(last.total).toBe(last.done);
    // Backfilling until its first complete sync: every status reported before the last page
    // was applied says so.
    const during = statuses.filter((s) => s.at < last.at);
    expect(during.length).toBeGreaterThan(0);
    expect(during.map((s) => s.state)).toEqual(during.map(() => 'backfilling'));
    expect(statuses.at(-1)!.state).toBe('ready');
  }, 120_000);

  it('resumes from its checkpoint after being killed (SIGKILL) mid-backfill, without duplicates', async () => {
    const a = await startNode(undefined, onLibp2p);
    const libA = await a.createLibrary({ name: 'crash' });
    const data = await writeDataset(libA, 'a', {
      notes: 30_000,
      noteOverwrites: 1_000,
      noteDeletes: 1_000,
      profiles: 10_000,
      profileUpdates: 1_000,
      tags: 5_000,
      volumes: 10_000,
      volumeDeletes: 500,
    });
    const dirB = await makeTempDir('lsync-crash-b-');
    // Small pages: the shared phase takes dozens of transactions.
    const sync = { ...noPruning, batchRecords: 1_000 };

    const first = startChild(dirB, await libA.createInvite(), sync);
    await first.child.waitFor(() => first.of('ready').length > 0, 'the child joined', 30_000);
    const { deviceId: deviceB, libraryId } = first.of('ready')[0]!;
    expect(libraryId).toBe(libA.id);
    expect(first.of('ready')[0]!.state).toBe('backfilling');
    // Owned rows are done and at least one page of the shared log is committed: kill it.
    await first.child.waitFor(() => first.of('progress').some((p) => p.phase === 'shared'), 'a shared page applied', 30_000);
    await first.child.kill('SIGKILL');
    expect(first.of('synced')).toHaveLength(0);
    const seqA = libA.versionVector()[a.deviceId]!;
    const doneAtKill = first.of('progress').at(-1)!.done;
    expect(doneAtKill).toBeLessThan(data.ownedRows + seqA);
    // What the killed child committed: a prefix of A's log, no more.
    const held = storedChunks(dirB, libA.id).filter(([origin]) => origin === a.deviceId);
    const heldThrough = held.at(-1)?.[2] ?? 0;
    expect(heldThrough).toBeGreaterThan(0);
    expect(heldThrough).toBeLessThan(seqA);
    expect(tilesExactly(held, a.deviceId, heldThrough)).toBe(true);

    // Restarted without an invite: the library is still backfilling and resumes.
    const second = startChild(dirB, undefined, sync);
    await second.child.waitFor(() => second.of('ready').length > 0, 'the child restarted', 30_000);
    expect(second.of('ready')[0]).toMatchObject({ deviceId: deviceB, libraryId: libA.id, state: 'backfilling' });
    await second.child.waitFor(() => second.of('synced').length + second.of('failed').length > 0, 'the resumed backfill', 60_000);
    expect(second.of('failed')).toEqual([]);
    const synced = second.of('synced')[0]!;
    await second.child.closed;

    // The same rows as A (A may first have to pull the row B wrote about itself on restart).
    await waitFor(async () => (await libA.digest()) === synced.digest, "A and B's digests to be equal");
    expect(synced.vector[a.deviceId]).toBe(seqA);
    expect(synced.owned[a.deviceId]).toBe(engineOf(libA).ownedVector()[a.deviceId]);

    // History: the killed run is interrupted, the resumed one started from the checkpoint.
    expect(synced.history).toHaveLength(2);
    const [killed, resumed] = synced.history as [SyncRun, SyncRun];
    expect(killed).toMatchObject({ kind: 'backfill', outcome: 'interrupted', resumedFrom: null });
    expect(resumed).toMatchObject({ kind: 'backfill', outcome: 'done', peers: [a.peerId] });
    expect(resumed.resumedFrom).not.toBeNull();
    const from = resumed.resumedFrom!;
    expect(from.shared[a.deviceId]).toBe(heldThrough);
    expect(from.owned[a.deviceId]).toBe(engineOf(libA).ownedVector()[a.deviceId]);
    expect(from.snapshot).toBeNull();

    // It pulled only what was missing: the rest of A's log, no owned row again.
    const resumedProgress = second.of('progress');
    expectOrderedProgress(resumedProgress, ['shared']);
    expect(resumedProgress.at(-1)!.done).toBe(seqA - heldThrough);
    expect(resumed.added + resumed.updated + resumed.deleted).toBeGreaterThan(0);
    expect(resumed.added + resumed.updated + resumed.deleted).toBeLessThanOrEqual(seqA - heldThrough);

    // No entry twice: B's log holds A's seqs 1..n exactly once, read back and as stored.
    expect(synced.log.runs[a.deviceId]).toEqual([[1, seqA]]);
    expect(tilesExactly(storedChunks(dirB, libA.id), a.deviceId, seqA)).toBe(true);
  }, 120_000);

  it('resumes an interrupted snapshot from its checkpoint after being killed (SIGKILL)', async () => {
    // A's log is pruned (C acknowledged everything), so the joiner backfills from a snapshot.
    const a = await startNode(undefined, onLibp2p);
    const c = await startNode(undefined, onLibp2p);
    const libA = await a.createLibrary({ name: 'crash-snapshot' });
    const libC = await c.joinLibrary(await libA.createInvite());
    await writeDataset(libA, 'a', { notes: 20_000, noteDeletes: 500, profiles: 3_000, profileUpdates: 300, volumes: 2_000 });
    await converge([libA, libC]);
    await waitFor(async () => ((await engineOf(libA).prunedVector())[a.deviceId] ?? 0) > 0, "A's log to be pruned");
    const dirB = await makeTempDir('lsync-crash-snap-b-');
    const sync = { ...noPruning, batchRecords: 1_000 };

    const first = startChild(dirB, await libA.createInvite(), sync);
    await first.child.waitFor(() => first.of('progress').some((p) => p.phase === 'snapshot'), 'a snapshot page applied', 30_000);
    await first.child.kill('SIGKILL');
    expect(first.of('synced')).toHaveLength(0);
    // The killed child stored where the snapshot stands, in the transaction of its last page.
    const stored = storedMeta(dirB, libA.id, 'snapshot_checkpoint');
    expect(stored).toBeDefined();
    const checkpoint = JSON.parse(stored!) as { vector: Record<string, number>; next: [string, string] | null };
    expect(checkpoint.next).not.toBeNull();
    expect(checkpoint.vector[a.deviceId]).toBe(libA.versionVector()[a.deviceId]);
    const remaining = (await engineOf(libA).snapshotAfter(checkpoint.next, { maxRecords: 1_000_000, maxBytes: 1 << 30 })).rows.length;
    expect(remaining).toBeGreaterThan(0);
    expect(remaining).toBeLessThan(await engineOf(libA).sharedRowCount());

    const second = startChild(dirB, undefined, sync);
    await second.child.waitFor(() => second.of('ready').length > 0, 'the child restarted', 30_000);
    expect(second.of('ready')[0]!.state).toBe('backfilling');
    await second.child.waitFor(() => second.of('synced').length + second.of('failed').length > 0, 'the resumed backfill', 60_000);
    expect(second.of('failed')).toEqual([]);
    const synced = second.of('synced')[0]!;
    await second.child.closed;
    await waitFor(async () => (await libA.digest()) === synced.digest && (await libC.digest()) === synced.digest, 'equal digests');

    expect(synced.history).toHaveLength(2);
    const [killed, resumed] = synced.history as [SyncRun, SyncRun];
    expect(killed).toMatchObject({ kind: 'backfill', outcome: 'interrupted', resumedFrom: null });
    expect(resumed).toMatchObject({ kind: 'backfill', outcome: 'done' });
    expect(resumed.resumedFrom?.snapshot).toEqual({ model: checkpoint.next![0], id: checkpoint.next![1] });
    expect(resumed.resumedFrom?.owned[a.deviceId]).toBe(engineOf(libA).ownedVector()[a.deviceId]);
    // The resumed run read only the rows after the checkpoint, and no owned row again.
    const resumedProgress = second.of('progress');
    expectOrderedProgress(resumedProgress, ['snapshot']);
    expect(resumedProgress.at(-1)!.done).toBe(remaining);
  }, 120_000);

  describe.each([
    { path: 'log' as const, phase: 'shared' as const },
    { path: 'snapshot' as const, phase: 'snapshot' as const },
  ])('failover ($path)', ({ path, phase }) => {
    it('the serving partner stops mid-backfill: the joiner finishes from another member', async () => {
      // A and C hold the library; pruning on (fastSync) empties their logs once each acked the
      // other, so a joiner backfills from a snapshot; pruning off keeps the log path.
      const syncAC = path === 'log' ? noPruning : fastSync;
      const a = await startNode(undefined, { sync: syncAC });
      const c = await startNode(undefined, { sync: syncAC });
      const libA = await a.createLibrary({ name: `failover-${path}` });
      const libC = await c.joinLibrary(await libA.createInvite());
      // The snapshot reads models in name order (note, profile, sync_members, tag): few notes,
      // so the joiner learns of C (a member row) early, and many tags after it.
      const data = await writeDataset(libA, 'a', path === 'log' ? { notes: 20_000, noteDeletes: 500, profiles: 5_000, profileUpdates: 500, tags: 5_000, volumes: 5_000 } : { notes: 1_000, noteOverwrites: 100, noteDeletes: 100, profiles: 200, profileUpdates: 50, tags: 30_000, volumes: 5_000, volumeDeletes: 100 });
      const dataC = await writeDataset(libC, 'c', { volumes: 2_000, volumeDeletes: 100 });
      await converge([libA, libC]);
      if (path === 'snapshot') {
        await waitFor(async () => ((await engineOf(libA).prunedVector())[a.deviceId] ?? 0) > 0 && ((await engineOf(libC).prunedVector())[a.deviceId] ?? 0) > 0, 'A and C to prune their logs');
      }

      // B pulls small pages: the backfill takes many round trips.
      const b = await startNode(undefined, { sync: { ...noPruning, batchRecords: 500 } });
      const libB = await b.joinLibrary(await libA.createInvite());
      const progress = recordProgress(libB);
      const partnerState = async (peer: string) => (await libB.status()).partners.find((p) => p.peer === peer)?.state;
      await waitFor(
        async () => progress.some((p) => p.phase === phase) && ['catching-up', 'live'].includes((await partnerState(c.peerId)) ?? ''),
        `B pulling ${phase} pages from A, with a session to C`,
      );
      expect(await stateOf(libB)).toBe('backfilling');
      const pagesBefore = progress.length;
      await stopNode(a);
      expect(await stateOf(libB)).toBe('backfilling');

      await libB.synced();
      expect(await libB.digest()).toBe(await libC.digest());
      expect(libB.versionVector()).toEqual(libC.versionVector());
      expect(engineOf(libB).ownedVector()).toEqual(engineOf(libC).ownedVector());
      expect(await libB.get('tag', data.tagIds.at(-1)!)).toBeDefined();
      expect(await libB.get('volume', dataC.volumeIds[0]!)).toMatchObject({ path: `/vol/${dataC.volumeIds[0]}` });

      const runs = await libB.syncHistory();
      expect(runs).toHaveLength(1);
      expect(runs[0]).toMatchObject({ kind: 'backfill', outcome: 'done', resumedFrom: null, peers: [a.peerId, c.peerId] });
      // C served pages after A stopped, continuing where A left off: every record arrived once.
      expect(progress.length).toBeGreaterThan(pagesBefore);
      expectOrderedProgress(progress, ['owned', phase]);
      const ownedRows = data.ownedRows + dataC.ownedRows;
      const shared = path === 'log' ? totalOf(libC.versionVector()) : await engineOf(libC).sharedRowCount();
      expect(progress.at(-1)!.done).toBe(ownedRows + shared);
    }, 120_000);
  });

  it('the serving partner stops answering mid-backfill (frozen): the joiner finishes from another member', async () => {
    // A runs in a child process so that it can be frozen (SIGSTOP): it answers nothing more but
    // its TCP connection stays open, so only B's own timeouts tell B that A is gone. The one
    // exercised here is the heartbeat timeout (Session.tick in src/replication/session.ts): a
    // partner that sent no frame for peerTimeoutMs (1.5 s in fastSync, heartbeats every 200 ms)
    // has its session closed with TIMEOUT, which rejects the pull in flight, and the run goes on
    // with C. The request timeout (requestTimeoutMs, 30 s by default) would come much later.
    // A serves from its own process, fast (~50 000 records/s here): this many notes keep B
    // pulling from A for a couple of seconds, well after B's session to C is up.
    const spec = { notes: 100_000, volumes: 3_000 };
    const { child, line } = await startServingChild(spec);
    await child.waitFor(() => line('ready') !== undefined, 'A to create the library', 30_000);
    const a = line('ready')!;
    const [inviteC, inviteB] = a.invites;

    // C joins first: A writes its data only then, so C's member row comes early in A's log (a
    // joiner learns of C on its first shared page).
    const c = await startNode(undefined, { sync: noPruning, ...onLibp2p });
    const libC = await c.joinLibrary(inviteC);
    await child.waitFor(() => line('written') !== undefined, 'A to write its data', 60_000);
    const written = line('written')!;
    await libC.synced();
    await waitFor(
      () => sameVector(libC.versionVector(), written.vector) && sameVector(engineOf(libC).ownedVector(), written.owned),
      'C to hold everything A wrote',
      45_000,
    );

    // B pulls small pages: the backfill takes many round trips.
    const b = await startNode(undefined, { sync: { ...noPruning, batchRecords: 500 }, ...onLibp2p });
    const libB = await b.joinLibrary(inviteB);
    const progress = recordProgress(libB);
    const partnerState = async (peer: string) => (await libB.status()).partners.find((p) => p.peer === peer)?.state;
    await waitFor(
      async () => progress.some((p) => p.phase === 'shared') && ['catching-up', 'live'].includes((await partnerState(c.peerId)) ?? ''),
      'B pulling shared pages from A, with a session to C',
    );
    expect(await stateOf(libB)).toBe('backfilling');
    const pagesBefore = progress.length;
    process.kill(child.pid, 'SIGSTOP');
    const frozenAt = Date.now();
    expect(await stateOf(libB)).toBe('backfilling');

    // B gives up on A within the heartbeat timeout (plus a heartbeat and some slack), well
    // before a request would time out.
    await waitFor(
      async () => !['catching-up', 'live'].includes((await partnerState(a.peerId)) ?? ''),
      'B to end its session to the frozen A',
      15_000,
    );
    expect(Date.now() - frozenAt).toBeLessThan(fastSync!.peerTimeoutMs! + 5_000);

    await libB.synced();
    expect(await libB.digest()).toBe(await libC.digest());
    expect(libB.versionVector()).toEqual(libC.versionVector());
    expect(engineOf(libB).ownedVector()).toEqual(engineOf(libC).ownedVector());
    expect(await libB.get('note', written.noteIds[1])).toMatchObject({ title: `title ${written.noteIds[1]}` });
    expect(await libB.get('volume', written.volumeIds[1])).toMatchObject({ path: `/vol/${written.volumeIds[1]}` });

    const runs = await libB.syncHistory();
    expect(runs).toHaveLength(1);
    expect(runs[0]).toMatchObject({ kind: 'backfill', outcome: 'done', resumedFrom: null, peers: [a.peerId, c.peerId] });
    // C served pages after A froze, continuing where A left off: every record arrived once.
    expect(progress.length).toBeGreaterThan(pagesBefore);
    expectOrderedProgress(progress, ['owned', 'shared']);
    expect(progress.at(-1)!.done).toBe(spec.volumes + totalOf(libC.versionVector()));

    // Not left stopped: resumed, then killed (afterEach's SIGKILL also ends a stopped process).
    process.kill(child.pid, 'SIGCONT');
    await child.kill();
  }, 120_000);

  it('a member whose position was pruned catches up from a snapshot, and so does a new joiner', async () => {
    // Retention bound 200 on every node: a member away for more than 200 entries per origin no
    // longer holds pruning back.
    const sync = { ...fastSync, retainLogEntries: 200 };
    const dirB = await makeTempDir('lsync-pruned-b-');
    const a = await startNode(undefined, { sync });
    const b = await startNode(dirB, { sync });
    const c = await startNode(undefined, { sync });
    const libA = await a.createLibrary({ name: 'pruned' });
    const libB = await b.joinLibrary(await libA.createInvite());
    const libC = await c.joinLibrary(await libA.createInvite());
    const first = await writeDataset(libA, 'a1', { notes: 1_000, profiles: 300, tags: 100, volumes: 200 });
    await converge([libA, libB, libC]);
    await libB.synced();
    const bVector = libB.versionVector();
    await stopNode(b);

    // While B is away: A and C write far more than the bound, including changes to rows B holds.
    const second = await writeDataset(libA, 'a2', { notes: 3_000, noteDeletes: 300, profiles: 1_000, profileUpdates: 200, tags: 500, volumes: 500, volumeUpdates: 50, volumeDeletes: 50 });
    await libA.transaction(async (tx) => {
      for (const id of first.profileIds.slice(0, 100)) await tx.update('profile', id, { score: 42 });
      for (const id of first.noteIds.slice(0, 100)) await tx.upsert('note', { id, title: `changed ${id}`, body: null });
      // Tombstones of rows B holds: the snapshot carries them.
      for (const id of first.noteIds.slice(900)) await tx.delete('note', id);
      for (const id of first.profileIds.slice(250)) await tx.delete('profile', id);
    });
    const fromC = await writeDataset(libC, 'c2', { notes: 600, volumes: 100 });
    await converge([libA, libC]);
    // Both logs are pruned past B's position, for A's origin and C's.
    for (const lib of [libA, libC]) {
      await waitFor(async () => {
        const pruned = await engineOf(lib).prunedVector();
        return (pruned[a.deviceId] ?? 0) > (bVector[a.deviceId] ?? 0) && (pruned[c.deviceId] ?? 0) > (bVector[c.deviceId] ?? 0);
      }, 'the logs pruned past B');
      expect((await engineOf(lib).entriesAfter(bVector, { maxRecords: 10, maxBytes: 1 << 20 })).pruned.length).toBeGreaterThan(0);
    }

    // B comes back: a catch-up from a snapshot (then the log after the snapshot's vector).
    const b2 = await startNode(dirB, { sync });
    const libB2 = b2.library(libA.id);
    const progressB = recordProgress(libB2);
    expect(await stateOf(libB2)).not.toBe('backfilling');
    await libB2.synced();
    await converge([libA, libB2, libC]);
    expect(await libB2.get('note', second.noteIds[0]!)).toMatchObject({ title: `title ${second.noteIds[0]}` });
    expect(await libB2.get('note', second.noteIds.at(-1)!)).toBeUndefined();
    expect(await libB2.get('note', first.noteIds[0]!)).toMatchObject({ title: `changed ${first.noteIds[0]}` });
    expect(await libB2.get('profile', first.profileIds[0]!)).toMatchObject({ score: 42 });
    expect(await libB2.get('note', fromC.noteIds.at(-1)!)).toBeDefined();
    expect(await libB2.get('note', first.noteIds.at(-1)!)).toBeUndefined();
    expect(await libB2.get('profile', first.profileIds.at(-1)!)).toBeUndefined();
    expect(progressB.map((p) => p.phase)).toContain('snapshot');
    expect(progressB.every((p) => p.kind === 'catch-up')).toBe(true);
    const runsB = await libB2.syncHistory();
    expect(runsB[0]).toMatchObject({ kind: 'backfill', outcome: 'done' });
    const lastB = runsB.at(-1)!;
    expect(lastB).toMatchObject({ kind: 'catch-up', outcome: 'done' });
    expect(lastB.resumedFrom?.shared[a.deviceId]).toBe(bVector[a.deviceId]);
    // B now holds the pruned origins through the snapshot, without their entries.
    const prunedOnB = await engineOf(libB2).prunedVector();
    expect(prunedOnB[a.deviceId]!).toBeGreaterThan(bVector[a.deviceId]!);

    // A new device joins after the pruning: its backfill is a snapshot too.
    const d = await startNode(undefined, { sync });
    const libD = await d.joinLibrary(await libA.createInvite());
    const progressD = recordProgress(libD);
    expect(await stateOf(libD)).toBe('backfilling');
    await libD.synced();
    await converge([libA, libB2, libC, libD]);
    expect(progressD.map((p) => p.phase)).toContain('snapshot');
    expect(progressD[0]!.phase).toBe('owned');
    expect(progressD.every((p) => p.kind === 'backfill')).toBe(true);
    const runsD = await libD.syncHistory();
    expect(runsD).toHaveLength(1);
    expect(runsD[0]).toMatchObject({ kind: 'backfill', outcome: 'done', resumedFrom: null, peers: [a.peerId] });
    expect(runsD[0]!.added).toBeGreaterThan(first.sharedCreates + second.sharedCreates);
  }, 120_000);

  describe.each([
    { path: 'log' as const, phase: 'shared' as const },
    { path: 'snapshot' as const, phase: 'snapshot' as const },
  ])('writes during a backfill ($path)', ({ path, phase }) => {
    it('every write made on two members while a joiner backfills reaches it', async () => {
      const syncAC = path === 'log' ? noPruning : fastSync;
      const a = await startNode(undefined, { sync: syncAC });
      const c = await startNode(undefined, { sync: syncAC });
      const libA = await a.createLibrary({ name: `concurrent-${path}` });
      const libC = await c.joinLibrary(await libA.createInvite());
      const baseA = await writeDataset(libA, 'a', { notes: 8_000, profiles: 2_000, tags: 2_000, volumes: 2_000 });
      const baseC = await writeDataset(libC, 'c', { notes: 2_000, volumes: 1_000 });
      await converge([libA, libC]);
      if (path === 'snapshot') {
        await waitFor(async () => ((await engineOf(libA).prunedVector())[a.deviceId] ?? 0) > 0, "A's log to be pruned");
      }

      const b = await startNode(undefined, { sync: { ...noPruning, batchRecords: 500 } });
      const libB = await b.joinLibrary(await libA.createInvite());
      const progress = recordProgress(libB);
      await waitFor(() => progress.length > 0, 'the backfill to start');

      // Both members write in small transactions while B backfills: new rows, changes to rows
      // at the start of the id order (the first snapshot page) and, on the log path, deletes.
      let round = 0;
      let roundsWhileBackfilling = 0;
      while (round < 200 && (round < 5 || (await stateOf(libB)) === 'backfilling')) {
        if ((await stateOf(libB)) === 'backfilling') roundsWhileBackfilling += 1;
        const r = round++;
        await libA.transaction(async (tx) => {
          await tx.upsert('note', { id: `live-a-${r}`, title: `live a ${r}`, body: null });
          await tx.upsert('note', { id: baseA.noteIds[r]!, title: `edited by a ${r}`, body: 'x' });
          await tx.update('profile', baseA.profileIds[r]!, { color: `a${r}` });
          await tx.upsert('volume', { id: `live-va-${r}`, path: `/a/${r}`, bytes: r });
          await tx.delete('note', baseA.noteIds[7_999 - r]!);
        });
        await libC.transaction(async (tx) => {
          await tx.upsert('note', { id: `live-c-${r}`, title: `live c ${r}`, body: null });
          await tx.update('profile', baseA.profileIds[r]!, { score: r });
          await tx.upsert('tag', { label: `live-c-${r}` });
          await tx.upsert('volume', { id: `live-vc-${r}`, path: `/c/${r}`, bytes: r });
          await tx.delete('note', baseC.noteIds[r]!);
        });
      }
      expect(roundsWhileBackfilling).toBeGreaterThan(0);

      await libB.synced();
      await converge([libA, libB, libC]);
      const last = round - 1;
      expect(await libB.get('note', `live-a-${last}`)).toMatchObject({ title: `live a ${last}` });
      expect(await libB.get('note', `live-c-${last}`)).toMatchObject({ title: `live c ${last}` });
      expect(await libB.get('note', baseA.noteIds[0]!)).toMatchObject({ title: 'edited by a 0' });
      expect(await libB.get('profile', baseA.profileIds[0]!)).toMatchObject({ color: 'a0', score: 0 });
      expect(await libB.get('volume', `live-vc-${last}`)).toMatchObject({ path: `/c/${last}` });
      expect(await libB.get('note', baseC.noteIds[0]!)).toBeUndefined();
      expect(await libB.get('note', baseA.noteIds[7_999]!)).toBeUndefined();
      expect(progress.map((p) => p.phase)).toContain(phase);
      const runs = await libB.syncHistory();
      expect(runs[0]).toMatchObject({ kind: 'backfill', outcome: 'done' });
    }, 120_000);
  });

  it('a write that commits while a snapshot page is being read reaches the joiner', async () => {
    // The partner reads a page with several statements; a write may commit between them. The
    // page's vector must not claim that write unless its rows hold it. Made deterministic here:
    // A's first snapshot read commits a change to the first row it returned before returning.
    const a = await startNode();
    const c = await startNode();
    const libA = await a.createLibrary({ name: 'snapshot-race' });
    const libC = await c.joinLibrary(await libA.createInvite());
    const data = await writeDataset(libA, 'a', { notes: 3_000, noteDeletes: 10 });
    await converge([libA, libC]);
    await waitFor(async () => ((await engineOf(libA).prunedVector())[a.deviceId] ?? 0) > 0, "A's log to be pruned");
    const target = data.noteIds[0]!;
    const read = engineOf(libA).snapshotAfter.bind(engineOf(libA));
    let raced = 0;
    engineOf(libA).snapshotAfter = async (after, limits) => {
      const page = await read(after, limits);
      if (after === null && raced === 0) {
        raced += 1;
        expect(page.rows[0]).toMatchObject({ model: 'note', state: { id: target } });
        await libA.upsert('note', { id: target, title: 'written while the page was read', body: null });
      }
      return page;
    };
    const b = await startNode(undefined, { sync: noPruning });
    const libB = await b.joinLibrary(await libA.createInvite());
    const progress = recordProgress(libB);
    await libB.synced();
    await converge([libA, libB, libC]);
    expect(raced).toBe(1);
    expect(progress.map((p) => p.phase)).toContain('snapshot');
    expect(await libB.get('note', target)).toMatchObject({ title: 'written while the page was read' });
  });

  it('a partner serving at most one catch-up answers the other joiner busy; both complete', async () => {
    const a = await startNode(undefined, { sync: { ...fastSync, maxConcurrentServes: 1 } });
    const libA = await a.createLibrary({ name: 'busy' });
    await writeDataset(libA, 'a', { notes: 20_000, profiles: 5_000, volumes: 5_000 });
    const pullers = { ...noPruning, batchRecords: 500 };
    const b = await startNode(undefined, { sync: pullers });
    const c = await startNode(undefined, { sync: pullers });
    {
      const [inviteB, inviteC] = [await libA.createInvite(), await libA.createInvite()];
      const [libB, libC] = await Promise.all([b.joinLibrary(inviteB), c.joinLibrary(inviteC)]);
      const progress = new Map([
        [libB, recordProgress(libB)],
        [libC, recordProgress(libC)],
      ]);
      await Promise.all([libB.synced(), libC.synced()]);
      await converge([libA, libB, libC]);

      // A refused pulls: the joiner served second was answered busy, and its history says so.
      const busyReplies = await Promise.all([libB, libC].map(async (lib) => (await lib.syncHistory())[0]!.busyReplies));
      expect(Math.max(...busyReplies)).toBeGreaterThan(0);

      // Observable: A served one backfill at a time. The joiner served second waited at least
      // one busy retry (500 ms) between its run's start and its first page. (Serving is fair:
      // once the first joiner's lease is over, the two may take turns; see serving-slots.)
      const [, secondLib] = [libB, libC].sort((x, y) => progress.get(x)![0]!.at - progress.get(y)![0]!.at) as [Library, Library];
      const secondPages = progress.get(secondLib)!;
      const secondRun = (await secondLib.syncHistory())[0]!;
      expect(secondRun).toMatchObject({ kind: 'backfill', outcome: 'done' });
      expect(secondPages[0]!.at - secondRun.startedAt).toBeGreaterThanOrEqual(500);
      for (const lib of [libB, libC]) expect((await lib.syncHistory())[0]).toMatchObject({ kind: 'backfill', outcome: 'done' });
    }
  }, 120_000);

  it('aborting the join signal interrupts the backfill after its page in flight; it resumes at the next start', async () => {
    const a = await startNode();
    const libA = await a.createLibrary({ name: 'interrupt' });
    await writeDataset(libA, 'a', { notes: 20_000, volumes: 2_000 });
    const dirB = await makeTempDir('lsync-interrupt-b-');
    const sync = { ...noPruning, batchRecords: 500 };
    const b = await startNode(dirB, { sync });
    const controller = new AbortController();
    const libB = await b.joinLibrary(await libA.createInvite(), { signal: controller.signal });
    const progress = recordProgress(libB);
    await waitFor(() => progress.length > 0, 'the backfill to start');
    controller.abort();
    await waitFor(async () => (await libB.syncHistory()).at(-1)?.outcome === 'interrupted', 'the run to end interrupted');
    const held = { shared: libB.versionVector(), owned: engineOf(libB).ownedVector(), pages: progress.length };
    expect(await stateOf(libB)).toBe('backfilling');
    // Nothing more is pulled while the session stays up: two more heartbeats of B reach A.
    const seenOnA = async () => (await libA.status()).partners.find((p) => p.peer === b.peerId)?.lastSeenAt ?? 0;
    for (let beat = 0; beat < 2; beat++) {
      const before = await seenOnA();
      await waitFor(async () => (await seenOnA()) > before, 'a heartbeat of B on A');
    }
    expect({ shared: libB.versionVector(), owned: engineOf(libB).ownedVector(), pages: progress.length }).toEqual(held);
    expect(totalOf(held.shared) + totalOf(held.owned)).toBeGreaterThan(0);

    // The next start resumes from the checkpoint and completes.
    await stopNode(b);
    const b2 = await startNode(dirB, { sync });
    const libB2 = b2.library(libA.id);
    await libB2.synced();
    await converge([libA, libB2]);
    const resumed = (await libB2.syncHistory()).at(-1)!;
    expect(resumed).toMatchObject({ kind: 'backfill', outcome: 'done' });
    expect(resumed.resumedFrom?.shared[a.deviceId] ?? 0).toBe(held.shared[a.deviceId] ?? 0);
    expect(resumed.resumedFrom?.owned).toEqual(held.owned);
  }, 120_000);

  it('synced() resolves at once for a library with no partners', async () => {
    const a = await startNode();
    const lib = await a.createLibrary({ name: 'alone' });
    await lib.upsert('note', { id: 'n', title: 'n', body: null });
    await withDeadline(lib.synced(), 2_000, 'synced() of a library with no partners');
    expect(await stateOf(lib)).toBe('ready');
    // Also once it has invited (it is then a member itself, still with no partner).
    await lib.createInvite();
    await withDeadline(lib.synced(), 2_000, 'synced() after an invite');
    expect(await lib.syncHistory()).toEqual([]);
  });

  it('synced({ signal }) rejects with ABORTED while backfilling from an offline partner; the backfill goes on', async () => {
    const dirA = await makeTempDir('lsync-abort-a-');
    const a = await startNode(dirA);
    const libA = await a.createLibrary({ name: 'abort' });
    await writeDataset(libA, 'a', { notes: 20_000, volumes: 2_000 });
    const b = await startNode(undefined, { sync: { ...noPruning, batchRecords: 500 } });
    const c = await startNode(undefined, { sync: { ...noPruning, batchRecords: 500 } });
    const libB = await b.joinLibrary(await libA.createInvite());
    const libC = await c.joinLibrary(await libA.createInvite());
    await stopNode(a);
    // Its only partner is gone before B could complete its backfill.
    await waitFor(async () => (await libB.status()).partners.every((p) => p.state === 'offline'), 'A offline on B');
    expect(await stateOf(libB)).toBe('backfilling');

    // Stopping a node ends its pending waits: they reject with STOPPED rather than hang.
    expect(await stateOf(libC)).toBe('backfilling');
    const rejectedOnC = expect(libC.synced()).rejects.toMatchObject({ code: 'STOPPED' });
    await stopNode(c);
    await rejectedOnC;

    const already = new AbortController();
    already.abort();
    await expect(libB.synced({ signal: already.signal })).rejects.toMatchObject({ code: 'ABORTED' });

    const controller = new AbortController();
    let settled = false;
    const waiting = libB.synced({ signal: controller.signal }).finally(() => (settled = true));
    // Still waiting: a status event of the backfilling library does not settle it.
    await waitFor(async () => (await stateOf(libB)) === 'backfilling', 'B backfilling');
    expect(settled).toBe(false);
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ code: 'ABORTED', name: 'AbortedError' });

    // The backfill itself was not abandoned: A comes back and B completes it.
    const a2 = await startNode(dirA);
    const libA2 = a2.library(libA.id);
    await libB.synced();
    await converge([libA2, libB]);
    const runs = await libB.syncHistory();
    expect(runs.at(-1)).toMatchObject({ kind: 'backfill', outcome: 'done', peers: [a.peerId] });
    // A run that lost its only partner ended interrupted, not done.
    for (const run of runs.slice(0, -1)) expect(run).toMatchObject({ kind: 'backfill', outcome: 'interrupted' });
  }, 120_000);
});
