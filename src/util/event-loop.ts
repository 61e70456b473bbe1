type Callback = () => void;

const immediate = (globalThis as { setImmediate?: (fn: Callback) => unknown }).setImmediate;

/**
 * Runs `fn` as a macrotask, after the I/O callbacks that are ready: `setImmediate` where the
 * runtime has it (Node), otherwise a MessageChannel message (browsers), which unlike
 * `setTimeout(0)` is not clamped to 4 ms.
 */
export const macrotask: (fn: Callback) => void = immediate ? (fn) => void immediate(fn) : channelMacrotask();

/** The browser's MessageChannel, as far as it is used here. */
interface WebMessageChannel {
  port1: { onmessage: ((event: unknown) => void) | null };
  port2: { postMessage(message: unknown): void };
}

function channelMacrotask(): (fn: Callback) => void {
  const queue: Callback[] = [];
  let channel: WebMessageChannel | undefined;
  return (fn) => {
    if (!channel) {
      channel = new (globalThis as unknown as { MessageChannel: new () => WebMessageChannel }).MessageChannel();
      channel.port1.onmessage = () => queue.shift()?.();
    }
    queue.push(fn);
    channel.port2.postMessage(null);
  };
}

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

  constructor(private readonly budgetMs = 10) {}

  turn(): Promise<void> | undefined {
    if (this.waiting) return this.waiting;
    const now = performance.now();
    if (this.markedAt === undefined) {
      this.markedAt = now;
      macrotask(() => (this.markedAt = undefined));
      return undefined;
    }
    if (now - this.markedAt < this.budgetMs) return undefined;
    this.waiting = new Promise((resolve) =>
      macrotask(() => {
        this.waiting = undefined;
        resolve();
      }),
    );
    return this.waiting;
  }
}
