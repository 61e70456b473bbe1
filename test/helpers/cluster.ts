import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { expect } from 'vitest';
import { createSyncNode, defineModel, type Library, type SyncNode, type SyncNodeOptions } from '../../src/index.js';
import { loadOrCreatePeerKey } from '../../src/network/peer-key.js';
import { createNodeOverTransport, type TransportStarter } from '../../src/node/sync-node.js';
import { systemScheduler } from '../../src/runtime/system-runtime.js';
import { MemoryNetwork, type MemoryTransport, type MemoryTransportOptions } from '../../src/sim/memory-transport.js';
import { SeededRandom } from '../../src/sim/prng.js';
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

/**
 * What a test node talks over: real libp2p on 127.0.0.1, or the test file's in-memory network
 * (`memoryNetwork`). Either way the node is the one users get (`createSyncNode`'s validation,
 * SQLite files in its data directory, real time), and its PeerId comes from the key in its
 * data directory, so a restart on the same directory is the same device and the same peer.
 */
export type ClusterTransport = 'libp2p' | 'memory';

export interface ClusterNodeOptions extends Partial<SyncNodeOptions> {
  /** Default: the file's choice (`useMemoryTransport`), else libp2p. */
  transport?: ClusterTransport;
}

let fileTransport: ClusterTransport = 'libp2p';

/**
 * Makes the nodes and raw peers of this test file run on the in-memory network unless a call
 * asks for libp2p: for tests whose subject is the sync protocol, not libp2p. Vitest gives every
 * test file its own instance of this module, so the choice holds for the calling file only.
 */
export function useMemoryTransport(): void {
  fileTransport = 'memory';
}

/** The transport nodes and raw peers of this file get when a call does not choose. */
export function clusterTransport(): ClusterTransport {
  return fileTransport;
}

/** This file's in-memory network: real timers and no faults unless a test sets some. */
export const memoryNetwork = new MemoryNetwork({ scheduler: systemScheduler, random: new SeededRandom(12) });

/** A transport of the memory network for the peer that `key` authenticates. */
export function memoryTransportFor(key: PrivateKey, options: Partial<MemoryTransportOptions> = {}): MemoryTransport {
  return memoryNetwork.createTransport(peerIdFromPrivateKey(key).toString(), options);
}

/** A node with `listen: []` has no address on the memory network either (it only dials out). */
const startMemoryTransport: TransportStarter = (dataDir, listen) => async () =>
  memoryTransportFor(await loadOrCreatePeerKey(dataDir.peerKeyFile), { listening: listen.length > 0 });

const running = new Set<SyncNode>();

export async function startNode(dataDir?: string, options: ClusterNodeOptions = {}): Promise<SyncNode> {
  const { transport = fileTransport, ...nodeOptions } = options;
  const full: SyncNodeOptions = {
    dataDir: dataDir ?? (await makeTempDir('lsync-node-')),
    models: clusterModels,
    listen: ['/ip4/127.0.0.1/tcp/0'],
    sync: fastSync,
    ...nodeOptions,
  };
  const node = transport === 'memory' ? await createNodeOverTransport(full, startMemoryTransport) : await createSyncNode(full);
  running.add(node);
  return node;
}

/** Starts a node whose PeerId is chosen by the caller (the key is placed in its data directory). */
export async function startNodeWithKey(key: PrivateKey, dir?: string, options: ClusterNodeOptions = {}): Promise<SyncNode> {
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

/** Two nodes that share a library, after A wrote while B was away and both stopped (`writtenWhileAway`). */
export interface WrittenWhileAway {
  dirA: string;
  id: string;
  /** A's device id. */
  deviceA: string;
  /** What B held of A's origin when it stopped. */
  heldByB: number;
  /** Starts both again: A's library and B's. */
  restart(): Promise<[Library, Library]>;
}

/**
 * A shares a library with B, and both converge; B stops, A runs `whileAway` on the library and
 * stops too, so a test can look at A's files before both start again.
 */
export async function writtenWhileAway(whileAway: (libA: Library) => Promise<void>): Promise<WrittenWhileAway> {
  const dirA = await makeTempDir('lsync-away-a-');
  const dirB = await makeTempDir('lsync-away-b-');
  const a = await startNode(dirA);
  const b = await startNode(dirB);
  const [libA, libB] = (await shareLibrary(a, [b])) as [Library, Library];
  await waitForConvergence([libA, libB]);
  await stopNode(b);
  const heldByB = libB.versionVector()[a.deviceId] ?? 0;
  await whileAway(libA);
  await stopNode(a);
  return {
    dirA,
    id: libA.id,
    deviceA: a.deviceId,
    heldByB,
    async restart() {
      const [a2, b2] = [await startNode(dirA), await startNode(dirB)];
      return [a2.library(libA.id), b2.library(libA.id)];
    },
  };
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
  options: ClusterNodeOptions;
  node: SyncNode;
  lib: Library;
}

/** Starts a device at `wall` with a new library, or its replica of `libraryId`. */
export async function startClockedDevice(
  wall: ManualClock,
  options: ClusterNodeOptions = {},
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
