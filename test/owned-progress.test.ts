/**
 * A catch-up run judges a partner that advertises more than it serves as bad input (PROTOCOL),
 * so a partner cannot keep a run spinning. It measured "serves" by the records its pages brought,
 * but a device-owned page may rightly bring no row and still move this device's cursor: the
 * owner's rows in that range were rewritten later (a row travels at its latest version only),
 * or the partner relays coverages it received that way. When such a partner advertised more
 * meanwhile (it holds more by then, and advertises before it claims), the run ended its session
 * as PROTOCOL: a member feeding an honest relay coverages made an honest node drop, and count as
 * hostile, its session with that honest relay. A page that moves a cursor is progress.
 *
 * Real libp2p on 127.0.0.1 and SQLite files; the partner is a raw protocol peer playing the
 * relay, deterministically: it advertises the owner one version further before it serves each
 * page, as a relay does that receives coverages while it is pulled from.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Message } from '../src/protocol/messages.js';
import { startNode, waitFor } from './helpers/cluster.js';
import { joinAsRawMember, MemberSession, rawMemberSync, stopRawMemberTest } from './helpers/raw-member.js';
import { engineOf } from '../src/library/library.js';

afterEach(stopRawMemberTest);

describe('device-owned pages without rows', () => {
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
        const page: Message = { t: 'state-page', library: lib.id, req: pull.req, owner, from: pull.after, to, rows: [], hasMore: to < last };
        if (to === last) return [page];
        // Holds one more version by the time it answers: advertises it, then claims `to`.
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
  });
});
