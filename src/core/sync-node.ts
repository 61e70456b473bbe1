import { EventEmitter } from 'eventemitter3';
import { InviteError, NotFoundError, StoppedError, ValidationError } from '../errors.js';
import { compareHlc, type Hlc, HlcClock, isDeviceId } from '../hlc/index.js';
import { joinedLibraryMeta, LibraryEngine } from '../library/engine.js';
import { isKeyDerivedId } from '../membership/device-id.js';
import { engineOf, Library } from '../library/library.js';
import type { Member } from '../library/types.js';
import type { Model } from '../models/define.js';
import { ModelRegistry } from '../models/registry.js';
import { SYSTEM_MODELS } from '../models/system.js';
import type { Transport } from '../protocol/transport.js';
import { decodeInvite } from '../replication/invite-code.js';
import { type BootstrapPeer, SyncNetwork } from '../replication/network.js';
import type { SessionErrorEvent } from '../replication/wire-errors.js';
import { LibraryReplicator } from '../replication/replicator.js';
import type { Runtime } from '../runtime/runtime.js';
import { prepareLibrary } from '../library/open-library.js';
import { RecordIds, randomUuid } from '../util/ids.js';
import type { LibraryStorage } from './storage.js';
import type { SyncTuning } from './tuning.js';

/**
 * What a node core is made of. Everything that touches the platform is given: the network
 * (`startTransport`, called once the libraries are open), the storage (`openStorage`, called
 * first; it carries the device id) and the runtime (timers, randomness, wall clock). The Node
 * edge (`createSyncNode`) supplies libp2p, SQLite files and real time; the simulator supplies
 * an in-memory transport, in-memory SQLite and virtual time. Values are taken as valid:
 * `createSyncNode` validates what users pass.
 */
export interface NodeCoreDeps {
  /** The application's models (the sync engine's own are added). */
  models: Model[];
  openStorage(): Promise<LibraryStorage>;
  startTransport(): Promise<Transport>;
  runtime: Runtime;
  /** Remote clocks further ahead of local wall time than this are refused (default 60 000). */
  maxClockDriftMs?: number;
  tuning: SyncTuning;
  /** This device's name as the members see it (null: none). */
  deviceName: string | null;
  /** Always-on peers the node keeps connected (`createSyncNode({ bootstrap })`). */
  bootstrap: readonly BootstrapPeer[];
}

/**
 * The events of a sync node (`node.on(event, listener)`).
 *
 * @example
 * ```ts
 * node.on('session-error', ({ peer, library, direction, error }) => {
 *   console.warn(`sync with ${peer} (${direction}, library ${library}) failed:`, error.message);
 * });
 * ```
 */
export interface SyncNodeEvents {
  /**
   * A sync session could not start or ended with an error (`error.code`: `PROTOCOL_VERSION`,
   * `NOT_MEMBER`, `PROTOCOL`, `TIMEOUT`, `NETWORK`, ...). Informational: the node keeps serving
   * its other partners and redials with backoff.
   */
  'session-error': [SessionErrorEvent];
}

export interface CreateLibraryOptions {
  name: string;
  /**
   * Open a replica of an existing library (a uuid) instead of minting a new id. Joining by
   * invite builds on this; tests and tools use it to place one library on several devices.
   */
  id?: string;
}

/**
 * A device's sync node: its identity, its clock and its open libraries. Create one with
 * `createSyncNode`; call `stop()` before the process exits.
 */
export class SyncNode {
  private stopped = false;

  private constructor(
    readonly deviceId: string,
    private readonly storage: LibraryStorage,
    private readonly registry: ModelRegistry,
    private readonly clock: HlcClock,
    private readonly open: Map<string, Library>,
    private readonly transport: Transport,
    private readonly network: SyncNetwork,
    private readonly tuning: SyncTuning,
    private readonly runtime: Runtime,
    private readonly recordIds: RecordIds,
    private readonly events: EventEmitter<SyncNodeEvents>,
  ) {}

  /**
   * `session-error`: a sync session could not start or ended with an error (version mismatch,
   * non-member, malformed frame, dead peer…). Informational: the node keeps serving others.
   */
  on<E extends keyof SyncNodeEvents>(event: E, listener: (...args: SyncNodeEvents[E]) => void): this {
    this.events.on(event, listener);
    return this;
  }

