/**
 * Push back-pressure against a partner that does not ack (src/replication/session.ts,
 * `pushShared` / `pushOwned`): at most `pushWindow` unacknowledged batches (`changes` and
 * `state` together) are sent; the rest stays in the log, and each ack with a batch number frees
 * exactly one slot. Heartbeats and acks without a batch free none.
 *
 * The partner is a raw protocol peer that is a real member (joined by invite) and speaks the
 * session frame by frame over the in-memory network; node A stores in real SQLite files.
 * Every wait polls a condition: "nothing more arrives" is checked after A's heartbeats show
 * it had written everything and then several more heartbeat intervals went by.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Library, SessionErrorEvent } from '../src/index.js';
import type { LogEntry } from '../src/peer-log/types.js';
import { removeTempDirs } from './helpers/child-process.js';
import { fastSync, startNode, stopAllNodes, useMemoryTransport, waitFor } from './helpers/cluster.js';
import { entriesOfMessage, joinAsRawMember, MemberSession, stopAllMemberSessions } from './helpers/raw-member.js';
import { stopAllRawPeers } from './helpers/raw-peer.js';
import { engineOf } from '../src/library/library.js';

useMemoryTransport();

afterEach(async () => {
  stopAllMemberSessions();
  await stopAllRawPeers();
  await stopAllNodes();
  await removeTempDirs();
});

const WINDOW = 2;
const BATCH = 100;
const TRANSACTIONS = 20;
const PER_TRANSACTION = 100;
const HEARTBEAT_MS = 100;
/** Heartbeat intervals to wait, after A has written everything, before "nothing more came". */
const QUIET_BEATS = 4;

const sync = {
  ...fastSync,
  heartbeatMs: HEARTBEAT_MS,
  // The raw member heartbeats every 100 ms; A must never time the session out during the test.
  peerTimeoutMs: 20_000,
  pushWindow: WINDOW,
  batchRecords: BATCH,
  pruneIntervalMs: 3_600_000,
};

async function partnerState(lib: Library, device: string) {
  return (await lib.status()).partners.find((p) => p.device === device);
}

