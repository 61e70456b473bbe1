import { OwnershipError, ValidationError } from '../errors.js';
import type { StoredValues } from '../models/types.js';
import type { ModelTable, SqlRow } from '../storage/model-table.js';
import { runSql } from '../util/sql.js';
import type { WriteContext } from './local-writes.js';
import { countChange, type RemoteCounts } from './counts.js';
import { checkCoverage, type OwnedCoverage, type OwnedRowUpdate } from './remote-apply.js';
import type { WriteBatch } from './write-batch.js';

/**
 * This device's own device-owned rows as a partner holds them. Normally a partner holds exactly
 * what this device wrote; after a restore from a backup (or on a copy of the data directory) it
 * may hold rows the backup lacks, at versions this device has since used again for other rows.
 * The partner's rows after the confirmed version are merged here (the newer clock wins per
 * row), and the rows this device holds in that range are then given versions past everything
 * the partner holds (`restampOwnRows`), so they reach it.
 */

/**
 * Merges one page of the partner's rows of this device (coverage `(from, to]`). Returns whether
 * the partner's state differs from this device's in that range: a row taken from the partner,
 * or a row of this device in the range that the partner does not hold at the same version.
 */
export async function mergeOwnRows(
  ctx: WriteContext,
  batch: WriteBatch,
  rows: readonly OwnedRowUpdate[],
  coverage: OwnedCoverage,
  counts: RemoteCounts | undefined,
): Promise<boolean> {
  const owner = ctx.deviceId;
  if (coverage.owner !== owner) throw new ValidationError(`a coverage of ${coverage.owner} is not one of this device's own rows`);
  checkCoverage(rows, coverage);
  let diverged = false;
  let alike = 0;
  for (const row of rows) {
    const table = ctx.tables.get(row.model)!;
    const current = await batch.loadOwned(table, row.id);
    if (current && current.owner !== owner) throw new OwnershipError(`${row.model} ${row.id} is owned by ${current.owner}, not ${owner}`);
    if (current && current.hlc >= row.hlc) {
      // The same write, or a newer one made here (which then needs a new version, see below).
      if (current.hlc === row.hlc && current.version > coverage.from && current.version <= coverage.to) alike += 1;
      continue;
    }
    diverged = true;
    const values: StoredValues = {};
    for (const field of table.model.fields) values[field.name] = row.deleted ? null : (row.values?.[field.name] ?? null);
    if (counts) countChange(counts, current, row);
    batch.putOwned(table, { id: row.id, values, owner, version: row.version, hlc: row.hlc, deleted: row.deleted, cert: row.cert });
    batch.events.push({ model: row.model, id: row.id, op: row.deleted ? 'delete' : 'upsert', origin: 'remote' });
    if (batch.full) await batch.flush();
  }
  if (!diverged) {
    // Rows of this device in the range that the partner holds differently (or not at all).
    await batch.flush();
    let held = 0;
    for (const table of ownedTables(ctx)) {
      const [found] = await runSql<{ n: number }>(batch.db, table.ownedCountSql(), [owner, coverage.from, coverage.to]);
      held += found!.n;
    }
    diverged = held !== alike;
  }
  return diverged;
}

/** Rows re-stamped per statement round while giving them new versions. */
const RESTAMP_PAGE = 1_000;

/**
 * After the partner's rows through `through` were merged: this device's version moves past
 * `through`, and, if the two differed, every own row with a version in `(confirmed, through]`
 * gets a new version above all of them, so partners (who hold through `through`) receive it.
 * Clocks are kept: the rows are the same writes, only their place in the order changes.
 */
export async function restampOwnRows(
  ctx: WriteContext,
  batch: WriteBatch,
  confirmed: number,
  through: number,
  diverged: boolean,
): Promise<number> {
  const owner = ctx.deviceId;
  let next = Math.max(batch.versionOf(owner), through);
  let restamped = 0;
  if (diverged) {
    for (const table of ownedTables(ctx)) {
      for (;;) {
        // Rows given a new version leave the range once flushed, so each round reads the rest.
        await batch.flush();
        const rows = await runSql<SqlRow>(batch.db, table.ownedAfterSql(), [owner, confirmed, through, RESTAMP_PAGE]);
        // A new version is a new write to sign (`WriteBatch.flush`).
        for (const row of rows) batch.putOwned(table, { ...table.ownedFromRow(row), version: ++next, cert: null });
        restamped += rows.length;
        if (rows.length < RESTAMP_PAGE) break;
      }
    }
  }
  batch.setVersion(owner, next);
  return restamped;
}

function ownedTables(ctx: WriteContext): ModelTable[] {
  return [...ctx.tables.values()].filter((t) => t.model.ownership === 'device');
}
