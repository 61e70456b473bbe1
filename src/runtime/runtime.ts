/**
 * Everything nondeterministic a node core uses, injected: timers, randomness and the wall clock.
 * `systemRuntime()` is the real one (the runtime's globals, so it also serves a browser); the
 * simulator supplies virtual time and one seeded generator, so a seed replays a run exactly.
 * Nothing in the core reads `Date.now`, `Math.random`, `crypto` or a global timer directly.
 */

/** Cancels a timer; calling it again, or after the timer ran, does nothing. */
export type CancelTimer = () => void;

export interface Scheduler {
  /** Runs `fn` once, `ms` from now. */
  setTimeout(fn: () => void, ms: number): CancelTimer;
  /** Runs `fn` every `ms`, the first time `ms` from now, until cancelled. */
  setInterval(fn: () => void, ms: number): CancelTimer;
  /** Runs `fn` as a macrotask: after the I/O and timers that are ready (Node's setImmediate). */
  macrotask(fn: () => void): void;
  /** Monotonic milliseconds, for measuring how long something took (never a timestamp). */
  monotonicNow(): number;
}

export interface Random {
  /** A float in [0, 1). */
  next(): number;
  /** `length` random bytes (ids, secrets). Cryptographically strong in the system runtime. */
  bytes(length: number): Uint8Array;
}

/** Wall-clock milliseconds since the epoch (may jump, both ways). */
export type WallClock = () => number;

export interface Runtime {
  scheduler: Scheduler;
  random: Random;
  wallClock: WallClock;
}
