import type { Kysely } from 'kysely';
import type { ReadLimits } from '../peer-log/types.js';
import type { ModelTable, SqlRow } from '../storage/model-table.js';
import type { InternalTables } from '../storage/schema.js';
import { pack } from '../util/msgpack.js';
import { MAX_RECORD_BYTES } from '../models/values.js';
import { MAX_PAGE_BYTES, MAX_PAGE_RECORDS } from '../protocol/messages.js';
import { runSql } from '../util/sql.js';
import type { OwnedRowUpdate } from './remote-apply.js';

export interface OwnedPage {
  /** The PeerId whose key signed the rows (the owner's); null when none of its rows is held. */
  author: string | null;
  /** Rows with `from < version <= to`, in version order. */
  rows: OwnedRowUpdate[];
  from: number;
  /** The page covers every row of the owner up to this version. */
  to: number;
  hasMore: boolean;
}

/**
 * Bytes an owned-row tuple costs at most besides its id and values: array header 1, model name
 * (at most 63 ASCII characters) 65, owner 38, version 9, HLC 54, deleted 1, the certificate's
 * header 3; rounded up. The id counts 3 + 3 bytes per UTF-16 unit and the certificate its
 * length, so a page's count is an upper bound of its encoding.
 */
const ROW_OVERHEAD_BYTES = 180;

/**
 * The owner's device-owned rows (tombstones included) after version `after`, across every
 * device-owned model, merged in version order and cut at the limits. Only versions this device
 * holds contiguously (`through`) are served, so the page's coverage claim is true. Rows signed
 * by `author`; a row without a certificate (held from before owned rows were signed) cannot be
 * checked by anyone and is left out.
 *
 * A page is cut between versions, never inside one: rows of one owner may share a version (a
 * restored owner's, until it gives them new ones, `own-rows.ts`), and a cut among them would
 * claim, and move the receiver's cursor (`provenCoverage`) past, rows it leaves out. The page's
 * first version is served whole even over the limits, so a page always moves on, up to
 * `WHOLE_VERSION`.
 */
/**
 * How far a page's first version may go beyond the limits to be served whole. A version holds one
 * row per diverged copy of its owner, normally two; a larger one only an owner signing many rows
 * at one version makes, and it is cut inside, its other rows left to that owner's next writes.
 * Both bounds keep the page valid (`MAX_PAGE_RECORDS` rows) and inside one frame.
 */
const WHOLE_VERSION = { records: MAX_PAGE_RECORDS, bytes: 2 * MAX_PAGE_BYTES };

export async function readOwnedAfter(
  db: Kysely<InternalTables>,
  tables: readonly ModelTable[],
  owner: string,
  after: number,
  through: number,
  author: string | null,
  limits: ReadLimits,
): Promise<OwnedPage> {
  if (through <= after) return { author, rows: [], from: after, to: after, hasMore: false };
  const candidates: OwnedRowUpdate[] = [];
  // A table holding more than the limit is read through the version before the first one it was
  // cut in (nothing beyond is known to be complete), or through that version read whole when it
  // is the table's first.
  let safeThrough = through;
  for (const table of tables) {
    let found = await runSql<SqlRow>(db, table.ownedAfterSql(), [owner, after, through, limits.maxRecords + 1]);
    if (found.length > limits.maxRecords) {
      const cut = found[limits.maxRecords]!._version as number;
      if (cut === found[0]!._version) {
        found = await runSql<SqlRow>(db, table.ownedAtSql(), [owner, cut, WHOLE_VERSION.records]);
        safeThrough = Math.min(safeThrough, cut);
      } else {
        found = found.filter((row) => (row._version as number) < cut);
        safeThrough = Math.min(safeThrough, cut - 1);
      }
    }
    for (const row of found) {
      const state = table.ownedFromRow(row);
      if (state.cert === null) continue;
      candidates.push({
        model: table.model.name,
        id: state.id,
        owner: state.owner,
        version: state.version,
        hlc: state.hlc,
        deleted: state.deleted,
        values: state.deleted ? null : state.values,
        cert: state.cert,
      });
    }
  }
  candidates.sort((a, b) => a.version - b.version);
  const rows: OwnedRowUpdate[] = [];
  let bytes = 0;
  let to = safeThrough;
  for (const row of candidates) {
    if (row.version > safeThrough) break;
    const valueBytes = row.values ? pack(row.values).byteLength : 0;
    const size = ROW_OVERHEAD_BYTES + 3 * row.id.length + valueBytes + row.cert.byteLength;
    // Full: the page ends before this row's version (every row below it was read), the rows of
    // that version already taken left out too; unless it is the page's first, served whole.
    const full = rows.length >= limits.maxRecords || bytes + size > limits.maxBytes;
    if (full && rows.length > 0 && row.version > rows[0]!.version) {
      while (rows[rows.length - 1]!.version === row.version) rows.pop();
      to = row.version - 1;
      break;
    }
    if (rows.length > 0 && (rows.length >= WHOLE_VERSION.records || bytes + size > WHOLE_VERSION.bytes)) {
      to = row.version;
      break;
    }
    // A row over the record limit (held from before it) would be refused by the partner: it is
    // left out, and the coverage still claims its version (see docs/protocol.md, "Record size").
    if (valueBytes > MAX_RECORD_BYTES) continue;
    rows.push(row);
    bytes += size;
  }
  return { author, rows, from: after, to, hasMore: to < through };
}
