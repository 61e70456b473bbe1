/**
 * Issue 10, item 5c: a member row that lists another member's address (ending in that member's
 * PeerId) made a node dial it, get its existing connection to that member, and close it. Now a
 * dial never uses an address that ends in another PeerId and never closes a connection it did
 * not ask for, and member rows are refused (local writes, pushed and pulled changes, snapshot
 * rows) when an address ends in a PeerId other than the row's own, or when written partially.
 *
 * Real libp2p on 127.0.0.1 (three peers each time) and SQLite files.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeHlc, type Library, NetworkError, ValidationError } from '../src/index.js';
import { engineOf } from '../src/library/library.js';
import type { LogEntry } from '../src/peer-log/types.js';
import type { ChunkTuple, Message } from '../src/protocol/messages.js';
import { librarySnapshot, shareLibrary, startNode, stopNode, waitFor, waitForConvergence } from './helpers/cluster.js';
import {
  expectSessionRefused,
  joinAsRawMember,
  MemberSession,
  type MemberSessionOptions,
  type RawMember,
  rawMemberSync,
  servingChunks,
  startVictimCast,
  stopRawMemberTest,
} from './helpers/raw-member.js';
import { RawPeer } from './helpers/raw-peer.js';
import { signedTuples } from './helpers/signed-runs.js';

afterEach(stopRawMemberTest);


/** An address without its trailing /p2p/<PeerId>. */
function withoutPeerId(addr: string): string {
  return addr.replace(/\/p2p\/[^/]+$/, '');
}

/**
 * A change to the member row of the raw member by the member itself (its `seq`-th log entry),
 * signed with its key. A run that is refused must not move the member's `heads` (the next run
 * at that position is again its first): only a run it means to be accepted passes them.
 */
function memberChange(
  member: RawMember,
  library: string,
  seq: number,
  fields: Record<string, string>,
  op: 'upsert' | 'update' = 'upsert',
  heads = new Map<string, Uint8Array>(),
): ChunkTuple {
  const device = member.device;
  const entry: LogEntry = { origin: device, seq, hlc: encodeHlc({ wallMs: Date.now(), counter: 0, deviceId: device }), model: 'sync_members', id: device, op, fields };
  const [chunk] = signedTuples(member.peer.key, library, [entry], heads);
  return chunk!;
}

describe('dialling a member', () => {
  it("never uses an address that ends in another PeerId, and never closes another peer's connection", async () => {
    const v = await RawPeer.start();
    const n = await RawPeer.start();
    const m = await RawPeer.start();
    const drops: string[] = [];
    v.transport.onConnectionChange((peer, up) => void (up || drops.push(`v lost ${peer}`)));
    n.transport.onConnectionChange((peer, up) => void (up || drops.push(`n lost ${peer}`)));
    await v.transport.connect(n.peerId, n.multiaddrs());
    expect(n.multiaddrs().every((a) => a.endsWith(`/p2p/${n.peerId}`))).toBe(true);

    // M's "addresses" are N's: nothing to dial, and V keeps its connection to N.
    await expect(v.transport.connect(m.peerId, n.multiaddrs())).rejects.toThrow(NetworkError);
    await expect(v.transport.connect(m.peerId, n.multiaddrs())).rejects.toThrow(/no usable address/);
    expect(v.transport.isConnected(n.peerId)).toBe(true);
    expect(v.transport.isConnected(m.peerId)).toBe(false);
    // N's address without its PeerId, given for M: the dial expects M, so N's connection is not
    // handed back; the handshake with N fails and only that new connection attempt ends.
    await expect(v.transport.connect(m.peerId, n.multiaddrs().map(withoutPeerId))).rejects.toThrow(NetworkError);
    // Mixed with M's own addresses (without PeerId, as a member row may list them): M is reached.
    await v.transport.connect(m.peerId, [...n.multiaddrs(), ...m.multiaddrs().map(withoutPeerId)]);
    expect(v.transport.isConnected(m.peerId)).toBe(true);
    expect(v.transport.isConnected(n.peerId)).toBe(true);
    // V's connection to N is the same, still usable one.
    const inbound = new Promise<void>((resolve) => (n.onInbound = () => resolve()));
    await (await v.transport.openStream(n.peerId)).send(new Uint8Array([0x90]));
    await inbound;
    expect(drops).toEqual([]);
  });
});

