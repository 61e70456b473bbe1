import { namedPeerSignatures } from '../src/node/native-signatures.js';
import { SyncNode } from '../src/core/sync-node.js';
import { DEFAULT_SYNC_TUNING, type SyncTuning } from '../src/core/tuning.js';
import type { Library } from '../src/library/library.js';
import type { LibrarySyncState } from '../src/library/status.js';
import type { MemoryNetwork, MemoryTransport } from '../src/sim/memory-transport.js';
import type { SeededRandom } from '../src/sim/prng.js';
import type { SchedulerScope, VirtualScheduler } from '../src/sim/virtual-scheduler.js';
import { VirtualWallClock } from '../src/sim/virtual-wall-clock.js';
import { type DiskImage, SimDisk } from './run-disk.js';
import { type FrameTap, tapTransport } from './run-tap.js';
import { simModels } from './workload.js';

/** What a simulated device is made of besides its running core: these survive a crash. */
export interface DeviceIdentity {
  /** Its index in the run (n0, n1…), for traces. */
  name: string;
  deviceId: string;
  peerId: string;
}

/** The tuning a run gives its devices: the defaults, with the fault plan's small limits. */
export interface NodeTuning {
  /** 0 keeps the default. */
  retainLogEntries: number;
  maxConcurrentServes: number;
}

/**
 * One simulated device across its lives: its identity, disk, wall clock and random stream stay;
 * each start builds a new core on a new scheduler scope and a new transport endpoint. A crash
 * abandons the core without `stop()`: its timers die with its scope, its endpoint goes (peers
 * see the connection drop), its disk keeps what was committed, and whatever of its code is still
 * running finds a closed database and a stopped transport.
 */
export class SimNode {
  readonly disk: SimDisk;
  readonly clock: VirtualWallClock;
  private scope: SchedulerScope | undefined;
  private core: SyncNode | undefined;
  private transport: MemoryTransport | undefined;
  /** Times this device started (its first life is 1). */
  lives = 0;
  /** The library id once this device holds the run's library. */
  libraryId: string | undefined;
  /** The last backup of its disk, to restore it from. */
  backup: DiskImage | undefined;
  /** The other devices its library knew as members when that backup was taken. */
  backupMembers: readonly string[] = [];
  /** Set once the device left or was removed: it no longer takes part. */
  gone = false;
  /** The last backfill progress phase heard on this life (to crash it mid-backfill or mid-snapshot). */
  lastProgressPhase: string | undefined;
  /** Its library's sync state as last reported on this life. */
  syncState: LibrarySyncState | undefined;
  /** Whether its library was ever `ready` (its backfill completed once). */
  wasReady = false;

  constructor(
    readonly identity: DeviceIdentity,
    private readonly time: VirtualScheduler,
    private readonly random: SeededRandom,
    skewMs: number,
    epochMs: number,
  ) {
    this.disk = new SimDisk(identity.deviceId, namedPeerSignatures(identity.peerId));
    this.clock = new VirtualWallClock(time, epochMs, skewMs);
  }

  get up(): boolean {
    return this.core !== undefined;
  }

  get scheduler(): SchedulerScope | undefined {
    return this.scope;
  }

  /** The running core, or an error naming the device when it is down. */
  running(): SyncNode {
    if (!this.core) throw new Error(`sim: ${this.identity.name} is down`);
    return this.core;
  }

  library(): Library | undefined {
    if (!this.core || this.libraryId === undefined) return undefined;
    return this.core.libraries().find((l) => l.id === this.libraryId);
  }

  /** Starts a new life: a core over a new endpoint of `network` (tapped), opening what the disk holds. */
  async start(network: MemoryNetwork, tap: FrameTap, tuning: NodeTuning): Promise<SyncNode> {
    if (this.core) throw new Error(`sim: ${this.identity.name} is already up`);
    this.lives += 1;
    this.lastProgressPhase = undefined;
    this.syncState = undefined;
    const scope = this.time.scope();
    this.scope = scope;
    const sync: SyncTuning = {
      ...DEFAULT_SYNC_TUNING,
      ...(tuning.retainLogEntries > 0 ? { retainLogEntries: tuning.retainLogEntries } : {}),
      maxConcurrentServes: tuning.maxConcurrentServes,
    };
    this.core = await SyncNode.create({
      models: simModels,
      openStorage: async () => this.disk.storage(),
      startTransport: async () => {
        this.transport = network.createTransport(this.identity.peerId);
        return tapTransport(this.transport, tap);
      },
      runtime: { scheduler: scope, random: this.random.fork(), wallClock: this.clock.now },
      tuning: sync,
      deviceName: this.identity.name,
      bootstrap: [],
    });
    const lib = this.core.libraries()[0];
    if (lib) this.libraryId = lib.id;
    return this.core;
  }

  /** The process dies at this instant. */
  crash(): void {
    this.scope?.kill();
    this.scope = undefined;
    // The endpoint goes as the OS closes a dead process's sockets: peers see the connections drop.
    void this.transport?.stop();
    this.transport = undefined;
    this.core = undefined;
    this.disk.crash();
  }
}
