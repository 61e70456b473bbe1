import { hostname } from 'node:os';
import { EventEmitter } from 'eventemitter3';
import { v4 as uuidv4 } from 'uuid';
import { InviteError, NotFoundError, StoppedError, ValidationError } from '../errors.js';
import { compareHlc, type Hlc, HlcClock, isDeviceId, type WallClock } from '../hlc/index.js';
import { joinedLibraryMeta, LibraryEngine } from '../library/engine.js';
import { engineOf, Library } from '../library/library.js';
import type { Member } from '../library/types.js';
import type { Model } from '../models/define.js';
import { ModelRegistry } from '../models/registry.js';
import { isDeviceName, MAX_DEVICE_NAME_LENGTH, SYSTEM_MODELS } from '../models/system.js';
import { parseBootstrap } from '../network/bootstrap.js';
import { DEFAULT_LISTEN, Libp2pTransport } from '../network/libp2p-transport.js';
import { loadOrCreatePeerKey } from '../network/peer-key.js';
import { MAX_FRAME_BYTES, MAX_HANDSHAKE_FRAME_BYTES, PROTOCOL_ID } from '../protocol/messages.js';
import { decodeInvite } from '../replication/invite-code.js';
import { SyncNetwork } from '../replication/network.js';
import type { SessionErrorEvent } from '../replication/wire-errors.js';
import { LibraryReplicator, type ReplicationTuning } from '../replication/replicator.js';
import { prepareLibrary } from '../storage/open-library.js';
import { openSqliteFile } from '../storage/sqlite-node.js';
import { DataDir } from './data-dir.js';
import { listenOnStablePorts } from './stable-ports.js';

export interface SyncNodeOptions {
  /** Directory for the device identity and one SQLite file per library. Created if missing. */
  dataDir: string;
  /** The application's models (see `defineModel`). */
  models: Model[];
  /** Wall clock in milliseconds; defaults to `Date.now`. Injected by tests and the simulator. */
  wallClock?: WallClock;
  /** Remote clocks further ahead of local wall time than this are refused. Default 60 000. */
  maxClockDriftMs?: number;
  /**
   * libp2p listen multiaddrs. Default: TCP and WebSockets on all interfaces, ephemeral ports.
   * `[]` listens nowhere (the node can still dial out).
   */
  listen?: string[];
  /** How partners are found besides their member rows. See docs/operations.md. */
  discovery?: DiscoveryOptions;
  /**
   * Always-on peers (a home server, a cloud VM running this package), as multiaddrs ending in
   * `/p2p/<PeerId>`. The node dials each at start and keeps it connected (redialled with the
   * partners' backoff). One that is a member of a library here is a meeting point: members that
   * know only it sync with it, learn of each other from the member rows it forwards, and keep a
   * relay slot on it, through which members that cannot dial each other connect.
   */
  bootstrap?: string[];
  /** Replication timings and limits; the defaults suit a LAN or the internet. */
  sync?: Partial<SyncTuning>;
  /**
   * A human-readable name for this device, shown to every member (`lib.members()`): a non-blank
   * string of at most 128 characters. Default: the host name (`os.hostname()`).
   */
  deviceName?: string;
}

export interface DiscoveryOptions {
  /**
   * Find members on the LAN with mDNS (and answer their queries). Default true. It runs only
   * while some listen address is reachable from the LAN: a node on loopback only sends no mDNS.
   */
  mdns?: boolean;
}

export interface SyncTuning extends ReplicationTuning {
  /** Bounds of the exponential backoff (with jitter) between redials of a partner. */
  redialMinMs: number;
  redialMaxMs: number;
  /** How often connections and sessions are checked against the member lists. */
  reconcileMs: number;
  /** Catch-ups (backfills included) this node serves at once; more pullers are answered busy. */
  maxConcurrentServes: number;
}

export const DEFAULT_SYNC_TUNING: SyncTuning = {
  heartbeatMs: 1_000,
  peerTimeoutMs: 5_000,
  requestTimeoutMs: 30_000,
  pushWindow: 4,
  // Batches fill only while a partner lags: then large ones let it apply (and fsync) the
  // backlog in few transactions. A lone write still goes out at once, alone.
  batchRecords: 4_000,
  batchBytes: 1024 * 1024,
  pruneIntervalMs: 10_000,
  retainLogEntries: 1_000_000,
  statusThrottleMs: 50,
  redialMinMs: 250,
  redialMaxMs: 15_000,
  reconcileMs: 1_000,
  maxConcurrentServes: 4,
};

