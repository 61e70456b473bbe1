/**
 * A catch-up run judges a partner that advertises more than it serves as bad input (PROTOCOL),
 * so a partner cannot keep a run spinning. A partner that holds more by the time it answers is
 * not one: it advertises before it claims, so each page's coverage may lie beyond what it
 * advertised when the run began. Such a run ended its session as PROTOCOL once; a page that
 * moves the cursor is progress, and the run pulls until it holds what was advertised.
 *
 * The in-memory network and SQLite files; the partner is a raw protocol peer playing an owner
 * that writes one more row before it serves each page, deterministically. Its rows carry the
 * versions it covers: a cursor moves only through rows served, the owner's included
 * (`provenCoverage`).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { encodeHlc } from '../src/index.js';
import type { Message } from '../src/protocol/messages.js';
import { signedOwnedTuples } from './helpers/signed-runs.js';
import { startNode, useMemoryTransport, waitFor } from './helpers/cluster.js';
import { joinAsRawMember, MemberSession, rawMemberSync, stopRawMemberTest } from './helpers/raw-member.js';
import { engineOf } from '../src/library/library.js';

useMemoryTransport();

afterEach(stopRawMemberTest);

describe('device-owned pages of a partner that holds more meanwhile', () => {
  it('that move the cursor are progress: the session stays open while the partner advertises more', async () => {
    const node = await startNode(undefined, { sync: rawMemberSync });
    const lib = await node.createLibrary({ name: 'coverage' });
    await lib.upsert('note', { id: 'n1', title: 'one', body: null });
    const member = await joinAsRawMember(node, lib);
    const owner = member.device;
    const last = 3;
    const errorsBefore = (await lib.status()).protocolErrors;

    const session = await MemberSession.open(member, node, lib.id, {
      heartbeatMs: 200,
      owned: { [owner]: 1 },
      answerPullState: (pull) => {
        const to = pull.after + 1;
        const hlc = encodeHlc({ wallMs: Date.now(), counter: 0, deviceId: owner });
        const row = { model: 'volume', id: `vol-${to}`, owner, version: to, hlc, deleted: false, values: { path: `/v${to}`, bytes: to } };
        const page: Message = { t: 'state-page', library: lib.id, req: pull.req, owner, from: pull.after, to, ...signedOwnedTuples(member.peer.key, lib.id, [row]), hasMore: to < last };
        if (to === last) return [page];
        // Holds one more version by the time it answers: advertises it, then serves `to`.
        return [{ t: 'heartbeat', library: lib.id, shared: {}, owned: { [owner]: to + 1 } }, page];
      },
    });
    await waitFor(() => (engineOf(lib).ownedVector()[owner] ?? 0) === last || session.end !== undefined, 'the node to pull every version');
    expect(session.of('error')).toEqual([]);
    expect(session.end).toBeUndefined();
    expect(engineOf(lib).ownedVector()[owner]).toBe(last);
    await waitFor(async () => (await lib.status()).state === 'ready', 'the node to be caught up');
    expect((await lib.status()).protocolErrors).toBe(errorsBefore);
    expect(session.count('pull-state')).toBe(last);
    expect(await lib.get('volume', `vol-${last}`)).toMatchObject({ path: `/v${last}` });
  });
});
