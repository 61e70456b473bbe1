/**
 * Security and protocol-robustness tests of replication, on the in-memory network (malformed
 * frames below the framing: real libp2p on 127.0.0.1).
 * Attackers are raw protocol clients (test/helpers/raw-peer.ts) with their own keys that send
 * exactly the frames a malicious or broken peer would; every wait polls a condition.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { encodeUint8Array, encodingLength } from 'uint8-varint';
import { chunksOf } from '../src/replication/session.js';
import { afterEach, describe, expect, it } from 'vitest';
import {
  InviteError,
  type Library,
  MAX_FRAME_BYTES,
  NotMemberError,
  PROTOCOL_VERSION,
  ProtocolError,
  ProtocolVersionError,
  type SessionErrorEvent,
  type SyncNode,
  type VersionVector,
} from '../src/index.js';
import { encodeHlc } from '../src/hlc/index.js';
import type { PrivateKey } from '@libp2p/interface';
import type { Chunk } from '../src/peer-log/chunk.js';
import type { LogEntry } from '../src/peer-log/types.js';
import { encodeMessage } from '../src/protocol/codec.js';
import type { ChunkTuple, Message, MessageOf } from '../src/protocol/messages.js';
import { decodeInvite, encodeInvite, hashSecret, inviteProof } from '../src/replication/invite-code.js';
import { pack, unpack } from '../src/util/msgpack.js';
import { makeTempDir, removeTempDirs } from './helpers/child-process.js';
import {
  fastSync,
  librarySnapshot,
  shareLibrary,
  startNode,
  startNodeWithKey,
  stopAllNodes,
  stopNode,
  useMemoryTransport,
  waitFor,
  waitForConvergence,
} from './helpers/cluster.js';
import { keyWhere, RawPeer, type RawStream, stopAllRawPeers } from './helpers/raw-peer.js';
import { engineOf } from '../src/library/library.js';
import { signedTuples } from './helpers/signed-runs.js';

useMemoryTransport();

afterEach(async () => {
  await stopAllRawPeers();
  await stopAllNodes();
  await removeTempDirs();
});

const V1 = PROTOCOL_VERSION.join('.');
/** Frames that carry library data (or would start a session): an outsider must never get one. */
const DATA_FRAMES = new Set(['hello', 'changes', 'state', 'shared-page', 'state-page', 'ack', 'heartbeat', 'welcome']);
const HUGE = 1_000_000_000;

function recordSessionErrors(node: SyncNode): SessionErrorEvent[] {
  const events: SessionErrorEvent[] = [];
  node.on('session-error', (event) => events.push(event));
  return events;
}

function hello(library: string, device: string, shared: VersionVector = {}, v: [number, number] = [...PROTOCOL_VERSION]): Message {
  return { t: 'hello', v, library, device, shared, owned: {} };
}

function pullShared(library: string, after: VersionVector = {}): Message {
  return { t: 'pull-shared', library, req: 1, after, maxRecords: 1_000, maxBytes: 1024 * 1024 };
}

function ack(library: string, shared: VersionVector): MessageOf<'ack'> {
  return { t: 'ack', library, batch: null, shared, owned: {} };
}


/** Pruning never runs within a test: the log size is then an invariant an attack must not move. */
const noPruning: Parameters<typeof startNode>[1] = { sync: { ...fastSync, pruneIntervalMs: 3_600_000 } };

/** A (seeded with data of every kind) and B, members of one library, converged. */
async function seededPair(options: Parameters<typeof startNode>[1] = {}) {
  const a = await startNode(undefined, options);
  const b = await startNode(undefined, options);
  const [libA, libB] = (await shareLibrary(a, [b])) as [Library, Library];
  await libA.upsert('note', { id: 'note-a', title: 'from a', body: 'private to members' });
  await libB.upsert('note', { id: 'note-b', title: 'from b', body: null });
  await libA.upsert('profile', { id: 'p1', name: 'alice', color: 'red', score: 3 });
  await libB.upsert('tag', { label: 'urgent' });
  await libB.upsert('volume', { path: '/b', bytes: 10 });
  await waitForConvergence([libA, libB]);
  return { a, b, libA, libB };
}

/**
 * Log entries an attacker would push: well-formed and valid for the models (a fresh origin, the
 * next seq of a real member's origin, and a member row admitting the attacker).
 */
