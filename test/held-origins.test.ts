/**
 * Every vector a node sends (hello, ack, heartbeat, snapshot-page) holds every origin (or owner)
 * its library holds, and a vector on the wire holds at most MAX_VECTOR_ORIGINS entries. A member
 * that pushed real changes (or owned rows, or a snapshot vector) of more invented origins than
 * that made the victim hold them all: the victim's every hello, ack and heartbeat was then
 * refused by its honest partners as bad input, and it never synced with anyone again (and
 * relayed the changes, so its partners did the same). Now a library holds at most
 * MAX_VECTOR_ORIGINS origins and as many owners, its own device included: a batch or page that
 * would make it hold more is refused (VALIDATION), nothing stored, and sync goes on.
 *
 * The in-memory network and SQLite files; the hostile member is a raw protocol peer.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeHlc, type SessionErrorEvent, type SyncError } from '../src/index.js';
import { MEMBERS_MODEL } from '../src/models/system.js';
import type { LogEntry } from '../src/peer-log/types.js';
import { type ChunkTuple, MAX_VECTOR_ORIGINS } from '../src/protocol/messages.js';
import { startNode, stopNode, useMemoryTransport, waitFor, waitForConvergence } from './helpers/cluster.js';
import { expectSessionRefused, MemberSession, type RawMember, rawMemberSync, startVictimCast, stopRawMemberTest } from './helpers/raw-member.js';
import { engineOf } from '../src/library/library.js';
import { keyedDevice, signedOwnedTuples, signedTuples } from './helpers/signed-runs.js';

useMemoryTransport();

afterEach(stopRawMemberTest);

/**
 * One note upsert of each of `count` invented origins, as signed runs: each invented device (a
 * random, pre-2.0 kind of id) introduces itself with its own member row naming the member's key,
 * then the note, in one run the member signs, so the victim places every run by its author and
 * none is left out. One key for all: what is counted here is origins, not keys.
 */
function inventedChanges(member: RawMember, library: string, count: number): ChunkTuple[] {
  const peer = member.peer.peerId;
  const entries = Array.from({ length: count }, (_, i): LogEntry[] => {
    const origin = randomUUID();
    const hlc = (counter: number) => encodeHlc({ wallMs: Date.now(), counter, deviceId: origin });
    return [
      { origin, seq: 1, hlc: hlc(0), model: MEMBERS_MODEL.name, id: origin, op: 'upsert' as const, fields: { peer, addrs: '[]', name: null } },
      { origin, seq: 2, hlc: hlc(1), model: 'note', id: `invented-${i}`, op: 'upsert' as const, fields: { title: 'invented', body: null } },
    ];
  });
  return signedTuples(member.peer.key, library, entries.flat());
}

/** A vector of `count` origins nobody knows, each at `seq`. */
function invented(count: number, seq: number): Record<string, number> {
  return Object.fromEntries(Array.from({ length: count }, () => [randomUUID(), seq]));
}

