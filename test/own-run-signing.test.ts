/**
 * This device's runs of shared changes are stored unsigned by the write and signed after it
 * commits (`src/library/own-run-signatures.ts`): off the host's thread, or by the first read
 * that needs the signature before then; signatures are stored with their runs later, many at a
 * time. Real SQLite files, the in-memory network.
 *
 * 1. A read of the log serves every run signed (a stranger's check verifies each), whether its
 *    signature was stored yet or not; once enough are made they are stored in the file, and
 *    what is stored is what was served.
 *    A stop stores every signature, made by a read or by the thread pool; a read once the close
 *    began is STOPPED, not a failure of the released database.
 * 2. Runs left unsigned by a crash (no stop stored their signatures) are signed when read after
 *    the restart and reach a partner that was away, with no protocol error there.
 * 3. A transaction rolled back leaves nothing behind for the seq it would have written: the run
 *    written at that seq afterwards verifies and follows the run before it, and a replica that
 *    applies the runs holds the same rows.
 */
import { generateKeyPair } from '@libp2p/crypto/keys';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Library } from '../src/index.js';
import { engineOf } from '../src/library/library.js';
import { deviceSignatures } from '../src/node/native-signatures.js';
import { verifyRun } from '../src/peer-log/signed-runs.js';
import type { Chunk } from '../src/peer-log/chunk.js';
import { makeTempDir, removeTempDirs } from './helpers/child-process.js';
import { startNode, stopAllNodes, stopNode, useMemoryTransport, waitFor, waitForConvergence, writtenWhileAway } from './helpers/cluster.js';

useMemoryTransport();

afterEach(async () => {
  await stopAllNodes();
  await removeTempDirs();
});

const EVERYTHING = { maxRecords: 100_000, maxBytes: 1 << 26 };
const STRANGER = deviceSignatures(await generateKeyPair('Ed25519'));

function libraryFile(dataDir: string, library: string, readonly: boolean): Database.Database {
  return new Database(join(dataDir, 'libraries', `${library}.sqlite`), { readonly, fileMustExist: true });
}

/** `origin`'s stored signatures by last seq (empty: not signed yet), read beside the node (WAL). */
function storedSignatures(dataDir: string, library: string, origin: string): Map<number, Buffer> {
  const db = libraryFile(dataDir, library, true);
  try {
    const rows = db.prepare('SELECT last_seq, sig FROM sync_log WHERE origin = ?').all(origin) as { last_seq: number; sig: Buffer }[];
    return new Map(rows.map((r) => [r.last_seq, r.sig]));
  } finally {
    db.close();
  }
}

const unsignedCount = (stored: Map<number, Buffer>) => [...stored.values()].filter((sig) => sig.byteLength === 0).length;

async function writeNotes(lib: Library, prefix: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) await lib.upsert('note', { id: `${prefix}-${i}`, title: `${prefix} ${i}`, body: null });
}

function expectVerified(runs: readonly Chunk[], library: string): void {
  for (const run of runs) expect(() => verifyRun(STRANGER, library, run)).not.toThrow();
}

