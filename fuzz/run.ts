/**
 * `npm run fuzz -- --inputs N --seed S`: runs the fuzz harness and prints one JSON line per
 * result (docs/testing.md, "Fuzzing"). Exits non-zero when anything was found.
 */
import { Fuzzer, type FuzzStats } from './fuzzer.js';

function option(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  if (at < 0) return fallback;
  const value = Number(process.argv[at + 1]);
  if (!Number.isSafeInteger(value) || value < 0) throw new Error(`--${name} must be a non-negative integer`);
  return value;
}

const inputs = option('inputs', 100_000);
const seed = option('seed', 1);
const print = (metric: string, value: number, extra: Record<string, unknown> = {}) =>
  console.log(JSON.stringify({ metric, value, seed, ...extra }));

const fuzzer = await Fuzzer.start(seed);
const stats: FuzzStats = await fuzzer.run(inputs, (s) =>
  print('fuzz_progress', s.inputs, { rate_per_s: Math.round((s.inputs * 1000) / Math.max(1, s.elapsedMs)), findings: s.findings.length }),
);
await fuzzer.stop();
print('fuzz_inputs', stats.inputs, { by_place: stats.byPlace, elapsed_ms: stats.elapsedMs });
print('fuzz_rate', Math.round((stats.inputs * 1000) / Math.max(1, stats.elapsedMs)), { unit: 'inputs/s' });
print('fuzz_sessions_closed', Object.values(stats.closedByCode).reduce((a, b) => a + b, 0), { by_code: stats.closedByCode });
print('fuzz_protocol_errors', stats.protocolErrors);
print('fuzz_applied', stats.applied);
print('fuzz_crashes', stats.findings.length);
for (const finding of stats.findings) print('fuzz_finding', finding.input, { ...finding });
process.exit(stats.findings.length > 0 ? 1 : 0);