  off<E extends keyof SyncNodeEvents>(event: E, listener: (...args: SyncNodeEvents[E]) => void): this {
    this.events.off(event, listener);
    return this;
  }

  /** This device's PeerId (`createSyncNode` keeps its libp2p key in dataDir: stable across restarts). */
  get peerId(): string {
    return this.transport.localPeer;
  }

  /** This device's name as the other members see it (null only if the host name is unusable). */
  get deviceName(): string | null {
    return this.network.deviceName;
  }

  /**
   * Whether this node finds members on the LAN with mDNS now: `discovery.mdns` was not turned
   * off and some listen address is reachable from the LAN (not loopback only, not `[]`).
   */
  get mdnsRunning(): boolean {
    return this.transport.mdnsRunning ?? false;
  }

  /** The addresses this node listens on, each ending in /p2p/<peerId>. */
  multiaddrs(): string[] {
    return this.transport.addresses();
  }

  /** The node core over its dependencies (see `NodeCoreDeps`); `createSyncNode` is the Node edge. */
  static async create(deps: NodeCoreDeps): Promise<SyncNode> {
    const registry = new ModelRegistry([...deps.models, ...SYSTEM_MODELS]);
    const storage = await deps.openStorage();
    try {
      const deviceId = storage.deviceId;
      const prepared = [];
      for (const id of await storage.libraryIds()) {
        const opened = await storage.open(id);
        try {
          prepared.push({ opened, ...(await prepareLibrary(opened.db, registry, { deviceId, signatures: storage.signatures })) });
        } catch (err) {
          await opened.release();
          throw err;
        }
      }
      // One clock per device: start above everything any library has persisted.
      let highWater: Hlc | undefined;
      for (const p of prepared) {
        if (p.highWater && (!highWater || compareHlc(p.highWater, highWater) > 0)) highWater = p.highWater;
      }
      const clock = new HlcClock({
        deviceId,
        wallClock: deps.runtime.wallClock,
        maxClockDriftMs: deps.maxClockDriftMs,
        highWater: highWater && { ...highWater, deviceId },
      });
      const recordIds = new RecordIds(deps.runtime.random, deps.runtime.wallClock);
      const engines = prepared.map(
        (p) =>
          new LibraryEngine({
            id: p.meta.id,
            name: p.meta.name,
            db: p.opened.db,
            deviceId,
            clock,
            registry,
            tables: p.tables,
            counters: p.counters,
            ownedConfirmed: p.ownedConfirmed,
            release: () => p.opened.release(),
            signatures: storage.signatures,
            runtime: deps.runtime,
            recordIds,
          }),
      );
      const events = new EventEmitter<SyncNodeEvents>();
      const transport = await deps.startTransport();
      const { tuning } = deps;
      const network = new SyncNetwork(transport, deviceId, {
        backoff: { minMs: tuning.redialMinMs, maxMs: tuning.redialMaxMs },
        reconcileMs: tuning.reconcileMs,
        handshakeTimeoutMs: tuning.requestTimeoutMs,
        maxConcurrentServes: tuning.maxConcurrentServes,
        deviceName: deps.deviceName,
        bootstrap: deps.bootstrap,
        runtime: deps.runtime,
        onSessionError: (event) => events.emit('session-error', event),
      });
      const node = new SyncNode(deviceId, storage, registry, clock, new Map(), transport, network, tuning, deps.runtime, recordIds, events);
      for (const engine of engines) await node.replicate(engine, await engine.bootstrapMember());
      return node;
    } catch (err) {
      await storage.close();
      throw err;
    }
  }

  async createLibrary(options: CreateLibraryOptions): Promise<Library> {
    this.assertRunning();
    const name = options?.name;
    if (typeof name !== 'string' || name.trim() === '' || name.length > 200) {
      throw new ValidationError('createLibrary: name must be a non-empty string of at most 200 characters');
    }
    const id = options.id ?? randomUuid(this.runtime.random);
    if (!isDeviceId(id)) throw new ValidationError('createLibrary: id must be a lowercase uuid');
    if (this.open.has(id)) throw new ValidationError(`createLibrary: library ${id} already exists on this node`);
    return this.newLibrary(id, name, undefined);
  }

