/** A session that has not pulled for this long loses its serving slot, or its place in the queue. */
export const SERVE_IDLE_MS = 2_000;
/**
 * A slot's lease: after this long, or this many pulls served, its holder yields the slot to a
 * session that waits (if any) and queues behind it.
 */
export const SERVE_LEASE_MS = 5_000;
export const SERVE_LEASE_PULLS = 64;
/** Sessions answered busy that keep their place in the queue, at most. */
const MAX_WAITING_SESSIONS = 32;
/**
 * Pulls one session is served per SERVE_RATE_WINDOW_MS (fixed windows), at most; beyond, it is
 * answered busy (keeping its slot). A peer asking in a loop for tiny pages cannot make this node
 * spend its time on nothing but reads. An honest catch-up with the default page sizes (4 000
 * records) stays far below; one configured with `batchRecords` of a few records, or pulling
 * the rows of hundreds of owners, can meet it and then waits `retryAfterMs`: slower, never
 * stopped. (100 a second slowed a 3 000-row backfill at `batchRecords: 5` twelve times.)
 */
export const MAX_PULLS_PER_WINDOW = 1_000;
export const SERVE_RATE_WINDOW_MS = 1_000;

interface Lease {
  since: number;
  lastPull: number;
  pulls: number;
  /** Start of the current rate window and the pulls served in it. */
  windowStart: number;
  windowPulls: number;
}

/**
 * Fair serving of catch-ups: at most `slots` sessions are served at once, and a pull from any
 * other session is answered busy. A session holds a slot while its pulls keep coming (within
 * SERVE_IDLE_MS of each other), but not indefinitely: once its lease is over and another session
 * waits, it yields. Sessions answered busy wait in a small queue in the order they first asked,
 * and a free slot goes to the ones that have waited longest; a session that stops asking loses
 * its place. So a few members pulling in a loop cannot keep a restarted member from catching up.
 */
export class ServingSlots {
  private readonly leases = new Map<string, Lease>();
  /** Sessions waiting for a slot, oldest first, with when each last asked. */
  private readonly waiting = new Map<string, number>();

  constructor(
    private readonly slots: number,
    private readonly now: () => number,
  ) {}

  /** Whether a pull of session `key` is served now (otherwise it is answered busy). */
  mayServe(key: string): boolean {
    const now = this.now();
    this.expire(now);
    const lease = this.leases.get(key);
    if (lease) {
      const over = now - lease.since >= SERVE_LEASE_MS || lease.pulls >= SERVE_LEASE_PULLS;
      if (over && this.waiting.size > 0) {
        this.leases.delete(key);
        this.wait(key, now);
        return false;
      }
      lease.lastPull = now;
      if (!withinRate(lease, now)) return false;
      lease.pulls += 1;
      return true;
    }
    const free = this.slots - this.leases.size;
    if (free > 0 && this.placeInQueue(key) < free) {
      this.waiting.delete(key);
      this.leases.set(key, { since: now, lastPull: now, pulls: 1, windowStart: now, windowPulls: 1 });
      return true;
    }
    this.wait(key, now);
    return false;
  }

  /** How many sessions wait ahead of `key` (all of them if it does not wait). */
  private placeInQueue(key: string): number {
    let place = 0;
    for (const waiter of this.waiting.keys()) {
      if (waiter === key) return place;
      place += 1;
    }
    return place;
  }

  /** Keeps `key`'s place in the queue (Map order is first insertion), or queues it if there is room. */
  private wait(key: string, now: number): void {
    if (this.waiting.has(key) || this.waiting.size < MAX_WAITING_SESSIONS) this.waiting.set(key, now);
  }

  private expire(now: number): void {
    for (const [key, lease] of this.leases) if (now - lease.lastPull > SERVE_IDLE_MS) this.leases.delete(key);
    for (const [key, askedAt] of this.waiting) if (now - askedAt > SERVE_IDLE_MS) this.waiting.delete(key);
  }
}

/** Counts a pull in the lease's rate window; false when the window's pulls are used up. */
function withinRate(lease: Lease, now: number): boolean {
  if (now - lease.windowStart >= SERVE_RATE_WINDOW_MS) {
    lease.windowStart = now;
    lease.windowPulls = 0;
  }
  if (lease.windowPulls >= MAX_PULLS_PER_WINDOW) return false;
  lease.windowPulls += 1;
  return true;
}