function forgedEntries(memberDevice: string, memberNextSeq: number, attackerPeer: string): LogEntry[] {
  const fresh = randomUUID();
  const now = Date.now();
  const forged = (origin: string, seq: number, counter: number, model: string, id: string, fields: Record<string, unknown>) =>
    ({ origin, seq, hlc: encodeHlc({ wallMs: now, counter, deviceId: origin }), model, id, op: 'upsert', fields }) as LogEntry;
  return [
    forged(fresh, 1, 0, 'note', 'forged-1', { title: 'forged', body: null }),
    forged(memberDevice, memberNextSeq, 0, 'note', 'forged-2', { title: 'forged', body: null }),
    forged(fresh, 2, 1, 'sync_members', fresh, { peer: attackerPeer, addrs: '[]' }),
  ];
}

/**
 * Entries as the wire carries them: runs of one origin in the log's chunk encoding, each signed
 * with `key` (the attacker's: it can sign no other device's runs).
 */
function asChunks(key: PrivateKey, library: string, entries: LogEntry[]): ChunkTuple[] {
  return signedTuples(key, library, entries);
}

function chunkOf(tuple: ChunkTuple): Chunk {
  return chunksOf([tuple])[0]!;
}

function expectOnlyErrors(streams: RawStream[]): void {
  for (const s of streams) {
    const kinds = s.received.map((m) => ('t' in m ? m.t : 'undecodable'));
    expect(kinds.filter((k) => DATA_FRAMES.has(k) || k === 'undecodable')).toEqual([]);
  }
}

function lengthPrefix(length: number): Uint8Array {
  const bytes = new Uint8Array(encodingLength(length));
  encodeUint8Array(length, bytes);
  return bytes;
}

