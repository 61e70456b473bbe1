/**
 * A raw protocol peer that is a real member of a library: it joins by invite (join with the
 * invite proof bound to its PeerId, then welcome), opens a session with a hello and then speaks
 * the session protocol frame by frame, under the test's control. It records every frame it
 * receives, keeps the session alive with heartbeats (advertising `shared` / `owned`, which the
 * test sets) and answers pulls, but never acks on its own: the test sends each ack.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { expect } from 'vitest';
import { encodeHlc, type Library, type SyncNode, type VersionVector } from '../../src/index.js';
import { MEMBERS_MODEL } from '../../src/models/system.js';
import { decodeChunk } from '../../src/peer-log/chunk.js';
import type { LogEntry } from '../../src/peer-log/types.js';
import { decodeMessage, encodeMessage } from '../../src/protocol/codec.js';
import { type ChunkTuple, type Message, type MessageOf, PROTOCOL_VERSION } from '../../src/protocol/messages.js';
import type { FrameStream } from '../../src/protocol/transport.js';
import { encodeInvite } from '../../src/replication/invite-code.js';
import { makeTempDir, removeTempDirs } from './child-process.js';
import { type ClusterTransport, fastSync, shareLibrary, startNode, stopAllNodes, waitFor } from './cluster.js';
import { keyWhere, RawPeer, type RawStream, type StreamEnd, stopAllRawPeers } from './raw-peer.js';
import { signedTuples } from './signed-runs.js';

export interface RawMember {
  peer: RawPeer;
  device: string;
  /** The id of the last run it signed of each origin (`signedTuples`). */
  heads: Map<string, Uint8Array>;
}

/**
 * Starts a raw peer whose PeerId sorts below every one of `nodes` (so only it opens sessions:
 * no node ever sends it a hello it would leave unanswered) and joins `lib` through an invite
 * issued by `inviter`. Returns once the inviter lists it as a member.
 */
export async function joinAsRawMember(
  inviter: SyncNode,
  lib: Library,
  nodes: SyncNode[] = [inviter],
  options: { maxStreams?: number; transport?: ClusterTransport } = {},
): Promise<RawMember> {
  const peer = await RawPeer.start(await keyWhere((id) => nodes.every((n) => id < n.peerId)), options);
  const device = randomUUID();
  const joined = await peer.join(await lib.createInvite({ ttlMs: 60_000 }), { device });
  expect(await joined.message(0, 'the welcome')).toMatchObject({ t: 'welcome', library: lib.id, device: inviter.deviceId });
  await waitFor(
    async () => (await lib.members()).some((m) => m.device === device && m.peer === peer.peerId),
    'the raw member to be admitted',
  );
  return { peer, device, heads: new Map() };
}

/** The cast of an attack by a member: the victim, an honest member and the hostile raw member. */
export interface VictimCast {
  /** The victim's and the honest member's data directories, to restart them from. */
  dirV: string;
  dirN: string;
  v: SyncNode;
  libV: Library;
  n: SyncNode;
  libN: Library;
  member: RawMember;
}

/**
 * Starts a victim V and an honest member N sharing a library, and a raw member joined through V
 * that N knows of too; nodes use `rawMemberSync`. Their data directories are kept for restarts.
 */
export async function startVictimCast(): Promise<VictimCast> {
  const dirV = await makeTempDir('lsync-node-');
  const dirN = await makeTempDir('lsync-node-');
  const v = await startNode(dirV, { sync: rawMemberSync });
  const n = await startNode(dirN, { sync: rawMemberSync });
  const [libV, libN] = (await shareLibrary(v, [n])) as [Library, Library];
  const member = await joinAsRawMember(v, libV, [v, n]);
  await waitFor(async () => (await libN.members()).some((x) => x.device === member.device), 'N to learn of the raw member');
  return { dirV, dirN, v, libV, n, libN, member };
}

/**
 * Has the raw `member` invite `joiner` into `lib` as an inviter does: an invite naming the raw
 * peer, then, when the join arrives, the joiner's member row written as the member's first
 * change and pushed to `admitter` (which then accepts the joiner), and a welcome. The joiner's
 * bootstrap member, and so the first partner it pulls from, is the raw member. Resolves with
 * the joiner's library once `joinLibrary` does.
 */