describe('member rows', () => {
  it('with an address ending in another PeerId are refused from a member, pushed, pulled or in a snapshot', async () => {
    const v = await startNode(undefined, { sync: rawMemberSync });
    const n = await startNode(undefined, { sync: rawMemberSync });
    const [libV, libN] = (await shareLibrary(v, [n])) as [Library, Library];
    const member = await joinAsRawMember(v, libV, [v, n]);
    const m = member.device;
    const mPeer = member.peer.peerId;
    await waitFor(async () => (await libN.members()).some((x) => x.device === m), 'N to learn of the raw member');
    await waitForConvergence([libV, libN]);
    const live = async () => (await libV.status()).partners.find((p) => p.device === n.deviceId)?.state === 'live';
    await waitFor(live, 'the V-N session to be live');
    const notLive: string[] = [];
    libV.on('status', (s) => {
      const p = s.partners.find((x) => x.device === n.deviceId);
      if (p?.state !== 'live') notLive.push(`V sees N ${p?.state}`);
    });
    const before = await librarySnapshot(libV);
    const pointsAtN = JSON.stringify([n.multiaddrs()[0]]);

    const expectRefused = async (what: string, open: MemberSessionOptions, act: (s: MemberSession) => Promise<unknown>, message: RegExp) => {
      await expectSessionRefused(member, v, libV.id, what, open, act, { code: 'VALIDATION', message });
      expect(await librarySnapshot(libV), what).toEqual(before);
    };
    const push = (chunk: ChunkTuple) => (s: MemberSession) => s.send({ t: 'changes', library: libV.id, batch: 1, chunks: [chunk] } satisfies Message);
    const endsInN = new RegExp(`ends in PeerId ${n.peerId}`);

    await expectRefused('a pushed member row listing N', { heartbeatMs: 200 }, push(memberChange(member, libV.id, 1, { peer: mPeer, addrs: pointsAtN })), endsInN);
    await expectRefused(
      'a partial member row',
      { heartbeatMs: 200 },
      push(memberChange(member, libV.id, 1, { addrs: JSON.stringify(member.peer.multiaddrs()) }, 'update')),
      /written whole/,
    );
    await expectRefused(
      'a pulled member row listing N',
      servingChunks(libV.id, { [m]: 1 }, [memberChange(member, libV.id, 1, { peer: mPeer, addrs: pointsAtN })]),
      (s) => s.pulled('pull-shared', 'V to pull from the member'),
      endsInN,
    );
    const hlc = encodeHlc({ wallMs: Date.now(), counter: 0, deviceId: m });
    await expectRefused(
      'a member row listing N in a snapshot',
      {
        heartbeatMs: 200,
        shared: { [m]: 1 },
        answerPullShared: (pull) => ({ t: 'shared-page', library: libV.id, req: pull.req, chunks: [], hasMore: false, pruned: [[m, 0, 1]] }),
        answerPullSnapshot: (pull) => [
          { t: 'heartbeat', library: libV.id, shared: { [m]: 1 }, owned: {} },
          {
            t: 'snapshot-page',
            library: libV.id,
            req: pull.req,
            vector: { [m]: 1 },
            rows: [['sync_members', m, hlc, false, { peer: mPeer, addrs: pointsAtN }, null, hlc, null]],
            next: null,
            total: 1,
          },
        ],
      },
      (s) => s.pulled('pull-snapshot', 'V to pull a snapshot from the member'),
      endsInN,
    );

    // The member's own addresses, written whole, are accepted.
    const good = await MemberSession.open(member, v, libV.id, { heartbeatMs: 200 });
    const ownAddrs = member.peer.multiaddrs();
    await good.send({ t: 'changes', library: libV.id, batch: 1, chunks: [memberChange(member, libV.id, 1, { peer: mPeer, addrs: JSON.stringify(ownAddrs) }, 'upsert', member.heads)] });
    await waitFor(() => good.of('ack').some((x) => x.batch === 1), 'V to ack the member row');
    expect((await libV.members()).find((x) => x.device === m)?.addrs).toEqual(ownAddrs);
    good.stop();

    // V kept its session (and connection) with N all along, and both still sync.
    await libN.upsert('note', { id: 'from-n', title: 'still syncing', body: null });
    await waitForConvergence([libV, libN]);
    expect(await libV.get('note', 'from-n')).toBeDefined();
    expect(await live()).toBe(true);
    expect(notLive).toEqual([]);
  });

  it('with an address ending in another PeerId are refused when a joiner asks to be admitted with one', async () => {
    const v = await startNode(undefined, { sync: rawMemberSync });
    const n = await startNode(undefined, { sync: rawMemberSync });
    const [libV] = (await shareLibrary(v, [n])) as [Library, Library];
    const before = (await libV.members()).map((x) => x.device).sort();
    const joiner = await RawPeer.start();
    const invite = await libV.createInvite({ ttlMs: 60_000 });
    const refused = await joiner.join(invite, { device: randomUUID(), addrs: [...joiner.multiaddrs(), n.multiaddrs()[0]!] });
    expect(await refused.message(0, 'the refusal')).toMatchObject({ t: 'error', code: 'VALIDATION' });
    expect(((await refused.message(0)) as { message: string }).message).toMatch(new RegExp(`ends in PeerId ${n.peerId}`));
    expect((await libV.members()).map((x) => x.device).sort()).toEqual(before);
    // The refused admission used nothing: the same invite admits the joiner with its own addresses.
    const device = randomUUID();
    const admitted = await joiner.join(invite, { device });
    expect(await admitted.message(0, 'the welcome')).toMatchObject({ t: 'welcome' });
    await waitFor(async () => (await libV.members()).some((x) => x.device === device), 'the joiner to be a member');
    // And the engine's own local write path refuses such a row too.
    await expect(
      engineOf(libV).writeMemberRow({ device: randomUUID(), peer: joiner.peerId, addrs: n.multiaddrs(), name: null }),
    ).rejects.toThrow(ValidationError);
  });
});

