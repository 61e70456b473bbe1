/**
 * Issue 10, item 5a: one record size limit (`MAX_RECORD_BYTES`, 1 MiB of encoded field values)
 * for every record, local or remote: log entries, device-owned rows, snapshot rows, member rows.
 * A page always carries at least one record of the largest size, and a full page fits a frame
 * (checked here against real encodings of the worst cases, and against the readers' pages). A
 * member had stored a 4 194 300-byte entry that a partner could then never pull; now a larger
 * record is refused on arrival (VALIDATION, nothing stored) and locally, one at the limit
 * travels by push and by pull, and a record held over the limit (from before it) is never sent,
 * so it cannot stop a partner's sync.
 *
 * The in-memory network and SQLite files; the hostile member is a raw protocol peer.
 */
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { chunksOf, ownedToTuple } from '../src/replication/session.js';
import { MAX_CERT_BYTES } from '../src/models/signed-owned-rows.js';
import { afterEach, describe, expect, it } from 'vitest';
import {
  encodeHlc,
  type Library,
  MAX_FIELDS,
  MAX_FRAME_BYTES,
  MAX_RECORD_BYTES,
  type SessionErrorEvent,
  ValidationError,
} from '../src/index.js';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { CHUNK_OVERHEAD_BYTES, encodeChunks } from '../src/peer-log/chunk.js';
import { RUN_ID_BYTES, SIGNATURE_BYTES } from '../src/peer-log/signed-runs.js';
import { MAX_PEER_ID_LENGTH, MEMBERS_MODEL } from '../src/models/system.js';
import type { LogEntry } from '../src/peer-log/types.js';
import { encodeMessage } from '../src/protocol/codec.js';
import {
  MAX_PAGE_BYTES,
  MAX_PAGE_ENVELOPE_BYTES,
  MAX_PAGE_RECORDS,
  MAX_RECORD_TUPLE_BYTES,
  MAX_VECTOR_ORIGINS,
  type Message,
} from '../src/protocol/messages.js';
import { pack } from '../src/util/msgpack.js';
import { makeTempDir } from './helpers/child-process.js';
import { librarySnapshot, shareLibrary, startNode, stopNode, useMemoryTransport, waitFor, waitForConvergence } from './helpers/cluster.js';
import { expectSessionRefused, joinAsRawMember, MemberSession, rawMemberSync, stopRawMemberTest } from './helpers/raw-member.js';
import { engineOf } from '../src/library/library.js';
import { signedOwnedRows, signedOwnedTuples, signedTuples } from './helpers/signed-runs.js';
import type { Chunk } from '../src/peer-log/chunk.js';

useMemoryTransport();

afterEach(stopRawMemberTest);

const PAGE = { maxRecords: MAX_PAGE_RECORDS, maxBytes: MAX_PAGE_BYTES };

/** `note` fields (`{ title: 'x', body }`) that encode to exactly `bytes` (a str 32 body). */
function noteOf(bytes: number): { title: string; body: string } {
  const overhead = pack({ title: 'x', body: 'b'.repeat(70_000) }).byteLength - 70_000;
  const fields = { title: 'x', body: 'b'.repeat(bytes - overhead) };
  expect(pack(fields).byteLength).toBe(bytes);
  return fields;
}

/** An id of 256 UTF-16 units that take 3 bytes each in UTF-8: the widest id there is. */
const WIDE_ID = '中'.repeat(256);
const uuidAt = (i: number) => `00000000-0000-4000-8000-${i.toString(16).padStart(12, '0')}`;

