import { v7 as uuidv7 } from 'uuid';

/**
 * Record ids: UUID v7, time-ordered so new rows land at the right edge of the primary-key
 * b-tree. Random bytes come from a 16 KiB pool (1 024 ids per refill): uuid's own pool holds 16
 * ids, and refilling it cost as much as a tenth of a local write.
 */
const POOL_BYTES = 16 * 1024;
let pool = new Uint8Array(0);
let offset = 0;

export function newRecordId(): string {
  if (offset + 16 > pool.length) {
    pool = globalThis.crypto.getRandomValues(new Uint8Array(POOL_BYTES));
    offset = 0;
  }
  const random = pool.subarray(offset, offset + 16);
  offset += 16;
  return uuidv7({ random });
}