  /**
   * Joins a library by invite: dials the inviter, proves the invite's secret and becomes a
   * member. Resolves with the (still empty) library; it backfills from its partners in the
   * background (`lib.synced()` waits for that). Aborting `signal` interrupts the join, or the
   * backfill once joined: it stops after the page in flight, its checkpoint kept, and resumes
   * when the node next starts.
   *
   * @example
   * ```ts
   * // On the inviting device: const invite = await lib.createInvite({ ttlMs: 10 * 60_000 });
   * const joined = await node.joinLibrary(invite);
   * await joined.synced(); // backfilled and caught up
   * console.log(await joined.list('note', { limit: 10 }));
   * ```
   */
  async joinLibrary(invite: string, options: { signal?: AbortSignal } = {}): Promise<Library> {
    this.assertRunning();
    const parsed = decodeInvite(invite);
    if (parsed.expiresAt < this.runtime.wallClock()) throw new InviteError('INVITE_EXPIRED', 'this invite has expired');
    if (this.open.has(parsed.library)) {
      throw new ValidationError(`joinLibrary: library ${parsed.library} is already on this node`);
    }
    // The inviter may open a session right after admitting this device: the network holds
    // such a hello until the library exists here.
    return this.network.whileJoining(parsed.library, async () => {
      const inviter = await this.network.join(parsed, options.signal);
      this.assertRunning();
      const bootstrap: Member = { device: inviter.device, peer: parsed.inviterPeer, addrs: parsed.inviterAddrs };
      return this.newLibrary(parsed.library, inviter.name, bootstrap, options.signal);
    });
  }

  library(id: string): Library {
    this.assertRunning();
    const library = this.open.get(id);
    if (!library) throw new NotFoundError(`no library ${JSON.stringify(id)} on this node`);
    return library;
  }

  libraries(): Library[] {
    this.assertRunning();
    return [...this.open.values()];
  }

  /** Closes sessions, connections and every library, then releases the storage (the data directory). Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.network.stop();
    this.events.removeAllListeners();
    for (const library of this.open.values()) await engineOf(library).close();
    this.open.clear();
    await this.storage.close();
  }

  /**
   * Creates the library's database and starts replicating it. A joined library's bootstrap
   * member is stored with its identity, so a crash cannot leave it without a partner.
   */
  private async newLibrary(id: string, name: string, bootstrap: Member | undefined, signal?: AbortSignal): Promise<Library> {
    const opened = await this.storage.create(id);
    // A joined library backfills from its partners before it is ready.
    const meta = bootstrap ? joinedLibraryMeta(bootstrap) : {};
    const prepared = await prepareLibrary(opened.db, this.registry, { deviceId: this.deviceId, signatures: this.storage.signatures, create: { id, name, meta } });
    const engine = new LibraryEngine({
      id,
      name,
      db: opened.db,
      deviceId: this.deviceId,
      clock: this.clock,
      registry: this.registry,
      tables: prepared.tables,
      counters: prepared.counters,
      ownedConfirmed: prepared.ownedConfirmed,
      release: () => opened.release(),
      signatures: this.storage.signatures,
      runtime: this.runtime,
      recordIds: this.recordIds,
    });
    const { library, replicator } = await this.replicate(engine, bootstrap);
    // A device id from before 2.0 binds its key only by its member row: the creator writes its
    // own first, so that a joiner checks its runs by it before any of them (a key-derived id
    // needs no row for that, and writes it at its first invite as before).
    if (!bootstrap && !isKeyDerivedId(this.deviceId)) await replicator.registerSelf();
    signal?.addEventListener('abort', () => replicator.interruptBackfill(), { once: true });
    return library;
  }

  /** Opens the user's `Library` on `engine` and starts replicating it. */
  private async replicate(engine: LibraryEngine, bootstrap: Member | undefined): Promise<{ library: Library; replicator: LibraryReplicator }> {
    const replicator = new LibraryReplicator(engine, this.tuning, this.network, bootstrap);
    const library = new Library(engine, replicator);
    this.open.set(engine.id, library);
    this.network.add(replicator);
    await replicator.start();
    // Listen ports (or the device name) may differ from the last run: tell the other members.
    await replicator.refreshSelfWhenConfirmed();
    return { library, replicator };
  }

  private assertRunning(): void {
    if (this.stopped) throw new StoppedError();
  }
}
