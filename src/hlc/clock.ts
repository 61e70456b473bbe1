import { ClockDriftError, ClockRangeError } from '../errors.js';
import type { WallClock } from '../runtime/runtime.js';
import { type Hlc, MAX_COUNTER, MAX_WALL_MS } from './hlc.js';

export type { WallClock };

export const DEFAULT_MAX_CLOCK_DRIFT_MS = 60_000;

export interface HlcClockOptions {
  deviceId: string;
  /** The node's injected wall clock (the core reads no global time). */
  wallClock: WallClock;
  maxClockDriftMs?: number;
  /** The persisted high-water mark: the clock never issues a value at or below it. */
  highWater?: Hlc;
}

/**
 * HLC generator. `now()` for local events, `receive()` for remote ones, following the update
 * rules of Kulkarni et al. The state (l, c) only grows, so values issued by this clock are
 * strictly increasing, whatever the wall clock does.
 *
 * Counter overflow: the paper bounds c by the clock-drift bound; a burst of more than 65 536
 * events inside one millisecond would exceed our 16-bit field, so instead of throwing we move l
 * one millisecond forward and reset c. Order is preserved because (l + 1, 0) > (l, MAX). Only
 * at the very end of the encodable range (year 10889) does that throw `ClockRangeError`.
 */
export class HlcClock {
  readonly deviceId: string;
  readonly maxClockDriftMs: number;
  private readonly wallClock: WallClock;
  private l: number;
  private c: number;

  constructor(options: HlcClockOptions) {
    this.deviceId = options.deviceId;
    this.wallClock = options.wallClock;
    this.maxClockDriftMs = options.maxClockDriftMs ?? DEFAULT_MAX_CLOCK_DRIFT_MS;
    this.l = options.highWater?.wallMs ?? 0;
    this.c = options.highWater?.counter ?? 0;
  }

  /** The last value this clock issued or absorbed (its high-water mark). */
  last(): Hlc {
    return { wallMs: this.l, counter: this.c, deviceId: this.deviceId };
  }

  /** Local wall time as the clock reads it, without issuing a value. */
  wallTime(): number {
    return this.physicalTime();
  }

  now(): Hlc {
    const pt = this.physicalTime();
    return pt > this.l ? this.advance(pt, 0) : this.advance(this.l, this.c + 1);
  }

  /**
   * Throws `ClockDriftError` if `remote` is further ahead of local wall time than allowed.
   * Callers validating a whole batch run this over every value before any `receive()`, so a
   * refused batch leaves the clock untouched.
   */
  checkDrift(remote: Hlc): void {
    const pt = this.physicalTime();
    if (remote.wallMs - pt > this.maxClockDriftMs) {
      throw new ClockDriftError(remote.wallMs, pt, this.maxClockDriftMs);
    }
  }

  /** Merges a remote value into the clock and returns the new local value (> both). */
  receive(remote: Hlc): Hlc {
    this.checkDrift(remote);
    const pt = this.physicalTime();
    const previous = this.l;
    const l = Math.max(previous, remote.wallMs, pt);
    if (l === previous && l === remote.wallMs) return this.advance(l, Math.max(this.c, remote.counter) + 1);
    if (l === previous) return this.advance(l, this.c + 1);
    if (l === remote.wallMs) return this.advance(l, remote.counter + 1);
    return this.advance(l, 0);
  }

  /** Moves the state to (l, c), rolling an overflowing counter into the next millisecond. */
  private advance(l: number, c: number): Hlc {
    if (c > MAX_COUNTER) {
      if (l >= MAX_WALL_MS) throw new ClockRangeError();
      l += 1;
      c = 0;
    }
    this.l = l;
    this.c = c;
    return { wallMs: l, counter: c, deviceId: this.deviceId };
  }

  private physicalTime(): number {
    const t = Math.floor(this.wallClock());
    return t > MAX_WALL_MS ? MAX_WALL_MS : t;
  }
}
