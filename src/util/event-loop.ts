import type { Scheduler } from '../runtime/runtime.js';

/**
 * Keeps a burst of awaited work from starving the event loop. A loop of awaited SQLite writes
 * is one long promise chain: it never leaves the microtask queue, so socket reads and writes,
 * timers and heartbeats all wait until the burst ends (a bulk import would stall replication
 * and could time out its sessions). `turn()` is free while the loop keeps getting turns; once it
 * has had none for `budgetMs`, it returns a promise for the next macrotask. Callers that receive
 * the same promise resume in call order, so writes keep their order.
 */
export class EventLoopTurns {
  /** When a marker macrotask was scheduled that has not run yet: the loop had no turn since. */
  private markedAt: number | undefined;
  private waiting: Promise<void> | undefined;

  constructor(
    /** Its macrotasks and monotonic time (the node's injected scheduler). */
    private readonly scheduler: Scheduler,
    private readonly budgetMs = 10,
  ) {}

  turn(): Promise<void> | undefined {
    if (this.waiting) return this.waiting;
    const now = this.scheduler.monotonicNow();
    if (this.markedAt === undefined) {
      this.markedAt = now;
      this.scheduler.macrotask(() => (this.markedAt = undefined));
      return undefined;
    }
    if (now - this.markedAt < this.budgetMs) return undefined;
    this.waiting = new Promise((resolve) =>
      this.scheduler.macrotask(() => {
        this.waiting = undefined;
        resolve();
      }),
    );
    return this.waiting;
  }
}
