import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Vitest's default on a 2-core machine is one worker (cores - 1), and most multi-node tests
    // spend their time waiting on the network and timers, not on the CPU: three files at once
    // take the suite from about 4.5 min to under 2 on such a machine, also under load.
    maxWorkers: 3,
  },
});
