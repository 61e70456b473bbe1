import { engineOf, type Library } from '../src/library/library.js';
import type { SeededRandom } from '../src/sim/prng.js';
import type { RunUntilOptions, SimDriver } from '../src/sim/virtual-scheduler.js';
import { compareWithOracle, expectedState, formatDifferences } from './oracle.js';
import type { SimNode } from './run-node.js';
import type { Trace } from './run-trace.js';
import { type AcknowledgedWrite, perform, simModels, Workload } from './workload.js';

/**
 * The run's writes: operations from the seeded workload (sim/workload.ts) performed on the
 * device the run picks, and every acknowledged one kept for the oracle (sim/oracle.ts).
 */
/** Where an acknowledged write is in its origin's sequence: a log position, or an owned version. */
interface Position {
  /** The device that wrote it. */
  device: string;
  origin: string;
  seq: number;
  owned: boolean;
}

export class SimWorkload {
  private readonly operations: Workload;
  private writes: AcknowledgedWrite[] = [];
  private positions: Position[] = [];
  /** Writes that a restore from backup took with it before any other device held them. */
  private lostCount = 0;

  constructor(
    random: SeededRandom,
    private readonly trace: Trace,
  ) {
    this.operations = new Workload(random);
  }

  /** Writes acknowledged so far (those dropped as lost included). */
  acknowledged(): number {
    return this.writes.length + this.lostCount;
  }

  /** Performs the next operation on `node`'s library; returns how many writes it acknowledged. */
  async write(node: SimNode, driver: SimDriver, options: RunUntilOptions): Promise<number> {
    const name = node.identity.name;
    const outcome = await driver.complete(perform(node.library()!, this.operations.next()), `a write on ${name}`, options);
    if (outcome.kind === 'refused') {
      this.trace.record('write-refused', `${name} ${outcome.code}`);
      return 0;
    }
    const lib = node.library()!;
    let seq = lib.versionVector()[lib.writer()] ?? 0;
    const shared = outcome.writes.filter((w) => w.kind === 'shared').length;
    seq -= shared;
    for (const w of outcome.writes) {
      this.writes.push(w);
      this.positions.push(
        w.kind === 'shared'
          ? { device: w.device, origin: w.origin, seq: ++seq, owned: false }
          : { device: w.owner, origin: w.owner, seq: w.version, owned: true },
      );
      this.trace.record('write', `${name} ${w.model} ${w.id} ${w.op} ${w.hlc}`);
    }
    return outcome.writes.length;
  }

  /** Writes no longer expected anywhere (see `dropUnheld`). */
  lost(): number {
    return this.lostCount;
  }

  /**
   * Drops the acknowledged writes of `devices` (all devices when undefined) that no library in
   * `holders` holds: they are gone for good, and the oracle no longer expects them. That is what
   * becomes of a device's writes that nobody else had received when it came back from an older
   * backup, or when it was removed (members no longer sync with it). Returns how many.
   */
  dropUnheld(holders: readonly Library[], devices?: ReadonlySet<string>): number {
    const held = (p: Position) =>
      (devices !== undefined && !devices.has(p.device)) ||
      holders.some((lib) => ((p.owned ? engineOf(lib).ownedVector() : lib.versionVector())[p.origin] ?? 0) >= p.seq);
    const keep = this.positions.map(held);
    const dropped = keep.filter((k) => !k).length;
    this.writes = this.writes.filter((_, i) => keep[i]);
    this.positions = this.positions.filter((_, i) => keep[i]);
    this.lostCount += dropped;
    return dropped;
  }

  /**
   * How `lib`'s rows differ from the oracle's over every acknowledged write, less those of
   * removed devices stamped after their cutoff (as `lib` knows the removals).
   */
  async compare(lib: Library): Promise<string[]> {
    const removals = lib.removals().map((r) => ({ device: r.device, cutoff: r.cutoff }));
    const expected = expectedState({ writes: this.writes, models: simModels, libraryId: lib.id, removals });
    const differences = await compareWithOracle(expected, lib);
    return differences.length === 0 ? [] : formatDifferences(differences).split('\n');
  }
}
