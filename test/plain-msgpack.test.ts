/**
 * Issue 10, item 5b: wire and stored formats are plain msgpack. msgpackr understands its own
 * extensions (records, whose structure a later value may reuse, timestamps and more) whatever
 * the decoder's options, so a chunk could decode as a whole, be stored as received, and then
 * fail once a page limit cut it. The decoder now refuses every extension type: a chunk (pushed
 * or in a pulled page) or a frame holding one is bad input, nothing is stored, and honest
 * members keep syncing, a run stored as received included (since protocol 2.0 runs are signed
 * and travel whole: a page over its limits still carries its first run uncut).
 *
 * Every chunk the raw member sends is signed with its own key (the inviter wrote its member
 * row), so the refusals below come from the extension check, not from the signature check.
 *
 * The in-memory network and SQLite files; the hostile member is a raw protocol peer joined
 * by invite.
 */
import { Packr } from 'msgpackr';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeHlc, type Library, ProtocolError } from '../src/index.js';
import { HLC_TIME_LENGTH } from '../src/hlc/hlc.js';
import { deviceSignatures } from '../src/node/native-signatures.js';
import { decodeChunk } from '../src/peer-log/chunk.js';
import { GENESIS, signRun } from '../src/peer-log/signed-runs.js';
import { decodeMessage } from '../src/protocol/codec.js';
import type { ChunkTuple, Message } from '../src/protocol/messages.js';
import { checkPlain, pack, unpack } from '../src/util/msgpack.js';
import { librarySnapshot, shareLibrary, startNode, useMemoryTransport, waitFor, waitForConvergence } from './helpers/cluster.js';
import { runsOf } from './helpers/log-copy.js';
import {
  expectSessionRefused,
  joinAsRawMember,
  MemberSession,
  type MemberSessionOptions,
  type RawMember,
  rawMemberSync,
  servingChunks,
  stopRawMemberTest,
} from './helpers/raw-member.js';

useMemoryTransport();

afterEach(stopRawMemberTest);


/** A stored-form tuple of a valid note upsert by `origin`. */
function noteTuple(origin: string, seq: number, id: string): unknown[] {
  const hlc = encodeHlc({ wallMs: Date.now(), counter: seq, deviceId: origin });
  return [seq, hlc.slice(0, HLC_TIME_LENGTH), 'note', id, 'upsert', { title: `note ${id}`, body: null }];
}

/**
 * Tuples encoded by msgpackr with records in sequential mode: the first defines the structure
 * of its `fields` map (extension 0x72) and every later one refers to it by one byte. The whole
 * decodes (with the old decoder); the second tuple alone does not.
 */
function recordChunk(tuples: unknown[][]): Uint8Array {
  const packr = new Packr({ sequential: true, mapsAsObjects: true });
  return Buffer.concat(tuples.map((t) => packr.pack(t)));
}

/**
 * `entries` (bytes in the chunk encoding, plain or not) as the wire tuple of the first run of
 * `member`'s origin, signed with its key: only the bytes differ from what an honest member sends.
 */
function signedRun(member: RawMember, library: string, firstSeq: number, lastSeq: number, entries: Uint8Array): ChunkTuple {
  const body = { origin: member.device, firstSeq, lastSeq, entries };
  const { chunk } = signRun(deviceSignatures(member.peer.key), library, body, GENESIS);
  return [chunk.origin, chunk.firstSeq, chunk.lastSeq, chunk.entries, chunk.prev, chunk.sig, chunk.author];
}

/** msgpackr's timestamp extension (type -1), as it encodes a Date. */
function timestampExt(): Uint8Array {
  return new Packr({ useRecords: false }).pack(new Date(1_700_000_000_000));
}

/** A note tuple whose `fields` element is a timestamp extension. */
function extTuple(origin: string, seq: number, id: string): Uint8Array {
  return Buffer.concat([Uint8Array.of(0x96), ...noteTuple(origin, seq, id).slice(0, 5).map((v) => pack(v)), timestampExt()]);
}

describe('checkPlain', () => {
  it('accepts every plain msgpack type, refuses 0xc1 and every extension type', () => {
    const plain = [
      null, true, false, 0, 127, -1, -32, -33, 255, 65_535, 2 ** 32, -(2 ** 31), 1.5, 'x', 'é'.repeat(40), 'y'.repeat(70_000),
      new Uint8Array(300), new Uint8Array(70_000), [], [1, [2, [3, { a: [4] }]]], Array.from({ length: 20 }, (_, i) => i),
      Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i])),
    ];
    for (const value of plain) {
      expect(() => checkPlain(pack(value)), JSON.stringify(value)?.slice(0, 40)).not.toThrow();
      if (!(value instanceof Uint8Array)) expect(unpack(pack(value))).toEqual(value);
    }
    // Several values back to back, as a chunk holds them.
    expect(() => checkPlain(Buffer.concat(plain.map((v) => pack(v))))).not.toThrow();
    for (const t of [0xc1, 0xc7, 0xc8, 0xc9, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8]) {
      const bytes = new Uint8Array([0x92, 0x01, t, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
      expect(() => checkPlain(bytes), `type 0x${t.toString(16)}`).toThrow(/not allowed/);
    }
    expect(() => checkPlain(timestampExt())).toThrow(/not allowed/);
  });

  it('refuses truncated values, also a forged element count', () => {
    const full = pack({ title: 'hello', list: [1, 2, 3] });
    for (let cut = 1; cut < full.byteLength; cut++) expect(() => checkPlain(full.subarray(0, cut)), `cut at ${cut}`).toThrow(/truncated/);
    expect(() => checkPlain(new Uint8Array([0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]))).toThrow(/truncated/);
    expect(() => checkPlain(new Uint8Array([0xc6, 0x7f, 0xff, 0xff, 0xff]))).toThrow(/truncated/);
  });

  it('makes chunks with records or extensions, and frames with them, a ProtocolError', () => {
    const origin = '0190f0f0-0000-7000-8000-000000000001';
    const reused = recordChunk([noteTuple(origin, 1, 'a'), noteTuple(origin, 2, 'b')]);
    expect(() => decodeChunk({ origin, firstSeq: 1, lastSeq: 2, entries: reused })).toThrow(ProtocolError);
    expect(() => decodeChunk({ origin, firstSeq: 1, lastSeq: 2, entries: reused })).toThrow(/extension types are refused/);
    expect(() => decodeChunk({ origin, firstSeq: 1, lastSeq: 1, entries: extTuple(origin, 1, 'c') })).toThrow(/extension types are refused/);
    const heartbeat = { t: 'heartbeat', library: origin, shared: {}, owned: {} };
    expect(decodeMessage(pack(heartbeat))).toEqual(heartbeat);
    const recordFrame = new Packr({ mapsAsObjects: true }).pack(heartbeat);
    expect(() => decodeMessage(recordFrame)).toThrow(ProtocolError);
    expect(() => decodeMessage(recordFrame)).toThrow(/extension types are refused/);
  });
});

