import {
  describeError,
  NetworkError,
  ProtocolError,
  ProtocolVersionError,
  type RemovalInfo,
  RemovedError,
  StoppedError,
  SyncError,
  TimeoutError,
  toSyncError,
} from '../errors.js';
import type { ReplicationLibrary } from './replication-library.js';
import { MAX_MEMBER_ADDRS } from '../models/system.js';
import { decodeMessage, encodeMessage } from '../protocol/codec.js';
import { type Message, type MessageOf, PROTOCOL_VERSION } from '../protocol/messages.js';
import type { ConnectionKind, FrameStream, Transport } from '../protocol/transport.js';
import type { Invite } from './invite-code.js';
import { hashSecret, inviteProof } from './invite-code.js';
import type { LibraryReplicator } from './replicator.js';
import { ServingSlots } from './serving-slots.js';
import { Session } from './session.js';
import type { PartnerDialStatus } from '../library/status.js';
import { refuseStream } from './refuse-stream.js';
import { errorFromWire, errorMessage, isBadInput, isPeerReported, notMember, type SessionErrorEvent } from './wire-errors.js';
import type { CancelTimer, Runtime } from '../runtime/runtime.js';
import { sameList } from '../util/lists.js';

export interface BackoffPolicy {
  minMs: number;
  maxMs: number;
}

/** An always-on peer every node keeps a connection to (`createSyncNode({ bootstrap })`). */
export interface BootstrapPeer {
  peer: string;
  /** Its multiaddr, ending in `/p2p/<peer>`. */
  addr: string;
}

interface PeerBackoff {
  failures: number;
  nextAttemptAt: number;
}

/** The last dial of a peer, as `status()` shows it, and the member-row addresses it was given. */
interface DialRecord {
  addresses: readonly string[];
  lastError: string | null;
  lastAttemptAt: number;
  given: readonly string[];
}

/**
 * The node's side of the network, shared by all its libraries: accepts inbound streams
 * (hello or join), keeps a connection to every partner of every library (redialled with
 * exponential backoff and jitter) and opens one session per library and partner.
 *
 * Who opens a session: the side with the smaller PeerId, so two devices never race to open
 * two sessions for the same library. Either side may dial the connection.
 */
export class SyncNetwork {
  private readonly replicators = new Map<string, LibraryReplicator>();
  private readonly backoff = new Map<string, PeerBackoff>();
  private readonly dials = new Map<string, DialRecord>();
  private readonly opening = new Set<string>();
  /** How often discovery found each member, to tell whether it did during a dial. */
  private readonly discoveries = new Map<string, number>();
  /** Libraries being joined: settles once the library exists here (or the join failed). */
  private readonly joining = new Map<string, Promise<unknown>>();
  private stopReconciling: CancelTimer | undefined;
  private reconcileQueued = false;
  /** This node's addresses as the libraries were last told them (`checkAddresses`). */
  private knownAddresses: string[];
  /** Sessions (library and peer) refused by a partner that has not received our member row yet. */
  private readonly awaitingMemberRow = new Map<string, { since: number; refusals: number }>();
  private readonly retryTimers = new Set<CancelTimer>();
  private protocolErrorCount = 0;
  /** Inbound streams of peers that are members of no library here, still in their handshake. */
  private strangerHandshakes = 0;
  /** Inbound streams still in their handshake, by peer (known or not). */
  private readonly peerHandshakes = new Map<string, number>();
  /** The catch-ups this node is serving, by session (library and peer). */
  private readonly serving: ServingSlots;
  private stopped = false;

