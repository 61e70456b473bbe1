/**
 * Moving a library's log between replicas without the network, as a pull does: the runs one
 * holds and the other lacks, applied with `applyRemoteChunks` (signatures checked against the
 * member rows). A replica made with `createLibrary({ id })` is no member anywhere: `introduce`
 * has it write its own member row first, by which every receiver then checks its runs.
 */
import type { Library } from '../../src/index.js';
import { engineOf } from '../../src/library/library.js';
import type { ApplyResult } from '../../src/library/remote-apply.js';
import type { Chunk } from '../../src/peer-log/chunk.js';
import type { VersionVector } from '../../src/peer-log/types.js';

export const EVERY_RUN = { maxRecords: 1_000_000, maxBytes: 1 << 30 };

/** `lib` writes its own member row (as before its first invite): receivers check its runs by it. */
export async function introduce(lib: Library): Promise<void> {
  await lib.createInvite();
}

/** The runs `lib` holds after `after`, whole (as a pull serves them). */
export async function runsOf(lib: Library, after: VersionVector = {}): Promise<Chunk[]> {
  return (await engineOf(lib).chunksAfter(after, EVERY_RUN)).chunks;
}

/** Applies to `to` every run of `from` it lacks, in one batch. */
export async function copyRuns(from: Library, to: Library): Promise<ApplyResult> {
  return engineOf(to).applyRemoteChunks(await runsOf(from, to.versionVector()));
}

/**
 * Per origin, the last position pruning may reach in `lib`'s log: the one before the run the
 * origin ends at (pruning keeps that run, the evidence a fork at the head needs).
 */
export async function prunableThrough(lib: Library): Promise<VersionVector> {
  const held = lib.versionVector();
  const through: VersionVector = {};
  for (const [origin, seq] of Object.entries(held)) {
    const [last] = (await engineOf(lib).chunksAfter({ ...held, [origin]: seq - 1 }, EVERY_RUN)).chunks;
    through[origin] = last ? last.firstSeq - 1 : seq;
  }
  return through;
}

/** Entries of the runs `lib`'s origins end at: what pruning everything leaves of its log. */
export async function lastRunsSize(lib: Library): Promise<number> {
  const held = lib.versionVector();
  const through = await prunableThrough(lib);
  return Object.entries(held).reduce((n, [origin, seq]) => n + seq - through[origin]!, 0);
}