export async function joinThroughRawMember(member: RawMember, admitter: SyncNode, lib: Library, joiner: SyncNode): Promise<Library> {
  const invite = encodeInvite({
    library: lib.id,
    name: lib.name,
    inviterPeer: member.peer.peerId,
    inviterAddrs: member.peer.multiaddrs(),
    id: randomUUID(),
    secret: randomBytes(32),
    expiresAt: Date.now() + 60_000,
  });
  let admitting: Promise<void> | undefined;
  member.peer.onInbound = (stream) => {
    admitting ??= admitThroughRawMember(member, admitter, lib, stream);
  };
  const joined = await joiner.joinLibrary(invite);
  await admitting;
  return joined;
}

async function admitThroughRawMember(member: RawMember, admitter: SyncNode, lib: Library, stream: RawStream): Promise<void> {
  const join = await stream.message(0, 'the join');
  if (join.t !== 'join') throw new Error(`expected a join, got ${join.t}`);
  const push = await pushMemberRow(member, admitter, lib.id, join.device, { peer: stream.remotePeer, addrs: join.addrs });
  push.stop();
  await waitFor(async () => (await lib.members()).some((m) => m.device === join.device), 'the admitter to list the joiner');
  await stream.send({ t: 'welcome', library: lib.id, name: lib.name, device: member.device });
  await stream.close();
}

/**
 * Pushes a member row `{ id, ...fields }` to `node` as the raw member's first change, written as
 * a 1.1 device writes one (no `name`). Resolves with the session, open, once the node acked it.
 */
export async function pushMemberRow(
  member: RawMember,
  node: SyncNode,
  library: string,
  id: string,
  fields: { peer: string; addrs: string[] },
): Promise<MemberSession> {
  const row: LogEntry = {
    origin: member.device,
    seq: 1,
    hlc: encodeHlc({ wallMs: Date.now(), counter: 0, deviceId: member.device }),
    model: MEMBERS_MODEL.name,
    id,
    op: 'upsert',
    fields: { ...fields, addrs: JSON.stringify(fields.addrs) },
  };
  const push = await MemberSession.open(member, node, library, { heartbeatMs: 200 });
  const chunks = signedTuples(member.peer.key, library, [row], member.heads);
  await push.send({ t: 'changes', library, batch: 1, chunks });
  await waitFor(() => push.of('ack').some((a) => a.batch === 1), 'the node to ack the member row');
  return push;
}

export interface MemberSessionOptions {
  /** Vectors in the hello (default: empty, a member that holds nothing). */
  shared?: VersionVector;
  owned?: VersionVector;
  /** Heartbeat interval of the raw side (it must stay under the node's peerTimeoutMs). */
  heartbeatMs: number;
  /** The protocol version its hello names (default: this build's). */
  version?: readonly [number, number];
  /** Reply to a pull-shared, or undefined to leave it unanswered (default: an empty, final page). */
  answerPullShared?: (pull: MessageOf<'pull-shared'>) => Message | undefined;
  /** Frames sent in reply to a pull-snapshot, in order (default: none, the pull times out). */
  answerPullSnapshot?: (pull: MessageOf<'pull-snapshot'>) => Message[];
  /** Frames sent in reply to a pull-state, in order (default: a page that brings nothing). */
  answerPullState?: (pull: MessageOf<'pull-state'>) => Message[];
}

/** Options of a member that advertises `shared` and answers every pull-shared with `chunks`, in one final page. */
export function servingChunks(library: string, shared: VersionVector, chunks: ChunkTuple[]): MemberSessionOptions {
  return {
    heartbeatMs: 200,
    shared,
    answerPullShared: (pull) => ({ t: 'shared-page', library, req: pull.req, chunks, hasMore: false, pruned: [] }),
  };
}

/** One session of a raw member with a node, frame by frame. */
const openSessions = new Set<MemberSession>();

/** Stops every raw member session still open (for afterEach). */
export function stopAllMemberSessions(): void {
  for (const session of openSessions) session.stop();
}

