import { CLAIM_KINDS, type ClaimKind } from './run-claims.js';
import { addFaults, noFaults } from './run-faults.js';
import { replayCommand, runSeed, type SeedOptions, type SeedResult } from './run-seed.js';

type Without = Pick<SeedOptions, 'withoutClaims' | 'withoutStaleMemberRestores'>;

/**
 * `npm run sim -- [--seeds N] [--from S] [--nodes 3-7 | --nodes 5] [--steps K] [--without-claims K,...] [--without-stale-member-restores]`: runs seeds
 * S..S+N-1 and prints one JSON line per failing seed and a summary line
 * ({"metric":"sim_seeds",...}); exits 1 if any seed failed.
 * `npm run sim -- --seed S --nodes 5 [--trace]`: replays one seed (and prints its whole trace).
 */

/**
 * A progress line on stderr every this many seeds, with the counts so far: a long batch shows it
 * is alive, and one stopped early still reports what it ran.
 */
const PROGRESS_EVERY = 25;

interface Arguments {
  from: number;
  seeds: number;
  minNodes: number;
  maxNodes: number;
  steps: number | undefined;
  trace: boolean;
  /** False claims the liar does not make (`CLAIM_KINDS`). */
  withoutClaims: ClaimKind[];
  /** No restore of a backup taken before a device joined (`SeedOptions`). */
  withoutStaleMemberRestores: boolean;
}

function parseArguments(argv: readonly string[]): Arguments {
  const args: Arguments = { from: 1, seeds: 100, minNodes: 3, maxNodes: 7, steps: undefined, trace: false, withoutClaims: [], withoutStaleMemberRestores: false };
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--seed':
        args.from = integer(flag, value());
        args.seeds = 1;
        break;
      case '--from':
        args.from = integer(flag, value());
        break;
      case '--seeds':
        args.seeds = integer(flag, value());
        break;
      case '--nodes': {
        const [min = '', max = min] = value().split('-');
        args.minNodes = integer(flag, min!);
        args.maxNodes = integer(flag, max);
        if (args.minNodes < 2 || args.maxNodes < args.minNodes) throw new Error('--nodes: a count or range of at least 2, such as 3-7');
        break;
      }
      case '--steps':
        args.steps = integer(flag, value());
        break;
      case '--trace':
        args.trace = true;
        break;
      case '--without-claims':
        args.withoutClaims = value().split(',').map(claimKind);
        break;
      case '--without-stale-member-restores':
        args.withoutStaleMemberRestores = true;
        break;
      default:
        throw new Error(`unknown argument ${flag} (see sim/run.ts)`);
    }
  }
  return args;
}

function claimKind(text: string): ClaimKind {
  const kind = CLAIM_KINDS.find((k) => k === text);
  if (!kind) throw new Error(`--without-claims: ${JSON.stringify(text)} is not one of ${CLAIM_KINDS.join(', ')}`);
  return kind;
}

function integer(flag: string, text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${flag}: ${JSON.stringify(text)} is not a non-negative integer`);
  return n;
}

/** The node count of `seed` in a range: a function of the seed, so one command replays it. */
export function nodesFor(seed: number, min: number, max: number): number {
  return min + (seed % (max - min + 1));
}

function printFailure(result: SeedResult, trace: boolean, without: Without): void {
  for (const failure of result.failures) {
    console.log(
      JSON.stringify({
        metric: 'sim_failure',
        seed: result.seed,
        nodes: result.nodes,
        check: failure.check,
        detail: failure.detail,
        replay: replayCommand(result.seed, result.nodes, without),
      }),
    );
  }
  if (!trace) console.error(`trace tail of seed ${result.seed}:\n  ${result.trace.join('\n  ')}`);
}

async function main(): Promise<void> {
  const args = parseArguments(process.argv.slice(2));
  const faults = noFaults();
  const failed: { seed: number; nodes: number; checks: string[]; replay: string }[] = [];
  let writes = 0;
  let lostWrites = 0;
  let events = 0;
  let virtualMs = 0;
  const started = Date.now();
  for (let seed = args.from; seed < args.from + args.seeds; seed += 1) {
    const nodes = nodesFor(seed, args.minNodes, args.maxNodes);
    const result = await runSeed({ seed, nodes, steps: args.steps, keepTrace: args.trace, withoutClaims: args.withoutClaims, withoutStaleMemberRestores: args.withoutStaleMemberRestores });
    if (args.trace) for (const line of result.trace) console.log(line);
    addFaults(faults, result.faults);
    writes += result.writes;
    lostWrites += result.lostWrites;
    events += result.events;
    virtualMs += result.virtualMs;
    if (result.failures.length > 0) {
      printFailure(result, args.trace, args);
      failed.push({ seed, nodes, checks: result.failures.map((f) => f.check), replay: replayCommand(seed, nodes, args) });
    }
    const done = seed - args.from + 1;
    if (done % PROGRESS_EVERY === 0 && done < args.seeds) {
      console.error(JSON.stringify({ metric: 'sim_progress', seeds: done, of: args.seeds, from: args.from, failures: failed.length, faults, writes, lostWrites }));
    }
    if (args.seeds === 1) console.log(JSON.stringify({ metric: 'sim_seed', seed, nodes, traceHash: result.traceHash, traceLines: result.traceLines }));
  }
  console.log(
    JSON.stringify({
      metric: 'sim_seeds',
      seeds: args.seeds,
      from: args.from,
      nodes: args.minNodes === args.maxNodes ? `${args.minNodes}` : `${args.minNodes}-${args.maxNodes}`,
      failures: failed.length,
      failed: failed.slice(0, 50),
      faults,
      writes,
      lostWrites,
      events,
      virtualMs,
      wallMs: Date.now() - started,
    }),
  );
  process.exitCode = failed.length > 0 ? 1 : 0;
}

await main();
