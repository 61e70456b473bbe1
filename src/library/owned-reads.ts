import type { Kysely } from 'kysely';
import type { ReadLimits } from '../peer-log/types.js';
import type { ModelTable, SqlRow } from '../storage/model-table.js';
import type { InternalTables } from '../storage/schema.js';
import { pack } from '../util/msgpack.js';
import { MAX_RECORD_BYTES } from '../models/values.js';
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
 */
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
  // A table cut at the record limit may hold more rows just above its last one, so nothing
  // beyond the smallest such version is known to be complete.
  let safeThrough = through;
  for (const table of tables) {
    const found = await runSql<SqlRow>(db, table.ownedAfterSql(), [owner, after, through, limits.maxRecords + 1]);
    const kept = found.slice(0, limits.maxRecords);
    if (found.length > limits.maxRecords) safeThrough = Math.min(safeThrough, kept[kept.length - 1]!._version as number);
    for (const row of kept) {
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
    if (rows.length >= limits.maxRecords || (rows.length > 0 && bytes + size > limits.maxBytes)) {
      to = rows[rows.length - 1]!.version;
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