/** Everything a test with raw members started: sessions, raw peers, nodes, temp dirs (for afterEach). */
export async function stopRawMemberTest(): Promise<void> {
  stopAllMemberSessions();
  await stopAllRawPeers();
  await stopAllNodes();
  await removeTempDirs();
}

/** Node timings for tests with a raw member: a generous peer timeout (no drop under load), no pruning. */
export const rawMemberSync = { ...fastSync, peerTimeoutMs: 15_000, pruneIntervalMs: 3_600_000 };

export class MemberSession {
  /** Every frame received after the node's hello, in order (decoded; undecodable ones counted). */
  readonly received: Message[] = [];
  undecodable = 0;
  end: StreamEnd | undefined;
  /** The node's hello reply. */
  hello!: MessageOf<'hello'>;
  /** What this side advertises in its heartbeats. */
  shared: VersionVector;
  owned: VersionVector;
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  private helloReceived: ((m: MessageOf<'hello'>) => void) | undefined;

  private constructor(
    readonly stream: FrameStream,
    readonly library: string,
    private readonly options: MemberSessionOptions,
  ) {
    this.shared = { ...options.shared };
    this.owned = { ...options.owned };
  }

  /** Opens a session stream to `node` as `member`: hello out, the node's hello back. */
  static async open(member: RawMember, node: SyncNode, library: string, options: MemberSessionOptions): Promise<MemberSession> {
    await member.peer.transport.connect(node.peerId, node.multiaddrs());
    const stream = await member.peer.transport.openStream(node.peerId);
    const session = new MemberSession(stream, library, options);
    openSessions.add(session);
    const hello = new Promise<MessageOf<'hello'>>((resolve) => (session.helloReceived = resolve));
    void session.read();
    await session.send({
      t: 'hello',
      v: [...(options.version ?? PROTOCOL_VERSION)],
      library,
      device: member.device,
      shared: session.shared,
      owned: session.owned,
    });
    await waitFor(() => session.helloReceived === undefined || session.end !== undefined, "the node's hello");
    if (session.helloReceived) throw new Error(`the node ended the session before its hello: ${JSON.stringify(session.received)}`);
    session.hello = await hello;
    // The node may already have ended the session (e.g. after a pull answered with bad data).
    if (session.end) return session;
    session.heartbeat = setInterval(() => {
      void session.send({ t: 'heartbeat', library, shared: session.shared, owned: session.owned });
    }, options.heartbeatMs);
    return session;
  }

  async send(message: Message | Record<string, unknown>): Promise<void> {
    if (this.end) return;
    await this.stream.send(encodeMessage(message as Message)).catch(() => undefined);
  }

  ack(batch: number | null, shared: VersionVector, owned: VersionVector = this.owned): Promise<void> {
    return this.send({ t: 'ack', library: this.library, batch, shared, owned });
  }

  /**
   * Sends back the heads the node sent (the latest per origin; of `origins` only if given): this
   * member holds the node's runs there, which is what the node counts as acknowledged.
   */
  echoHeads(origins?: readonly string[]): Promise<void> {
    const latest = new Map<string, [string, number, Uint8Array]>();
    for (const message of this.of('heads')) for (const head of message.heads) latest.set(head[0], head);
    const heads = [...latest.values()].filter(([origin]) => !origins || origins.includes(origin));
    return this.send({ t: 'heads', library: this.library, heads });
  }

  of<T extends Message['t']>(t: T): Array<MessageOf<T>> {
    return this.received.filter((m): m is MessageOf<T> => m.t === t);
  }

  count(t: Message['t']): number {
    return this.of(t).length;
  }

  /**
   * Waits until a heartbeat from the node satisfies `ready`, then until `more` further
   * heartbeats have arrived: by then the node has had that many intervals to send anything it
   * was going to send (its frames arrive in order on this one stream).
   */
  async heartbeatsAfter(ready: (h: MessageOf<'heartbeat'>) => boolean, more: number, what: string): Promise<void> {
    let at = -1;
    await waitFor(() => {
      if (at < 0) at = this.received.findIndex((m) => m.t === 'heartbeat' && ready(m));
      if (this.end) throw new Error(`session ended while waiting for ${what}: ${JSON.stringify(this.end)}`);
      return at >= 0 && this.received.slice(at + 1).filter((m) => m.t === 'heartbeat').length >= more;
    }, what);
  }