describe('a member sending msgpack extensions', () => {
  it('is refused with PROTOCOL, nothing is stored, and honest members keep syncing, whole runs included', async () => {
    // Pages and pushes of 2 entries: a run of 3 that A stored as received reaches B whole.
    const a = await startNode(undefined, { sync: { ...rawMemberSync, batchRecords: 2 } });
    const b = await startNode(undefined, { sync: { ...rawMemberSync, batchRecords: 2 } });
    const [libA, libB] = (await shareLibrary(a, [b])) as [Library, Library];
    const member = await joinAsRawMember(a, libA, [a, b]);
    const m = member.device;
    await waitFor(async () => (await libB.members()).some((x) => x.device === m), 'B to learn of the raw member');
    await waitForConvergence([libA, libB]);
    const before = await librarySnapshot(libA);
    const base = (await libA.status()).protocolErrors;
    let refused = 0;

    const expectRefused = async (what: string, open: MemberSessionOptions, act: (s: MemberSession) => Promise<unknown>) => {
      await expectSessionRefused(member, a, libA.id, what, open, act, { code: 'PROTOCOL', message: /extension types are refused/ });
      refused += 1;
      await waitFor(async () => (await libA.status()).protocolErrors === base + refused, `protocolErrors to count ${what}`);
      expect(await librarySnapshot(libA), what).toEqual(before);
    };
    const push = (chunks: ChunkTuple[]) => (s: MemberSession) => s.send({ t: 'changes', library: libA.id, batch: 1, chunks } satisfies Message);
    const tuples = [noteTuple(m, 1, 'r1'), noteTuple(m, 2, 'r2'), noteTuple(m, 3, 'r3')];

    await expectRefused('a chunk whose later tuples reuse a record structure', { heartbeatMs: 200 }, push([signedRun(member, libA.id, 1, 3, recordChunk(tuples))]));
    await expectRefused('a chunk holding an extension type', { heartbeatMs: 200 }, push([signedRun(member, libA.id, 1, 1, extTuple(m, 1, 'x1'))]));
    await expectRefused(
      'a record chunk in a shared-page',
      servingChunks(libA.id, { [m]: 3 }, [signedRun(member, libA.id, 1, 3, recordChunk(tuples))]),
      (s) => s.pulled('pull-shared', 'A to pull from the member'),
    );
    // A whole frame encoded with records (a changes message with a plain chunk inside).
    await expectRefused('a frame encoded with records', { heartbeatMs: 200 }, async (s) => {
      const frame = new Packr({ mapsAsObjects: true }).pack({
        t: 'changes',
        library: libA.id,
        batch: 1,
        chunks: [signedRun(member, libA.id, 1, 1, pack(tuples[0]))],
      });
      await s.stream.send(frame);
    });
    expect(refused).toBe(4);

    // The same entries in plain msgpack, in one signed run as the wire carries it: A stores it
    // as received, and B, sent two entries per batch, still gets the run whole and applies it.
    const good = await MemberSession.open(member, a, libA.id, { heartbeatMs: 200 });
    const run = signedRun(member, libA.id, 1, 3, Buffer.concat(tuples.map((t) => pack(t))));
    await good.send({ t: 'changes', library: libA.id, batch: 1, chunks: [run] });
    await waitFor(() => good.of('ack').some((x) => x.batch === 1), 'A to ack the plain chunk');
    expect(libA.versionVector()[m]).toBe(3);
    good.stop();
    await libA.upsert('note', { id: 'after', title: 'still syncing', body: null });
    await waitForConvergence([libA, libB]);
    for (const id of ['r1', 'r2', 'r3', 'after']) expect(await libB.get('note', id), id).toBeDefined();
    expect(libB.versionVector()[m]).toBe(3);
    // Held as the member signed it, on both: one run 1..3 with its signature.
    for (const lib of [libA, libB]) {
      const held = (await runsOf(lib)).filter((c) => c.origin === m);
      expect(held.map((c) => [c.firstSeq, c.lastSeq]), lib === libA ? 'A' : 'B').toEqual([[1, 3]]);
      expect(Buffer.from(held[0]!.sig)).toEqual(Buffer.from(run[5]));
    }
    expect((await libB.status()).protocolErrors).toBe(0);
  });
});
