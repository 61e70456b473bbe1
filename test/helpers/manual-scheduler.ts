import type { CancelTimer, Scheduler } from '../../src/runtime/runtime.js';

interface Timer {
  at: number;
  /** Set for an interval: its period. */
  every: number | undefined;
  fn: () => void;
}

/**
 * A `Scheduler` whose time moves only when the test says: `step()` runs the queued macrotasks,
 * or else the earliest timer, moving time to it. Timers due at the same time run in the order
 * they were set.
 */
export class ManualScheduler implements Scheduler {
  private nowMs = 0;
  private nextId = 0;
  private readonly timers = new Map<number, Timer>();
  private readonly macrotasks: Array<() => void> = [];

  setTimeout(fn: () => void, ms: number): CancelTimer {
    return this.add({ at: this.nowMs + Math.max(0, ms), every: undefined, fn });
  }

  setInterval(fn: () => void, ms: number): CancelTimer {
    const every = Math.max(1, ms);
    return this.add({ at: this.nowMs + every, every, fn });
  }

  macrotask(fn: () => void): void {
    this.macrotasks.push(fn);
  }

  monotonicNow(): number {
    return this.nowMs;
  }

  /** Runs the macrotasks queued, or the earliest timer; false when nothing is scheduled. */
  step(): boolean {
    if (this.macrotasks.length > 0) {
      for (const fn of this.macrotasks.splice(0)) fn();
      return true;
    }
    let earliest: [number, Timer] | undefined;
    for (const entry of this.timers) if (!earliest || entry[1].at < earliest[1].at) earliest = entry;
    if (!earliest) return false;
    const [id, timer] = earliest;
    this.nowMs = timer.at;
    if (timer.every === undefined) this.timers.delete(id);
    else timer.at += timer.every;
    timer.fn();
    return true;
  }

  private add(timer: Timer): CancelTimer {
    const id = this.nextId++;
    this.timers.set(id, timer);
    return () => void this.timers.delete(id);
  }
}