  /**
   * Waits until `beats` heartbeats from the node have arrived after this call: the node has
   * had that many intervals to send whatever it was going to send by now.
   */
  async quietFor(beats: number, what: string): Promise<void> {
    const start = this.received.length;
    await waitFor(() => {
      if (this.end) throw new Error(`session ended while waiting for ${what}: ${JSON.stringify(this.end)}`);
      return this.received.slice(start).filter((m) => m.t === 'heartbeat').length >= beats;
    }, what);
  }

  /** Waits until the node has sent a pull of kind `t` (or ended the session). */
  async pulled(t: 'pull-shared' | 'pull-state' | 'pull-snapshot', what = `the node to send ${t}`): Promise<void> {
    await waitFor(() => this.count(t) > 0 || this.end !== undefined, what);
  }

  /** Waits until the node ends the stream. */
  async ended(what = 'the node to end the session'): Promise<StreamEnd> {
    await waitFor(() => this.end !== undefined, what);
    return this.end!;
  }

  stop(): void {
    openSessions.delete(this);
    clearInterval(this.heartbeat);
    if (!this.end) this.stream.abort(new Error('raw member stopped'));
  }

  private async read(): Promise<void> {
    try {
      for await (const frame of this.stream.frames()) {
        let message: Message;
        try {
          message = decodeMessage(frame);
        } catch {
          this.undecodable += 1;
          continue;
        }
        if (this.helloReceived && message.t === 'hello') {
          const resolve = this.helloReceived;
          this.helloReceived = undefined;
          resolve(message);
          continue;
        }
        this.received.push(message);
        if (message.t === 'pull-shared') {
          const { answerPullShared } = this.options;
          const reply = answerPullShared
            ? answerPullShared(message)
            : { t: 'shared-page', library: this.library, req: message.req, chunks: [], hasMore: false, pruned: [] };
          if (reply) void this.send(reply);
        } else if (message.t === 'pull-snapshot') {
          for (const reply of this.options.answerPullSnapshot?.(message) ?? []) void this.send(reply);
        } else if (message.t === 'pull-state') {
          const replies = this.options.answerPullState?.(message) ?? [
            { t: 'state-page', library: this.library, req: message.req, owner: message.owner, from: message.after, to: message.after, author: null, rows: [], hasMore: false },
          ];
          for (const reply of replies) void this.send(reply);
        }
      }
      this.end = { kind: 'closed' };
    } catch (err) {
      this.end = { kind: 'reset', error: err as Error };
    } finally {
      clearInterval(this.heartbeat);
    }
  }
}

/**
 * Opens a session of `member` with `node`, lets `act` deliver bad input through it, and expects
 * the node to end the session (reset) with one `error` frame of `code` whose message matches
 * `message`. Returns the session, for further checks.
 */
export async function expectSessionRefused(
  member: RawMember,
  node: SyncNode,
  library: string,
  what: string,
  options: MemberSessionOptions,
  act: (session: MemberSession) => Promise<unknown>,
  expected: { code: string; message: RegExp },
): Promise<MemberSession> {
  const session = await MemberSession.open(member, node, library, options);
  await act(session);
  expect((await session.ended(`the node to end the session after ${what}`)).kind, what).toBe('reset');
  expect(session.of('error'), what).toMatchObject([{ code: expected.code, req: null }]);
  expect(session.of('error')[0]!.message, what).toMatch(expected.message);
  return session;
}

/** The entries a `changes` or `shared-page` message carries, decoded from its chunks. */
export function entriesOfMessage(message: MessageOf<'changes'> | MessageOf<'shared-page'>): LogEntry[] {
  return message.chunks.flatMap(([origin, firstSeq, lastSeq, entries]) =>
    decodeChunk({ origin, firstSeq, lastSeq, entries }).map((d) => d.entry),
  );
}
