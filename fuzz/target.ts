/**
 * The fuzz target: a victim node V and an honest member B (both the real core, in process) share
 * two libraries; their session is recorded as the corpus of valid frames (joins, hellos, pushes
 * of every kind of change, acks, heartbeats, pulls and pages of every kind). B then stops, and
 * the fuzzer speaks to V as B (a member) or as strangers.
 */
import { type SessionErrorEvent } from '../src/replication/network.js';
import { defineModel } from '../src/models/define.js';
import { encodeMessage } from '../src/protocol/codec.js';
import { PROTOCOL_VERSION } from '../src/protocol/messages.js';
import type { SeededRandom } from '../src/sim/prng.js';
import { unpack } from '../src/util/msgpack.js';
import { CoreNode, type CoreLibrary } from './core-node.js';
import { LoopHub } from './loop-transport.js';
import type { CorpusFrame } from './mutate.js';

/** Every conflict rule and both ownerships, as the multi-node tests use. */
export const FUZZ_MODELS = [
  defineModel({ name: 'note', ownership: 'shared', conflict: 'lww', fields: { title: 'text', body: { type: 'text', nullable: true } } }),
  defineModel({
    name: 'profile',
    ownership: 'shared',
    conflict: 'lww-field',
    fields: { name: 'text', color: { type: 'text', nullable: true }, score: { type: 'integer', nullable: true }, data: { type: 'json', nullable: true } },
  }),
  defineModel({ name: 'tag', ownership: 'shared', conflict: 'union', naturalKey: ['label'], fields: { label: 'text' } }),
  defineModel({ name: 'volume', ownership: 'device', fields: { path: 'text', bytes: 'integer', raw: { type: 'blob', nullable: true } } }),
];

const TUNING = {
  heartbeatMs: 500,
  peerTimeoutMs: 600_000,
  requestTimeoutMs: 5_000,
  pushWindow: 4,
  batchRecords: 3,
  batchBytes: 64 * 1024,
  pruneIntervalMs: 3_600_000,
  retainLogEntries: 1_000_000,
  statusThrottleMs: 1_000,
  maxConcurrentServes: 4,
  handshakeTimeoutMs: 5_000,
};

export interface FuzzTarget {
  hub: LoopHub;
  victim: CoreNode;
  /** The member the fuzzer plays (stopped: its PeerId and device are free to use). */
  member: { peer: string; device: string };
  libraries: CoreLibrary[];
  corpus: CorpusFrame[];
  /** Every uuid of the setup (devices, libraries, writers), and a stranger's. */
  uuids: string[];
  /** Session errors the victim reported, in order. */
  sessionErrors: SessionErrorEvent[];
  stop(): Promise<void>;
}

export function uuidFrom(rng: SeededRandom): string {
  const hex = Array.from(rng.bytes(16), (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

export async function startFuzzTarget(rng: SeededRandom): Promise<FuzzTarget> {
  const hub = new LoopHub();
  const corpus: CorpusFrame[] = [];
  hub.record = (_from, frame) => corpus.push({ kind: String((unpack(frame) as { t: unknown }).t), frame });
  const sessionErrors: SessionErrorEvent[] = [];
  // The member's PeerId sorts first: it opens the sessions, as the fuzzer then does in its name.
  const member = new CoreNode(hub.transport('peer-a-member'), {
    deviceId: uuidFrom(rng),
    models: FUZZ_MODELS,
    tuning: TUNING,
    onSessionError: () => undefined,
  });
  const victim = new CoreNode(hub.transport('peer-v-victim'), {
    deviceId: uuidFrom(rng),
    models: FUZZ_MODELS,
    tuning: TUNING,
    onSessionError: (event) => sessionErrors.push(event),
  });
  const libraries = [await victim.createLibrary(uuidFrom(rng), 'fuzz one'), await victim.createLibrary(uuidFrom(rng), 'fuzz two')];
  const joined: CoreLibrary[] = [];
  for (const core of libraries) {
    await writeSome(core, 'v');
    joined.push(await member.joinLibrary(await core.library.createInvite({ ttlMs: 3_600_000 })));
  }
  member.network.reconcileSoon();
  // The member writes once it has backfilled, as an application would after `synced()`.
  await until(async () => (await Promise.all(joined.map((core) => core.library.status()))).every((s) => s.state === 'ready'), 'the member to backfill');
  for (const core of joined) await writeSome(core, 'm');
  await until(async () => {
    for (let i = 0; i < libraries.length; i++) {
      const [a, b] = [libraries[i]!.library, joined[i]!.library];
      if ((await a.digest()) !== (await b.digest())) return false;
      if (JSON.stringify(a.versionVector()) !== JSON.stringify(b.versionVector())) return false;
    }
    return true;
  }, 'the member and the victim to converge');
  // Pages of the kinds a converged catch-up does not need: a snapshot and a device-owned page.
  for (const core of joined) {
    const session = core.replicator.sessions.get(victim.peer);
    if (!session) throw new Error('no session of the member with the victim');
    await session.pullSnapshot(null);
    await session.pullState(victim.deviceId, 0);
    await session.pullState(member.deviceId, 0);
  }
  const library = libraries[0]!.library.id;
  for (const message of [
    { t: 'busy', library, req: 1, retryAfterMs: 500 },
    { t: 'error', library, code: 'PROTOCOL', message: 'bad', req: null },
    { t: 'error', library, code: 'REMOVED', message: 'removed', req: null, removal: { kind: 'removed', by: victim.deviceId, at: 1 } },
    { t: 'hello', v: [PROTOCOL_VERSION[0] + 1, 0], library, device: member.deviceId, shared: {}, owned: {} },
  ] as const) {
    corpus.push({ kind: message.t, frame: encodeMessage(message as never) });
  }
  hub.record = undefined;
  await member.stop();
  await until(async () => libraries.every((core) => core.replicator.sessions.size === 0), 'the victim to close its sessions with the member');
  const uuids = [
    victim.deviceId,
    member.deviceId,
    ...libraries.map((core) => core.library.id),
    ...libraries.flatMap((core) => Object.keys(core.library.versionVector())),
    uuidFrom(rng),
  ];
  return {
    hub,
    victim,
    member: { peer: member.peer, device: member.deviceId },
    libraries,
    corpus,
    uuids: [...new Set(uuids)],
    sessionErrors,
    stop: () => victim.stop(),
  };
}

/** Writes of every model and op: inserts, partial updates, deletes, union keys, device-owned rows. */
async function writeSome(core: CoreLibrary, side: string): Promise<void> {
  const lib = core.library;
  for (let i = 0; i < 4; i++) {
    await lib.upsert('note', { id: `note-${side}-${i}`, title: `note ${i}`, body: i % 2 ? null : 'body' });
    await lib.upsert('profile', { id: `profile-${i}`, name: `p${i}`, color: side, score: i, data: { side, list: [i] } });
    await lib.upsert('tag', { label: `tag ${i}` });
    await lib.upsert('volume', { id: `volume-${side}-${i}`, path: `/v/${i}`, bytes: i * 1000, raw: Uint8Array.of(i) });
  }
  await lib.update('profile', 'profile-1', { color: `${side}!` });
  await lib.delete('note', `note-${side}-3`);
  await lib.delete('volume', `volume-${side}-3`);
}

async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`fuzz setup: timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
