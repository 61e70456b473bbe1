/**
 * Multi-node integration tests for replication (issue 3): the in-memory network (WebSockets on
 * real libp2p on 127.0.0.1), real SQLite files on disk, no sleeps as synchronisation (every
 * wait polls a condition with a deadline).
 *
 * 1. three nodes, concurrent writes under every conflict rule and device-owned rows: digests
 *    converge and equal an independent replay of every device's own changes;
 * 2. relay: A and C cannot reach each other, B carries their changes;
 * 3. offline catch-up of thousands of changes, HLC monotonicity and PeerId after restart;
 * 4. pruning: acknowledged log is pruned to nothing; a stopped member holds the log back only up
 *    to the retention bound, and catches up from a snapshot when it comes back;
 * 5. status events and partner state, prompt stop, the rest keep syncing;
 * 6. WebSockets-only nodes.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  compareHlc,
  decodeHlc,
  type Library,
  type LibraryStatus,
  type PartnerStatus,
  type SessionErrorEvent,
  type SyncNode,
  type VersionVector,
} from '../src/index.js';
import type { LogEntry } from '../src/peer-log/types.js';
import { MAX_CHUNK_ENTRIES } from '../src/peer-log/chunk.js';
import { makeTempDir, removeTempDirs } from './helpers/child-process.js';
import { fastSync, shareLibrary, startNode, stopAllNodes, stopNode, useMemoryTransport, waitFor, waitForConvergence } from './helpers/cluster.js';
import { engineOf } from '../src/library/library.js';
import type { LibraryEngine } from '../src/library/engine.js';
import type { Chunk } from '../src/peer-log/chunk.js';
import { lastRunsSize, prunableThrough, runsOf } from './helpers/log-copy.js';

useMemoryTransport();

afterEach(async () => {
  await stopAllNodes();
  await removeTempDirs();
});

const EVERYTHING = { maxRecords: 1_000_000, maxBytes: 1 << 30 };
/** Pruning effectively off, for tests that read the logs after convergence. */
const noPruning = { ...fastSync, pruneIntervalMs: 3_600_000 };

/** Every entry of the library's log, page by page (fails if anything was pruned). */
async function allEntries(lib: Library): Promise<LogEntry[]> {
  const out: LogEntry[] = [];
  const after: VersionVector = {};
  for (;;) {
    const page = await engineOf(lib).entriesAfter(after, { maxRecords: 10_000, maxBytes: 64 << 20 });
    expect(page.pruned).toEqual([]);
    for (const e of page.entries) {
      out.push(e);
      after[e.origin] = Math.max(after[e.origin] ?? 0, e.seq);
    }
    if (!page.hasMore || page.entries.length === 0) return out;
  }
}

function maxHlc(entries: readonly LogEntry[]): string {
  let max = entries[0]!.hlc;
  for (const e of entries) if (compareHlc(decodeHlc(e.hlc), decodeHlc(max)) > 0) max = e.hlc;
  return max;
}

function total(vector: VersionVector): number {
  return Object.values(vector).reduce((n, v) => n + v, 0);
}

function partner(status: LibraryStatus, node: SyncNode): PartnerStatus | undefined {
  return status.partners.find((p) => p.peer === node.peerId);
}

function collectSessionErrors(...nodes: SyncNode[]): (SessionErrorEvent & { node: SyncNode })[] {
  const errors: (SessionErrorEvent & { node: SyncNode })[] = [];
  for (const node of nodes) node.on('session-error', (e) => errors.push({ ...e, node }));
  return errors;
}

/** Whether `vector` holds at least everything in `target`. */
function covers(vector: VersionVector, target: VersionVector): boolean {
  return Object.entries(target).every(([origin, seq]) => (vector[origin] ?? 0) >= seq);
}

async function waitForStatus(lib: Library, check: (s: LibraryStatus) => boolean, what: string, timeoutMs = 20_000) {
  let last: LibraryStatus | undefined;
  try {
    await waitFor(async () => check((last = await lib.status())), what, timeoutMs);
  } catch (err) {
    throw new Error(`${(err as Error).message}; last status: ${JSON.stringify(last)}`);
  }
  return last!;
}

