import { v4 as uuidv4, v7 as uuidv7 } from 'uuid';
import type { Random, WallClock } from '../runtime/runtime.js';

/** A random (v4) uuid from the injected random bytes: library ids, invite ids. */
export function randomUuid(random: Random): string {
  return uuidv4({ random: random.bytes(16) });
}

/**
 * Record ids: UUID v7, time-ordered so new rows land at the right edge of the primary-key
 * b-tree, from the node's injected wall clock and random bytes (so a simulated run replays its
 * ids). Random bytes come from a 16 KiB pool (1 024 ids per refill), one per node: drawing 16
 * bytes per id cost as much as a tenth of a local write.
 */
const POOL_BYTES = 16 * 1024;

export class RecordIds {
  private pool: Uint8Array = new Uint8Array(0);
  private offset = 0;

  constructor(
    private readonly random: Random,
    private readonly wallClock: WallClock,
  ) {}

  next(): string {
    if (this.offset + 16 > this.pool.length) {
      this.pool = this.random.bytes(POOL_BYTES);
      this.offset = 0;
    }
    const random = this.pool.subarray(this.offset, this.offset + 16);
    this.offset += 16;
    return uuidv7({ random, msecs: Math.floor(this.wallClock()) });
  }
}