describe('non-members', () => {
  it('cannot pull or push over the raw protocol, even claiming a member device', async () => {
    const { a, b, libA, libB } = await seededPair(noPruning);
    const errorsOnA = recordSessionErrors(a);
    const beforeA = await librarySnapshot(libA);
    const beforeB = await librarySnapshot(libB);
    const outsider = await RawPeer.start();
    const entries = forgedEntries(b.deviceId, (libA.versionVector()[b.deviceId] ?? 0) + 1, outsider.peerId);
    const chunks = asChunks(outsider.key, libA.id, entries);

    // The forged entries of the fresh origin are valid data, signed by the key its own member row
    // names: a library that accepts them applies them. Their absence on A below is therefore the
    // membership check's doing, not validation's. The entry under B's origin, signed with the
    // outsider's key, passes nowhere: B's key-derived id names the only key that signs for it.
    const scratchNode = await startNode();
    const scratch = await scratchNode.createLibrary({ name: 'scratch', id: libA.id });
    const [underB] = chunks.filter(([origin]) => origin === b.deviceId);
    await expect(engineOf(scratch).applyRemoteChunks([chunkOf(underB!)])).rejects.toThrow(/may not sign for/);
    const fresh = chunks.filter(([origin]) => origin !== b.deviceId).map(chunkOf);
    expect(await engineOf(scratch).applyRemoteChunks(fresh)).toMatchObject({ applied: 2, gaps: [], forks: [] });
    expect(await scratch.get('note', 'forged-1')).toBeDefined();
    expect(await scratch.get('note', 'forged-2')).toBeUndefined();
    await stopNode(scratchNode);

    const streams: RawStream[] = [];
    // A hello (random device, then B's own device id) with pull and push pipelined behind it,
    // advertising a big vector so that a session, if one started, would pull from the outsider.
    for (const device of [randomUUID(), b.deviceId]) {
      const s = await outsider.open(a);
      streams.push(s);
      await s.send(hello(libA.id, device, { [device]: 5 }));
      await s.sendFrame(encodeMessage(pullShared(libA.id)));
      await s.sendFrame(encodeMessage({ t: 'changes', library: libA.id, batch: 1, chunks }));
      const reply = await s.message(0, `refusal of hello as ${device}`);
      expect(reply).toMatchObject({ t: 'error', library: libA.id, code: 'NOT_MEMBER', req: null });
      await s.ended();
      // After the refusal, the same stream carries nothing further.
      await s.sendFrame(encodeMessage(pullShared(libA.id)));
      expect(s.messages.map((m) => m.t)).toEqual(['error']);
    }

    // pull-shared or changes as the very first frame (no hello at all).
    for (const first of [pullShared(libA.id), { t: 'changes', library: libA.id, batch: 1, chunks } as Message]) {
      const s = await outsider.open(a);
      streams.push(s);
      await s.send(first);
      const reply = await s.message(0, `refusal of a leading ${first.t}`);
      expect(reply).toMatchObject({ t: 'error', code: 'PROTOCOL' });
      expect((reply as { message: string }).message).toMatch(/hello or join/);
      await s.ended();
    }

    // A refused hello, then a pull and a push on a new stream of the same connection.
    const refused = await outsider.open(a);
    streams.push(refused);
    await refused.send(hello(libA.id, b.deviceId));
    expect(await refused.message(0)).toMatchObject({ t: 'error', code: 'NOT_MEMBER' });
    await refused.ended();
    for (const next of [pullShared(libA.id), { t: 'changes', library: libA.id, batch: 2, chunks } as Message]) {
      const s = await outsider.open(a);
      streams.push(s);
      await s.send(next);
      expect(await s.message(0)).toMatchObject({ t: 'error', code: 'PROTOCOL' });
      await s.ended();
    }

    expectOnlyErrors(streams);
    await waitFor(() => errorsOnA.filter((e) => e.peer === outsider.peerId).length >= 7, 'A to report the refusals');
    const fromOutsider = errorsOnA.filter((e) => e.peer === outsider.peerId);
    expect(fromOutsider.every((e) => e.direction === 'inbound' && e.library === libA.id)).toBe(true);
    expect(fromOutsider.filter((e) => e.error instanceof NotMemberError)).toHaveLength(3);
    expect(fromOutsider.filter((e) => e.error instanceof ProtocolError)).toHaveLength(4);

    expect(await librarySnapshot(libA)).toEqual(beforeA);
    expect(await librarySnapshot(libB)).toEqual(beforeB);
    expect(await libA.get('note', 'forged-1')).toBeUndefined();
    expect(await libA.get('note', 'forged-2')).toBeUndefined();
  });

  it('a never-invited node holding a replica of the library id gets none of its data', async () => {
    const { a, libA, libB } = await seededPair(noPruning);
    const errorsOnA = recordSessionErrors(a);
    const beforeA = await librarySnapshot(libA);
    const beforeB = await librarySnapshot(libB);
    // The smaller PeerId opens sessions: this node will keep trying to open one to A.
    const intruderKey = await keyWhere((peer) => peer < a.peerId);
    const intruderDir = await makeTempDir('lsync-node-');
    const setup = await startNodeWithKey(intruderKey, intruderDir);
    await setup.createLibrary({ name: 'shared', id: libA.id });
    await stopNode(setup);
    // Trust A as if it had invited this node (the meta a join stores): it dials A and says hello.
    const file = new Database(join(intruderDir, 'libraries', `${libA.id}.sqlite`), { fileMustExist: true });
    const bootstrap = JSON.stringify({ device: a.deviceId, peer: a.peerId, addrs: a.multiaddrs() });
    file.prepare("INSERT INTO sync_meta (key, value) VALUES ('bootstrap_member', ?)").run(bootstrap);
    file.close();
    const intruder = await startNodeWithKey(intruderKey, intruderDir);
    const errorsOnIntruder = recordSessionErrors(intruder);
    const replica = intruder.library(libA.id);
    const emptyDigest = await replica.digest();
    // Its own write must not reach the members either.
    await replica.upsert('note', { id: 'intruder-note', title: 'push attempt', body: null });
    const replicaDigest = await replica.digest();

    // Several refused attempts, spread over reconcile intervals and redial backoff.
    await waitFor(
      () => errorsOnA.filter((e) => e.peer === intruder.peerId && e.error instanceof NotMemberError).length >= 4,
      'A to refuse the intruder repeatedly',
    );
    // To the intruder, A's refusals look like its member row still on its way to A: retried
    // quietly for a while (docs/protocol.md, "Refused right after a join"), never admitted.
    expect(errorsOnIntruder.filter((e) => e.peer === a.peerId)).toEqual([]);

    expect(replicaDigest).not.toBe(emptyDigest);
    expect(await replica.digest()).toBe(replicaDigest);
    expect(replica.versionVector()).toEqual({ [replica.writer()]: 1 });
    expect(engineOf(replica).ownedVector()).toEqual({});
    expect(await replica.list('note')).toEqual([expect.objectContaining({ id: 'intruder-note' })]);
    expect(await replica.members()).toEqual([]);

    expect(await librarySnapshot(libA)).toEqual(beforeA);
    expect(await librarySnapshot(libB)).toEqual(beforeB);
    expect(await libA.get('note', 'intruder-note')).toBeUndefined();
    expect((await engineOf(libA).acks()).has(intruder.deviceId)).toBe(false);
  });
});

