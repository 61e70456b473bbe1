import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SyncNode } from '../src/core/sync-node.js';
import type { LibraryStorage } from '../src/core/storage.js';
import { DEFAULT_SYNC_TUNING } from '../src/core/tuning.js';
import { defineModel } from '../src/index.js';
import { namedPeerSignatures } from '../src/node/native-signatures.js';
import { openMemorySqlite } from '../src/node/sqlite.js';
import type { Kysely } from 'kysely';
import type { InternalTables } from '../src/storage/schema.js';
import { SeededRandom } from '../src/sim/prng.js';
import { SimDriver, VirtualScheduler } from '../src/sim/virtual-scheduler.js';
import { PairedHub } from './helpers/paired-transport.js';

/**
 * Node cores on an injected runtime: a manual scheduler, seeded randomness and a wall clock
 * that follows the scheduler, over an in-process transport and in-memory SQLite. Nothing in
 * src may reach the runtime's own clock, timers or randomness meanwhile.
 */

const Note = defineModel({ name: 'note', ownership: 'shared', conflict: 'lww', fields: { title: 'text' } });
const EPOCH = Date.UTC(2026, 0, 1);
const SRC = fileURLToPath(new URL('../src/', import.meta.url));

/** Storage in memory for a device whose transport's peer name is `peer` (its runs are signed with that name's test key). */
function memoryStorage(deviceId: string, peer: string): LibraryStorage {
  const dbs = new Map<string, Kysely<InternalTables>>();
  const opened = (db: Kysely<InternalTables>) => ({ db, release: () => db.destroy() });
  return {
    deviceId,
    signatures: namedPeerSignatures(peer),
    libraryIds: async () => [...dbs.keys()],
    open: async (id) => opened(dbs.get(id)!),
    create: async (id) => {
      const { db } = openMemorySqlite();
      dbs.set(id, db);
      return opened(db);
    },
    close: async () => undefined,
  };
}

/**
 * Records every call, from a file under src, of what the core must take from its runtime.
 * The originals still run: the test harness keeps its own clock and timers.
 */
function watchGlobals(): string[] {
  const calls: string[] = [];
  const watch = <T extends object>(owner: T, key: keyof T & string, name: string) => {
    const original = owner[key] as (...args: unknown[]) => unknown;
    vi.spyOn(owner, key as never).mockImplementation(((...args: unknown[]) => {
      const limit = Error.stackTraceLimit;
      Error.stackTraceLimit = Infinity;
      const stack = new Error().stack ?? '';
      Error.stackTraceLimit = limit;
      const from = stack.split('\n').find((line) => line.includes(SRC));
      if (from) calls.push(`${name} from ${from.trim()}`);
      return original.apply(owner, args);
    }) as never);
  };
  watch(Date, 'now', 'Date.now');
  watch(Math, 'random', 'Math.random');
  watch(performance, 'now', 'performance.now');
  watch(globalThis.crypto, 'getRandomValues', 'crypto.getRandomValues');
  watch(globalThis.crypto, 'randomUUID', 'crypto.randomUUID');
  watch(globalThis, 'setTimeout', 'setTimeout');
  watch(globalThis, 'setInterval', 'setInterval');
  watch(globalThis, 'setImmediate', 'setImmediate');
  return calls;
}

afterEach(() => {
  vi.restoreAllMocks();
});

/** Two cores, one seed: A creates a library and writes, B joins by invite, writes back; both converge. */
async function scenario(seed: number) {
  const time = new VirtualScheduler();
  const scheduler = time.scope();
  const driver = new SimDriver(time);
  const seeds = new SeededRandom(seed);
  const hub = new PairedHub();
  /** Runs virtual time until `promise` settles (within ten virtual minutes). */
  const drive = <T>(promise: Promise<T>): Promise<T> => driver.complete(promise, 'the cores', { deadline: time.now() + 600_000 });
  const core = (name: string, deviceId: string) =>
    drive(
      SyncNode.create({
        models: [Note],
        openStorage: async () => memoryStorage(deviceId, `peer-${name}`),
        startTransport: async () => hub.transport(`peer-${name}`),
        runtime: { scheduler, random: seeds.fork(), wallClock: () => EPOCH + scheduler.monotonicNow() },
        tuning: DEFAULT_SYNC_TUNING,
        deviceName: name,
        bootstrap: [],
      }),
    );
  const a = await core('a', 'aaaaaaaa-0000-4000-8000-00000000000a');
  const b = await core('b', 'bbbbbbbb-0000-4000-8000-00000000000b');
  const libA = await drive(a.createLibrary({ name: 'notes' }));
  const written = [];
  for (const title of ['one', 'two', 'three']) written.push((await drive(libA.upsert('note', { title }))).id);
  const invite = await drive(libA.createInvite());
  const libB = await drive(b.joinLibrary(invite));
  await drive(libB.synced());
  const reply = (await drive(libB.upsert('note', { title: 'from b' }))).id;
  // Converged: A holds B's write too, and both digests agree.
  await drive(
    (async () => {
      while (!(await libA.get('note', reply))) await new Promise<void>((resolve) => scheduler.setTimeout(resolve, 100));
    })(),
  );
  const digests = [await drive(libA.digest()), await drive(libB.digest())];
  await drive(a.stop());
  await drive(b.stop());
  return { library: libA.id, written, invite, reply, digests };
}

describe('a node core on an injected runtime', () => {
  it('syncs two cores with no global clock, timer or randomness used from src', async () => {
    const calls = watchGlobals();
    const run = await scenario(1);
    expect(calls).toEqual([]);
    expect(run.digests[0]).toBe(run.digests[1]);
  });

  it('the same seed gives the same library id, record ids and invite; another seed other ones', async () => {
    const first = await scenario(7);
    const again = await scenario(7);
    const other = await scenario(8);
    expect(again).toEqual(first);
    expect(other.library).not.toBe(first.library);
    expect(other.written).not.toEqual(first.written);
    expect(other.invite).not.toBe(first.invite);
  });
});
