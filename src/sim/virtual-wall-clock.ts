import type { WallClock } from '../runtime/runtime.js';
import type { VirtualScheduler } from './virtual-scheduler.js';

/**
 * One node's wall clock in a simulated run: the epoch of the run plus virtual now, plus the
 * node's skew, which a fault may change at any time (a clock set back by NTP, a wrong clock).
 * It is a function of virtual time only, so it replays exactly.
 */
export class VirtualWallClock {
  constructor(
    private readonly time: VirtualScheduler,
    private readonly epochMs: number,
    private skew: number,
  ) {}

  /** Milliseconds this clock is ahead of true (virtual) time; negative when behind. */
  get skewMs(): number {
    return this.skew;
  }

  /** Sets the clock back by `ms` at once: it then reads earlier than it did a moment ago. */
  jumpBack(ms: number): void {
    this.skew -= ms;
  }

  /** Sets the skew (ahead when positive). */
  setSkew(ms: number): void {
    this.skew = ms;
  }

  /** Whole milliseconds, as `Date.now()` reads (virtual time itself may be fractional). */
  readonly now: WallClock = () => Math.floor(this.epochMs + this.time.now() + this.skew);
}