describe('acknowledgements', () => {
  it('a forged ack cannot prune entries a member lacks; acks bind to the authenticated device', async () => {
    const a = await startNode();
    const b = await startNode();
    const c = await startNode();
    const [libA, libB, libC] = (await shareLibrary(a, [b, c])) as [Library, Library, Library];
    for (let i = 0; i < 10; i++) await libA.upsert('note', { id: `pre-${i}`, title: `pre ${i}`, body: null });
    await waitForConvergence([libA, libB, libC]);
    const covers = (acked: VersionVector | undefined, wanted: VersionVector) =>
      acked !== undefined && Object.entries(wanted).every(([o, s]) => (acked[o] ?? 0) >= s);
    const preStop = libA.versionVector();
    await waitFor(async () => covers((await engineOf(libA).acks()).get(c.deviceId), preStop), "C's ack of everything before it stops");
    const cAck = (await engineOf(libA).acks()).get(c.deviceId)!;
    expect(cAck[a.deviceId]).toBe(preStop[a.deviceId]);
    await stopNode(c);

    const POST = 650;
    for (let t = 0; t < POST / 50; t++) {
      await libA.transaction(async (tx) => {
        for (let j = 0; j < 50; j++) await tx.upsert('note', { id: `post-${t}-${j}`, title: 'written while C is away', body: null });
      });
    }
    const written = libA.versionVector();
    expect(written[a.deviceId]! - preStop[a.deviceId]!).toBe(POST);
    // A member's acks count: B acknowledges everything.
    await waitFor(async () => covers((await engineOf(libA).acks()).get(b.deviceId), written), "B's ack of every write");

    // An outsider claiming to be C, acking far beyond anything written: refused.
    const outsider = await RawPeer.start();
    const forged = await outsider.open(a);
    await forged.send(hello(libA.id, c.deviceId, { [a.deviceId]: HUGE }));
    await forged.sendFrame(encodeMessage(ack(libA.id, { [a.deviceId]: HUGE, [b.deviceId]: HUGE, [c.deviceId]: HUGE })));
    expect(await forged.message(0)).toMatchObject({ t: 'error', code: 'NOT_MEMBER' });
    await forged.ended();
    expectOnlyErrors([forged]);
    expect((await engineOf(libA).acks()).get(c.deviceId)).toEqual(cAck);

    // A real member (joined by invite) with a raw client. Its PeerId sorts before A's, so only it
    // opens sessions; A never dials a session to it.
    const insider = await RawPeer.start(await keyWhere((peer) => peer < a.peerId));
    const insiderDevice = randomUUID();
    const joined = await insider.join(await libA.createInvite(), { device: insiderDevice });
    expect(await joined.message(0)).toMatchObject({ t: 'welcome', library: libA.id, device: a.deviceId });
    await waitFor(async () => (await libA.members()).some((m) => m.device === insiderDevice), 'the insider to be a member');

    const session = await outsider.open(a); // outsider's key is not a member: still refused after the join
    await session.send(hello(libA.id, insiderDevice));
    expect(await session.message(0)).toMatchObject({ t: 'error', code: 'NOT_MEMBER' });

    // The insider's key may only speak as the insider's device: claiming C is refused too.
    const asC = await insider.open(a);
    await asC.send(hello(libA.id, c.deviceId, { [a.deviceId]: HUGE }));
    await asC.sendFrame(encodeMessage(ack(libA.id, { [a.deviceId]: HUGE })));
    expect(await asC.message(0)).toMatchObject({ t: 'error', code: 'NOT_MEMBER' });
    await asC.ended();
    expectOnlyErrors([asC]);
    expect((await engineOf(libA).acks()).get(c.deviceId)).toEqual(cAck);

    const own = await insider.open(a);
    await own.send(hello(libA.id, insiderDevice));
    expect(await own.message(0)).toMatchObject({ t: 'hello', library: libA.id, device: a.deviceId });
    // An ack claiming everything, with extra fields naming C: the message has no field that
    // selects whose ack it is; the session's authenticated device is the only one recorded.
    const claim = { [a.deviceId]: HUGE, [b.deviceId]: HUGE, [c.deviceId]: HUGE };
    await own.send({ ...ack(libA.id, claim), device: c.deviceId, partner: c.deviceId, for: c.deviceId } as Record<string, unknown>);
    await own.send({ ...ack(libA.id, claim), batch: 7 });
    // Claims are no acks: only heads naming A's runs are. A head past A's log, or naming another
    // run than A's at a position, counts for nothing; the insider's echo of A's head does.
    const headOfA = () => own.messages.flatMap((m) => (m.t === 'heads' ? m.heads : [])).find(([o]) => o === a.deviceId);
    await waitFor(() => headOfA() !== undefined, "A's heads to the insider");
    const [, headSeq, headId] = headOfA()!;
    await own.send({ t: 'heads', library: libA.id, heads: [[a.deviceId, headSeq - 1, new Uint8Array(headId.length)], [b.deviceId, HUGE, headId]] });
    await own.send({ t: 'heads', library: libA.id, heads: [[a.deviceId, headSeq, headId]] });
    await waitFor(async () => (await engineOf(libA).acks()).get(insiderDevice)?.[a.deviceId] === headSeq, "the insider's ack to be recorded");

    const acks = await engineOf(libA).acks();
    expect(acks.get(insiderDevice)).toEqual({ [a.deviceId]: headSeq });
    expect(acks.get(c.deviceId)).toEqual(cAck);
    expect([...acks.keys()].sort()).toEqual([b.deviceId, c.deviceId, insiderDevice].sort());
    expect(acks.get(b.deviceId)![a.deviceId]).toBeLessThanOrEqual(libA.versionVector()[a.deviceId]!);

    // Pruning runs and removes what every member (C included) holds, and nothing C lacks.
    let pruneCalls = 0;
    const prune = engineOf(libA).prune.bind(engineOf(libA));
    engineOf(libA).prune = async (...args) => {
      const deleted = await prune(...args);
      pruneCalls += 1;
      return deleted;
    };
    await waitFor(async () => ((await engineOf(libA).prunedVector())[a.deviceId] ?? 0) >= cAck[a.deviceId]!, 'A to prune what C acked');
    const callsThen = pruneCalls;
    await waitFor(() => pruneCalls >= callsThen + 3, 'three more prune passes');

    expect((await engineOf(libA).prunedVector())[a.deviceId]).toBe(cAck[a.deviceId]);
    expect(await engineOf(libA).logSize()).toBeGreaterThanOrEqual(POST);
    const forC = await engineOf(libA).entriesAfter(cAck, { maxRecords: 5_000, maxBytes: 4 * 1024 * 1024 });
    expect(forC.pruned).toEqual([]);
    expect(forC.hasMore).toBe(false);
    const ids = new Set(forC.entries.filter((e) => e.model === 'note').map((e) => e.id));
    for (let t = 0; t < POST / 50; t++) for (let j = 0; j < 50; j++) expect(ids.has(`post-${t}-${j}`)).toBe(true);
    const cStatus = (await libA.status()).partners.find((p) => p.device === c.deviceId)!;
    expect(cStatus.beyondRetention).toBe(false);
    expect(cStatus.acked).toEqual(cAck);
  });
});