describe('the record size limit and the frame', () => {
  it('a page of records, or one record at the limit, fits a frame, with the largest envelope', () => {
    expect(Math.max(MAX_PAGE_BYTES, MAX_RECORD_TUPLE_BYTES) + MAX_PAGE_ENVELOPE_BYTES).toBeLessThanOrEqual(MAX_FRAME_BYTES);
    const library = uuidAt(0);
    const vector = Object.fromEntries(Array.from({ length: MAX_VECTOR_ORIGINS }, (_, i) => [uuidAt(i), Number.MAX_SAFE_INTEGER]));
    const hlc = encodeHlc({ wallMs: 2 ** 48 - 1, counter: 0xffff, deviceId: uuidAt(1) });
    const model = 'm'.repeat(63);
    const values = { f: new Uint8Array(MAX_RECORD_BYTES - (pack({ f: new Uint8Array(70_000) }).byteLength - 70_000)) };
    expect(pack(values).byteLength).toBe(MAX_RECORD_BYTES);
    const fieldHlcs = Object.fromEntries(Array.from({ length: MAX_FIELDS }, (_, i) => [`f${i}`.padEnd(63, 'x'), hlc]));
    const snapshotRow = [model, WIDE_ID, hlc, false, values, fieldHlcs, hlc, hlc] as const;
    const ownedRow = [model, WIDE_ID, uuidAt(1), Number.MAX_SAFE_INTEGER, hlc, false, values, new Uint8Array(MAX_CERT_BYTES)] as const;
    const entry: LogEntry = { origin: uuidAt(1), seq: Number.MAX_SAFE_INTEGER, hlc, model, id: WIDE_ID, op: 'upsert', fields: values };
    const [chunk] = encodeChunks([entry]);
    const chunkTuple = [chunk!.origin, chunk!.firstSeq, chunk!.lastSeq, chunk!.entries, new Uint8Array(RUN_ID_BYTES), new Uint8Array(SIGNATURE_BYTES)] as const;
    for (const [what, tuple] of [['snapshot row', snapshotRow], ['owned row', ownedRow]] as const) {
      expect(pack(tuple).byteLength, what).toBeLessThanOrEqual(MAX_RECORD_TUPLE_BYTES);
    }
    expect(pack(chunkTuple).byteLength).toBeLessThanOrEqual(chunk!.entries.byteLength + CHUNK_OVERHEAD_BYTES);
    expect(chunk!.entries.byteLength + CHUNK_OVERHEAD_BYTES).toBeLessThanOrEqual(MAX_RECORD_TUPLE_BYTES);

    const position: [string, string] = [model, WIDE_ID];
    const pruned = Array.from({ length: MAX_VECTOR_ORIGINS }, (_, i) => [uuidAt(i), Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER]);
    const big = Number.MAX_SAFE_INTEGER;
    const author = 'p'.repeat(MAX_PEER_ID_LENGTH);
    const proofs = Array.from({ length: MAX_VECTOR_ORIGINS }, (_, i) => [uuidAt(i), big, big, new Uint8Array(RUN_ID_BYTES), new Uint8Array(RUN_ID_BYTES), new Uint8Array(SIGNATURE_BYTES), author]);
    const pages = (rows: { snapshot: unknown[]; owned: unknown[]; chunks: unknown[] }): Message[] =>
      [
        { t: 'snapshot-page', library, req: big, vector, rows: rows.snapshot, next: position, total: big, proofs },
        { t: 'shared-page', library, req: big, chunks: rows.chunks, hasMore: true, pruned },
        { t: 'state-page', library, req: big, owner: uuidAt(1), from: big, to: big, author: 'p'.repeat(MAX_PEER_ID_LENGTH), rows: rows.owned, hasMore: true },
        { t: 'state', library, batch: big, owner: uuidAt(1), from: big, to: big, author: 'p'.repeat(MAX_PEER_ID_LENGTH), rows: rows.owned },
        { t: 'changes', library, batch: big, chunks: rows.chunks },
      ] as Message[];
    for (const page of pages({ snapshot: [], owned: [], chunks: [] })) {
      expect(encodeMessage(page).byteLength, `${page.t} envelope`).toBeLessThanOrEqual(MAX_PAGE_ENVELOPE_BYTES);
    }
    for (const page of pages({ snapshot: [snapshotRow], owned: [ownedRow], chunks: [chunkTuple] })) {
      expect(encodeMessage(page).byteLength, `${page.t} with one record at the limit`).toBeLessThanOrEqual(MAX_FRAME_BYTES);
    }
  });

  it("the readers' full pages of the widest ids fit a frame (their byte counts bound the encoding)", async () => {
    const node = await startNode();
    const lib = await node.createLibrary({ name: 'wide' });
    const rows = MAX_PAGE_RECORDS + 10;
    await lib.transaction(async (tx) => {
      for (let i = 0; i < rows; i++) {
        const id = `${i}`.padStart(6, '0') + WIDE_ID.slice(6);
        await tx.upsert('volume', { id, path: '/', bytes: i });
        await tx.upsert('note', { id, title: 't', body: null });
      }
    });
    const vector = Object.fromEntries(Array.from({ length: MAX_VECTOR_ORIGINS }, (_, i) => [uuidAt(i), Number.MAX_SAFE_INTEGER]));
    const owned = await engineOf(lib).ownedAfter(node.deviceId, 0, PAGE);
    expect(owned.rows.length).toBeGreaterThan(0);
    const statePage = { t: 'state-page', library: lib.id, req: 1, owner: node.deviceId, from: owned.from, to: owned.to, author: owned.author, hasMore: owned.hasMore };
    const ownedTuples = owned.rows.map(ownedToTuple);
    expect(encodeMessage({ ...statePage, rows: ownedTuples } as Message).byteLength).toBeLessThanOrEqual(MAX_FRAME_BYTES);
    const snapshot = await engineOf(lib).snapshotAfter(null, PAGE);
    const snapshotTuples = snapshot.rows.map(({ model, state: s }) => [model, s.id, s.hlc, s.deleted, s.values, s.fieldHlcs, s.upsertHlc, s.deleteHlc]);
    const snapshotPage = { t: 'snapshot-page', library: lib.id, req: 1, vector, rows: snapshotTuples, next: snapshot.next, total: 1 };
    expect(encodeMessage(snapshotPage as Message).byteLength).toBeLessThanOrEqual(MAX_FRAME_BYTES);
    const log = await engineOf(lib).chunksAfter({}, PAGE);
    const sharedPage = { t: 'shared-page', library: lib.id, req: 1, chunks: log.chunks.map((c) => [c.origin, c.firstSeq, c.lastSeq, c.entries, c.prev, c.sig, c.author]), hasMore: true, pruned: [] };
    expect(encodeMessage(sharedPage as unknown as Message).byteLength).toBeLessThanOrEqual(MAX_FRAME_BYTES);
  });
});

