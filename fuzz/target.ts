/**
 * The fuzz target: a victim node V and an honest member B (both the real core, in process) share
 * two libraries; their session is recorded as the corpus of valid frames (joins, hellos, pushes
 * of every kind of change, acks, heartbeats, pulls and pages of every kind). B then stops, and
 * the fuzzer speaks to V as B (a member: a transport of its own under B's PeerId, which is what
 * the transport authenticates) or as strangers.
 */
import { deviceIdForPeer } from '../src/membership/device-id.js';
import type { SessionErrorEvent } from '../src/replication/wire-errors.js';
import { defineModel } from '../src/models/define.js';
import { encodeMessage } from '../src/protocol/codec.js';
import { PROTOCOL_VERSION } from '../src/protocol/messages.js';
import { chunkToTuple } from '../src/replication/session.js';
import type { SeededRandom } from '../src/sim/prng.js';
import { unpack } from '../src/util/msgpack.js';
import { engineOf, type Library } from '../src/library/library.js';
import { CoreNode, type CoreLibrary } from './core-node.js';
import { PairedHub } from '../test/helpers/paired-transport.js';
import { recordingTransport } from './recording.js';
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
  redialMinMs: 50,
  redialMaxMs: 500,
  reconcileMs: 200,
  peerTimeoutMs: 600_000,
  requestTimeoutMs: 5_000,
  pushWindow: 4,
  batchRecords: 3,
  batchBytes: 64 * 1024,
  pruneIntervalMs: 3_600_000,
  retainLogEntries: 1_000_000,
  statusThrottleMs: 1_000,
  maxConcurrentServes: 4,
};

export interface FuzzTarget {
  hub: PairedHub;
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
  const hub = new PairedHub();
  const corpus: CorpusFrame[] = [];
  let recording = true;
  const record = (frame: Uint8Array) => {
    if (recording) corpus.push({ kind: String((unpack(frame) as { t: unknown }).t), frame });
  };
  const sessionErrors: SessionErrorEvent[] = [];
  // The member's PeerId sorts first: it opens the sessions, as the fuzzer then does in its name.
  const member = await CoreNode.start(recordingTransport(hub.transport('peer-a-member'), record), {
    deviceId: deviceIdForPeer('peer-a-member'),
    models: FUZZ_MODELS,
    tuning: TUNING,
    onSessionError: () => undefined,
  });
  const victim = await CoreNode.start(recordingTransport(hub.transport('peer-v-victim'), record), {
    deviceId: deviceIdForPeer('peer-v-victim'),
    models: FUZZ_MODELS,
    tuning: TUNING,
    onSessionError: (event) => sessionErrors.push(event),
  });
  const created = [
    await victim.node.createLibrary({ id: uuidFrom(rng), name: 'fuzz one' }),
    await victim.node.createLibrary({ id: uuidFrom(rng), name: 'fuzz two' }),
  ];
  const joined: Library[] = [];
  for (const lib of created) {
    await writeSome(lib, 'v');
    joined.push(await member.node.joinLibrary(await lib.createInvite({ ttlMs: 3_600_000 })));
  }
  // The member writes once it has backfilled, as an application would after `synced()`.
  for (const lib of joined) await lib.synced();
  for (const lib of joined) await writeSome(lib, 'm');
  await until(async () => {
    for (let i = 0; i < created.length; i++) {
      const [a, b] = [engineOf(created[i]!), engineOf(joined[i]!)];
      if (JSON.stringify(a.versionVector()) !== JSON.stringify(b.versionVector())) return false;
      if (JSON.stringify(a.ownedVector()) !== JSON.stringify(b.ownedVector())) return false;
      if ((await created[i]!.digest()) !== (await joined[i]!.digest())) return false;
    }
    return true;
  }, 'the member and the victim to converge');
  // A page of a kind a converged catch-up does not need: a snapshot, as the victim serves it.
  for (const lib of created) {
    const page = await engineOf(lib).snapshotAfter(null, { maxRecords: 8, maxBytes: 64 * 1024 });
    const rows = page.rows.map(({ model, state }) => [model, state.id, state.hlc, state.deleted, state.values, state.fieldHlcs, state.upsertHlc, state.deleteHlc]);
    const message = { t: 'snapshot-page', library: lib.id, req: 1, vector: engineOf(lib).versionVector(), rows, next: page.next, total: null };
    corpus.push({ kind: message.t, frame: encodeMessage(message as never) });
  }
  // Fork evidence made of one of the victim's runs twice (no fork: a mutation may make one).
  for (const lib of created) {
    const [run] = (await engineOf(lib).chunksAfter({}, { maxRecords: 8, maxBytes: 64 * 1024 })).chunks;
    const tuple = chunkToTuple(run!);
    const message = { t: 'forked', library: lib.id, origin: run!.origin, evidence: [tuple, tuple], runs: [tuple] } as const;
    corpus.push({ kind: message.t, frame: encodeMessage(message as never) });
  }
  const library = created[0]!.id;
  for (const message of [
    { t: 'busy', library, req: 1, retryAfterMs: 500 },
    { t: 'error', library, code: 'PROTOCOL', message: 'bad', req: null },
    { t: 'error', library, code: 'REMOVED', message: 'removed', req: null, removal: { kind: 'removed', by: victim.deviceId, at: 1 } },
    { t: 'hello', v: [PROTOCOL_VERSION[0] + 1, 0], library, device: member.deviceId, shared: {}, owned: {} },
  ] as const) {
    corpus.push({ kind: message.t, frame: encodeMessage(message as never) });
  }
  recording = false;
  await member.stop();
  await until(
    async () => (await Promise.all(created.map((lib) => lib.status()))).every((status) => status.partners.every((p) => p.state !== 'live')),
    'the victim to close its sessions with the member',
  );
  const libraries = await Promise.all(created.map((lib) => victim.watchWrites(lib)));
  const uuids = [
    victim.deviceId,
    member.deviceId,
    ...libraries.map((core) => core.library.id),
    ...libraries.flatMap((core) => Object.keys(core.engine.versionVector())),
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
async function writeSome(lib: Library, side: string): Promise<void> {
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
