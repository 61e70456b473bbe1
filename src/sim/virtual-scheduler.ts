import type { CancelTimer, Scheduler } from '../runtime/runtime.js';
import { systemScheduler } from '../runtime/system-runtime.js';

/** A pending timer. An interval is re-queued after each run with a fresh sequence number. */
interface Timer {
  due: number;
  /** Insertion order: timers due at the same virtual time run in the order they were set. */
  seq: number;
  fn: () => void;
  every: number | undefined;
  cancelled: boolean;
  /** The scope that set it; a killed scope's timers never run. */
  scope: SchedulerScope;
}

function before(a: Timer, b: Timer): boolean {
  return a.due < b.due || (a.due === b.due && a.seq < b.seq);
}

/** A delay as timers take it: NaN, negative and missing delays are 0 (as in Node and browsers). */
function delayOf(ms: number): number {
  return Number.isFinite(ms) && ms > 0 ? ms : 0;
}

/**
 * Virtual time for the simulator: timers ordered by (due time, insertion sequence), macrotasks
 * as timers due now, and `monotonicNow` is the virtual now. Nothing runs on its own: a driver
 * (`SimDriver`) runs the timers one by one, so a run is a deterministic sequence of events.
 * Each node gets its own `scope()`: crashing a node kills its scope, and with it every timer it
 * set or will set, as a killed process's timers die with it.
 */
export class VirtualScheduler {
  private nowMs = 0;
  private seq = 0;
  /** A binary min-heap by (due, seq). Cancelled timers stay until they reach the top. */
  private readonly heap: Timer[] = [];
  private live = 0;

  now(): number {
    return this.nowMs;
  }

  /** Timers that are set and not cancelled (intervals count once). */
  pendingTimers(): number {
    return this.live;
  }

  /** A scheduler for one node (or the simulator itself), whose timers can be killed at once. */
  scope(): SchedulerScope {
    return new SchedulerScope(this);
  }

  /** @internal Queues a timer of `scope`. */
  add(scope: SchedulerScope, fn: () => void, ms: number, every: number | undefined): CancelTimer {
    const timer: Timer = { due: this.nowMs + delayOf(ms), seq: this.seq++, fn, every, cancelled: false, scope };
    this.push(timer);
    this.live += 1;
    scope.live += 1;
    return () => {
      if (!timer.cancelled) this.retire(timer);
    };
  }

  /** When the next timer is due, or undefined when none is set. */
  nextDue(): number | undefined {
    this.dropCancelled();
    return this.heap[0]?.due;
  }

  /**
   * Runs the earliest timer due at or before `until`, moving virtual now to its due time.
   * False (and now unchanged) when there is none.
   */
  runNext(until = Number.POSITIVE_INFINITY): boolean {
    this.dropCancelled();
    const timer = this.heap[0];
    if (!timer || timer.due > until) return false;
    this.pop();
    this.nowMs = timer.due;
    if (timer.every === undefined) {
      this.retire(timer);
    } else {
      // An interval of 0 would keep virtual time from ever moving: it repeats after 1 ms at least.
      timer.due = this.nowMs + Math.max(1, timer.every);
      timer.seq = this.seq++;
      this.push(timer);
    }
    timer.fn();
    return true;
  }

  /** Moves virtual now forward to `time` (never back), running nothing. */
  advanceTo(time: number): void {
    if (time > this.nowMs) this.nowMs = time;
  }

  /** @internal Cancels every timer of a killed scope. */
  cancelScope(scope: SchedulerScope): void {
    for (const timer of this.heap) {
      if (timer.scope === scope && !timer.cancelled) this.retire(timer);
    }
  }

  private retire(timer: Timer): void {
    timer.cancelled = true;
    this.live -= 1;
    timer.scope.live -= 1;
  }

  private dropCancelled(): void {
    while (this.heap[0]?.cancelled) this.pop();
  }

  private push(timer: Timer): void {
    const heap = this.heap;
    heap.push(timer);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i]!, heap[parent]!)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }

  private pop(): void {
    const heap = this.heap;
    const last = heap.pop()!;
    if (heap.length === 0) return;
    heap[0] = last;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let least = i;
      if (left < heap.length && before(heap[left]!, heap[least]!)) least = left;
      if (right < heap.length && before(heap[right]!, heap[least]!)) least = right;
      if (least === i) return;
      [heap[i], heap[least]] = [heap[least]!, heap[i]!];
      i = least;
    }
  }
}

/** One node's view of virtual time: a `Scheduler` whose timers all die with `kill()`. */
export class SchedulerScope implements Scheduler {
  private killed = false;
  /** @internal Timers of this scope that are set and not cancelled (see `pendingTimers`). */
  live = 0;