describe('pages served to a member', () => {
  it('are cut to the page bounds, whatever a pull asks for', async () => {
    const a = await startNode(undefined, { sync: rawMemberSync });
    const libA = await a.createLibrary({ name: 'served' });
    const rows = MAX_PAGE_RECORDS + 500;
    await libA.transaction(async (tx) => {
      for (let i = 0; i < rows; i++) await tx.upsert('note', { id: `n-${i}`, title: 't', body: null });
    });
    const member = await joinAsRawMember(a, libA, [a]);
    const session = await MemberSession.open(member, a, libA.id, { heartbeatMs: 200, shared: {}, owned: {} });
    await session.send({ t: 'pull-shared', library: libA.id, req: 1, after: {}, maxRecords: 1_000_000_000, maxBytes: 2 ** 40 });
    await waitFor(() => session.of('shared-page').some((p) => p.req === 1), 'the page');
    const page = session.of('shared-page').find((p) => p.req === 1)!;
    const records = page.chunks.reduce((n, [, first, last]) => n + last - first + 1, 0);
    expect(records).toBeGreaterThan(0);
    expect(records).toBeLessThanOrEqual(MAX_PAGE_RECORDS);
    expect(page.hasMore).toBe(true);
    expect(session.end).toBeUndefined();
  });
});

