import type { Library } from '../src/library/library.js';
import type { Transport } from '../src/protocol/transport.js';
import type { SeededRandom } from '../src/sim/prng.js';
import type { SchedulerScope, VirtualScheduler } from '../src/sim/virtual-scheduler.js';
import { VirtualWallClock } from '../src/sim/virtual-wall-clock.js';
import { type DiskImage, SimDisk } from './run-disk.js';
import { type CoreHandle, startCore } from './run-core.js';
import type { FrameTap } from './run-tap.js';

/** What a simulated device is made of besides its running core: these survive a crash. */
export interface DeviceIdentity {
  /** Its index in the run (n0, n1…), for traces. */
  name: string;
  deviceId: string;
  peerId: string;
}

export type NodePhase = 'down' | 'up';

/**
 * One simulated device across its lives: its identity, disk, wall clock and random stream stay;
 * each start builds a new core on a new scheduler scope and a new transport endpoint. A crash
 * abandons the core without `stop()`: its timers die with its scope, its endpoint goes (peers
 * see the connection drop), its disk keeps what was committed, and whatever of its code is still
 * running finds a closed database.
 */
export class SimNode {
  readonly disk = new SimDisk();
  readonly clock: VirtualWallClock;
  private scope: SchedulerScope | undefined;
  private core: CoreHandle | undefined;
  /** Times this device started (its first life is 1). */
  lives = 0;
  /** The library id once this device holds the run's library. */
  libraryId: string | undefined;
  /** Whether its library was ever opened here (created or joined): a restart reopens it. */
  backup: DiskImage | undefined;
  /** Set once the device left or was removed: it no longer takes part. */
  gone = false;
  /** The last backfill progress phase heard on this life (to crash mid-snapshot). */
  lastProgressPhase: string | undefined;

  constructor(
    readonly identity: DeviceIdentity,
    private readonly time: VirtualScheduler,
    private readonly random: SeededRandom,
    skewMs: number,
    epochMs: number,
  ) {
    this.clock = new VirtualWallClock(time, epochMs, skewMs);
  }

  get up(): boolean {
    return this.core !== undefined;
  }

  get scheduler(): SchedulerScope | undefined {
    return this.scope;
  }

  /** The running core, or an error naming the device when it is down. */
  running(): CoreHandle {
    if (!this.core) throw new Error(`sim: ${this.identity.name} is down`);
    return this.core;
  }

  library(): Library | undefined {
    if (!this.core || this.libraryId === undefined) return undefined;
    return this.core.library(this.libraryId);
  }

  /** Starts a new life: a core over `transport` (tapped), opening what the disk holds. */
  async start(transport: Transport, tap: FrameTap, options: { retainLogEntries: number; maxConcurrentServes: number }): Promise<CoreHandle> {
    if (this.core) throw new Error(`sim: ${this.identity.name} is already up`);
    this.lives += 1;
    this.lastProgressPhase = undefined;
    const scope = this.time.scope();
    this.scope = scope;
    this.core = await startCore({
      identity: this.identity,
      disk: this.disk,
      transport,
      tap,
      runtime: { scheduler: scope, random: this.random.fork(), wallClock: this.clock.now },
      tuning: options,
    });
    return this.core;
  }

  /** The process dies at this instant. */
  crash(): void {
    this.scope?.kill();
    this.scope = undefined;
    this.core?.abandon();
    this.core = undefined;
    this.disk.crash();
  }

  /** Stops the core in an orderly way (the end of a run). */
  async stop(): Promise<void> {
    const core = this.core;
    if (!core) return;
    await core.stop();
    this.scope?.kill();
    this.scope = undefined;
    this.core = undefined;
  }
}