function seqsOf(entries: LogEntry[]): number[] {
  return entries.map((e) => e.seq);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

describe('push window', () => {
  it('a partner that never acks gets exactly pushWindow batches; each ack frees one slot', async () => {
    const a = await startNode(undefined, { sync });
    const errors: SessionErrorEvent[] = [];
    a.on('session-error', (e) => errors.push(e));
    const lib = await a.createLibrary({ name: 'window' });
    const member = await joinAsRawMember(a, lib);
    const s = await MemberSession.open(member, a, lib.id, { heartbeatMs: HEARTBEAT_MS });
    const origin = a.deviceId;

    // A's hello: its own member row and the raw member's (written at admission).
    expect(s.hello).toMatchObject({ t: 'hello', library: lib.id, device: origin });
    const held = s.hello.shared[origin]!;
    expect(held).toBe(lib.versionVector()[origin]);
    expect(held).toBeGreaterThanOrEqual(2);
    // A does not pull from a member that advertises nothing; it finishes its round with an ack.
    await waitFor(() => s.count('ack') >= 1, "A's catch-up ack");
    expect(s.count('pull-shared')).toBe(0);

    // Before the member shows it holds what A had at hello, A pushes nothing.
    await lib.upsert('note', { id: 'before-caught-up', title: 'waits', body: null });
    await s.heartbeatsAfter((h) => h.shared[origin] === held + 1, 2, 'A to have written the first note');
    expect(s.count('changes')).toBe(0);

    // One ack with A's hello vectors: the member has caught up, A starts pushing.
    s.shared = { ...s.hello.shared };
    s.owned = { ...s.hello.owned };
    await s.ack(null, s.shared, s.owned);
    // Its heads name A's runs: what A counts as acknowledged.
    await waitFor(() => s.count('heads') >= 1, "A's heads");
    await s.echoHeads([origin]);
    await waitFor(async () => (await partnerState(lib, member.device))?.acked[origin] === held, "A to record the member's ack");
    await waitFor(() => s.count('changes') === 1, 'the note written before the ack');
    const first = s.of('changes')[0]!;
    expect(first.batch).toBe(1);
    expect(seqsOf(entriesOfMessage(first))).toEqual([held + 1]);
    // That batch is unacknowledged from now on: one slot left.

    // A write burst far larger than the window.
    const ids: string[] = [];
    for (let t = 0; t < TRANSACTIONS; t++) {
      await lib.transaction(async (tx) => {
        for (let i = 0; i < PER_TRANSACTION; i++) {
          const id = `t${t}-${i}`;
          ids.push(id);
          await tx.upsert('note', { id, title: `burst ${t}/${i}`, body: null });
        }
      });
    }
    const total = held + 1 + TRANSACTIONS * PER_TRANSACTION;
    expect(lib.versionVector()[origin]).toBe(total);
    await s.heartbeatsAfter((h) => h.shared[origin] === total, QUIET_BEATS, 'A to show every write in its heartbeats');

    // Exactly pushWindow batches are out: the first note and one batch of the burst.
    expect(s.of('changes').map((c) => c.batch)).toEqual([1, 2]);
    expect(seqsOf(entriesOfMessage(s.of('changes')[1]!))).toEqual(range(held + 2, held + 1 + BATCH));
    expect(s.count('state')).toBe(0);
    // The rest waits in the log, and the session is up and live.
    expect(await engineOf(lib).logSize()).toBe(total);
    expect(s.end).toBeUndefined();
    expect((await partnerState(lib, member.device))?.state).toBe('live');
    expect(errors).toEqual([]);

    // Heartbeats (even advertising more) and acks without a batch number free no slot.
    s.shared = { [origin]: held + 1 + BATCH };
    await s.ack(null, s.shared);
    // A handles frames in order: once this pull is answered, the ack before it was handled.
    await s.send({ t: 'pull-shared', library: lib.id, req: 1, after: lib.versionVector(), maxRecords: 10, maxBytes: 1_000 });
    await waitFor(() => s.received.some((m) => (m.t === 'shared-page' || m.t === 'busy') && m.req === 1), 'the pull after the batch-less ack to be answered');
    await s.quietFor(QUIET_BEATS, 'heartbeats after the batch-less ack');
    expect(s.count('changes')).toBe(WINDOW);

    // One ack of batch 1, with the vector of what was received: exactly one more batch.
    await s.ack(1, s.shared);
    await waitFor(() => s.count('changes') >= WINDOW + 1, 'the batch freed by the ack');
    const third = s.of('changes')[2]!;
    await s.quietFor(QUIET_BEATS, 'A to have had time to send more');
    expect(s.count('changes')).toBe(WINDOW + 1);
    expect(third.batch).toBe(3);
    expect(seqsOf(entriesOfMessage(third))).toEqual(range(held + 2 + BATCH, held + 1 + 2 * BATCH));

    // Drain: ack one batch at a time. Never more than pushWindow unacknowledged; everything in
    // the log arrives once, in order, in batches of batchRecords.
    const batches = 1 + TRANSACTIONS * PER_TRANSACTION / BATCH;
    for (let acked = 2; acked <= batches; acked++) {
      const received = entriesOfMessage(s.of('changes').at(-1)!).at(-1)!.seq;
      s.shared = { [origin]: received };
      await s.ack(acked, s.shared);
      const expected = Math.min(acked + WINDOW, batches);
      await waitFor(() => s.count('changes') >= expected, `batch ${expected} after the ack of batch ${acked}`);
      expect(s.count('changes')).toBeLessThanOrEqual(acked + WINDOW);
    }
    await s.quietFor(QUIET_BEATS, 'A to have had time to send more');
    const all = s.of('changes');
    expect(all.map((c) => c.batch)).toEqual(range(1, batches));
    const burst = all.slice(1).map(entriesOfMessage);
    for (const entries of burst) expect(entries).toHaveLength(BATCH);
    expect(seqsOf(burst.flat())).toEqual(range(held + 2, total));
    expect(burst.flat().map((e) => e.id)).toEqual(ids);
    expect(new Set(burst.flat().map((e) => e.origin))).toEqual(new Set([origin]));
    expect(s.count('state')).toBe(0);

    // Device-owned rows share the window: `state` batches count like `changes`.
    const OWNED = 3 * BATCH;
    await lib.transaction(async (tx) => {
      for (let i = 0; i < OWNED; i++) await tx.upsert('volume', { id: `v${i}`, path: `/v/${i}`, bytes: i });
    });
    expect(engineOf(lib).ownedVector()).toEqual({ [origin]: OWNED });
    await s.heartbeatsAfter((h) => h.owned[origin] === OWNED, QUIET_BEATS, 'A to show the owned rows in its heartbeats');
    const states = () => s.of('state');
    expect(states().map((m) => [m.batch, m.owner, m.from, m.to, m.rows.length])).toEqual([
      [batches + 1, origin, 0, BATCH, BATCH],
      [batches + 2, origin, BATCH, 2 * BATCH, BATCH],
    ]);
    s.owned = { [origin]: 2 * BATCH };
    await s.ack(batches + 1, s.shared, s.owned);
    await waitFor(() => states().length >= 3, 'the state batch freed by the ack');
    await s.quietFor(QUIET_BEATS, 'A to have had time to send more');
    expect(states().map((m) => [m.batch, m.from, m.to, m.rows.length])).toEqual([
      [batches + 1, 0, BATCH, BATCH],
      [batches + 2, BATCH, 2 * BATCH, BATCH],
      [batches + 3, 2 * BATCH, OWNED, BATCH],
    ]);
    expect(new Set(states().flatMap((m) => m.rows.map((r) => r[1]))).size).toBe(OWNED);
    expect(s.count('changes')).toBe(batches);

    // The session stayed up and live throughout.
    expect(s.end).toBeUndefined();
    expect(s.undecodable).toBe(0);
    expect((await partnerState(lib, member.device))?.state).toBe('live');
    expect(errors).toEqual([]);
    expect((await lib.status()).protocolErrors).toBe(0);
    // Acks claimed every position; A counts one only once the member's heads name its run there.
    expect((await partnerState(lib, member.device))!.acked[origin]).toBe(held);
    await waitFor(() => s.of('heads').some((m) => m.heads.some(([o, seq]) => o === origin && seq === total)), "A's heads at its last write");
    await s.echoHeads([origin]);
    await waitFor(async () => (await partnerState(lib, member.device))!.acked[origin] === total, "A to count the member's ack of everything");
  });
});
