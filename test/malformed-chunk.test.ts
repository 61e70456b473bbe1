/**
 * A member that sends log chunks with a valid envelope but malformed contents (garbage bytes,
 * a wrong seq, fewer or more entries than claimed, a non-string model), in a pushed `changes`
 * or in a `shared-page` answering the node's pull: the node ends that session with a PROTOCOL
 * error (error frame, reset, session-error, `protocolErrors` + 1), stores nothing, and keeps
 * syncing with its other partner. Every chunk is a run the member signs with its own key, as its
 * member row names it, so no signature check refuses them; the same member's well-formed chunk is
 * then applied, so the refusals are the framing checks' doing, not a refusal of the member.
 *
 * The in-memory network and SQLite files; the member is a raw protocol peer joined by invite.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { encodeHlc, type Library, ProtocolError, type SessionErrorEvent } from '../src/index.js';
import { HLC_TIME_LENGTH } from '../src/hlc/hlc.js';
import { deviceSignatures } from '../src/node/native-signatures.js';
import { GENESIS, signRun } from '../src/peer-log/signed-runs.js';
import type { ChunkTuple, Message } from '../src/protocol/messages.js';
import { pack } from '../src/util/msgpack.js';
import { librarySnapshot, shareLibrary, startNode, useMemoryTransport, waitFor, waitForConvergence } from './helpers/cluster.js';
import { joinAsRawMember, MemberSession, type RawMember, rawMemberSync, servingChunks, stopRawMemberTest } from './helpers/raw-member.js';

useMemoryTransport();

afterEach(stopRawMemberTest);



/** A stored-form tuple of a valid note upsert by `origin`. */
function noteTuple(origin: string, seq: number, id: string): unknown[] {
  const hlc = encodeHlc({ wallMs: Date.now(), counter: seq, deviceId: origin });
  return [seq, hlc.slice(0, HLC_TIME_LENGTH), 'note', id, 'upsert', { title: `from the raw member (${id})`, body: null }];
}

function bytesOf(values: unknown[]): Uint8Array {
  return Buffer.concat(values.map((v) => pack(v)));
}

/**
 * Runs `[origin, firstSeq, lastSeq, bytes]` as wire tuples, each signed by `member` (its key,
 * the one its member row names) over the bytes as given, following the run before it in the list
 * (the first one the origin's genesis): well signed, whatever the bytes hold.
 */
function signedBy(member: RawMember, library: string, runs: Array<[string, number, number, Uint8Array]>): ChunkTuple[] {
  const signatures = deviceSignatures(member.peer.key);
  let prev = GENESIS;
  return runs.map(([origin, firstSeq, lastSeq, entries]): ChunkTuple => {
    const { chunk, id } = signRun(signatures, library, { origin, firstSeq, lastSeq, entries }, prev);
    prev = id;
    return [chunk.origin, chunk.firstSeq, chunk.lastSeq, chunk.entries, chunk.prev, chunk.sig, chunk.author];
  });
}