describe('a member row naming another member’s PeerId', () => {
  it('does not make the node refuse that member: its session reopens and syncs, also after a restart', async () => {
    const cast = await startVictimCast();
    const { dirN, v, libV, member } = cast;
    let { n, libN } = cast;
    await waitForConvergence([libV, libN]);
    // A device the member invents, listed under N's PeerId, and sorting after N's own row.
    const forged: LogEntry = {
      origin: member.device,
      seq: 1,
      hlc: encodeHlc({ wallMs: Date.now(), counter: 0, deviceId: member.device }),
      model: 'sync_members',
      id: 'ffffffff-ffff-4fff-8fff-ffffffffffff',
      op: 'upsert',
      fields: { peer: n.peerId, addrs: '[]' },
    };
    const s = await MemberSession.open(member, v, libV.id, { heartbeatMs: 200 });
    await s.send({ t: 'changes', library: libV.id, batch: 1, chunks: signedTuples(member.peer.key, libV.id, [forged], member.heads) });
    await waitFor(() => s.of('ack').some((a) => a.batch === 1), 'V to ack the forged member row');
    await waitFor(async () => (await libV.members()).some((x) => x.device === forged.id), 'V to hold the forged row');
    s.stop();

    // N restarts: its session with V must open again (whichever side opens it) and sync.
    await stopNode(n);
    n = await startNode(dirN, { sync: rawMemberSync });
    libN = n.library(libV.id);
    await libN.upsert('note', { id: 'n-after', title: 'after the forged row', body: null });
    await libV.upsert('note', { id: 'v-after', title: 'after the forged row', body: null });
    await waitForConvergence([libV, libN]);
    const partner = (await libV.status()).partners.find((p) => p.device === n.deviceId);
    expect(partner?.state).toBe('live');
  });
});
