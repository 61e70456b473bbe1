/**
 * Two partners that each serve the other's pulls at once: sends wait for the partner to read
 * (back-pressure), so a session whose read loop waited for its own page to be sent would wait
 * for a partner whose read loop waits the same way, and both sessions would time out, again and
 * again, before converging. The read loop queues its replies instead (bounded), and goes on.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Library, SessionErrorEvent } from '../src/index.js';
import { removeTempDirs } from './helpers/child-process.js';
import { memoryNetwork, shareLibrary, startNode, steadySync, stopAllNodes, useMemoryTransport, waitForConvergence } from './helpers/cluster.js';

useMemoryTransport();

afterEach(async () => {
  memoryNetwork.heal();
  await stopAllNodes();
  await removeTempDirs();
});

async function writeMany(lib: Library, prefix: string, count: number): Promise<void> {
  const body = 'x'.repeat(1_000);
  for (let start = 0; start < count; start += 500) {
    await lib.transaction(async (tx) => {
      for (let i = start; i < start + 500; i++) await tx.upsert('note', { id: `${prefix}-${i}`, title: prefix, body });
    });
  }
}

describe('partners serving each other', () => {
  it('converge after a partition with megabytes written on both sides, and no session times out', async () => {
    // Short timeouts: a read loop stuck behind its own send shows as TIMEOUT within seconds.
    const sync = { ...steadySync, heartbeatMs: 500, peerTimeoutMs: 2_500 };
    const a = await startNode(undefined, { sync });
    const b = await startNode(undefined, { sync });
    const [libA, libB] = (await shareLibrary(a, [b])) as [Library, Library];
    await libB.synced();
    const errors: SessionErrorEvent[] = [];
    for (const node of [a, b]) node.on('session-error', (e) => errors.push(e));

    memoryNetwork.partition([[a.peerId], [b.peerId]]);
    await Promise.all([writeMany(libA, 'a', 10_000), writeMany(libB, 'b', 10_000)]);
    memoryNetwork.heal();

    await waitForConvergence([libA, libB], 60_000);
    expect(await libA.get('note', 'b-9999')).toMatchObject({ title: 'b' });
    expect(errors.filter((e) => (e.error as { code?: string }).code === 'TIMEOUT')).toEqual([]);
  }, 120_000);
});
