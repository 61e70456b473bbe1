/**
 * Issue 10, items 5d and 5e: positions taken from a member's claims. A member that claimed to be
 * ahead, answered a pull with `pruned` and served a snapshot made the victim adopt the snapshot's
 * vector (its position for an honest member jumped, its own counter too; with 2^53 - 1 a later
 * write broke the log and the node no longer started); a `state` with `to` = 2^53 - 1 moved the
 * victim's cursor for an owner, whose later rows never arrived. Now:
 * - a position past 2^52 is bad input on every message (schema);
 * - a snapshot's vector and a coverage's `to` must not exceed what the sender advertised (an
 *   honest sender advertises before it claims), else PROTOCOL;
 * - a snapshot never moves the device's own counter (claiming more of it is PROTOCOL), and a
 *   pushed coverage of the device's own rows is ignored;
 * - a coverage of another owner's rows moves a cursor only through the rows it serves, yet
 *   answers what the member advertised (no refusal: an honest member may hold one);
 * - a claim of the device's own rows that no served row backs is PROTOCOL, its version unmoved.
 * After each attack the victim is restarted: it starts, and keeps syncing with an honest member
 * (digests equal), whose later writes, shared and owned, still reach it.
 *
 * The in-memory network and SQLite files; the hostile member is a raw protocol peer.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { encodeHlc } from '../src/index.js';
import type { Message } from '../src/protocol/messages.js';
import { ownedToTuple } from '../src/replication/session.js';
import { makeTempDir } from './helpers/child-process.js';
import { signedOwnedTuples, signedTuples } from './helpers/signed-runs.js';
import { startNode, stopNode, useMemoryTransport, waitFor, waitForConvergence } from './helpers/cluster.js';
import {
  expectSessionRefused,
  joinAsRawMember,
  MemberSession,
  type MemberSessionOptions,
  rawMemberSync,
  startVictimCast,
  stopRawMemberTest,
} from './helpers/raw-member.js';
import { engineOf } from '../src/library/library.js';

useMemoryTransport();

afterEach(stopRawMemberTest);


describe('a snapshot applied at the library', () => {
  it("never moves the device's own counter, also across a restart", async () => {
    const dir = await makeTempDir('lsync-node-');
    let node = await startNode(dir);
    let lib = await node.createLibrary({ name: 'own' });
    await lib.upsert('note', { id: 'a', title: 'a', body: null });
    const own = lib.versionVector()[node.deviceId]!;
    const other = '00000000-0000-4000-8000-000000000007';
    await engineOf(lib).applySnapshot([], { vector: { [node.deviceId]: own + 1_000, [other]: 7 }, proofs: [], next: null });
    expect(lib.versionVector()).toMatchObject({ [node.deviceId]: own, [other]: 7 });
    await lib.upsert('note', { id: 'b', title: 'b', body: null });
    expect(lib.versionVector()[node.deviceId]).toBe(own + 1);
    const id = lib.id;
    await stopNode(node);
    node = await startNode(dir);
    lib = node.library(id);
    expect(lib.versionVector()).toMatchObject({ [node.deviceId]: own + 1, [other]: 7 });
    expect((await engineOf(lib).entriesAfter({}, { maxRecords: 100, maxBytes: 1 << 20 })).entries.map((e) => e.seq)).toEqual([own, own + 1]);
  });
});

describe('positions a member claims', () => {
  it('cannot move the victim past what the member advertised, nor its own counter; the victim restarts and syncs', async () => {
    const cast = await startVictimCast();
    const { dirV, n, libN, member } = cast;
    let { v, libV } = cast;
    const id = libV.id;
    const m = member.device;
    const ownRows = (rows: Parameters<typeof signedOwnedTuples>[2]) => signedOwnedTuples(member.peer.key, id, rows);
    await libV.upsert('note', { id: 'v-1', title: 'from v', body: null });
    await libN.upsert('note', { id: 'n-1', title: 'from n', body: null });
    await libN.upsert('volume', { id: 'n-vol-1', path: '/n', bytes: 1 });
    await waitForConvergence([libV, libN]);
    let round = 0;

    /** What the victim holds of itself and of the honest member: no attack may move it. */
    const positions = () => ({
      own: libV.versionVector()[libV.writer()],
      honest: libV.versionVector()[n.deviceId],
      ownedOwn: engineOf(libV).ownedVector()[v.deviceId],
      ownedHonest: engineOf(libV).ownedVector()[n.deviceId],
      member: libV.versionVector()[m],
    });

    /** Restarts the victim; it must start, and keep syncing both ways with N, owned rows included. */
    const restartAndSync = async (what: string) => {
      await stopNode(v);
      v = await startNode(dirV, { sync: rawMemberSync });
      libV = v.library(id);
      round += 1;
      await libN.upsert('note', { id: `n-after-${round}`, title: what, body: null });
      await libN.upsert('volume', { id: `n-vol-after-${round}`, path: '/n', bytes: round });
      await libV.upsert('note', { id: `v-after-${round}`, title: what, body: null });
      await waitForConvergence([libV, libN]);
      expect(await libV.get('volume', `n-vol-after-${round}`), what).toBeDefined();
      expect(await libN.get('note', `v-after-${round}`), what).toBeDefined();
    };

    /** Bad input that moves nothing and is no reason to end the session. */
    const harmless = async (what: string, options: MemberSessionOptions, act: (s: MemberSession) => Promise<unknown>) => {
      const before = positions();
      const errorsBefore = (await libV.status()).protocolErrors;
      const s = await MemberSession.open(member, v, id, options);
      await act(s);
      await s.quietFor(3, `the victim to judge ${what}`);
      expect(s.of('error'), what).toEqual([]);
      expect(positions(), what).toEqual(before);
      expect((await libV.status()).protocolErrors, what).toBe(errorsBefore);
      s.stop();
      await restartAndSync(what);
    };

    const attack = async (what: string, options: MemberSessionOptions, act: (s: MemberSession) => Promise<unknown>, message: RegExp) => {
      const before = positions();
      await expectSessionRefused(member, v, id, what, options, act, { code: 'PROTOCOL', message });
      expect(positions(), what).toEqual(before);
      await restartAndSync(what);
    };

    /** A member that claims to be ahead by `shared`, answers the pull with `pruned` and serves `page` (after `advertise`). */
    const forgedSnapshot = (shared: Record<string, number>, vector: Record<string, number>, advertise?: Record<string, number>): MemberSessionOptions => ({
      heartbeatMs: 200,
      shared,
      answerPullShared: (pull) => ({ t: 'shared-page', library: id, req: pull.req, chunks: [], hasMore: false, pruned: [[m, 0, shared[m]!]] }),
      answerPullSnapshot: (pull) => [
        ...(advertise ? [{ t: 'heartbeat', library: id, shared: advertise, owned: {} } as Message] : []),
        { t: 'snapshot-page', library: id, req: pull.req, vector, rows: [], next: null, total: 0 },
      ],
    });
    const snapshotPulled = (s: MemberSession) => s.pulled('pull-snapshot', 'the victim to pull a snapshot');

    // 1. The issue's attack: ahead by 5, a snapshot vector a million further for itself and for N.
    await attack(
      'a snapshot vector beyond what the member advertised',
      forgedSnapshot({ [m]: 5 }, { [m]: 1_000_005, [n.deviceId]: 1_000_005 }),
      snapshotPulled,
      /snapshot of a vector beyond what it advertised/,
    );
    // 2. Consistent, advertised (by a heartbeat: a hello holding more of the victim's current
    // writer would retire it, as a restore does), but claiming more of the log the victim
    // appends to than it wrote.
    const ownAhead = { [m]: 5, [libV.writer()]: (libV.versionVector()[libV.writer()] ?? 0) + 1_000 };
    await attack('a snapshot claiming the victim’s own changes', forgedSnapshot({ [m]: 5 }, ownAhead, ownAhead), snapshotPulled, /claiming changes of this device/);
    // 3. Positions past 2^52, in a heartbeat, a snapshot page, a chunk and a state.
    const huge = 2 ** 53 - 1;
    await attack('a vector position of 2^53 - 1', forgedSnapshot({ [m]: 5 }, { [m]: huge }, { [m]: huge }), snapshotPulled, /invalid message/);
    await attack(
      'a chunk position past 2^52',
      { heartbeatMs: 200 },
      (s) =>
        s.send({ t: 'changes', library: id, batch: 1, chunks: [[m, 2 ** 52 + 1, 2 ** 52 + 1, new Uint8Array([0x90]), new Uint8Array(32), new Uint8Array(64), member.peer.peerId]] }),
      /invalid message/,
    );
    await attack(
      'a coverage of 2^53 - 1',
      { heartbeatMs: 200 },
      (s) => s.send({ t: 'state', library: id, batch: 1, owner: m, from: 0, to: huge, author: null, rows: [] }),
      /invalid message/,
    );
    // 4. The issue's `state` attack on an honest owner's cursor, not advertised.
    await attack(
      'a coverage beyond what the member advertised',
      { heartbeatMs: 200 },
      (s) => s.send({ t: 'state', library: id, batch: 1, owner: n.deviceId, from: 0, to: 1_000_000, author: null, rows: [] }),
      /claims .* through version 1000000 but advertised/,
    );
    // 4b. Advertised first, a coverage of an honest owner's rows proves only the rows it serves:
    //     a cursor moved by a bare claim would make the victim skip N's rows, and claim them to
    //     N, which would then refuse the victim for good (found by the simulator, seed 12). The
    //     coverage still answers what the member advertised, so it is no reason to pull for ever
    //     or to end the session: a partner synced by an earlier version may hold such a cursor
    //     honestly (it took one from an owner's false claim of its own rows, which cut it off
    //     from every device: the simulator, seed 30012). Pushed right behind the heartbeat that
    //     advertises it, the coverage arrives before the page the victim pulls.
    await harmless(
      "an advertised coverage of an honest owner's rows that no row backs",
      { heartbeatMs: 200 },
      async (s) => {
        s.owned = { [n.deviceId]: 1_000_000 };
        await s.send({ t: 'heartbeat', library: id, shared: {}, owned: s.owned });
        await s.send({ t: 'state', library: id, batch: 1, owner: n.deviceId, from: 0, to: 1_000_000, author: null, rows: [] });
      },
    );
    await harmless(
      "a page of an honest owner's rows covering more than it serves",
      {
        heartbeatMs: 200,
        owned: { [n.deviceId]: 1_000_000 },
        answerPullState: (pull) => [{ t: 'state-page', library: id, req: pull.req, owner: pull.owner, from: pull.after, to: 1_000_000, author: null, rows: [], hasMore: false }],
      },
      (s) => waitFor(() => s.count('pull-state') > 0 || s.end !== undefined, 'the victim to pull the owner’s rows'),
    );
    await attack(
      "pages of an honest owner's rows that stop short of what the member advertised",
      {
        heartbeatMs: 200,
        owned: { [n.deviceId]: 1_000_000 },
        answerPullState: (pull) => [{ t: 'state-page', library: id, req: pull.req, owner: pull.owner, from: pull.after, to: pull.after, author: null, rows: [], hasMore: false }],
      },
      (s) => waitFor(() => s.count('pull-state') > 0 || s.end !== undefined, 'the victim to pull the owner’s rows'),
      /does not serve/,
    );
    await attack(
      'a coverage running backwards',
      { heartbeatMs: 200 },
      (s) => s.send({ t: 'state', library: id, batch: 1, owner: m, from: 9, to: 3, author: null, rows: [] }),
      /invalid message/,
    );

    // 5. A claim to hold more of the victim's own rows than it wrote looks like a restore of the
    //    victim's data directory: the victim compares its own rows with the member's copy, and a
    //    claim that no served row backs is bad input; its own version does not move.
    const before = positions();
    await attack(
      "a claim of the victim's own rows that no row backs",
      { heartbeatMs: 200, owned: { [v.deviceId]: 1_000_000 } },
      (s) => s.send({ t: 'state', library: id, batch: 1, owner: v.deviceId, from: 0, to: 1_000_000, author: null, rows: [] }),
      /own rows|does not serve|advertis/,
    );
    // A bare coverage up to the claim, with no row carrying its last version: refused before it
    // moves the victim's version (repeated up to 2^52, it would stop its owned rows for good).
    const claimed = 1_000_000;
    await attack(
      "a bare coverage of the victim's own rows up to the claim",
      {
        heartbeatMs: 200,
        owned: { [v.deviceId]: claimed },
        answerPullState: (pull) => [{ t: 'state-page', library: id, req: pull.req, owner: pull.owner, from: pull.after, to: claimed, author: null, rows: [], hasMore: false }],
      },
      (s) => waitFor(() => s.count('pull-state') > 0 || s.end !== undefined, 'the victim to compare its own rows'),
      /claims this device's own rows through version 1000000 but serves rows only through 0/,
    );
    // Then the member's own rows, advertised and covered, are applied.
    const s = await MemberSession.open(member, v, id, { heartbeatMs: 200 });
    const hlc = encodeHlc({ wallMs: Date.now(), counter: 0, deviceId: m });
    s.owned = { [m]: 1 };
    await s.send({ t: 'heartbeat', library: id, shared: {}, owned: s.owned });
    await s.send({ t: 'state', library: id, batch: 2, owner: m, from: 0, to: 1, ...ownRows([{ model: 'volume', id: 'm-vol', owner: m, version: 1, hlc, deleted: false, values: { path: '/m', bytes: 1 } }]) });
    await waitFor(() => s.of('ack').some((a) => a.batch === 2), 'the victim to ack the member’s rows');
    expect(await libV.get('volume', 'm-vol')).toMatchObject({ path: '/m' });
    expect(engineOf(libV).ownedVector()[m]).toBe(1);
    // The owner's own coverage proves no more than its rows either: a cursor taken past them
    // would skip the rows it writes at those versions later (the simulator, seed 30022).
    s.owned = { [m]: 9 };
    await s.send({ t: 'heartbeat', library: id, shared: {}, owned: s.owned });
    await s.send({ t: 'state', library: id, batch: 3, owner: m, from: 1, to: 9, ...ownRows([{ model: 'volume', id: 'm-vol-2', owner: m, version: 2, hlc, deleted: false, values: { path: '/m2', bytes: 2 } }]) });
    await waitFor(() => s.of('ack').some((a) => a.batch === 3), 'the victim to ack the member’s coverage');
    expect(await libV.get('volume', 'm-vol-2')).toMatchObject({ path: '/m2' });
    expect(engineOf(libV).ownedVector()[m]).toBe(2);
    await s.quietFor(3, 'the victim to judge the owner’s coverage');
    expect(s.of('error')).toEqual([]);
    s.stop();
    await restartAndSync('after the member’s own rows');
    expect(engineOf(libV).ownedVector()[v.deviceId]).toBe(before.ownedOwn);
  });

  it("ends the session when pages of the victim's own rows stop short of what the member claims of them", async () => {
    // The pages bring the victim's own rows back, which counts as progress: before the fix the
    // comparison of its own rows (`CatchUp.checkOwnRows`) returned without a verdict and the
    // next catch-up run began again at once, for ever (the simulator, seed 128).
    const v = await startNode(undefined, { sync: rawMemberSync });
    const libV = await v.createLibrary({ name: 'own rows' });
    await libV.upsert('volume', { id: 'v-vol-1', path: '/v1', bytes: 1 });
    await libV.upsert('volume', { id: 'v-vol-2', path: '/v2', bytes: 2 });
    const member = await joinAsRawMember(v, libV);
    const held = engineOf(libV).ownedVector()[v.deviceId]!;
    const claimed = held + 5;
    const own = await engineOf(libV).ownedAfter(v.deviceId, 0, { maxRecords: 100, maxBytes: 1 << 20 });
    const rows = own.rows.map(ownedToTuple);
    await expectSessionRefused(
      member,
      v,
      libV.id,
      "pages of the victim's own rows short of the claim",
      {
        heartbeatMs: 200,
        owned: { [v.deviceId]: claimed },
        answerPullState: (pull) => [
          {
            t: 'state-page',
            library: libV.id,
            req: pull.req,
            owner: pull.owner,
            from: pull.after,
            to: Math.max(pull.after, held),
            author: own.author,
            rows: rows.filter(([, , , version]) => version > pull.after),
            hasMore: false,
          },
        ],
      },
      (s) => s.pulled('pull-state', 'the victim to compare its own rows'),
      { code: 'PROTOCOL', message: new RegExp(`advertises this device's own rows through version ${claimed} but its pages stop at ${held}`) },
    );
    expect(engineOf(libV).ownedVector()[v.deviceId]).toBe(held);
    expect(await libV.get('volume', 'v-vol-2')).toMatchObject({ path: '/v2' });
  });

  it("a claim to hold more of the victim's writer than it wrote retires that writer, and ends the session of a member that serves none of it", async () => {
    // Until 3.0 the victim read such a hello as another copy of itself appending (DEVICE_FORKED)
    // and showed `error` until the member was gone (the simulator, seed 40453). Now it writes on
    // to a fresh writer (partners that believe the claim would drop its next writes at those
    // positions: simulator seed 182, a snapshot's vector lying about the device's own origin),
    // and pulls the positions claimed: they are signed by its own key, and a member that serves
    // none of them advertised changes it does not serve.
    const { v, libV, libN, member } = await startVictimCast();
    await libV.upsert('note', { id: 'v-1', title: 'from v', body: null });
    await waitForConvergence([libV, libN]);
    const writer = libV.writer();
    const held = libV.versionVector()[writer]!;
    const errorsBefore = (await libV.status()).protocolErrors;
    await expectSessionRefused(
      member,
      v,
      libV.id,
      "a claim of the victim's writer beyond what it wrote",
      { heartbeatMs: 200, shared: { [writer]: held + 1 } },
      (s) => s.pulled('pull-shared', 'the victim to pull its own writer'),
      { code: 'PROTOCOL', message: /advertises changes it does not serve/ },
    );
    expect((await libV.status()).protocolErrors).toBe(errorsBefore + 1);
    expect((await libV.status()).error).toBeNull();
    expect((await libV.status()).state).toBe('ready');
    await libV.upsert('note', { id: 'v-2', title: 'after the claim', body: null });
    expect(libV.writer()).not.toBe(writer);
    expect(libV.versionVector()[writer]).toBe(held);
    await waitForConvergence([libV, libN]);
  });

  it("refuses changes pushed into the log the victim appends to beyond what it wrote; its next write keeps its position", async () => {
    // A member cannot sign a run of the victim's origin: the signature check against the
    // victim's member row refuses it before the check of the positions the victim appends to.
    const { v, libV, libN, member } = await startVictimCast();
    await libV.upsert('note', { id: 'v-1', title: 'from v', body: null });
    await waitForConvergence([libV, libN]);
    const writer = libV.writer();
    const held = libV.versionVector()[writer]!;
    const digestN = await libN.digest();
    const errorsBefore = (await libV.status()).protocolErrors;
    const forged = signedTuples(member.peer.key, libV.id, [
      { origin: writer, seq: held + 1, hlc: encodeHlc({ wallMs: Date.now(), counter: 0, deviceId: writer }), model: 'note', id: 'forged', op: 'upsert', fields: { title: 'forged', body: null } },
    ]);
    await expectSessionRefused(
      member,
      v,
      libV.id,
      "an entry in the victim's own log",
      { heartbeatMs: 200 },
      (s) => s.send({ t: 'changes', library: libV.id, batch: 1, chunks: forged }),
      { code: 'PROTOCOL', message: /not signed by its author's key/ },
    );
    expect((await libV.status()).protocolErrors).toBe(errorsBefore + 1);
    expect(await libV.get('note', 'forged')).toBeUndefined();
    expect(libV.versionVector()[writer]).toBe(held);
    expect(await libN.digest()).toBe(digestN);
    await libV.upsert('note', { id: 'v-2', title: 'after the attack', body: null });
    expect(libV.versionVector()[writer]).toBe(held + 1);
    await waitForConvergence([libV, libN]);
    expect(await libN.get('note', 'v-2')).toMatchObject({ title: 'after the attack' });
  });
});
