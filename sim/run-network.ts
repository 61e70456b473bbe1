import { MemoryNetwork, NO_FAULTS } from '../src/sim/memory-transport.js';
import type { SeededRandom } from '../src/sim/prng.js';
import type { VirtualScheduler } from '../src/sim/virtual-scheduler.js';
import type { FaultCounts, FaultKind, FaultPlan } from './run-faults.js';
import type { Trace } from './run-trace.js';

/**
 * The run's in-memory network (src/sim/memory-transport.ts) on the simulator's own scheduler
 * scope, which no crash kills: frames in flight keep their delays. Its faults follow the plan
 * until the run heals; each one injected is traced, under the peer names the run uses.
 */
export class SimNetwork {
  readonly memory: MemoryNetwork;
  private partitions = 0;

  constructor(time: VirtualScheduler, random: SeededRandom, trace: Trace, nameOf: (peer: string) => string) {
    this.memory = new MemoryNetwork({ scheduler: time.scope(), random });
    this.memory.onFault((f) => {
      // Delays are the network's weather, not news: only the other faults make a trace line.
      if (f.kind !== 'delay') trace.record('fault', `${f.kind} ${nameOf(f.from)}>${nameOf(f.to)}`);
    });
  }

  /** Applies the plan's per-frame faults. */
  storm(plan: FaultPlan): void {
    this.memory.setFaults({
      loss: plan.loss,
      duplication: plan.duplication,
      reordering: plan.reordering,
      delay: { minMs: 0, maxMs: plan.maxDelayMs },
    });
  }

  /** Adds what the network counted to `into`. */
  countFaults(into: FaultCounts): void {
    for (const [kind, count] of Object.entries(this.memory.faultCounts())) {
      if (kind in into) into[kind as FaultKind] += count;
    }
  }

  get partitioned(): boolean {
    return this.partitions > 0;
  }

  partition(side: readonly string[], rest: readonly string[]): void {
    this.memory.partition([side, rest]);
    this.partitions += 1;
  }

  heal(): void {
    this.memory.heal();
    this.partitions = 0;
  }

  /** Every fault off and every partition healed. */
  calm(): void {
    this.memory.setFaults(NO_FAULTS);
    this.heal();
  }
}
