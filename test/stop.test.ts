/**
 * Stopping a node while the user's reads and writes run: each operation that began before
 * `stop()` completes (a multi-step read such as `digest` used to meet a destroyed driver halfway
 * and fail with an untyped error), and each one begun after fails with `STOPPED`.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { StoppedError } from '../src/index.js';
import { makeTempDir, removeTempDirs } from './helpers/child-process.js';
import { startNode, stopAllNodes } from './helpers/cluster.js';

afterEach(async () => {
  await stopAllNodes();
  await removeTempDirs();
});

describe('a node stopped while operations run', () => {
  it('completes the operations begun before stop() and refuses later ones with STOPPED', async () => {
    const dir = await makeTempDir('lsync-stop-');
    const node = await startNode(dir);
    const lib = await node.createLibrary({ name: 'stopping' });
    await lib.transaction(async (tx) => {
      for (let i = 0; i < 200; i++) await tx.upsert('note', { id: `n${i}`, title: `note ${i}`, body: null });
    });

    const inFlight = {
      digest: lib.digest(),
      list: lib.list('note', { limit: 500 }),
      write: lib.upsert('note', { id: 'late', title: 'written as the node stops', body: null }),
      members: lib.members(),
      status: lib.status(),
      history: lib.syncHistory(),
    };
    const stopped = node.stop();
    const settled = await Promise.allSettled(Object.values(inFlight));
    await stopped;
    expect(settled.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
    expect(await inFlight.digest).toMatch(/^[0-9a-f]{64}$/);
    expect((await inFlight.list).length).toBeGreaterThanOrEqual(200);

    for (const after of [() => lib.digest(), () => lib.get('note', 'n1'), () => lib.upsert('note', { id: 'x', title: 'x', body: null })]) {
      await expect(after()).rejects.toBeInstanceOf(StoppedError);
    }
    // The write that completed was committed before the database closed.
    const reopened = await startNode(dir);
    expect(await reopened.library(lib.id).get('note', 'late')).toMatchObject({ title: 'written as the node stops' });
  });
});
