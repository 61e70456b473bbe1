import { runCoreBenchmarks } from './core.js';

/** `npm run bench`: every benchmark, one JSON object per line on stdout. */
await runCoreBenchmarks();