describe('origins and owners a library holds', () => {
  it('changes, a snapshot or coverages naming more than a vector carries are refused; the victim restarts and syncs', async () => {
    const cast = await startVictimCast();
    const { dirV, libN, member } = cast;
    let { v, libV } = cast;
    const id = libV.id;
    await libN.upsert('note', { id: 'n-1', title: 'from n', body: null });
    await libN.upsert('volume', { id: 'n-vol-1', path: '/n', bytes: 1 });
    await waitForConvergence([libV, libN]);
    const counters = () => ({ shared: libV.versionVector(), owned: engineOf(libV).ownedVector() });
    const before = counters();
    const refused = { code: 'VALIDATION', message: new RegExp(`at most ${MAX_VECTOR_ORIGINS} (origins|owners)`) };

    // 1. One batch of real changes, each of another invented origin.
    const changes = inventedChanges(member, id, MAX_VECTOR_ORIGINS);
    await expectSessionRefused(
      member,
      v,
      id,
      'changes of invented origins',
      { heartbeatMs: 200 },
      (s) => s.send({ t: 'changes', library: id, batch: 1, chunks: changes }),
      refused,
    );
    expect(counters()).toEqual(before);

    // 2. A snapshot whose vector (advertised, so within what the member claimed) names as many.
    const vector = invented(MAX_VECTOR_ORIGINS, 1);
    const [first] = Object.keys(vector);
    await expectSessionRefused(
      member,
      v,
      id,
      'a snapshot of invented origins',
      {
        heartbeatMs: 200,
        shared: vector,
        answerPullShared: (pull) => ({ t: 'shared-page', library: id, req: pull.req, chunks: [], hasMore: false, pruned: [[first!, 0, 1]] }),
        answerPullSnapshot: (pull) => [{ t: 'snapshot-page', library: id, req: pull.req, vector, rows: [], next: null, total: 0 }],
      },
      (s) => s.pulled('pull-snapshot', 'the victim to pull the snapshot'),
      refused,
    );
    expect(counters()).toEqual(before);

    // 3. Coverages of invented owners, each advertised first (one heartbeat, then no more, so
    //    the victim's catch-up does not pull them meanwhile) and each with the row that proves
    //    it (a member other than the owner moves no cursor with a bare coverage). Sent in
    //    rounds, and judged by the
    //    victim's own report: the error frame is best effort, and the stream reset that follows
    //    it can overtake it while the member still has frames in flight.
    const reported: SessionErrorEvent[] = [];
    v.on('session-error', (event) => reported.push(event));
    // Owners with keys of their own, so that each one's rows verify: only the bound refuses them.
    const list = await Promise.all(Array.from({ length: MAX_VECTOR_ORIGINS }, () => keyedDevice()));
    const owners = Object.fromEntries(list.map(({ device }) => [device, 1]));
    const s = await MemberSession.open(member, v, id, { heartbeatMs: 60_000 });
    await s.send({ t: 'heartbeat', library: id, shared: {}, owned: owners });
    for (let batch = 0; batch < list.length && !s.end; ) {
      for (const { key, device: owner } of list.slice(batch, batch + 64)) {
        const hlc = encodeHlc({ wallMs: Date.now(), counter: 0, deviceId: owner });
        const row = { model: 'volume', id: `${owner}-vol`, owner, version: 1, hlc, deleted: false, values: { path: '/invented', bytes: 1 } };
        await s.send({ t: 'state', library: id, batch: ++batch, owner, from: 0, to: 1, ...signedOwnedTuples(key, id, [row]) });
      }
      await waitFor(() => s.end !== undefined || s.of('ack').some((a) => a.batch === batch), 'the victim to ack a round of coverages');
    }
    expect((await s.ended()).kind).toBe('reset');
    expect(reported.filter((e) => e.peer === member.peer.peerId).map((e) => [(e.error as SyncError).code, e.error.message])).toEqual([
      ['VALIDATION', expect.stringMatching(refused.message)],
    ]);
    expect(counters().shared).toEqual(before.shared);
    expect(Object.keys(counters().owned).length).toBeLessThan(MAX_VECTOR_ORIGINS);

    // The victim restarts (its counters load whole) and syncs both ways with N.
    await stopNode(v);
    v = await startNode(dirV, { sync: rawMemberSync });
    libV = v.library(id);
    await libN.upsert('note', { id: 'n-2', title: 'after the attacks', body: null });
    await libN.upsert('volume', { id: 'n-vol-2', path: '/n', bytes: 2 });
    await libV.upsert('note', { id: 'v-2', title: 'after the attacks', body: null });
    await waitForConvergence([libV, libN]);
    expect(await libV.get('volume', 'n-vol-2')).toBeDefined();
    expect(await libN.get('note', 'v-2')).toBeDefined();
  }, 240_000);
});