describe('local writes', () => {
  it('take a record at the limit and refuse a larger one, also a row a write would grow past it', async () => {
    const node = await startNode();
    const lib = await node.createLibrary({ name: 'local' });
    await lib.upsert('note', { id: 'at-limit', ...noteOf(MAX_RECORD_BYTES) });
    await lib.upsert('volume', { id: 'vol', path: 'p'.repeat(MAX_RECORD_BYTES - 30), bytes: 1 });
    await lib.upsert('profile', { id: 'p', name: 'n'.repeat(600_000), color: null, score: null });
    const before = await librarySnapshot(lib);
    const refusals: Array<[string, () => Promise<unknown>]> = [
      ['a shared upsert one byte over', () => lib.upsert('note', { id: 'over', ...noteOf(MAX_RECORD_BYTES + 1) })],
      ['an lww update over (it logs the whole row)', () => lib.update('note', 'at-limit', { title: 'xy' })],
      ['a field update that grows the row past the limit', () => lib.update('profile', 'p', { color: 'c'.repeat(600_000) })],
      ['a device-owned upsert over', () => lib.upsert('volume', { id: 'vol-2', path: 'p'.repeat(MAX_RECORD_BYTES), bytes: 1 })],
      ['a device-owned update over', () => lib.update('volume', 'vol', { path: 'p'.repeat(MAX_RECORD_BYTES - 17) })],
    ];
    for (const [what, write] of refusals) {
      await expect(write(), what).rejects.toThrow(ValidationError);
      await expect(write(), what).rejects.toThrow(/larger than 1048576 bytes encoded/);
      expect(await librarySnapshot(lib), what).toEqual(before);
    }
  });

  it('refuse remote records over the limit (changes, owned rows, snapshot rows) and store nothing', async () => {
    const node = await startNode();
    const lib = await node.createLibrary({ name: 'remote' });
    await lib.upsert('note', { id: 'seed', title: 'seed', body: null });
    const before = await librarySnapshot(lib);
    const origin = uuidAt(7);
    const hlc = encodeHlc({ wallMs: Date.now(), counter: 0, deviceId: origin });
    const over = noteOf(MAX_RECORD_BYTES + 1);
    // The origin's device introduces itself (its own member row first in its run, naming the key
    // that signs the run), so only the record's size can refuse the run.
    const key = await generateKeyPair('Ed25519');
    const introduction: LogEntry = {
      origin,
      seq: 1,
      hlc,
      model: MEMBERS_MODEL.name,
      id: origin,
      op: 'upsert',
      fields: { peer: peerIdFromPrivateKey(key).toString(), addrs: '[]', name: null },
    };
    const entry: LogEntry = { origin, seq: 2, hlc: encodeHlc({ wallMs: Date.now(), counter: 1, deviceId: origin }), model: 'note', id: 'big', op: 'upsert', fields: over };
    const runs = (entries: LogEntry[]): Chunk[] =>
      chunksOf(signedTuples(key, lib.id, entries));
    await expect(engineOf(lib).applyRemoteChunks(runs([introduction, entry]))).rejects.toThrow(ValidationError);
    await expect(engineOf(lib).applyRemoteChunks(runs([introduction, entry]))).rejects.toThrow(new RegExp(`entry ${origin}#2: note: record is larger than`));
    const row = { model: 'volume', id: 'v', owner: origin, version: 1, hlc, deleted: false, values: { path: 'p'.repeat(MAX_RECORD_BYTES), bytes: 1 } };
    await expect(engineOf(lib).applyRemoteOwned(signedOwnedRows(key, lib.id, [row]), { owner: origin, from: 0, to: 1 })).rejects.toThrow(/row 0: volume: record is larger than/);
    const state = { id: 'big', hlc, deleted: false, values: over, fieldHlcs: null, upsertHlc: null, deleteHlc: null };
    await expect(engineOf(lib).applySnapshot([{ model: 'note', state }], { vector: {}, proofs: [], next: null })).rejects.toThrow(/snapshot row 0: note: record is larger than/);
    expect(await librarySnapshot(lib)).toEqual(before);
    // At the limit, each is taken.
    const result = await engineOf(lib).applyRemoteChunks(runs([introduction, { ...entry, fields: noteOf(MAX_RECORD_BYTES) }]));
    expect(result).toMatchObject({ applied: 2, gaps: [], forks: [] });
    expect(lib.versionVector()[origin]).toBe(2);
    expect((await lib.get('note', 'big'))?.body).toBe(noteOf(MAX_RECORD_BYTES).body);
  });
});

