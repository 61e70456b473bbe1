import { runBackfillBenchmarks } from './backfill.js';
import { runCoreBenchmarks } from './core.js';
import { runHostileBenchmarks } from './hostile.js';
import { runReplicationBenchmarks } from './replication.js';

/**
 * `npm run bench`: every benchmark, one JSON object per line on stdout.
 * BENCH_ONLY=core|replication|backfill|hostile runs one group.
 */
const only = process.env.BENCH_ONLY;
if (!only || only === 'core') await runCoreBenchmarks();
if (!only || only === 'replication') await runReplicationBenchmarks();
if (!only || only === 'backfill') await runBackfillBenchmarks();
if (!only || only === 'hostile') await runHostileBenchmarks();
