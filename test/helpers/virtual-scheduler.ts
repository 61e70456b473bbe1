/**
 * A scheduler on virtual time for transport tests: nothing runs until the test advances it, and
 * timers run in order of their due time (then of their creation), so a seed replays exactly.
 */
import type { CancelTimer, Scheduler } from '../../src/runtime/runtime.js';

interface Timer {
  at: number;
  order: number;
  fn: () => void;
}

export class VirtualScheduler implements Scheduler {
  private now = 0;
  private order = 0;
  private timers: Timer[] = [];

  setTimeout(fn: () => void, ms: number): CancelTimer {
    const timer: Timer = { at: this.now + Math.max(0, ms), order: this.order++, fn };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((t) => t !== timer);
    };
  }

  setInterval(fn: () => void, ms: number): CancelTimer {
    let cancel: CancelTimer = () => undefined;
    const run = () => {
      cancel = this.setTimeout(run, ms);
      fn();
    };
    cancel = this.setTimeout(run, ms);
    return () => cancel();
  }

  macrotask(fn: () => void): void {
    this.setTimeout(fn, 0);
  }

  monotonicNow(): number {
    return this.now;
  }

  /** Runs timers (letting promise callbacks settle after each) until none is left. */
  async runUntilIdle(): Promise<void> {
    await settle();
    for (;;) {
      const next = this.timers.reduce<Timer | undefined>((best, t) => (!best || t.at < best.at || (t.at === best.at && t.order < best.order) ? t : best), undefined);
      if (!next) return;
      this.timers = this.timers.filter((t) => t !== next);
      this.now = Math.max(this.now, next.at);
      next.fn();
      await settle();
    }
  }
}

/** Lets every pending promise callback run (a real macrotask turn drains the microtasks). */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