export interface SyncNodeEvents {
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
    private readonly dataDir: DataDir,
    private readonly registry: ModelRegistry,
    private readonly clock: HlcClock,
    private readonly open: Map<string, Library>,
    private readonly unlock: () => Promise<void>,
    private readonly transport: Libp2pTransport,
    private readonly network: SyncNetwork,
    private readonly tuning: SyncTuning,
    private readonly wallClock: () => number,
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

  /** This device's libp2p PeerId (stable across restarts: the key is kept in dataDir). */
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
    return this.transport.mdnsRunning;
  }

  /** The addresses this node listens on, each ending in /p2p/<peerId>. */
  multiaddrs(): string[] {
    return this.transport.addresses();
  }

  static async create(options: SyncNodeOptions): Promise<SyncNode> {
    if (typeof options?.dataDir !== 'string' || options.dataDir === '') {
      throw new ValidationError('createSyncNode: dataDir must be a directory path');
    }
    if (!Array.isArray(options.models)) throw new ValidationError('createSyncNode: models must be an array');
    const drift = options.maxClockDriftMs;
    if (drift !== undefined && (!Number.isFinite(drift) || drift < 0)) {
      throw new ValidationError('createSyncNode: maxClockDriftMs must be a non-negative number');
    }
    const tuning = checkTuning(options.sync);
    const deviceName = options.deviceName === undefined ? defaultDeviceName() : options.deviceName;
    if (options.deviceName !== undefined && !isDeviceName(deviceName)) {
      throw new ValidationError(`createSyncNode: deviceName must be a non-blank string of at most ${MAX_DEVICE_NAME_LENGTH} characters`);
    }
    const listen = options.listen ?? DEFAULT_LISTEN;
    if (!Array.isArray(listen) || !listen.every((a) => typeof a === 'string')) {
      throw new ValidationError('createSyncNode: listen must be an array of multiaddr strings');
    }
    const discovery = checkDiscovery(options.discovery);
    const bootstrap = parseBootstrap(options.bootstrap);
    const registry = new ModelRegistry([...options.models, ...SYSTEM_MODELS]);
    const dataDir = new DataDir(options.dataDir);
    await dataDir.ensure();
    const unlock = await dataDir.lock();
    try {
      const deviceId = await dataDir.deviceId();
      const prepared = [];
      for (const id of await dataDir.libraryIds()) {
        const db = openSqliteFile(dataDir.libraryFile(id));
        try {
          prepared.push({ db, ...(await prepareLibrary(db, registry, { deviceId })) });
        } catch (err) {
          await db.destroy();
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
        wallClock: options.wallClock,
        maxClockDriftMs: options.maxClockDriftMs,
        highWater: highWater && { ...highWater, deviceId },
      });
      const engines = prepared.map(
        (p) =>
          new LibraryEngine({
            id: p.meta.id,
            name: p.meta.name,
            db: p.db,
            deviceId,
            clock,
            registry,
            tables: p.tables,
            counters: p.counters,
            ownedConfirmed: p.ownedConfirmed,
            release: () => p.db.destroy(),
          }),
      );
      const wallClock = options.wallClock ?? Date.now;
      const events = new EventEmitter<SyncNodeEvents>();
      const privateKey = await loadOrCreatePeerKey(dataDir.peerKeyFile);
      const transport = await listenOnStablePorts(dataDir, listen, (addresses) =>
        Libp2pTransport.start({
          privateKey,
          listen: addresses,
          protocol: PROTOCOL_ID,
          maxFrameBytes: MAX_FRAME_BYTES,
          maxFirstFrameBytes: MAX_HANDSHAKE_FRAME_BYTES,
          maxStreams: MAX_STREAMS_PER_CONNECTION,
          maxStrangerConnections: MAX_STRANGER_CONNECTIONS,
          mdns: discovery.mdns,
        }),
      );
      const network = new SyncNetwork(transport, deviceId, {
        backoff: { minMs: tuning.redialMinMs, maxMs: tuning.redialMaxMs },
        reconcileMs: tuning.reconcileMs,
        handshakeTimeoutMs: tuning.requestTimeoutMs,
        maxConcurrentServes: tuning.maxConcurrentServes,
        deviceName,
        bootstrap,
        now: wallClock,
        random: Math.random,
        onSessionError: (event) => events.emit('session-error', event),
      });
      const node = new SyncNode(deviceId, dataDir, registry, clock, new Map(), unlock, transport, network, tuning, wallClock, events);
      for (const engine of engines) await node.replicate(engine, await engine.bootstrapMember());
      return node;
    } catch (err) {
      await unlock();
      throw err;
    }
  }

  async createLibrary(options: CreateLibraryOptions): Promise<Library> {
    this.assertRunning();
    const name = options?.name;
    if (typeof name !== 'string' || name.trim() === '' || name.length > 200) {
      throw new ValidationError('createLibrary: name must be a non-empty string of at most 200 characters');
    }
    const id = options.id ?? uuidv4();
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
   */
  async joinLibrary(invite: string, options: { signal?: AbortSignal } = {}): Promise<Library> {
    this.assertRunning();
    const parsed = decodeInvite(invite);
    if (parsed.expiresAt < this.wallClock()) throw new InviteError('INVITE_EXPIRED', 'this invite has expired');
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

  /** Closes sessions, connections and every library, then releases the data directory. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.network.stop();
    this.events.removeAllListeners();
    for (const library of this.open.values()) await engineOf(library).close();
    this.open.clear();
    await this.unlock();
  }

  /**
   * Creates the library's database and starts replicating it. A joined library's bootstrap
   * member is stored with its identity, so a crash cannot leave it without a partner.
   */
  private async newLibrary(id: string, name: string, bootstrap: Member | undefined, signal?: AbortSignal): Promise<Library> {
    const db = openSqliteFile(this.dataDir.libraryFile(id));
    // A joined library backfills from its partners before it is ready.
    const meta = bootstrap ? joinedLibraryMeta(bootstrap) : {};
    const prepared = await prepareLibrary(db, this.registry, { deviceId: this.deviceId, create: { id, name, meta } });
    const engine = new LibraryEngine({
      id,
      name,
      db,
      deviceId: this.deviceId,
      clock: this.clock,
      registry: this.registry,
      tables: prepared.tables,
      counters: prepared.counters,
      ownedConfirmed: prepared.ownedConfirmed,
      release: () => db.destroy(),
    });
    const { library, replicator } = await this.replicate(engine, bootstrap);
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

/**
 * One stream per library two devices share, plus short join streams: a few. Together with the
 * handshake frame limit this bounds what one connection can make this node buffer.
 */
const MAX_STREAMS_PER_CONNECTION = 64;
/** Connections with peers that are members of no library here (joiners, strangers), at once. */
const MAX_STRANGER_CONNECTIONS = 8;

/** The host name, cut to a device name's length; null if there is none. */
function defaultDeviceName(): string | null {
  const name = hostname().trim().slice(0, MAX_DEVICE_NAME_LENGTH);
  return isDeviceName(name) ? name : null;
}

function checkDiscovery(input: DiscoveryOptions | undefined): Required<DiscoveryOptions> {
  if (input === undefined) return { mdns: true };
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new ValidationError('createSyncNode: discovery must be an object such as { mdns: false }');
  }
  // An unknown key is most likely a misspelt `mdns`: silently keeping mDNS on would be worse.
  const unknown = Object.keys(input).filter((key) => key !== 'mdns');
  if (unknown.length > 0) throw new ValidationError(`createSyncNode: discovery has unknown option(s) ${unknown.join(', ')}`);
  if (input.mdns !== undefined && typeof input.mdns !== 'boolean') {
    throw new ValidationError('createSyncNode: discovery.mdns must be true or false');
  }
  return { mdns: input.mdns ?? true };
}

function checkTuning(input: Partial<SyncTuning> | undefined): SyncTuning {
  const tuning = { ...DEFAULT_SYNC_TUNING, ...input };
  for (const [key, value] of Object.entries(tuning)) {
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
      throw new ValidationError(`createSyncNode: sync.${key} must be a positive number`);
    }
  }
  if (tuning.peerTimeoutMs <= tuning.heartbeatMs) {
    throw new ValidationError('createSyncNode: sync.peerTimeoutMs must be longer than sync.heartbeatMs');
  }
  return tuning;
}

export function createSyncNode(options: SyncNodeOptions): Promise<SyncNode> {
  return SyncNode.create(options);
}
