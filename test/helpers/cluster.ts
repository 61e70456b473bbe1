import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { expect } from 'vitest';
import { createSyncNode, defineModel, type Library, type SyncNode, type SyncNodeOptions } from '../../src/index.js';
import { makeTempDir } from './child-process.js';
import { engineOf } from '../../src/library/library.js';

/** Models covering every conflict rule and both ownerships, shared by the multi-node tests. */
export const clusterModels = [
  defineModel({ name: 'note', ownership: 'shared', conflict: 'lww', fields: { title: 'text', body: { type: 'text', nullable: true } } }),
  defineModel({
    name: 'profile',
    ownership: 'shared',
    conflict: 'lww-field',
    fields: { name: 'text', color: { type: 'text', nullable: true }, score: { type: 'integer', nullable: true } },
  }),
  defineModel({ name: 'tag', ownership: 'shared', conflict: 'union', naturalKey: ['label'], fields: { label: 'text' } }),
  defineModel({ name: 'volume', ownership: 'device', fields: { path: 'text', bytes: 'integer' } }),
];

/** Fast timings so dead peers and catch-up show within a test's patience. */
export const fastSync: SyncNodeOptions['sync'] = {
  heartbeatMs: 200,
  peerTimeoutMs: 1_500,
  redialMinMs: 100,
  redialMaxMs: 1_000,
  reconcileMs: 200,
  pruneIntervalMs: 300,
};

/** Fast timings, but no session drops for load reasons (a generous peer timeout), and no pruning. */
export const steadySync: SyncNodeOptions['sync'] = { ...fastSync, peerTimeoutMs: 15_000, pruneIntervalMs: 3_600_000 };

const running = new Set<SyncNode>();

export async function startNode(dataDir?: string, options: Partial<SyncNodeOptions> = {}): Promise<SyncNode> {
  const node = await createSyncNode({
    dataDir: dataDir ?? (await makeTempDir('lsync-node-')),
    models: clusterModels,
    listen: ['/ip4/127.0.0.1/tcp/0'],
    sync: fastSync,
    ...options,
  });
  running.add(node);
  return node;
}

/** Starts a node whose PeerId is chosen by the caller (the key is placed in its data directory). */
export async function startNodeWithKey(key: PrivateKey, dir?: string, options: Partial<SyncNodeOptions> = {}): Promise<SyncNode> {
  dir ??= await makeTempDir('lsync-node-');
  await writeFile(join(dir, 'peer.key'), privateKeyToProtobuf(key), { mode: 0o600 });
  return startNode(dir, options);
}

export async function stopNode(node: SyncNode): Promise<void> {
  running.delete(node);
  await node.stop();
}

export async function stopAllNodes(): Promise<void> {
  await Promise.all([...running].map((n) => stopNode(n)));
}

/** Polls `check` until it returns true or the deadline passes (no fixed sleeps). */
export async function waitFor(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Waits until every library has the same digest, then asserts it. */
export async function waitForConvergence(libraries: Library[], timeoutMs = 30_000): Promise<string> {
  // The digests of one moment: reading them again afterwards could catch a later change (a
  // member row rewritten for a new address) on its way, on a loaded machine.
  let digests: string[] = [];
  await waitFor(
    async () => {
      digests = await Promise.all(libraries.map((l) => l.digest()));
      return new Set(digests).size === 1;
    },
    'equal digests',
    timeoutMs,
  );
  expect(new Set(digests).size).toBe(1);
  return digests[0]!;
}

/** Creates a library on `owner` and joins it from each of `joiners` by invite. */
export async function shareLibrary(owner: SyncNode, joiners: SyncNode[]): Promise<Library[]> {
  const lib = await owner.createLibrary({ name: 'shared' });
  const libs = [lib];
  for (const joiner of joiners) libs.push(await joiner.joinLibrary(await lib.createInvite()));
  return libs;
}

/** What a library holds, for asserting that something left it untouched. */
export async function librarySnapshot(lib: Library) {
  return {
    digest: await lib.digest(),
    vector: lib.versionVector(),
    owned: engineOf(lib).ownedVector(),
    logSize: await engineOf(lib).logSize(),
    members: (await lib.members()).map((m) => `${m.device}@${m.peer}`).sort(),
  };
}

/** A wall clock the test sets by hand (the `wallClock` option of a node). */
export class ManualClock {
  constructor(public ms: number) {}
  readonly read = (): number => this.ms;
}

/** A node on a hand-set wall clock with one library, that can restart from its data directory. */
export interface ClockedDevice {
  dataDir: string;
  wall: ManualClock;
  options: Partial<SyncNodeOptions>;
  node: SyncNode;
  lib: Library;
}

/** Starts a device at `wall` with a new library, or its replica of `libraryId`. */
export async function startClockedDevice(
  wall: ManualClock,
  options: Partial<SyncNodeOptions> = {},
  libraryId?: string,
): Promise<ClockedDevice> {
  const dataDir = await makeTempDir('lsync-clocked');
  const node = await startNode(dataDir, { ...options, wallClock: wall.read });
  const lib = await node.createLibrary({ name: 'clocked', ...(libraryId ? { id: libraryId } : {}) });
  return { dataDir, wall, options, node, lib };
}

/** Stops the device's node and starts it again from its data directory, same clock and options. */
export async function restartClockedDevice(d: ClockedDevice): Promise<void> {
  await stopNode(d.node);
  d.node = await startNode(d.dataDir, { ...d.options, wallClock: d.wall.read });
  d.lib = d.node.library(d.lib.id);
}