  constructor(
    private readonly transport: Transport,
    private readonly deviceId: string,
    private readonly options: {
      backoff: BackoffPolicy;
      reconcileMs: number;
      handshakeTimeoutMs: number;
      maxConcurrentServes: number;
      /** This device's name (`deviceName`), sent in joins and written to its member rows. */
      deviceName: string | null;
      bootstrap: readonly BootstrapPeer[];
      /** Timers, jitter and wall time. */
      runtime: Runtime;
      onSessionError: (event: SessionErrorEvent) => void;
    },
  ) {
    // Leases and rates are durations: on the monotonic clock, so a wall clock set back cannot
    // stretch a window or a lease.
    this.serving = new ServingSlots(options.maxConcurrentServes, () => options.runtime.scheduler.monotonicNow());
    transport.handle((stream) => this.acceptWithinBudget(stream));
    transport.setKnownPeers(
      (peer) => this.isKnownPeer(peer),
      (source, destination) => this.shareALibrary(source, destination),
    );
    this.knownAddresses = this.addresses();
    transport.onAddressesChange(() => this.checkAddresses());
    transport.onConnectionChange((peer, connected) => {
      if (connected) {
        this.backoff.delete(peer);
        // Connected (either way): an earlier dial error no longer explains anything.
        const dial = this.dials.get(peer);
        if (dial) dial.lastError = null;
      }
      this.statusChanged(peer);
      this.reconcileSoon();
    });
    transport.onPeerDiscovered((peer) => this.discovered(peer));
    this.stopReconciling = options.runtime.scheduler.setInterval(() => {
      this.checkAddresses();
      this.reconcile();
    }, options.reconcileMs);
  }

  get localPeer(): string {
    return this.transport.localPeer;
  }

  /**
   * The addresses members are told (member row, join): direct ones first, then relayed ones
   * (`…/p2p-circuit/…`), at most the MAX_MEMBER_ADDRS a member row holds.
   */
  addresses(): string[] {
    const all = this.transport.addresses();
    const relayed = (addr: string) => addr.includes('/p2p-circuit');
    return [...all.filter((a) => !relayed(a)), ...all.filter(relayed)].slice(0, MAX_MEMBER_ADDRS);
  }

  get deviceName(): string | null {
    return this.options.deviceName;
  }

  /**
   * How dialling `peer` goes: the addresses of the last attempt, its error, when it was and when
   * the next one is due (null while connected; now or earlier when one is due or under way).
   */
  dialStatus(peer: string): PartnerDialStatus {
    const dial = this.dials.get(peer);
    const connected = this.transport.isConnected(peer);
    return {
      addresses: [...(dial?.addresses ?? [])],
      lastError: dial?.lastError ?? null,
      lastAttemptAt: dial?.lastAttemptAt ?? null,
      nextAttemptAt: connected ? null : (this.backoff.get(peer)?.nextAttemptAt ?? this.now()),
    };
  }

  connectionKind(peer: string): ConnectionKind | null {
    return this.transport.connectionKind(peer);
  }

  disconnect(peer: string): void {
    void this.transport.disconnect(peer);
  }

  protocolErrors(): number {
    return this.protocolErrorCount;
  }

  now(): number {
    return this.options.runtime.wallClock();
  }

  get runtime(): Runtime {
    return this.options.runtime;
  }

  add(replicator: LibraryReplicator): void {
    this.replicators.set(replicator.library.id, replicator);
  }

  /**
   * Tells every library when this node's addresses differ from the ones it was last told. The
   * transport reports what libp2p announces (a listener opened or closed, a relay reservation),
   * but nothing reports a change of the machine's interfaces under a wildcard listen
   * (`0.0.0.0` stands for the addresses the interfaces have whenever it is read): so the
   * addresses are also read again at every reconcile tick, which costs one look at the
   * interfaces, and member rows are written only when something differs.
   */
  private checkAddresses(): void {
    if (this.stopped) return;
    const current = this.addresses();
    if (sameList(current, this.knownAddresses)) return;
    this.knownAddresses = current;
    for (const replicator of this.replicators.values()) replicator.addressesChanged();
  }