  constructor(private readonly time: VirtualScheduler) {}

  get alive(): boolean {
    return !this.killed;
  }

  /** Timers set here and not yet run or cancelled: a node that leaks timers grows this. */
  pendingTimers(): number {
    return this.live;
  }

  setTimeout(fn: () => void, ms: number): CancelTimer {
    return this.killed ? noop : this.time.add(this, fn, ms, undefined);
  }

  setInterval(fn: () => void, ms: number): CancelTimer {
    return this.killed ? noop : this.time.add(this, fn, ms, delayOf(ms));
  }

  macrotask(fn: () => void): void {
    if (!this.killed) this.time.add(this, fn, 0, undefined);
  }

  monotonicNow(): number {
    return this.time.now();
  }

  /** Cancels every timer set here, and ignores any set later (a crashed node's code may still run). */
  kill(): void {
    this.killed = true;
    this.time.cancelScope(this);
  }
}

function noop(): void {}

/** Lets every promise chain that is ready run to its end: one real macrotask. */
function settleMicrotasks(): Promise<void> {
  // Microtasks (promise reactions, nextTick) all run before the runtime takes its next
  // macrotask, including those they queue in turn. A simulated run does no real I/O (SQLite is
  // synchronous, the transport is in memory, every timer is virtual), so once this macrotask
  // runs, nothing more can happen until the driver runs the next virtual timer.
  return new Promise((resolve) => systemScheduler.macrotask(resolve));
}

export interface RunUntilOptions {
  /** Virtual time at which to give up: `runUntil` then resolves false. */
  deadline: number;
}

/**
 * Drives a `VirtualScheduler`: runs its timers one at a time in (due, seq) order and lets all
 * microtasks settle between two of them, so every interleaving is a function of the timers
 * alone and the same inputs replay the same run.
 */
export class SimDriver {
  /** Timers run so far (a measure of the work a run did). */
  events = 0;
  private instant = Number.NaN;
  private atInstant = 0;

  /**
   * `maxEventsPerInstant`: timers that may run without virtual time moving. Work that keeps
   * scheduling itself at once (two peers asking each other the same thing for ever, with no
   * delay) would otherwise hold virtual time still and the run would never end: past the bound
   * `step` throws, which the simulator reports as a failure of the seed.
   */
  constructor(
    readonly time: VirtualScheduler,
    private readonly maxEventsPerInstant = 100_000,
  ) {}

  settle(): Promise<void> {
    return settleMicrotasks();
  }

  /** Runs the next timer due by `until`, then settles. False when there was none. */
  async step(until = Number.POSITIVE_INFINITY): Promise<boolean> {
    await this.settle();
    if (!this.time.runNext(until)) return false;
    this.events += 1;
    this.countInstant();
    await this.settle();
    return true;
  }

  private countInstant(): void {
    const now = this.time.now();
    if (now !== this.instant) {
      this.instant = now;
      this.atInstant = 0;
    }
    this.atInstant += 1;
    if (this.atInstant > this.maxEventsPerInstant) {
      throw new Error(`livelock: ${this.atInstant} timers ran at virtual time ${now} without time moving on`);
    }
  }

  /** Runs every timer due within the next `ms` of virtual time; now is then `now + ms`. */
  async runFor(ms: number): Promise<void> {
    const until = this.time.now() + ms;
    while (await this.step(until));
    this.time.advanceTo(until);
  }

  /**
   * Runs timers until `done()` holds (checked after each settled step) or virtual `deadline`
   * passes. True if `done()` held.
   */
  async runUntil(done: () => boolean | Promise<boolean>, options: RunUntilOptions): Promise<boolean> {
    await this.settle();
    for (;;) {
      if (await done()) return true;
      const next = this.time.nextDue();
      if (next === undefined || next > options.deadline) {
        this.time.advanceTo(options.deadline);
        return done();
      }
      await this.step(options.deadline);
    }
  }

  /**
   * Runs timers until `promise` settles, and returns its outcome; rejects with a clear error if
   * virtual `deadline` passes first (the operation hangs in virtual time).
   */
  async complete<T>(promise: Promise<T>, what: string, options: RunUntilOptions): Promise<T> {
    let outcome: { ok: true; value: T } | { ok: false; error: unknown } | undefined;
    promise.then(
      (value) => (outcome = { ok: true, value }),
      (error: unknown) => (outcome = { ok: false, error }),
    );
    await this.runUntil(() => outcome !== undefined, options);
    if (!outcome) throw new Error(`${what} did not complete by virtual time ${options.deadline}`);
    if (!outcome.ok) throw outcome.error;
    return outcome.value;
  }
}