describe('invites', () => {
  it('refuses expired, reused, tampered and garbage invites without adding members', async () => {
    const a = await startNode();
    const lib = await a.createLibrary({ name: 'invites' });
    await lib.upsert('note', { id: 'n1', title: 'members only', body: null });
    const joiner = await startNode();
    const expectRefused = async (invite: string, code: string) => {
      const err = await joiner.joinLibrary(invite).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(InviteError);
      expect(err).toMatchObject({ code });
      expect(joiner.libraries()).toEqual([]);
    };

    // Expired: refused by the joiner before dialling, and by the inviter when asked anyway.
    const expired = await lib.createInvite({ ttlMs: 1 });
    const members = (await lib.members()).map((m) => m.device);
    expect(members).toEqual([a.deviceId]);
    await waitFor(() => Date.now() > decodeInvite(expired).expiresAt, 'the invite to expire', 5_000);
    await expectRefused(expired, 'INVITE_EXPIRED');
    const raw = await RawPeer.start();
    const rawJoin = await raw.join(expired, { device: randomUUID() });
    expect(await rawJoin.message(0)).toMatchObject({ t: 'error', code: 'INVITE_EXPIRED' });
    await rawJoin.ended();

    // Tampered (another secret): refused by the inviter; the invite itself stays usable.
    const invite = await lib.createInvite();
    const tampered = encodeInvite({ ...decodeInvite(invite), secret: crypto.getRandomValues(new Uint8Array(32)) });
    await expectRefused(tampered, 'INVITE_INVALID');
    // Garbage, and an lsync1. string that does not decode.
    await expectRefused('not an invite', 'INVITE_INVALID');
    await expectRefused('lsync1.%%%%', 'INVITE_INVALID');
    await expectRefused(`lsync1.${Buffer.from(pack([1, 2, 3])).toString('base64url')}`, 'INVITE_INVALID');
    expect((await lib.members()).map((m) => m.device)).toEqual(members);

    const joinedLib = await joiner.joinLibrary(invite);
    await waitForConvergence([lib, joinedLib]);
    expect(await joinedLib.get('note', 'n1')).toMatchObject({ title: 'members only' });
    const withJoiner = (await lib.members()).map((m) => m.device).sort();
    expect(withJoiner).toEqual([a.deviceId, joiner.deviceId].sort());

    // Reused: a second joiner with the same string.
    const second = await startNode();
    const err = await second.joinLibrary(invite).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(InviteError);
    expect(err).toMatchObject({ code: 'INVITE_USED' });
    expect(second.libraries()).toEqual([]);
    expect((await lib.members()).map((m) => m.device).sort()).toEqual(withJoiner);
  });
});