describe('replication among several nodes', () => {
  it('three nodes converge under concurrent writes to every conflict rule and device-owned rows', async () => {
    const [a, b, c] = await Promise.all([0, 1, 2].map(() => startNode(undefined, { sync: noPruning })));
    const [libA, libB, libC] = (await shareLibrary(a!, [b!, c!])) as [Library, Library, Library];
    const libs = [libA, libB, libC];

    // Seed records every node will then write concurrently.
    await libA.transaction(async (tx) => {
      await tx.upsert('note', { id: 'n-hot', title: 'hot seed', body: null });
      await tx.upsert('note', { id: 'n-del', title: 'to delete', body: 'seed' });
      await tx.upsert('note', { id: 'n-race', title: 'race seed', body: null });
      await tx.upsert('profile', { id: 'p1', name: 'p1', color: null, score: null });
      await tx.upsert('profile', { id: 'p2', name: 'p2', color: 'grey', score: 1 });
    });
    await waitForConvergence(libs);
    for (const lib of libs) expect(await lib.get('note', 'n-hot')).toMatchObject({ title: 'hot seed' });

    const ROUNDS = 5;
    const PER_ROUND = 10;
    const burst = async (lib: Library, tag: 'a' | 'b' | 'c') => {
      for (let round = 0; round < ROUNDS; round++) {
        await lib.transaction(async (tx) => {
          for (let i = 0; i < PER_ROUND; i++) {
            const n = round * PER_ROUND + i;
            await tx.upsert('note', { id: `note-${tag}-${n}`, title: `${tag} ${n}`, body: null });
          }
          await tx.update('note', 'n-hot', { title: `hot ${tag} ${round}` });
          await tx.upsert('volume', { id: `vol-${tag}-${2 * round}`, path: `/${tag}/${2 * round}`, bytes: 2 * round });
          await tx.upsert('volume', { id: `vol-${tag}-${2 * round + 1}`, path: `/${tag}/${2 * round + 1}`, bytes: 2 * round + 1 });
        });
        // The same lww-field records, a different field from each node.
        if (tag === 'a') await lib.update('profile', 'p1', { color: `red-${round}` });
        if (tag === 'b') await lib.update('profile', 'p1', { score: round });
        if (tag === 'c') await lib.update('profile', 'p1', { name: `carol-${round}` });
        if (tag === 'b') await lib.update('profile', 'p2', { color: `b-${round}` });
        if (tag === 'c') await lib.update('profile', 'p2', { score: 100 + round });
        // The same union record from every node, plus one of its own.
        await lib.upsert('tag', { label: 'common' });
        await lib.upsert('tag', { label: `only-${tag}` });
        if (tag !== 'c') await lib.update('note', 'n-del', { body: `${tag} ${round}` });
        // A full write (upsert) needs no live row, so C's delete may arrive first.
        if (round === 2 && tag === 'b') await lib.upsert('note', { id: 'n-race', title: 'race b', body: null });
        if (round === 2 && tag === 'c') await lib.delete('note', 'n-race');
      }
      // Device-owned: update three of its rows, delete two.
      for (let i = 0; i < 3; i++) await lib.update('volume', `vol-${tag}-${i}`, { bytes: 1000 + i });
      await lib.transaction(async (tx) => {
        await tx.delete('volume', `vol-${tag}-8`);
        await tx.delete('volume', `vol-${tag}-9`);
      });
    };
    await Promise.all([burst(libA, 'a'), burst(libB, 'b'), burst(libC, 'c')]);
    await waitForConvergence(libs, 45_000);

    // Deletes after everyone's writes (and after they have been seen everywhere).
    await libC.delete('note', 'n-del');
    await libA.delete('profile', 'p2');
    await libB.delete('tag', (await libB.list('tag', { limit: 100 })).find((t) => t.label === 'only-c')!.id);
    await libB.delete('note', 'note-a-3');
    const digest = await waitForConvergence(libs, 45_000);

    // Each device's own changes, read from its own log (not from a replicated copy).
    const own = new Map<SyncNode, LogEntry[]>();
    for (const [node, lib] of [[a!, libA], [b!, libB], [c!, libC]] as const) {
      own.set(node, (await allEntries(lib)).filter((e) => e.origin === node.deviceId));
    }
    const everyOwn = [...own.values()].flat();

    for (const lib of libs) {
      // lww-field: each node's last write to the field only it wrote survives.
      expect(await lib.get('profile', 'p1')).toEqual({ id: 'p1', name: `carol-${ROUNDS - 1}`, color: `red-${ROUNDS - 1}`, score: ROUNDS - 1 });
      // Deleted after everything: stays deleted.
      expect(await lib.get('profile', 'p2')).toBeUndefined();
      expect(await lib.get('note', 'n-del')).toBeUndefined();
      expect(await lib.get('note', 'note-a-3')).toBeUndefined();
      // union: one row per label whoever created it.
      const tags = (await lib.list('tag', { limit: 100 })).map((t) => t.label).sort();
      expect(tags).toEqual(['common', 'only-a', 'only-b']);
      // lww: the write with the greatest HLC wins, whichever node made it.
      const hot = everyOwn.filter((e) => e.model === 'note' && e.id === 'n-hot');
      expect(hot.length).toBe(1 + 3 * ROUNDS);
      const hotWinner = hot.find((e) => e.hlc === maxHlc(hot))!;
      expect(await lib.get('note', 'n-hot')).toMatchObject({ title: hotWinner.fields!.title });
      const race = everyOwn.filter((e) => e.model === 'note' && e.id === 'n-race' && e.origin !== a!.deviceId);
      expect(race.map((e) => e.op).sort()).toEqual(['delete', 'upsert']);
      const raceWinner = race.find((e) => e.hlc === maxHlc(race))!;
      if (raceWinner.op === 'delete') expect(await lib.get('note', 'n-race')).toBeUndefined();
      else expect(await lib.get('note', 'n-race')).toMatchObject({ title: 'race b' });
      // Inserts from every node: 3 seeds + 3 × 50 - 2 deleted, and n-race if its upsert won.
      const notes = await lib.list('note', { limit: 1_000 });
      expect(notes.length).toBe(3 + 3 * ROUNDS * PER_ROUND - 2 - (raceWinner.op === 'delete' ? 1 : 0));
      // Every device's own volume rows, with their final values, are on every node.
      const volumes = (await lib.list('volume', { limit: 1_000 })).sort((x, y) => x.id.localeCompare(y.id));
      const expected = [];
      for (const tag of ['a', 'b', 'c']) {
        for (let i = 0; i < 8; i++) expected.push({ id: `vol-${tag}-${i}`, path: `/${tag}/${i}`, bytes: i < 3 ? 1000 + i : i });
      }
      expect(volumes).toEqual(expected.sort((x, y) => x.id.localeCompare(y.id)));
      expect(engineOf(lib).ownedVector()).toEqual(engineOf(libA).ownedVector());
      expect(lib.versionVector()).toEqual(libA.versionVector());
    }

    // Independent expected state: replay every device's own changes (its own signed runs, read
    // from its own log) and own rows into a fresh replica (different order: C, B, A) with no
    // network involved; it must match the digest. The replica checks each run's signature by the
    // member rows the runs carry: B's and C's are in A's runs (A invited them), so the runs go
    // in one batch, where each author is known once any run introduced it.
    const ownRows = new Map<SyncNode, Awaited<ReturnType<LibraryEngine['ownedAfter']>>>();
    const ownRuns = new Map<SyncNode, Chunk[]>();
    for (const [node, lib] of [[a!, libA], [b!, libB], [c!, libC]] as const) {
      const page = await engineOf(lib).ownedAfter(node.deviceId, 0, EVERYTHING);
      expect(page.hasMore).toBe(false);
      ownRows.set(node, page);
      const runs = (await runsOf(lib)).filter((run) => run.origin === node.deviceId);
      expect(runs.reduce((n, run) => n + run.lastSeq - run.firstSeq + 1, 0)).toBe(own.get(node)!.length);
      ownRuns.set(node, runs);
    }
    const libraryId = libA.id;
    await Promise.all([stopNode(a!), stopNode(b!), stopNode(c!)]);
    const d = await startNode(undefined, { listen: [], sync: noPruning });
    const ref = await d.createLibrary({ name: 'reference', id: libraryId });
    const replay = [c!, b!, a!].flatMap((node) => ownRuns.get(node)!);
    const result = await engineOf(ref).applyRemoteChunks(replay);
    expect(result).toMatchObject({ applied: everyOwn.length, duplicates: 0, gaps: [], forks: [], refused: 0 });
    for (const node of [c!, b!, a!]) {
      expect(ref.versionVector()[node.deviceId]).toBe(own.get(node)!.at(-1)!.seq);
      const page = ownRows.get(node)!;
      await engineOf(ref).applyRemoteOwned(page, { owner: node.deviceId, from: page.from, to: page.to });
    }
    expect(await ref.digest()).toBe(digest);
  });

  it('relays changes through B between A and C, which never connect', async () => {
    const b = await startNode();
    const a = await startNode(undefined, { listen: [] });
    const c = await startNode(undefined, { listen: [] });
    expect(a.multiaddrs()).toEqual([]);
    expect(c.multiaddrs()).toEqual([]);
    const [libB, libA, libC] = (await shareLibrary(b, [a, c])) as [Library, Library, Library];
    const errors = collectSessionErrors(a, b, c);

    // Sample connectivity between A and C on every status event and at every poll.
    let everConnected = false;
    const watch = (s: LibraryStatus, other: SyncNode) => {
      const p = partner(s, other);
      if (p && (p.connected || p.state !== 'offline' || p.lastSeenAt !== null)) everConnected = true;
    };
    libA.on('status', (s) => watch(s, c));
    libC.on('status', (s) => watch(s, a));

    // A learns of C (and C of A) through the synced member list.
    await waitFor(async () => (await libA.members()).length === 3 && (await libC.members()).length === 3, 'members everywhere');

    await libA.transaction(async (tx) => {
      for (let i = 0; i < 50; i++) await tx.upsert('note', { id: `from-a-${i}`, title: `a ${i}`, body: null });
      await tx.upsert('volume', { id: 'vol-a', path: '/a', bytes: 1 });
      await tx.upsert('tag', { label: 'shared' });
    });
    await libC.transaction(async (tx) => {
      for (let i = 0; i < 50; i++) await tx.upsert('note', { id: `from-c-${i}`, title: `c ${i}`, body: null });
      await tx.upsert('volume', { id: 'vol-c', path: '/c', bytes: 3 });
      await tx.upsert('tag', { label: 'shared' });
    });
    await waitFor(async () => {
      watch(await libA.status(), c);
      watch(await libC.status(), a);
      return (await libC.get('note', 'from-a-49')) !== undefined && (await libA.get('note', 'from-c-49')) !== undefined;
    }, 'A and C see each other’s writes');
    await waitForConvergence([libA, libB, libC]);
    expect(await libC.get('volume', 'vol-a')).toEqual({ id: 'vol-a', path: '/a', bytes: 1 });
    expect(await libA.get('volume', 'vol-c')).toEqual({ id: 'vol-c', path: '/c', bytes: 3 });
    expect((await libA.list('tag')).length).toBe(1);

    // A later write from C still reaches A through B.
    await libC.update('note', 'from-a-0', { title: 'edited by c' });
    await waitFor(async () => (await libA.get('note', 'from-a-0'))?.title === 'edited by c', 'C → B → A');
    await waitForConvergence([libA, libB, libC]);

    // Both are live with B.
    const statusA = await waitForStatus(libA, (s) => partner(s, b)?.state === 'live' && partner(s, b)?.connected === true, 'A live with B');
    const statusC = await waitForStatus(libC, (s) => partner(s, b)?.state === 'live' && partner(s, b)?.connected === true, 'C live with B');
    watch(statusA, c);
    watch(statusC, a);
    expect(everConnected).toBe(false);
    // No session between A and C ever happened: neither recorded an ack from the other (acks are
    // persisted by the first session and would not be empty once both hold data).
    expect(partner(statusA, c)).toMatchObject({ connected: false, state: 'offline', acked: {}, lastSeenAt: null });
    expect(partner(statusC, a)).toMatchObject({ connected: false, state: 'offline', acked: {}, lastSeenAt: null });
    // No session was ever attempted between A and C (one would need a connection first).
    expect(errors.filter((e) => (e.node === a && e.peer === c.peerId) || (e.node === c && e.peer === a.peerId))).toEqual([]);
  });

  it('catches up thousands of changes after a restart, with a monotonic clock and the same PeerId', async () => {
    const cDir = await makeTempDir('lsync-node-c-');
    const a = await startNode(undefined, { sync: noPruning });
    const b = await startNode(undefined, { sync: noPruning });
    const c = await startNode(cDir, { sync: noPruning });
    const [libA, libB, libC] = (await shareLibrary(a, [b, c])) as [Library, Library, Library];
    const libraryId = libA.id;
    await libC.upsert('note', { id: 'from-c', title: 'before stop', body: null });
    await waitForConvergence([libA, libB, libC]);
    const cPeer = c.peerId;
    const cDevice = c.deviceId;
    const cVectorAtStop = libC.versionVector();
    await stopNode(c);

    // 3 000 changes while C is down, in transactions of 100 to 500, every model.
    const SIZES = [100, 200, 300, 400, 250, 250];
    const write = async (lib: Library, tag: string) => {
      let notes = 0;
      let volumes = 0;
      let op = 0;
      for (const size of SIZES) {
        const firstNoteOfTx = notes;
        const firstVolumeOfTx = volumes;
        await lib.transaction(async (tx) => {
          for (let k = 0; k < size; k++, op++) {
            switch (op % 10) {
              case 0:
              case 1:
              case 2:
              case 3:
                await tx.upsert('note', { id: `${tag}-n${notes}`, title: `${tag} ${notes++}`, body: null });
                break;
              case 4:
                // An earlier transaction's note: update (lww) or delete.
                if (firstNoteOfTx > 0 && op % 20 === 4) await tx.delete('note', `${tag}-n${(op * 7) % firstNoteOfTx}`).catch(() => undefined);
                else await tx.upsert('note', { id: `${tag}-n${notes}`, title: `${tag} ${notes++}`, body: 'x' });
                break;
              case 5:
                await tx.upsert('profile', { id: `${tag}-p${op % 50}`, name: `${tag} ${op}`, color: null, score: op });
                break;
              case 6:
                await tx.upsert('tag', { label: `label-${op % 40}` });
                break;
              case 7:
              case 8:
                await tx.upsert('volume', { id: `${tag}-v${volumes}`, path: `/${tag}/${volumes++}`, bytes: op });
                break;
              default:
                if (firstVolumeOfTx > 0) await tx.update('volume', `${tag}-v${op % firstVolumeOfTx}`, { bytes: -op });
                else await tx.upsert('note', { id: `${tag}-n${notes}`, title: `${tag} ${notes++}`, body: null });
            }
          }
        });
      }
    };
    await Promise.all([write(libA, 'a'), write(libB, 'b')]);
    await waitForConvergence([libA, libB], 45_000);
    const before = total(cVectorAtStop);
    expect(total(libA.versionVector()) - before).toBeGreaterThan(2_000);

    // C comes back with its wall clock 30 s behind: only HLC receive keeps its clock above what
    // it catches up on.
    const c2 = await startNode(cDir, { sync: noPruning, wallClock: () => Date.now() - 30_000 });
    expect(c2.peerId).toBe(cPeer);
    expect(c2.deviceId).toBe(cDevice);
    const libC2 = c2.library(libraryId);
    // Nothing from A or B yet (C may have logged its new addresses as its own change).
    const { [cDevice]: _ownBefore, ...othersAtStop } = cVectorAtStop;
    const { [cDevice]: _ownNow, ...othersNow } = libC2.versionVector();
    expect(othersNow).toEqual(othersAtStop);
    await waitForConvergence([libA, libB, libC2], 60_000);
    expect(libC2.versionVector()).toEqual(libA.versionVector());
    expect(engineOf(libC2).ownedVector()).toEqual(engineOf(libA).ownedVector());
    expect(await libC2.get('note', 'from-c')).toMatchObject({ title: 'before stop' });
    expect(await libC2.list('volume', { limit: 10_000 })).toEqual(await libA.list('volume', { limit: 10_000 }));
    await waitForStatus(libC2, (s) => s.state === 'ready' && s.partners.every((p) => p.state === 'live'), 'C live with both');

    // The clock absorbed everything it received…
    const received = await allEntries(libC2);
    expect(received.length).toBe(total(libA.versionVector()));
    const highest = maxHlc(received);
    expect(compareHlc(decodeHlc(engineOf(libC2).clockHighWater()), decodeHlc(highest))).toBeGreaterThanOrEqual(0);
    expect(decodeHlc(highest).wallMs).toBeGreaterThan(Date.now() - 30_000);
    // …so a new write on C is stamped above every HLC in its log.
    await libC2.upsert('note', { id: 'after-restart', title: 'c again', body: null });
    const after = await allEntries(libC2);
    // C's own changes go to its current writer (its device id, or an id derived from it).
    const mine = after.filter((e) => e.origin === libC2.writer());
    const newest = mine.reduce((x, y) => (y.seq > x.seq ? y : x));
    expect(newest.id).toBe('after-restart');
    for (const e of after) {
      if (e !== newest && !(e.origin === newest.origin && e.seq === newest.seq)) {
        expect(compareHlc(decodeHlc(newest.hlc), decodeHlc(e.hlc))).toBe(1);
      }
    }
    await waitForConvergence([libA, libB, libC2]);
  });

  it('prunes acknowledged entries down to the last run of each origin once every member holds them', async () => {
    const [a, b, c] = await Promise.all([0, 1, 2].map(() => startNode()));
    const [libA, libB, libC] = (await shareLibrary(a!, [b!, c!])) as [Library, Library, Library];
    const libs = [libA, libB, libC];
    const WRITES = MAX_CHUNK_ENTRIES + 150; // more than one chunk per origin
    const sizes: number[] = [];
    await Promise.all(
      libs.map(async (lib, n) => {
        for (let start = 0; start < WRITES; start += 100) {
          await lib.transaction(async (tx) => {
            for (let i = start; i < Math.min(WRITES, start + 100); i++) {
              await tx.upsert('note', { id: `n${n}-${i}`, title: `${n} ${i}`, body: null });
            }
          });
        }
        sizes[n] = await engineOf(lib).logSize();
      }),
    );
    for (const size of sizes) expect(size).toBeGreaterThanOrEqual(WRITES);
    await waitForConvergence(libs, 45_000);
    const kept = await Promise.all(libs.map((l) => lastRunsSize(l)));
    await waitFor(async () => (await Promise.all(libs.map((l) => engineOf(l).logSize()))).every((s, i) => s === kept[i]), 'logs pruned to their last runs', 30_000);
    for (const lib of libs) expect(await engineOf(lib).prunedVector()).toEqual(await prunableThrough(lib));

    // Pruned logs do not stop replication of new writes.
    await libB.upsert('note', { id: 'after-prune', title: 'still syncing', body: null });
    await waitForConvergence(libs);
    expect(await libC.get('note', 'after-prune')).toMatchObject({ title: 'still syncing' });
  });

  it('keeps a stopped member’s entries up to the retention bound, then it catches up from a snapshot', async () => {
    const RETAIN = 300;
    const sync = { ...fastSync, retainLogEntries: RETAIN };
    const cDir = await makeTempDir('lsync-node-c-');
    const a = await startNode(undefined, { sync });
    const b = await startNode(undefined, { sync });
    const c = await startNode(cDir, { sync });
    const [libA, libB, libC] = (await shareLibrary(a, [b, c])) as [Library, Library, Library];
    const libraryId = libA.id;
    await libC.upsert('note', { id: 'from-c', title: 'c', body: null });
    await waitForConvergence([libA, libB, libC]);
    await waitForStatus(libA, (s) => partner(s, c)?.state === 'live' && partner(s, b)?.state === 'live', 'A live with B and C');
    const cVector = libC.versionVector();
    await stopNode(c);
    await waitForStatus(libA, (s) => partner(s, c)?.connected === false, 'A sees C gone');

    // Count prune passes on A and B (the replicator prunes through the engine's prune).
    const passes = new Map<Library, number>();
    for (const lib of [libA, libB]) {
      const original = engineOf(lib).prune.bind(engineOf(lib));
      passes.set(lib, 0);
      engineOf(lib).prune = async (...args) => {
        const deleted = await original(...args);
        passes.set(lib, passes.get(lib)! + 1);
        return deleted;
      };
    }
    const writeNotes = async (lib: Library, prefix: string, count: number, from = 0) => {
      for (let start = from; start < from + count; start += 100) {
        await lib.transaction(async (tx) => {
          for (let i = start; i < Math.min(from + count, start + 100); i++) {
            await tx.upsert('note', { id: `${prefix}-${i}`, title: `${prefix} ${i}`, body: null });
          }
        });
      }
    };
    // Within the bound (200 and 100 < 300 per origin): nothing C lacks may be pruned.
    await Promise.all([writeNotes(libA, 'a1', 200), writeNotes(libB, 'b1', 100)]);
    await waitForConvergence([libA, libB]);
    for (const lib of [libA, libB]) {
      const other = lib === libA ? b : a;
      await waitForStatus(lib, (s) => covers(partner(s, other)?.acked ?? {}, lib.versionVector()), 'the online partner acked everything');
      const from = passes.get(lib)!;
      await waitFor(() => passes.get(lib)! >= from + 2, 'two prune passes after the acks');
      const lacking = total(lib.versionVector()) - total(cVector);
      expect(lacking).toBeGreaterThanOrEqual(300);
      const page = await engineOf(lib).entriesAfter(cVector, EVERYTHING);
      expect(page.pruned).toEqual([]);
      expect(page.hasMore).toBe(false);
      expect(page.entries.length).toBe(lacking);
      expect(await engineOf(lib).logSize()).toBeGreaterThanOrEqual(lacking);
      expect(partner(await lib.status(), c)?.beyondRetention).toBe(false);
    }

    // Beyond the bound: 1 600 more while C is down, in steps that the online partner acks
    // before the next: the bound holds for every partner, so one that fell RETAIN behind (a
    // loaded machine slows its acks) would rightly be pruned past too.
    for (let step = 0; step < 8; step += 1) {
      await Promise.all([writeNotes(libA, 'a2', 100, step * 100), writeNotes(libB, 'b2', 100, step * 100)]);
      await waitForConvergence([libA, libB], 45_000);
      for (const [lib, other] of [[libA, b], [libB, a]] as const) {
        await waitForStatus(lib, (s) => covers(partner(s, other)?.acked ?? {}, lib.versionVector()), 'the online partner acked the step');
      }
    }
    const writtenWhileDown = total(libA.versionVector()) - total(cVector);
    expect(writtenWhileDown).toBeGreaterThanOrEqual(1_900);
    for (const lib of [libA, libB]) {
      const status = await waitForStatus(lib, (s) => partner(s, c)?.beyondRetention === true, 'C beyond retention');
      expect(partner(status, lib === libA ? b : a)?.beyondRetention).toBe(false);
      const held = lib.versionVector();
      const laggingOrigins = Object.keys(held).filter((o) => held[o]! - (cVector[o] ?? 0) > RETAIN);
      expect(laggingOrigins.sort()).toEqual([a.deviceId, b.deviceId].sort());
      // Pruned to the bound: per lagging origin at least RETAIN kept, at most RETAIN plus a chunk.
      await waitFor(async () => {
        const pruned = await engineOf(lib).prunedVector();
        return laggingOrigins.every((o) => held[o]! - (pruned[o] ?? 0) < RETAIN + MAX_CHUNK_ENTRIES);
      }, 'pruned down to the retention bound');
      const pruned = await engineOf(lib).prunedVector();
      for (const o of laggingOrigins) {
        expect(held[o]! - pruned[o]!).toBeGreaterThanOrEqual(RETAIN);
        expect(pruned[o]!).toBeGreaterThan(cVector[o] ?? 0);
      }
      const size = await engineOf(lib).logSize();
      expect(size).toBeLessThan(Object.keys(held).length * (RETAIN + MAX_CHUNK_ENTRIES));
      expect(size).toBeLessThan(writtenWhileDown);
      expect(size).toBeGreaterThanOrEqual(laggingOrigins.length * RETAIN);
      expect((await engineOf(lib).entriesAfter(cVector, EVERYTHING)).pruned.map((p) => p.origin).sort()).toEqual(laggingOrigins.sort());
    }

    // C comes back: the logs no longer reach back to it, so it catches up from a snapshot of
    // the current rows, then from the log after the snapshot's vector.
    const c2 = await startNode(cDir, { sync });
    expect(c2.peerId).toBe(c.peerId);
    const libC2 = c2.library(libraryId);
    await libC2.synced();
    await waitForConvergence([libA, libB, libC2], 45_000);
    expect(await libC2.get('note', 'a2-799')).toMatchObject({ title: 'a2 799' });
    const runs = await libC2.syncHistory();
    const last = runs[runs.length - 1]!;
    expect(last).toMatchObject({ kind: 'catch-up', outcome: 'done' });
    // It started from where C stopped (C's own origin moved on: it re-registered its addresses).
    for (const origin of [a.deviceId, b.deviceId]) expect(last.resumedFrom?.shared[origin]).toBe(cVector[origin]);
    expect(last.added).toBeGreaterThanOrEqual(writtenWhileDown - 2 * RETAIN);
    // C holds the lagging origins as pruned through the snapshot: it cannot serve what it never had.
    const prunedOnC = await engineOf(libC2).prunedVector();
    for (const origin of [a.deviceId, b.deviceId]) expect(prunedOnC[origin]!).toBeGreaterThan(cVector[origin] ?? 0);
  });

  it('reports partner status and events; a stop is prompt and the others keep syncing', async () => {
    const a = await startNode();
    const b = await startNode();
    const c = await startNode();
    const libA = await a.createLibrary({ name: 'status' });
    const events: LibraryStatus[] = [];
    libA.on('status', (s) => events.push(s));
    const libB = await b.joinLibrary(await libA.createInvite());
    const libC = await c.joinLibrary(await libA.createInvite());
    const libs = [libA, libB, libC];

    // An event reports each partner connected and live.
    await waitFor(
      () => events.some((s) => partner(s, b)?.connected && partner(s, b)?.state === 'live' && partner(s, b)?.lastSeenAt !== null),
      'status event: B live',
    );
    await waitFor(() => events.some((s) => partner(s, c)?.connected && partner(s, c)?.state === 'live'), 'status event: C live');

    await libA.upsert('note', { id: 'na', title: 'a', body: null });
    await libB.upsert('profile', { id: 'pb', name: 'b', color: 'blue', score: 2 });
    await libC.upsert('volume', { id: 'vc', path: '/c', bytes: 3 });
    await libB.upsert('volume', { id: 'vb', path: '/b', bytes: 2 });
    await waitForConvergence(libs);

    // Once quiet: every partner is live and has acknowledged exactly the local vectors.
    for (const [lib, others] of [
      [libA, [b, c]],
      [libB, [a, c]],
      [libC, [a, b]],
    ] as const) {
      const s = await waitForStatus(
        lib,
        (s) =>
          s.state === 'ready' &&
          s.error === null &&
          s.partners.length === 2 &&
          s.partners.every(
            (p) =>
              p.connected &&
              p.state === 'live' &&
              JSON.stringify(sorted(p.acked)) === JSON.stringify(sorted(lib.versionVector())) &&
              JSON.stringify(sorted(p.ackedOwned)) === JSON.stringify(sorted(engineOf(lib).ownedVector())),
          ),
        'partners acked the local vector',
      );
      expect(s.partners.map((p) => p.peer).sort()).toEqual(others.map((n) => n.peerId).sort());
      expect(s.vector).toEqual(lib.versionVector());
      expect(s.ownedVector).toEqual(engineOf(lib).ownedVector());
      expect(s.protocolErrors).toBe(0);
      for (const p of s.partners) {
        expect(p.beyondRetention).toBe(false);
        expect(p.lastSeenAt).toBeGreaterThan(0);
      }
    }

    // Stopping C is prompt (awaited within the test timeout) and A's status follows.
    const eventsBeforeStop = events.length;
    await stopNode(c);
    await waitFor(
      () => events.slice(eventsBeforeStop).some((s) => partner(s, c)?.state === 'offline'),
      'status event: C went away',
      5_000,
    );
    await waitForStatus(libA, (s) => partner(s, c)?.connected === false && partner(s, c)?.state === 'offline', 'A: C offline', 5_000);
    await waitForStatus(libB, (s) => partner(s, c)?.connected === false && partner(s, c)?.state === 'offline', 'B: C offline', 5_000);
    expect(partner(await libA.status(), b)).toMatchObject({ connected: true, state: 'live' });

    // A and B keep syncing without C.
    await libA.update('note', 'na', { title: 'after c stopped' });
    await libB.upsert('tag', { label: 'without-c' });
    await waitForConvergence([libA, libB]);
    expect(await libB.get('note', 'na')).toMatchObject({ title: 'after c stopped' });
    expect((await libA.list('tag')).map((t) => t.label)).toEqual(['without-c']);

    // B goes away too: the event says so.
    const eventsBeforeB = events.length;
    await stopNode(b);
    await waitFor(() => events.slice(eventsBeforeB).some((s) => partner(s, b)?.state === 'offline'), 'status event: B went away', 5_000);
    await waitForStatus(libA, (s) => s.partners.every((p) => !p.connected && p.state === 'offline'), 'A alone', 5_000);
  });

  it('joins and replicates over WebSockets only', async () => {
    const ws = { listen: ['/ip4/127.0.0.1/tcp/0/ws'], transport: 'libp2p' as const };
    const a = await startNode(undefined, ws);
    const b = await startNode(undefined, ws);
    for (const n of [a, b]) {
      expect(n.multiaddrs().length).toBeGreaterThan(0);
      for (const addr of n.multiaddrs()) expect(addr).toMatch(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/ws\/p2p\//);
    }
    const [libA, libB] = (await shareLibrary(a, [b])) as [Library, Library];
    await libA.upsert('note', { id: 'ws-a', title: 'over ws', body: null });
    await libB.transaction(async (tx) => {
      await tx.upsert('profile', { id: 'ws-p', name: 'b', color: null, score: 1 });
      await tx.upsert('volume', { id: 'ws-v', path: '/b', bytes: 9 });
    });
    await waitForConvergence([libA, libB]);
    expect(await libB.get('note', 'ws-a')).toMatchObject({ title: 'over ws' });
    expect(await libA.get('volume', 'ws-v')).toEqual({ id: 'ws-v', path: '/b', bytes: 9 });
    expect(partner(await libA.status(), b)).toMatchObject({ connected: true });
  });
});

function sorted(v: VersionVector): [string, number][] {
  return Object.entries(v).sort(([x], [y]) => x.localeCompare(y));
}