describe("this device's own runs", () => {
  it('are served signed whether their signature is stored yet or not, and stored as served', async () => {
    const dir = await makeTempDir('lsync-own-runs-');
    const a = await startNode(dir);
    const lib = await a.createLibrary({ name: 'own runs' });
    // Fewer writes than a store takes: the signatures made stay unstored while the node runs.
    await writeNotes(lib, 'few', 10);
    const few = storedSignatures(dir, lib.id, a.deviceId);
    expect(unsignedCount(few)).toBe(few.size);
    const page = await engineOf(lib).chunksAfter({}, EVERYTHING);
    const own = page.chunks.filter((c) => c.origin === a.deviceId);
    expect(own.length).toBe(few.size);
    expectVerified(own, lib.id);
    // A run's id commits to everything it holds: one changed entry no longer verifies.
    const tampered = { ...own[0]!, entries: Uint8Array.from(own[0]!.entries, (b, i) => (i === own[0]!.entries.byteLength - 1 ? b ^ 1 : b)) };
    expect(() => verifyRun(STRANGER, lib.id, tampered)).toThrow(/not signed/);

    // Enough writes for the node to store signatures: they reach the file, as they were served.
    await writeNotes(lib, 'many', 600);
    await waitFor(() => unsignedCount(storedSignatures(dir, lib.id, a.deviceId)) < 600, 'signatures to be stored');
    const served = (await engineOf(lib).chunksAfter({}, EVERYTHING)).chunks.filter((c) => c.origin === a.deviceId);
    expectVerified(served, lib.id);
    const stored = storedSignatures(dir, lib.id, a.deviceId);
    for (const run of served) {
      const sig = stored.get(run.lastSeq)!;
      if (sig.byteLength > 0) expect(Buffer.from(run.sig)).toEqual(sig);
    }
    // A stop stores the signatures made and not stored yet, those of runs never read too (the
    // thread pool's, waited for): every run is signed in the file.
    await writeNotes(lib, 'last', 5);
    await stopNode(a);
    expect(unsignedCount(storedSignatures(dir, lib.id, a.deviceId))).toBe(0);
  });

  it('are stored at close after the engine refuses new reads: a read once the close began is STOPPED', async () => {
    const a = await startNode();
    const lib = await a.createLibrary({ name: 'closing' });
    await writeNotes(lib, 'n', 3);
    const engine = engineOf(lib);
    const closing = engine.close();
    await expect(engine.chunksAfter({}, EVERYTHING)).rejects.toMatchObject({ code: 'STOPPED' });
    await closing;
  });

  it('left unsigned by a crash are signed after the restart and reach a partner that was away', async () => {
    const away = await writtenWhileAway((libA) => writeNotes(libA, 'away', 20));
    // The state a crash right after the writes leaves: the runs committed, none of their
    // signatures stored.
    const db = libraryFile(away.dirA, away.id, false);
    try {
      db.prepare("UPDATE sync_log SET sig = x'' WHERE origin = ? AND last_seq > ?").run(away.deviceA, away.heldByB);
    } finally {
      db.close();
    }
    const written = [...storedSignatures(away.dirA, away.id, away.deviceA)].filter(([seq]) => seq > away.heldByB);
    expect(written.length).toBeGreaterThan(0);
    expect(written.filter(([, sig]) => sig.byteLength > 0)).toEqual([]);

    const [libA, libB] = await away.restart();
    await waitFor(async () => (await libB.list('note', { limit: 100 })).filter((n) => String(n.id).startsWith('away-')).length === 20, "B to hold A's notes");
    await waitForConvergence([libA, libB]);
    expect((await libB.status()).protocolErrors).toBe(0);
    // B holds A's runs as A signed them after the restart.
    expectVerified((await engineOf(libB).chunksAfter({}, EVERYTHING)).chunks, away.id);
  });

  it('leave no signature behind for a transaction rolled back', async () => {
    const a = await startNode();
    const lib = await a.createLibrary({ name: 'rolled back' });
    await writeNotes(lib, 'before', 3);
    await expect(
      lib.transaction(async (tx) => {
        await tx.upsert('note', { id: 'gone', title: 'rolled back', body: null });
        throw new Error('abort');
      }),
    ).rejects.toThrow('abort');
    await writeNotes(lib, 'after', 3);
    const runs = (await engineOf(lib).chunksAfter({}, EVERYTHING)).chunks.filter((c) => c.origin === a.deviceId);
    expect(runs.reduce((n, c) => n + c.lastSeq - c.firstSeq + 1, 0)).toBe(lib.versionVector()[a.deviceId]);
    expectVerified(runs, lib.id);
    expect((await lib.list('note', { limit: 10 })).map((n) => n.id)).not.toContain('gone');
    // A replica takes the runs (each following the one before) and holds the same rows.
    const b = await startNode();
    const replica = await b.createLibrary({ name: 'rolled back', id: lib.id });
    const all = (await engineOf(lib).chunksAfter({}, EVERYTHING)).chunks;
    const applied = await engineOf(replica).applyRemoteChunks(all);
    expect([applied.gaps, applied.forks, applied.refused]).toEqual([[], [], 0]);
    expect(await replica.list('note', { limit: 10 })).toEqual(await lib.list('note', { limit: 10 }));
  });
});