// On libp2p: the attacker writes below the framing (bytes of its own choosing on a stream).
describe('malformed frames', () => {
  it('close only the offending stream; the node keeps serving its members', async () => {
    // Generous peer timeout: the A-B session must not drop for load reasons during the test.
    const { a, b, libA, libB } = await seededPair({ sync: { ...fastSync, peerTimeoutMs: 15_000 }, transport: 'libp2p' });
    const live = async (lib: Library, device: string) =>
      (await lib.status()).partners.find((p) => p.device === device)?.state === 'live';
    await waitFor(async () => (await live(libA, b.deviceId)) && (await live(libB, a.deviceId)), 'the A-B session to be live');
    const errorsOnA = recordSessionErrors(a);
    const errorsOnB = recordSessionErrors(b);
    const notLive: string[] = [];
    libA.on('status', (s) => {
      const p = s.partners.find((x) => x.device === b.deviceId);
      if (p?.state !== 'live') notLive.push(`A sees B ${p?.state}`);
    });
    libB.on('status', (s) => {
      const p = s.partners.find((x) => x.device === a.deviceId);
      if (p?.state !== 'live') notLive.push(`B sees A ${p?.state}`);
    });

    const attacker = await RawPeer.start(undefined, { transport: 'libp2p' });
    const garbage = new Uint8Array([0xc1, 0xc1, 0xc1, 0xc1]);
    expect(() => unpack(garbage)).toThrow();
    const wrongShapes: Uint8Array[] = [
      pack({ t: 'hello', v: 'one', library: 42 }),
      pack({ t: 'hello', v: [1, 0], library: libA.id, device: 'not-a-uuid', shared: {}, owned: {} }),
      pack([1, 2, 3]),
      pack({ t: 'no-such-message', library: libA.id }),
    ];
    let expected = (await libA.status()).protocolErrors;
    const base = expected;
    const expectProtocolError = async (what: string) => {
      expected += 1;
      await waitFor(async () => (await libA.status()).protocolErrors >= expected, `protocolErrors to count ${what}`);
      await waitFor(
        () => errorsOnA.filter((e) => e.peer === attacker.peerId && e.error instanceof ProtocolError).length >= expected - base,
        `a session-error for ${what}`,
      );
    };

    for (const [what, frame] of [['garbage', garbage], ...wrongShapes.map((f, i) => [`wrong shape #${i}`, f] as const)] as const) {
      const s = await attacker.open(a);
      await s.sendFrame(frame);
      await s.ended(`A to close the stream after ${what}`);
      expect(s.messages).toHaveLength(1);
      expect(s.messages[0]).toMatchObject({ t: 'error', code: 'PROTOCOL' });
      await expectProtocolError(what);
    }

    // A length prefix above the 4 MiB limit, followed by a little data (the rest never comes).
    const oversize = await attacker.openUnframed(a);
    const prefix = lengthPrefix(MAX_FRAME_BYTES + 1024 * 1024);
    const body = new Uint8Array(64).fill(7);
    expect(await oversize.write(new Uint8Array([...prefix, ...body]))).toBe(true);
    await oversize.ended('A to reset the oversize stream');
    await expectProtocolError('the oversize frame');

    // A frame of exactly MAX_FRAME_BYTES + 1 bytes, really sent.
    const big = await attacker.open(a);
    await big.sendFrame(new Uint8Array(MAX_FRAME_BYTES + 1));
    await big.ended('A to reset the stream with a frame over the limit');
    await expectProtocolError('the frame over the limit');

    for (const e of errorsOnA.filter((x) => x.peer === attacker.peerId)) {
      expect(e.error).toBeInstanceOf(ProtocolError);
      expect(e.direction).toBe('inbound');
    }

    // A keeps serving B on the session that was live all along.
    await libA.upsert('note', { id: 'after-attacks', title: 'still syncing', body: null });
    await libB.upsert('note', { id: 'after-attacks-b', title: 'both ways', body: null });
    await waitForConvergence([libA, libB]);
    expect(await libB.get('note', 'after-attacks')).toMatchObject({ title: 'still syncing' });
    expect(await live(libA, b.deviceId)).toBe(true);
    expect(await live(libB, a.deviceId)).toBe(true);
    expect(errorsOnA.filter((e) => e.peer === b.peerId)).toEqual([]);
    expect(errorsOnB).toEqual([]);
    expect(notLive).toEqual([]);
  });
});

