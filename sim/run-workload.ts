import type { Library } from '../src/library/library.js';
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
export class SimWorkload {
  private readonly operations: Workload;
  private readonly writes: AcknowledgedWrite[] = [];

  constructor(
    random: SeededRandom,
    private readonly trace: Trace,
  ) {
    this.operations = new Workload(random);
  }

  acknowledged(): number {
    return this.writes.length;
  }

  /** Performs the next operation on `node`'s library; returns how many writes it acknowledged. */
  async write(node: SimNode, driver: SimDriver, options: RunUntilOptions): Promise<number> {
    const name = node.identity.name;
    const outcome = await driver.complete(perform(node.library()!, this.operations.next()), `a write on ${name}`, options);
    if (outcome.kind === 'refused') {
      this.trace.record('write-refused', `${name} ${outcome.code}`);
      return 0;
    }
    for (const w of outcome.writes) {
      this.writes.push(w);
      this.trace.record('write', `${name} ${w.model} ${w.id} ${w.op} ${w.hlc}`);
    }
    return outcome.writes.length;
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