  reconcileSoon(): void {
    if (this.reconcileQueued || this.stopped) return;
    this.reconcileQueued = true;
    queueMicrotask(() => {
      this.reconcileQueued = false;
      this.reconcile();
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopReconciling?.();
    for (const cancel of this.retryTimers) cancel();
    await Promise.all([...this.replicators.values()].map((r) => r.stop().catch(() => undefined)));
    await this.transport.stop();
  }

  /**
   * Joins through an invite: dial the inviter (who must authenticate as the invite's PeerId),
   * prove the secret, and wait for the welcome. Returns the inviter as a member.
   */
  async join(invite: Invite, signal?: AbortSignal): Promise<{ device: string; name: string }> {
    await this.transport.connect(invite.inviterPeer, invite.inviterAddrs, { signal });
    const stream = await this.transport.openStream(invite.inviterPeer, signal);
    const frames = stream.frames()[Symbol.asyncIterator]();
    try {
      await stream.send(
        encodeMessage({
          t: 'join',
          v: [...PROTOCOL_VERSION],
          library: invite.library,
          invite: invite.id,
          proof: inviteProof(hashSecret(invite.secret), this.localPeer, invite.library),
          device: this.deviceId,
          addrs: this.addresses(),
          ...(this.deviceName === null ? {} : { name: this.deviceName }),
        }),
      );
      const reply = await this.firstMessage(frames, stream);
      if (reply.t === 'error') throw errorFromWire(reply.code, reply.message, reply.removal);
      if (reply.t !== 'welcome' || reply.library !== invite.library) throw new ProtocolError(`expected welcome, got ${reply.t}`);
      return { device: reply.device, name: reply.name };
    } finally {
      await stream.close();
    }
  }

  /** Runs a join of `library`; a hello for it arriving meanwhile waits for the outcome. */
  async whileJoining<T>(library: string, join: () => Promise<T>): Promise<T> {
    const joined = join();
    this.joining.set(library, joined);
    try {
      return await joined;
    } finally {
      this.joining.delete(library);
    }
  }

  private async replicatorFor(library: string): Promise<LibraryReplicator | undefined> {
    await this.joining.get(library)?.catch(() => undefined);
    return this.replicators.get(library);
  }

  private reconcile(): void {
    if (this.stopped) return;
    // Peers to dial, each with every address known for it: the configured one of a bootstrap
    // peer and its member rows in every library here. One dial per peer, on all of them.
    const unreached = new Map<string, Set<string>>();
    const reach = (peer: string, addrs: readonly string[]) => {
      const known = unreached.get(peer) ?? new Set<string>();
      for (const addr of addrs) known.add(addr);
      unreached.set(peer, known);
    };
    for (const { peer, addr } of this.options.bootstrap) {
      // One bootstrap list may serve every device, the always-on one included.
      if (peer === this.localPeer) continue;
      const kind = this.transport.connectionKind(peer);
      if (kind === null) reach(peer, [addr]);
      else if (kind === 'direct') this.keepRelaySlot(peer);
    }
    for (const replicator of this.replicators.values()) {
      // A copy of this device that gave way to another one, or a device that is no longer a
      // member, syncs this library no more.
      if (replicator.inactive) continue;
      // A removed device would wait for a session this node never opens: it is told instead.
      for (const [peer, removal] of replicator.removedPeers()) {
        if (this.transport.isConnected(peer)) this.tellRemoved(replicator.library.id, peer, removal);
      }
      for (const partner of replicator.partners()) {
        const kind = this.transport.connectionKind(partner.peer);
        if (kind === null) {
          reach(partner.peer, partner.addrs);
          continue;
        }
        if (kind === 'relayed') this.tryDirect(partner.peer, partner.addrs);
        if (!replicator.sessions.has(partner.peer) && this.localPeer < partner.peer) void this.open(replicator, partner.peer);
      }
    }
    for (const [peer, addrs] of unreached) this.dial(peer, [...addrs]);
  }

  /**
   * Discovery found `peer` (its addresses are now where the transport dials). A member not
   * connected is dialled at once, whatever its backoff: the failures behind that backoff were
   * at addresses it may have left. Anyone else is ignored: only members are dialled for sync.
   */
  private discovered(peer: string): void {
    if (this.stopped || !this.isKnownPeer(peer) || this.transport.isConnected(peer)) return;
    this.discoveries.set(peer, (this.discoveries.get(peer) ?? 0) + 1);
    this.backoff.delete(peer);
    this.reconcileSoon();
  }

  /**
   * A bootstrap peer is dialled like a partner (same backoff) and kept connected (`reconcile`).
   * Once it is a member of a library here, this node also keeps a relay slot on it, so members
   * that cannot dial this node reach it through the bootstrap peer (`/p2p/<bootstrap>/p2p-circuit/…`).
   */
  private keepRelaySlot(peer: string): void {
    if (!this.isKnownPeer(peer) || this.transport.hasRelayReservation(peer)) return;
    this.attempt(`relay:${peer}`, async () => {
      await this.transport.reserveRelay(peer);
      return true;
    });
  }

  /**
   * A partner reached only through a relay is dialled on its direct addresses in the background,
   * with backoff (dcutr upgrades on public addresses only); the relayed connection serves meanwhile.
   */
  private tryDirect(peer: string, addrs: readonly string[]): void {
    this.attempt(`direct:${peer}`, () => this.transport.upgradeToDirect(peer, addrs));
  }

  /** Runs `task` unless one with this key runs or waits out its backoff; false or a failure backs off. */
  private attempt(key: string, task: () => Promise<boolean>): void {
    if (this.opening.has(key) || !this.due(key)) return;
    this.opening.add(key);
    task()
      .then(
        (done) => (done ? this.backoff.delete(key) : this.failed(key)),
        () => this.failed(key),
      )
      .finally(() => this.opening.delete(key));
  }

  /**
   * Dials `peer` when its backoff allows, or at once when a member row gave an address the last
   * attempt was not given (the partner moved: the new address is worth trying now).
   */
  private dial(peer: string, addrs: readonly string[]): void {
    const key = `dial:${peer}`;
    if (this.opening.has(key)) return;
    const last = this.dials.get(peer);
    const moved = last !== undefined && addrs.some((addr) => !last.given.includes(addr));
    if (!moved && !this.due(peer)) return;
    this.opening.add(key);
    // The previous error stays visible until this attempt ends.
    const dial: DialRecord = { addresses: [], lastError: last?.lastError ?? null, lastAttemptAt: this.now(), given: addrs };
    this.dials.set(peer, dial);
    const discoveries = this.discoveries.get(peer);
    let rediscovered = false;
    this.transport
      .connect(peer, addrs, {
        onDialling: (addresses) => {
          dial.addresses = addresses;
          this.statusChanged(peer);
        },
      })
      .then(
        () => {
          dial.lastError = null;
        },
        (err: unknown) => {
          dial.lastError = describeError(err);
          // Discovered while this dial ran on the addresses known before: the new ones are
          // tried at once (after this dial has ended, below), not after a backoff.
          rediscovered = this.discoveries.get(peer) !== discoveries;
          if (!rediscovered) this.failed(peer);
        },
      )
      .finally(() => {
        this.opening.delete(key);
        this.statusChanged(peer);
        if (rediscovered) this.reconcileSoon();
      });
  }

  /** Tells the libraries that `peer` is a member of that their status changed (coalesced). */
  private statusChanged(peer: string): void {
    for (const replicator of this.replicators.values()) {
      if (replicator.isMemberPeer(peer)) replicator.scheduleStatus();
    }
  }

  /**
   * Tells a connected removed device that it was removed: a stream whose only frame is a
   * `REMOVED` error (with the removal held), at most once per backoff period.
   */
  private tellRemoved(library: string, peer: string, removal: RemovalInfo): void {
    const notice = new RemovedError(`this device was removed from library ${library}`, removal);
    // Sent or not, the next notice waits out a backoff period (the task never reports done).
    this.attempt(`removed:${sessionKey(library, peer)}`, async () => {
      const stream = await this.transport.openStream(peer);
      await stream.send(encodeMessage(errorMessage(library, notice, null)));
      await stream.close();
      return false;
    });
  }

  /** Opens a session as the smaller PeerId: hello out, hello (or error) back. */
  private async open(replicator: LibraryReplicator, peer: string): Promise<void> {
    const key = sessionKey(replicator.library.id, peer);
    if (this.opening.has(key) || !this.due(key)) return;
    this.opening.add(key);
    let stream: FrameStream | undefined;
    let partner: string | undefined;
    try {
      stream = await this.transport.openStream(peer);
      const frames = stream.frames()[Symbol.asyncIterator]();
      await stream.send(encodeMessage(helloFor(replicator.library)));
      const reply = await this.firstMessage(frames, stream);
      if (reply.t === 'error') throw errorFromWire(reply.code, reply.message, reply.removal);
      if (reply.t !== 'hello') throw new ProtocolError(`expected hello, got ${reply.t}`);
      checkVersion(reply.v);
      // The device the peer says it is, if a member row names it under that PeerId (checked
      // against the member list as it is now).
      checkHello(reply, replicator, peer);
      partner = reply.device;
      await replicator.checkWriters(reply, partner);
      if (this.stopped) throw new StoppedError('the node is stopping');
      replicator.adopt(new Session(replicator, stream, frames, partner, reply, 'outbound'));
    } catch (err) {
      const error = toSyncError(err);
      // Refused by the peer before its hello: the device its member row names, as a rule one.
      partner ??= replicator.devicesOf(peer)[0];
      if (error.code === 'DEVICE_FORKED' && partner) replicator.recordFork(partner, error);
      await replicator.onRefusedAsRemoved(peer, error).catch(() => undefined);
      if (!this.retryForMemberRow(key, error)) {
        this.failed(key);
        this.reportSessionError({ peer, library: replicator.library.id, direction: 'outbound', error });
      }
      if (stream) await refuseStream(stream, replicator.library.id, error, this.runtime.scheduler);
    } finally {
      this.opening.delete(key);
    }
  }

  /**
   * Whether `peer` is a member of a library here (the bootstrap inviter of a joined one
   * included). A library this device no longer syncs (removed, left, or given way to another
   * copy) vouches for nobody: its members get no gater exemption and no relay from this node.
   */
  private isKnownPeer(peer: string): boolean {
    for (const replicator of this.replicators.values()) if (!replicator.inactive && replicator.isMemberPeer(peer)) return true;
    return false;
  }

  /**
   * Whether `source` and `destination` are two members of one library this device syncs (who
   * is relayed). Never a peer to itself: that would only spend the relay's bandwidth.
   */
  private shareALibrary(source: string, destination: string): boolean {
    if (source === destination) return false;
    for (const replicator of this.replicators.values()) {
      if (!replicator.inactive && replicator.isMemberPeer(source) && replicator.isMemberPeer(destination)) return true;
    }
    return false;
  }

  /**
   * Memory held for streams waiting for their first frame (each at most the handshake frame
   * limit) has budgets, node-wide: peers that are not members get MAX_STRANGER_HANDSHAKES of
   * them in all, and any one peer MAX_PEER_HANDSHAKES, over all its connections. The second
   * bounds a member too (a member is exempt from the first, and so is any PeerId a member row
   * names). A stream beyond a budget is reset at once, unread.
   */
  private acceptWithinBudget(stream: FrameStream): void {
    const peer = stream.remotePeer;
    const stranger = !this.isKnownPeer(peer);
    const ofPeer = this.peerHandshakes.get(peer) ?? 0;
    if (ofPeer >= MAX_PEER_HANDSHAKES) {
      stream.abort(new NetworkError(`too many handshakes of peer ${peer} in progress (${MAX_PEER_HANDSHAKES})`));
      return;
    }
    if (stranger && this.strangerHandshakes >= MAX_STRANGER_HANDSHAKES) {
      stream.abort(new NetworkError(`too many handshakes of non-members in progress (${MAX_STRANGER_HANDSHAKES})`));
      return;
    }
    this.peerHandshakes.set(peer, ofPeer + 1);
    if (stranger) this.strangerHandshakes += 1;
    void this.accept(stream).finally(() => {
      if (stranger) this.strangerHandshakes -= 1;
      const left = (this.peerHandshakes.get(peer) ?? 1) - 1;
      if (left > 0) this.peerHandshakes.set(peer, left);
      else this.peerHandshakes.delete(peer);
    });
  }

  /** An inbound stream: its first frame is a hello (session) or a join (invite). */
  private async accept(stream: FrameStream): Promise<void> {
    const frames = stream.frames()[Symbol.asyncIterator]();
    let library = '00000000-0000-0000-0000-000000000000';
    try {
      const first = await this.firstMessage(frames, stream);
      library = first.library;
      const replicator = await this.replicatorFor(first.library);
      if (first.t === 'hello') {
        checkVersion(first.v);
        if (!replicator) throw notMember(stream.remotePeer);
        checkHello(first, replicator, stream.remotePeer);
        await replicator.checkSingleCopy(stream.remotePeer);
        await replicator.checkWriters(first, first.device);
        await stream.send(encodeMessage(helloFor(replicator.library)));
        replicator.adopt(new Session(replicator, stream, frames, first.device, first, 'inbound'));
      } else if (first.t === 'join') {
        checkVersion(first.v);
        if (!replicator) throw notMember(stream.remotePeer);
        await replicator.admit(first, stream.remotePeer);
        const reply: Message = { t: 'welcome', library: first.library, name: replicator.library.name, device: this.deviceId };
        await stream.send(encodeMessage(reply));
        await stream.close();
      } else if (first.t === 'error' && first.code === 'REMOVED') {
        // A member tells this device it was removed (`tellRemoved`).
        await replicator?.onRefusedAsRemoved(stream.remotePeer, errorFromWire(first.code, first.message, first.removal));
        await stream.close();
      } else {
        throw new ProtocolError(`a stream must start with hello or join, not ${first.t}`);
      }
    } catch (err) {
      const error = toSyncError(err);
      const replicator = this.replicators.get(library);
      // A library still backfilling has not received its whole member list: refusing a
      // member it does not know yet is expected, and that member retries (retryForMemberRow).
      if (!(error.code === 'NOT_MEMBER' && replicator?.backfilling)) {
        this.reportSessionError({ peer: stream.remotePeer, library: replicator ? library : undefined, direction: 'inbound', error });
      }
      await refuseStream(stream, library, error, this.runtime.scheduler);
    }
  }

  /** A node serves at most `maxConcurrentServes` catch-ups at once, fairly (`ServingSlots`). */
  mayServe(library: string, peer: string): boolean {
    return this.serving.mayServe(sessionKey(library, peer));
  }

  /** Counts protocol violations and tells the node's listeners. */
  reportSessionError(event: SessionErrorEvent): void {
    if (isBadInput(event.error)) this.protocolErrorCount += 1;
    this.options.onSessionError(event);
  }

  /** A session this node opened failed: the next attempt waits (exponential backoff). */
  sessionFailed(library: string, peer: string): void {
    this.failed(sessionKey(library, peer));
  }

  /** A session went live: attempts to that partner start from the shortest backoff again. */
  sessionLive(library: string, peer: string): void {
    this.backoff.delete(sessionKey(library, peer));
    this.awaitingMemberRow.delete(sessionKey(library, peer));
  }

  /**
   * A member that refuses this device as a non-member (`NOT_MEMBER`) right after a join has
   * usually not received this device's member row yet; it arrives by ordinary sync. For up to
   * MEMBER_ROW_GRACE_MS from the first such refusal the session is retried on a short schedule
   * of its own (MEMBER_ROW_RETRY_MS, doubling up to MEMBER_ROW_RETRY_MAX_MS) and the refusal is
   * not reported; after that it is a failed session like any other. Returns whether it retries.
   */
  private retryForMemberRow(key: string, error: SyncError): boolean {
    if (error.code !== 'NOT_MEMBER' || !isPeerReported(error) || this.stopped) return false;
    const now = this.now();
    const waiting = this.awaitingMemberRow.get(key) ?? { since: now, refusals: 0 };
    if (now - waiting.since > MEMBER_ROW_GRACE_MS) return false;
    waiting.refusals += 1;
    this.awaitingMemberRow.set(key, waiting);
    const delay = Math.min(MEMBER_ROW_RETRY_MAX_MS, MEMBER_ROW_RETRY_MS * 2 ** (waiting.refusals - 1));
    this.backoff.set(key, { failures: 0, nextAttemptAt: now + delay });
    const cancel = this.options.runtime.scheduler.setTimeout(() => {
      this.retryTimers.delete(cancel);
      this.reconcileSoon();
    }, delay);
    this.retryTimers.add(cancel);
    return true;
  }

  private async firstMessage(frames: AsyncIterator<Uint8Array>, stream: FrameStream): Promise<Message> {
    let cancel: CancelTimer | undefined;
    const timeout = new Promise<never>((_, reject) => {
      cancel = this.options.runtime.scheduler.setTimeout(
        () => reject(new TimeoutError(`peer ${stream.remotePeer} did not complete the handshake`)),
        this.options.handshakeTimeoutMs,
      );
    });
    try {
      const next = await Promise.race([frames.next(), timeout]);
      // A peer gone before its first frame is a lost stream, not bad input.
      if (next.done) throw new NetworkError(`the stream with peer ${stream.remotePeer} ended before the handshake completed`);
      return decodeMessage(next.value);
    } finally {
      cancel?.();
    }
  }

  private due(key: string): boolean {
    const state = this.backoff.get(key);
    return !state || state.nextAttemptAt <= this.now();
  }

  /** Exponential backoff with ±25 % jitter, capped. */
  private failed(key: string): void {
    const failures = (this.backoff.get(key)?.failures ?? 0) + 1;
    const base = Math.min(this.options.backoff.maxMs, this.options.backoff.minMs * 2 ** (failures - 1));
    const delay = Math.round(base * (0.75 + this.options.runtime.random.next() * 0.5));
    this.backoff.set(key, { failures, nextAttemptAt: this.now() + delay });
  }
}

/** Inbound streams of non-members in their handshake, node-wide, at most. */
const MAX_STRANGER_HANDSHAKES = 16;
/**
 * Inbound streams of one peer in their handshake, node-wide, at most: one connection's worth of
 * sync streams (an honest peer opens one per library it shares, at once when it reconnects).
 */
const MAX_PEER_HANDSHAKES = 64;

/** How long, and how often, a session refused for a member row not yet synced is retried quietly. */
const MEMBER_ROW_GRACE_MS = 30_000;
const MEMBER_ROW_RETRY_MS = 250;
const MEMBER_ROW_RETRY_MAX_MS = 2_000;

function sessionKey(library: string, peer: string): string {
  return `${library}:${peer}`;
}


/** A hello: what this device holds. */
function helloFor(library: ReplicationLibrary): MessageOf<'hello'> {
  return {
    t: 'hello',
    v: [...PROTOCOL_VERSION],
    library: library.id,
    device: library.deviceId,
    shared: library.versionVector(),
    owned: library.ownedVector(),
  };
}

function checkVersion(v: readonly [number, number]): void {
  if (v[0] !== PROTOCOL_VERSION[0]) throw new ProtocolVersionError(PROTOCOL_VERSION.join('.'), v.join('.'));
}

/** Library and membership of a hello whose version was already checked. */
function checkHello(hello: MessageOf<'hello'>, replicator: LibraryReplicator, peer: string): void {
  if (hello.library !== replicator.library.id) throw new ProtocolError('hello names another library');
  replicator.requireMember(peer, hello.device);
}