describe('protocol version', () => {
  it('a hello of another major version gets PROTOCOL_VERSION naming both versions', async () => {
    const a = await startNode();
    const lib = await a.createLibrary({ name: 'versions' });
    const errorsOnA = recordSessionErrors(a);
    const raw = await RawPeer.start();

    const s = await raw.open(a);
    await s.send(hello(lib.id, randomUUID(), {}, [1, 2]));
    const reply = await s.message(0);
    expect(reply).toMatchObject({ t: 'error', code: 'PROTOCOL_VERSION', library: lib.id });
    const text = (reply as { message: string }).message;
    expect(text).toContain(V1);
    expect(text).toContain('1.2');
    await s.ended();
    expectOnlyErrors([s]);
    await waitFor(() => errorsOnA.some((e) => e.peer === raw.peerId), 'A to report the mismatch');
    const event = errorsOnA.find((e) => e.peer === raw.peerId)!;
    expect(event.direction).toBe('inbound');
    expect(event.error).toBeInstanceOf(ProtocolVersionError);
    expect(event.error).toMatchObject({ code: 'PROTOCOL_VERSION', localVersion: V1, remoteVersion: '1.2' });

    // 2.1, the last build whose device-owned rows were not signed, is refused the same way.
    const unsignedRows = await raw.open(a);
    await unsignedRows.send(hello(lib.id, randomUUID(), {}, [2, 1]));
    expect(await unsignedRows.message(0)).toMatchObject({ t: 'error', code: 'PROTOCOL_VERSION', message: expect.stringContaining('2.1') });
    // Only the major version must match: a later minor version passes the version check (and
    // then fails membership).
    const minor = await raw.open(a);
    await minor.send(hello(lib.id, randomUUID(), {}, [PROTOCOL_VERSION[0], 5]));
    expect(await minor.message(0)).toMatchObject({ t: 'error', code: 'NOT_MEMBER' });
  });

  it('a session A opens to a peer answering with another major version fails with ProtocolVersionError', async () => {
    const a = await startNode();
    const lib = await a.createLibrary({ name: 'versions' });
    const errorsOnA = recordSessionErrors(a);
    // A PeerId above A's: A is the side that opens the session.
    const peer = await RawPeer.start(await keyWhere((id) => id > a.peerId));
    const device = randomUUID();
    peer.onInbound = (stream) => {
      void stream.message(0, "A's hello").then(
        (m) => stream.send(hello(m.library, device, {}, [1, 2])),
        () => undefined,
      );
    };
    const joined = await peer.join(await lib.createInvite(), { device });
    expect(await joined.message(0)).toMatchObject({ t: 'welcome' });

    await waitFor(
      () => errorsOnA.some((e) => e.peer === peer.peerId && e.error instanceof ProtocolVersionError),
      'A to report the version mismatch of its own session',
    );
    const event = errorsOnA.find((e) => e.peer === peer.peerId && e.error instanceof ProtocolVersionError)!;
    expect(event).toMatchObject({ direction: 'outbound', library: lib.id });
    expect(event.error).toMatchObject({ localVersion: V1, remoteVersion: '1.2' });
    expect(event.error.message).toContain(V1);
    expect(event.error.message).toContain('1.2');
    // A's hello was the real one, and A reset that stream after the mismatched reply.
    expect(await peer.inbound[0]!.message(0)).toMatchObject({ t: 'hello', v: [...PROTOCOL_VERSION], device: a.deviceId });
    // The peer learns why too: an error frame naming both versions, then the reset.
    const first = peer.inbound[0]!;
    expect(await first.ended()).toMatchObject({ kind: 'reset' });
    expect(first.messages.map((m) => m.t)).toEqual(['hello', 'error']);
    const told = first.messages[1] as MessageOf<'error'>;
    expect(told).toMatchObject({ code: 'PROTOCOL_VERSION', library: lib.id });
    expect(told.message).toContain(V1);
    expect(told.message).toContain('1.2');
  });
});

