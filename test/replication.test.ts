import { afterEach, describe, expect, it } from 'vitest';
import { removeTempDirs } from './helpers/child-process.js';
import { fastSync, shareLibrary, startNode, stopAllNodes, waitFor, waitForConvergence } from './helpers/cluster.js';

afterEach(async () => {
  await stopAllNodes();
  await removeTempDirs();
});

describe('replication between two nodes', () => {
  it('joins by invite and replicates writes both ways', async () => {
    const a = await startNode();
    const b = await startNode();
    const [libA, libB] = await shareLibrary(a, [b]);
    await libA!.upsert('note', { id: 'n1', title: 'from a', body: null });
    await libB!.upsert('note', { id: 'n2', title: 'from b', body: null });
    await waitForConvergence([libA!, libB!]);
    expect(await libB!.get('note', 'n1')).toMatchObject({ title: 'from a' });
    expect((await libA!.members()).length).toBe(2);
  });

  it('a library used alone keeps its log for the first device that joins', async () => {
    const a = await startNode();
    const b = await startNode();
    const libA = await a.createLibrary({ name: 'solo' });
    for (let i = 0; i < 10; i++) await libA.upsert('note', { id: `n${i}`, title: 't', body: null });
    // The prune timer is what is under test, so the wait is for time itself: several intervals.
    const until = Date.now() + 4 * fastSync!.pruneIntervalMs!;
    await waitFor(() => Date.now() > until, 'several prune intervals');
    expect(await libA.logSize()).toBe(10);
    const libB = await b.joinLibrary(await libA.createInvite());
    await waitForConvergence([libA, libB]);
    await waitFor(async () => (await libB.status()).state === 'ready', 'joiner ready');
    expect(await libB.get('note', 'n9')).toMatchObject({ title: 't' });
  });

  it('joining fails with a NETWORK error when the inviter cannot be reached, and creates nothing', async () => {
    const a = await startNode();
    const b = await startNode();
    const libA = await a.createLibrary({ name: 'x' });
    const invite = await libA.createInvite();
    await a.stop();
    await expect(b.joinLibrary(invite)).rejects.toMatchObject({ code: 'NETWORK' });
    expect(b.libraries()).toEqual([]);
  });
});
