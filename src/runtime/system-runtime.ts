import type { Random, Runtime, Scheduler } from './runtime.js';

type Callback = () => void;

const immediate = (globalThis as { setImmediate?: (fn: Callback) => unknown }).setImmediate;

/** The browser's MessageChannel, as far as it is used here. */
interface WebMessageChannel {
  port1: { onmessage: ((event: unknown) => void) | null };
  port2: { postMessage(message: unknown): void };
}

/**
 * A macrotask without `setImmediate` (browsers): a MessageChannel message, which unlike
 * `setTimeout(0)` is not clamped to 4 ms.
 */
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

/** The runtime's own timers. */
export const systemScheduler: Scheduler = {
  setTimeout(fn, ms) {
    const timer = setTimeout(fn, ms);
    return () => clearTimeout(timer);
  },
  setInterval(fn, ms) {
    const timer = setInterval(fn, ms);
    return () => clearInterval(timer);
  },
  macrotask: immediate ? (fn) => void immediate(fn) : channelMacrotask(),
  monotonicNow: () => performance.now(),
};

/** `crypto.getRandomValues` (Node 20 and browsers have it as a global). */
export const systemRandom: Random = {
  next: () => Math.random(),
  bytes: (length) => globalThis.crypto.getRandomValues(new Uint8Array(length)),
};

export function systemRuntime(): Runtime {
  return { scheduler: systemScheduler, random: systemRandom, wallClock: Date.now };
}
