import { sha256 } from '@noble/hashes/sha2.js';
import type { Kysely } from 'kysely';
import { OWNED_DIGEST_BYTES } from '../protocol/messages.js';
import type { ModelTable } from '../storage/model-table.js';
import type { InternalTables } from '../storage/schema.js';
import { pack } from '../util/msgpack.js';
import { readOwnedAfter } from './owned-reads.js';

/**
 * Summaries of an owner's device-owned rows (docs/protocol.md, `owned-digests`). A certificate
 * proves each row, not that a page held every row of its coverage: a member serving pages can
 * leave rows out, or serve an older version of a row the owner wrote again, and the receiver's
 * cursor still moves on. So partners that hold an owner through the same version compare a
 * summary of what each serves of it, per model; where two differ, each pulls the other's rows
 * of that owner from the start, and since every row is signed and the newer version of a row
 * wins, both end up with all of them.
 */

/** Rows read per page while summarising (the values are read to leave out what pages leave out). */
const DIGEST_READ = { maxRecords: 2_000, maxBytes: 8 * 1024 * 1024 };

/**
 * Per device-owned table, the summary of `owner`'s rows this device serves through `through`:
 * SHA-256 over `[version, id, hlc, deleted]` of each row in version order, cut to
 * `OWNED_DIGEST_BYTES`. The owner signed that much of each row, so equal summaries mean equal
 * rows; and only the rows its pages carry count (`readOwnedAfter`: none without a certificate,
 * none over the record limit). `turn` lets the event loop run between pages.
 */
export async function heldOwnedDigests(
  db: Kysely<InternalTables>,
  tables: readonly ModelTable[],
  owner: string,
  through: number,
  turn: () => Promise<void> | undefined,
): Promise<Map<string, Uint8Array>> {
  const digests = new Map<string, Uint8Array>();
  for (const table of tables) {
    const hash = sha256.create();
    for (let after = 0; ; ) {
      await turn();
      const page = await readOwnedAfter(db, [table], owner, after, through, null, DIGEST_READ);
      // An owner gives each write its own version; two rows at one version (a restored owner's,
      // until it gives its rows new ones) are ordered by id.
      page.rows.sort((a, b) => a.version - b.version || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      for (const row of page.rows) hash.update(pack([row.version, row.id, row.hlc, row.deleted]));
      if (!page.hasMore || page.to <= after) break;
      after = page.to;
    }
    digests.set(table.model.name, hash.digest().subarray(0, OWNED_DIGEST_BYTES));
  }
  return digests;
}
