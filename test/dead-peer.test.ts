/**
 * A partner that stops answering without closing its connection (a frozen process: SIGSTOP)
 * is noticed within seconds by the heartbeat timeout, and reconnected and caught up when it
 * comes back (SIGCONT).
 */
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, killRunningChildren, LineChild, makeTempDir, removeTempDirs, REPO_ROOT } from './helpers/child-process.js';
import { fastSync, startNode, stopAllNodes, waitFor } from './helpers/cluster.js';

const CHILD = join(REPO_ROOT, 'test', 'fixtures', 'member-child.mjs');
const NOTE = { name: 'note', ownership: 'shared', conflict: 'lww', fields: { title: 'text', body: { type: 'text', nullable: true } } };

let entry: string;
beforeAll(async () => {
  entry = await ensureBuilt();
}, 120_000);

afterEach(async () => {
  await killRunningChildren();
  await stopAllNodes();
  await removeTempDirs();
});

describe('dead peer detection', () => {
  it('notices a frozen partner within seconds, then reconnects and catches it up when it resumes', async () => {
    // Only the note model, so the child (with the same models) opens the library cleanly.
    const { defineModel } = await import('../src/index.js');
    const a = await startNode(undefined, { models: [defineModel(NOTE as never)] });
    const lib = await a.createLibrary({ name: 'frozen' });
    await lib.upsert('note', { id: 'before', title: 'one', body: null });

    let ready: { peerId: string } | undefined;
    let childDigest = '';
    const child = new LineChild(
      CHILD,
      [JSON.stringify({ entry, dataDir: await makeTempDir('lsync-child-'), models: [NOTE], invite: await lib.createInvite(), sync: fastSync })],
      (line) => {
        const message = JSON.parse(line);
        if (message.t === 'ready') ready = message;
        if (message.t === 'digest') childDigest = message.value;
      },
    );
    await child.waitFor(() => ready !== undefined, 'child joined', 30_000);
    const partner = async () => (await lib.status()).partners.find((p) => p.peer === ready!.peerId);
    await waitFor(async () => (await partner())?.state === 'live', 'child live');
    await child.waitFor(() => childDigest !== '', 'child synced', 30_000);
    expect(childDigest).toBe(await lib.digest());

    child.proc.kill('SIGSTOP');
    const frozenAt = Date.now();
    await waitFor(async () => (await partner())?.state === 'offline', 'frozen child noticed', 15_000);
    // Heartbeat timeout (1.5 s here) plus one heartbeat: seconds, not the minutes TCP would take.
    expect(Date.now() - frozenAt).toBeLessThan(fastSync!.peerTimeoutMs! + 5_000);

    await lib.upsert('note', { id: 'while-frozen', title: 'two', body: null });
    child.proc.kill('SIGCONT');
    await waitFor(async () => (await partner())?.state === 'live', 'child reconnected', 30_000);
    const expectedDigest = await lib.digest();
    await child.waitFor(() => childDigest === expectedDigest, 'child caught up', 30_000);
  }, 90_000);
});
