import type { SeededRandom } from '../src/sim/prng.js';
import { CLAIM_KINDS, type ClaimKind } from './run-claims.js';

/** Every kind of fault the simulator injects; each is counted when it happens. */
export const FAULT_KINDS = [
  // Counted by the in-memory network (src/sim/memory-transport.ts), per frame or connection.
  'loss',
  'duplication',
  'reordering',
  'delay',
  'partition-cut',
  'partition-refusal',
  // Counted by the run.
  'partition',
  'heal',
  'crash',
  'crash-backfilling',
  'crash-snapshot',
  'restart',
  'backup',
  'restore',
  'skew',
  'clock-jump',
  'prune-away',
  'busy',
  'false-claim',
  'remove',
  'leave',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export type FaultCounts = Record<FaultKind, number>;

export function noFaults(): FaultCounts {
  return Object.fromEntries(FAULT_KINDS.map((kind) => [kind, 0])) as FaultCounts;
}

export function addFaults(into: FaultCounts, more: FaultCounts): void {
  for (const kind of FAULT_KINDS) into[kind] += more[kind];
}

/**
 * How hostile one run is: per-frame probabilities for the network, per-step probabilities for
 * the rest. Drawn from the seed, so runs range from calm to stormy, and a fault kind is often
 * off altogether (a bug that needs one fault alone is then not drowned by the others).
 */
export interface FaultPlan {
  /** Per frame. */
  loss: number;
  duplication: number;
  reordering: number;
  /** Longest delay of a frame (uniform from 0; virtual ms); 0 for none. */
  maxDelayMs: number;
  /** Per step. */
  partition: number;
  heal: number;
  crash: number;
  /** Of crashes: the chance that a node still backfilling is chosen when there is one. */
  crashBackfilling: number;
  restart: number;
  backup: number;
  /** Of restarts: the chance that the node comes back from its last backup instead. */
  restore: number;
  clockJump: number;
  remove: number;
  leave: number;
  /** Largest skew of a node's wall clock (either way), well within the drift guard. */
  maxSkewMs: number;
  /** One node rewrites the positions and coverage it claims in this share of its frames (0: none lies). */
  falseClaims: number;
  /** What the liar claims falsely (some of `CLAIM_KINDS`). */
  claimKinds: ClaimKind[];
  /** Small retention bound so that a member away for a while lags beyond it (0: default). */
  retainLogEntries: number;
  /** Small serving limit so pullers get `busy` answers. */
  maxConcurrentServes: number;
}

/** `p` with probability `on`, else 0: each fault kind is off in a good share of runs. */
function sometimes(random: SeededRandom, on: number, p: number): number {
  return random.chance(on) ? p : 0;
}

export function drawFaultPlan(random: SeededRandom): FaultPlan {
  const storm = random.next();
  return {
    loss: sometimes(random, 0.4, 0.02 * storm),
    duplication: sometimes(random, 0.4, 0.05 * storm),
    reordering: sometimes(random, 0.4, 0.1 * storm),
    maxDelayMs: sometimes(random, 0.6, 1 + random.int(2_000)),
    partition: sometimes(random, 0.5, 0.08 * storm),
    heal: 0.15,
    crash: sometimes(random, 0.6, 0.06 * storm + 0.01),
    crashBackfilling: 0.7,
    restart: 0.25,
    backup: sometimes(random, 0.4, 0.05),
    restore: 0.8,
    clockJump: sometimes(random, 0.3, 0.03),
    remove: sometimes(random, 0.25, 0.015),
    leave: sometimes(random, 0.2, 0.01),
    maxSkewMs: random.chance(0.5) ? random.int(20_000) : 0,
    falseClaims: sometimes(random, 0.2, 0.2),
    claimKinds: CLAIM_KINDS.filter(() => random.chance(0.5)),
    retainLogEntries: random.chance(0.35) ? 2 + random.int(10) : 0,
    maxConcurrentServes: random.chance(0.35) ? 1 : 4,
  };
}