describe('malformed log chunks from a member', () => {
  it('end only that session with PROTOCOL, store nothing, and the node keeps syncing with its other partner', async () => {
    const a = await startNode(undefined, { sync: rawMemberSync });
    const b = await startNode(undefined, { sync: rawMemberSync });
    const [libA, libB] = (await shareLibrary(a, [b])) as [Library, Library];
    await libA.upsert('note', { id: 'seed-a', title: 'from a', body: null });
    await libB.upsert('note', { id: 'seed-b', title: 'from b', body: null });
    const member: RawMember = await joinAsRawMember(a, libA, [a, b]);
    const m = member.device;
    // B learns of the new member too; then the library is quiet.
    await waitFor(async () => (await libB.members()).some((x) => x.device === m), 'B to learn of the raw member');
    await waitForConvergence([libA, libB]);
    const live = async (lib: Library, device: string) =>
      (await lib.status()).partners.find((p) => p.device === device)?.state === 'live';
    await waitFor(async () => (await live(libA, b.deviceId)) && (await live(libB, a.deviceId)), 'the A-B session to be live');

    const errorsOnA: SessionErrorEvent[] = [];
    const errorsOnB: SessionErrorEvent[] = [];
    a.on('session-error', (e) => errorsOnA.push(e));
    b.on('session-error', (e) => errorsOnB.push(e));
    const notLive: string[] = [];
    libA.on('status', (s) => {
      const p = s.partners.find((x) => x.device === b.deviceId);
      if (p?.state !== 'live') notLive.push(`A sees B ${p?.state}`);
    });
    const beforeA = await librarySnapshot(libA);
    const beforeB = await librarySnapshot(libB);
    const base = (await libA.status()).protocolErrors;
    let refused = 0;

    /** Opens a session as the member, has `send` deliver a bad chunk, expects the PROTOCOL end. */
    const expectRefused = async (what: string, open: Parameters<typeof MemberSession.open>[3], send: (s: MemberSession) => Promise<void>) => {
      const s = await MemberSession.open(member, a, libA.id, open);
      await send(s);
      const end = await s.ended(`A to end the session after ${what}`);
      expect(end.kind, what).toBe('reset');
      const told = s.of('error');
      expect(told, what).toHaveLength(1);
      expect(told[0], what).toMatchObject({ t: 'error', library: libA.id, code: 'PROTOCOL', req: null });
      expect(told[0]!.message, what).toMatch(/log chunk/);
      refused += 1;
      await waitFor(async () => (await libA.status()).protocolErrors >= base + refused, `protocolErrors to count ${what}`);
      expect((await libA.status()).protocolErrors, what).toBe(base + refused);
      await waitFor(() => errorsOnA.filter((e) => e.peer === member.peer.peerId).length >= refused, `a session-error for ${what}`);
      const event = errorsOnA.filter((e) => e.peer === member.peer.peerId).at(-1)!;
      expect(event.error, what).toBeInstanceOf(ProtocolError);
      expect(event, what).toMatchObject({ library: libA.id, direction: 'inbound' });
      // Nothing of it is stored.
      expect(await librarySnapshot(libA), what).toEqual(beforeA);
      expect(libA.versionVector()[m], what).toBeUndefined();
    };
    const signed = (runs: Array<[string, number, number, Uint8Array]>) => signedBy(member, libA.id, runs);
    const push = (runs: Array<[string, number, number, Uint8Array]>) => (s: MemberSession) =>
      s.send({ t: 'changes', library: libA.id, batch: 1, chunks: signed(runs) } satisfies Message);

    await expectRefused('garbage chunk bytes', { heartbeatMs: 200 }, push([[m, 1, 1, new Uint8Array([0xd9, 0xff, 0x01, 0x02])]]));
    await expectRefused('a chunk that is not msgpack tuples', { heartbeatMs: 200 }, push([[m, 1, 2, new Uint8Array([0xc1, 0xc1])]]));
    // Well-formed, valid entries under framing that lies: each would be applied without the checks.
    await expectRefused('a wrong seq', { heartbeatMs: 200 }, push([[m, 1, 1, bytesOf([noteTuple(m, 2, 'forged-seq')])]]));
    await expectRefused(
      'more entries than the range claims',
      { heartbeatMs: 200 },
      push([[m, 1, 1, bytesOf([noteTuple(m, 1, 'forged-more-1'), noteTuple(m, 2, 'forged-more-2')])]]),
    );
    await expectRefused(
      'fewer entries than the range claims',
      { heartbeatMs: 200 },
      push([[m, 1, 3, bytesOf([noteTuple(m, 1, 'forged-fewer-1'), noteTuple(m, 2, 'forged-fewer-2')])]]),
    );
    const numericModel = noteTuple(m, 1, 'forged-model');
    numericModel[2] = 7;
    await expectRefused('a non-string model', { heartbeatMs: 200 }, push([[m, 1, 1, bytesOf([numericModel])]]));
    // A good chunk followed by a bad one in the same batch: nothing of the batch is applied.
    await expectRefused(
      'a good chunk and a bad one',
      { heartbeatMs: 200 },
      push([
        [m, 1, 1, bytesOf([noteTuple(m, 1, 'forged-good-part')])],
        [m, 2, 2, bytesOf([noteTuple(m, 1, 'forged-bad-part')])],
      ]),
    );
    // The pull path: the member advertises an entry, A pulls, the page's chunk is a 5-tuple.
    await expectRefused(
      'a malformed chunk in a shared-page',
      servingChunks(libA.id, { [m]: 1 }, signed([[m, 1, 1, bytesOf([noteTuple(m, 1, 'forged-page').slice(0, 5)])]])),
      (s) => s.pulled('pull-shared', 'A to pull from the member'),
    );
    for (const id of ['forged-seq', 'forged-more-1', 'forged-more-2', 'forged-fewer-1', 'forged-model', 'forged-good-part', 'forged-page']) {
      expect(await libA.get('note', id)).toBeUndefined();
    }
    expect(await librarySnapshot(libB)).toEqual(beforeB);

    // The member's well-formed chunk is accepted on a new session: A acks it and stores it.
    const good = await MemberSession.open(member, a, libA.id, { heartbeatMs: 200 });
    await good.send({ t: 'changes', library: libA.id, batch: 1, chunks: signed([[m, 1, 1, bytesOf([noteTuple(m, 1, 'from-member')])]]) });
    await waitFor(() => good.of('ack').some((x) => x.batch === 1), 'A to ack the good batch');
    expect(good.of('ack').find((x) => x.batch === 1)!.shared[m]).toBe(1);
    expect(await libA.get('note', 'from-member')).toMatchObject({ title: 'from the raw member (from-member)' });
    expect(good.end).toBeUndefined();
    expect((await libA.status()).protocolErrors).toBe(base + refused);

    // A kept syncing with B all along, both ways, including what the member sent.
    await libA.upsert('note', { id: 'after-a', title: 'still syncing', body: null });
    await libB.upsert('note', { id: 'after-b', title: 'both ways', body: null });
    await waitForConvergence([libA, libB]);
    expect(await libB.get('note', 'after-a')).toMatchObject({ title: 'still syncing' });
    expect(await libB.get('note', 'from-member')).toBeDefined();
    expect(await live(libA, b.deviceId)).toBe(true);
    expect(await live(libB, a.deviceId)).toBe(true);
    expect(errorsOnA.filter((e) => e.peer !== member.peer.peerId)).toEqual([]);
    expect(errorsOnB).toEqual([]);
    expect(notLive).toEqual([]);
    // B counted nothing: the bad input never reached it.
    expect((await libB.status()).protocolErrors).toBe(0);
    expect(refused).toBe(8);
  });
});