describe('records at and over the limit between nodes', () => {
  it('one at the limit is pushed and pulled; a larger one from a member is refused with VALIDATION', async () => {
    const dirB = await makeTempDir('lsync-node-');
    const a = await startNode(undefined, { sync: rawMemberSync });
    let b = await startNode(dirB, { sync: rawMemberSync });
    const [libA, libB0] = (await shareLibrary(a, [b])) as [Library, Library];
    const member = await joinAsRawMember(a, libA, [a, b]);
    const m = member.device;
    await waitFor(async () => (await libB0.members()).some((x) => x.device === m), 'B to learn of the raw member');
    await waitForConvergence([libA, libB0]);
    // B is away while A receives the largest record: B must pull it when it is back.
    await stopNode(b);
    const hlc = (counter: number) => encodeHlc({ wallMs: Date.now(), counter, deviceId: m });
    // The member's own run, signed with its key: refused runs leave its `heads` as they are.
    const run = (seq: number, fields: { title: string; body: string }, heads = new Map<string, Uint8Array>()) =>
      signedTuples(member.peer.key, libA.id, [{ origin: m, seq, hlc: hlc(seq), model: 'note', id: `big-${seq}`, op: 'upsert', fields }], heads);
    const before = await librarySnapshot(libA);
    await expectSessionRefused(
      member, a, libA.id, 'an entry one byte over the limit', { heartbeatMs: 200 },
      (s) => s.send({ t: 'changes', library: libA.id, batch: 1, chunks: run(1, noteOf(MAX_RECORD_BYTES + 1)) }),
      { code: 'VALIDATION', message: /record is larger than 1048576 bytes/ },
    );
    const ownedHlc = encodeHlc({ wallMs: Date.now(), counter: 0, deviceId: m });
    await expectSessionRefused(
      member, a, libA.id, 'an owned row over the limit', { heartbeatMs: 200 },
      async (s) => {
        // Advertised first (a coverage claim must not exceed what the sender advertised).
        await s.send({ t: 'heartbeat', library: libA.id, shared: {}, owned: { [m]: 1 } });
        const row = { model: 'volume', id: 'v', owner: m, version: 1, hlc: ownedHlc, deleted: false, values: { path: 'p'.repeat(MAX_RECORD_BYTES), bytes: 1 } };
        await s.send({ t: 'state', library: libA.id, batch: 1, owner: m, from: 0, to: 1, ...signedOwnedTuples(member.peer.key, libA.id, [row]) });
      },
      { code: 'VALIDATION', message: /record is larger than 1048576 bytes/ },
    );
    expect(await librarySnapshot(libA)).toEqual(before);

    const good = await MemberSession.open(member, a, libA.id, { heartbeatMs: 200 });
    await good.send({ t: 'changes', library: libA.id, batch: 1, chunks: run(1, noteOf(MAX_RECORD_BYTES), member.heads) });
    await waitFor(() => good.of('ack').some((x) => x.batch === 1), 'A to ack the entry at the limit');
    good.stop();
    await libA.upsert('note', { id: 'after', title: 'after the big one', body: null });

    b = await startNode(dirB, { sync: rawMemberSync });
    const libB = b.library(libA.id);
    await waitForConvergence([libA, libB]);
    expect((await libB.get('note', 'big-1'))?.body).toBe(noteOf(MAX_RECORD_BYTES).body);
    expect(libB.versionVector()[m]).toBe(1);
    // And live: the next one is pushed to B.
    await libA.upsert('note', { id: 'big-local', ...noteOf(MAX_RECORD_BYTES) });
    await waitForConvergence([libA, libB]);
    expect((await libB.status()).protocolErrors).toBe(0);
  });

  it("a device whose newest owned row is held over the limit still pushes live to a partner its pages covered", async () => {
    // The row is left out of pages, so the partner's cursor for this device stops one below its
    // version (a cursor moves only through rows served); live push, which waits for the partner
    // to hold what this device held at hello, waited for ever before the pages counted.
    const dir = await makeTempDir('lsync-node-');
    let a = await startNode(dir, { sync: rawMemberSync });
    let libA = await a.createLibrary({ name: 'held top' });
    await libA.upsert('volume', { id: 'v1', path: '/v1', bytes: 1 });
    await libA.upsert('volume', { id: 'vbig', path: 'small for now', bytes: 2 });
    const id = libA.id;
    const member = await joinAsRawMember(a, libA);
    const top = engineOf(libA).ownedVector()[a.deviceId]!;
    await stopNode(a);
    const db = new Database(join(dir, 'libraries', `${id}.sqlite`), { fileMustExist: true });
    expect(db.prepare(`UPDATE volume SET path = ? WHERE id = 'vbig'`).run('h'.repeat(2 * MAX_RECORD_BYTES)).changes).toBe(1);
    db.close();
    a = await startNode(dir, { sync: rawMemberSync });
    libA = a.library(id);

    // The member holds the shared log and pulls the owned rows: the page covers the version
    // of the row over the limit without carrying it.
    const s = await MemberSession.open(member, a, id, { heartbeatMs: 200, shared: libA.versionVector() });
    const pull = async (req: number, after: number) => {
      await s.send({ t: 'pull-state', library: id, req, maxRecords: 100, maxBytes: 1 << 20, owner: a.deviceId, after });
      await waitFor(() => s.of('state-page').length >= req || s.end !== undefined, `owned page ${req}`);
      return s.of('state-page')[req - 1]!;
    };
    const first = await pull(1, 0);
    expect(first).toMatchObject({ from: 0, to: top - 1, hasMore: true });
    expect(first.rows.map(([, rowId]) => rowId)).toEqual(['v1']);
    expect(await pull(2, first.to)).toMatchObject({ from: top - 1, to: top, rows: [], hasMore: false });
    await libA.upsert('note', { id: 'after', title: 'pushed', body: null });
    await waitFor(() => s.of('changes').some((c) => c.chunks.some(([origin]) => origin === libA.writer())), 'the live push of the write');
  });

  it('a record held over the limit (from before it) is never sent: a partner still completes its sync', async () => {
    // A store written before the limit held such records in its log, its rows and its owned
    // rows. Since 2.0 its log is gone (migration 0006 drops the log and holds each origin as a
    // pruned prefix), so a partner lacking those changes takes a snapshot, and pulls the owned
    // rows: neither page may carry a record over the limit.
    const dirA = await makeTempDir('lsync-node-');
    let a = await startNode(dirA, { sync: rawMemberSync });
    let libA = await a.createLibrary({ name: 'held' });
    await libA.upsert('note', { id: 'n1', title: 'before', body: null });
    await libA.upsert('note', { id: 'big', title: 'big', body: 'small for now' });
    await libA.upsert('note', { id: 'n2', title: 'after', body: null });
    await libA.upsert('volume', { id: 'vbig', path: 'small for now', bytes: 1 });
    await libA.upsert('volume', { id: 'v2', path: '/v2', bytes: 2 });
    const id = libA.id;
    await stopNode(a);

    // As such a store holds them after migration 0006: 2 MiB in a row and in an owned row, the
    // log dropped, each origin held as a pruned prefix.
    const huge = 'h'.repeat(2 * MAX_RECORD_BYTES);
    const db = new Database(join(dirA, 'libraries', `${id}.sqlite`), { fileMustExist: true });
    expect(db.prepare(`UPDATE note SET body = ? WHERE id = 'big'`).run(huge).changes).toBe(1);
    expect(db.prepare(`UPDATE volume SET path = ? WHERE id = 'vbig'`).run(huge).changes).toBe(1);
    db.prepare('DELETE FROM sync_log').run();
    expect(db.prepare('UPDATE sync_vector SET pruned_through = seq, head = NULL').run().changes).toBeGreaterThan(0);
    db.close();

    a = await startNode(dirA, { sync: rawMemberSync });
    libA = a.library(id);
    const errors: SessionErrorEvent[] = [];
    a.on('session-error', (e) => errors.push(e));
    const c = await startNode(undefined, { sync: rawMemberSync });
    c.on('session-error', (e) => errors.push(e));
    const libC = await c.joinLibrary(await libA.createInvite());
    await libC.synced();
    // Everything else arrived; the records over the limit did not (a partner would refuse them).
    expect(await libC.get('note', 'n1')).toBeDefined();
    expect(await libC.get('note', 'n2')).toBeDefined();
    expect(await libC.get('volume', 'v2')).toBeDefined();
    expect(await libC.get('note', 'big')).toBeUndefined();
    expect(await libC.get('volume', 'vbig')).toBeUndefined();
    expect(libC.versionVector()[a.deviceId]).toBe(libA.versionVector()[a.deviceId]);
    expect(engineOf(libC).ownedVector()[a.deviceId]).toBe(engineOf(libA).ownedVector()[a.deviceId]);
    // Sync goes on both ways.
    await libA.upsert('note', { id: 'later-a', title: 'from a', body: null });
    await libC.upsert('note', { id: 'later-c', title: 'from c', body: null });
    await waitFor(async () => (await libC.get('note', 'later-a')) !== undefined && (await libA.get('note', 'later-c')) !== undefined, 'later writes both ways');
    expect(errors).toEqual([]);
    expect((await libA.status()).protocolErrors).toBe(0);
    expect((await libC.status()).protocolErrors).toBe(0);
  });
});