describe('join requests', () => {
  it('refuses unknown libraries, wrong proofs and taken devices; the invite stays usable', async () => {
    const { a, b, libA } = await seededPair();
    const errorsOnA = recordSessionErrors(a);
    const invite = await libA.createInvite();
    const decoded = decodeInvite(invite);
    const members = (await libA.members()).map((m) => `${m.device}@${m.peer}`).sort();
    const raw = await RawPeer.start();
    const refusal = async (stream: RawStream) => {
      const reply = await stream.message(0);
      await stream.ended();
      expectOnlyErrors([stream]);
      return reply;
    };

    // A library this node does not have.
    const unknown = await raw.join(invite, { device: randomUUID(), library: randomUUID() });
    expect(await refusal(unknown)).toMatchObject({ t: 'error', code: 'NOT_MEMBER' });
    // An older major version (1.x: before member rows were bound to keys).
    const older = await raw.join(invite, { device: randomUUID(), v: [1, 2] });
    expect(await refusal(older)).toMatchObject({ t: 'error', code: 'PROTOCOL_VERSION' });
    // A proof made for another PeerId (replayed from an eavesdropped join), and random bytes.
    const replayed = inviteProof(hashSecret(decoded.secret), b.peerId, libA.id);
    const wrong = await raw.join(invite, { device: randomUUID(), proof: replayed });
    expect(await refusal(wrong)).toMatchObject({ t: 'error', code: 'INVITE_INVALID' });
    const random = await raw.join(invite, { device: randomUUID(), proof: crypto.getRandomValues(new Uint8Array(32)) });
    expect(await refusal(random)).toMatchObject({ t: 'error', code: 'INVITE_INVALID' });
    // A right proof claiming a device that is a member under another key.
    const taken = await raw.join(invite, { device: b.deviceId });
    expect(await refusal(taken)).toMatchObject({ t: 'error', code: 'INVITE_INVALID' });

    expect((await libA.members()).map((m) => `${m.device}@${m.peer}`).sort()).toEqual(members);
    await waitFor(() => errorsOnA.filter((e) => e.peer === raw.peerId).length >= 5, 'A to report the refused joins');

    // The right joiner still gets in with the same invite.
    const joiner = await startNode();
    expect((await joiner.joinLibrary(invite)).id).toBe(libA.id);
    expect((await libA.members()).map((m) => m.device)).toContain(joiner.deviceId);
    expect(await libA.members()).toHaveLength(members.length + 1);
  });

  it("a joiner cannot take the inviter's own device id", async () => {
    // A joiner with a valid invite asks to be admitted as the inviter's own device. Accepting it
    // would rebind A's device to the joiner's key in the synced member list: other members would
    // then accept the joiner's sessions as device A (and record its acks as A's).
    const { a, libA } = await seededPair();
    const invite = await libA.createInvite();
    const members = (await libA.members()).map((m) => `${m.device}@${m.peer}`).sort();
    const raw = await RawPeer.start();
    const hijack = await raw.join(invite, { device: a.deviceId });
    const reply = await hijack.message(0);
    const after = (await libA.members()).map((m) => `${m.device}@${m.peer}`).sort();
    expect({ reply: { t: reply.t, code: (reply as { code?: string }).code }, members: after }).toEqual({
      reply: { t: 'error', code: 'INVITE_INVALID' },
      members,
    });
    // And the invite is still good for an honest joiner.
    const joiner = await startNode();
    expect((await joiner.joinLibrary(invite)).id).toBe(libA.id);
  });
});
