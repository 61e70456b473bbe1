import { afterEach, describe, expect, it } from 'vitest';
import { removeTempDirs } from './helpers/child-process.js';
import { shareLibrary, startNode, stopAllNodes, waitForConvergence } from './helpers/cluster.js';

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
});
