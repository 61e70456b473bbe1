import { SchemaMismatchError } from '../errors.js';
import type { FieldType } from '../models/types.js';
import type { Model } from '../models/define.js';
import { usesFieldClocks } from '../models/define.js';
import type { OwnedRowState, SharedRowState, StoredValue, StoredValues } from '../models/types.js';

/**
 * One SQLite table per model, named after the model, with the model's fields as real columns
 * (so the host can read its data with plain SQL) plus the sync metadata its conflict rule needs.
 * Metadata columns start with `_`, which field names cannot.
 *
 *   shared, row LWW:      _hlc (winning clock), _deleted
 *   shared, field rules:  _hlc (newest clock), _deleted, _clocks (JSON, see encodeClocks)
 *   device-owned:         _hlc, _deleted, _owner, _version, _cert (the owner's signature, see
 *                         library/signed-owned-rows.ts; added to tables from before it)
 */
const SQL_TYPES: Record<FieldType, string> = {
  text: 'TEXT',
  integer: 'INTEGER',
  real: 'REAL',
  boolean: 'INTEGER',
  json: 'TEXT',
  blob: 'BLOB',
};

interface MetaColumn {
  name: string;
  definition: string;
}

const HLC: MetaColumn = { name: '_hlc', definition: 'TEXT NOT NULL' };
const DELETED: MetaColumn = { name: '_deleted', definition: 'INTEGER NOT NULL' };
const CLOCKS: MetaColumn = { name: '_clocks', definition: 'TEXT' };
const OWNER: MetaColumn = { name: '_owner', definition: 'TEXT NOT NULL' };
const VERSION: MetaColumn = { name: '_version', definition: 'INTEGER NOT NULL' };
const CERT: MetaColumn = { name: '_cert', definition: 'BLOB' };
/** Sync columns a table from an earlier version may lack: added (nullable) when it is opened. */
const ADDED_LATER: ReadonlySet<MetaColumn> = new Set([CERT]);

function metaColumns(model: Model): MetaColumn[] {
  if (model.ownership === 'device') return [HLC, DELETED, OWNER, VERSION, CERT];
  return usesFieldClocks(model) ? [HLC, DELETED, CLOCKS] : [HLC, DELETED];
}

/** Sqlite's default limit on bound parameters is 32 766; stay well below it per statement. */
const MAX_PARAMS_PER_STATEMENT = 8_000;

export type SqlRow = Record<string, StoredValue>;

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export class ModelTable {
  readonly model: Model;
  readonly table: string;
  /** All columns in canonical order: id, fields in declaration order, metadata. */
  readonly columns: readonly string[];
  readonly rowsPerStatement: number;
  private readonly meta: readonly MetaColumn[];
  private readonly columnList: string;
  private readonly rowPlaceholder: string;
  /** `SET` list that overwrites every column but the id with the inserted row's. */
  private readonly replaceAll: string;

  constructor(model: Model) {
    this.model = model;
    this.table = quoteIdent(model.name);
    this.meta = metaColumns(model);
    this.columns = ['id', ...model.fields.map((f) => f.name), ...this.meta.map((c) => c.name)];
    this.columnList = this.columns.map(quoteIdent).join(', ');
    this.rowPlaceholder = `(${this.columns.map(() => '?').join(', ')})`;
    this.replaceAll = this.columns
      .slice(1)
      .map((c) => `${quoteIdent(c)} = excluded.${quoteIdent(c)}`)
      .join(', ');
    this.rowsPerStatement = Math.max(1, Math.floor(MAX_PARAMS_PER_STATEMENT / this.columns.length));
  }

  createStatements(): string[] {
    const fieldColumns = this.model.fields.map((f) => `${quoteIdent(f.name)} ${SQL_TYPES[f.type]}`);
    const metaColumns = this.meta.map((c) => `${c.name} ${c.definition}`);
    const statements = [
      `CREATE TABLE IF NOT EXISTS ${this.table} (id TEXT PRIMARY KEY NOT NULL, ${[...fieldColumns, ...metaColumns].join(', ')})`,
    ];
    if (this.model.ownership === 'device') {
      statements.push(
        `CREATE INDEX IF NOT EXISTS ${quoteIdent(`${this.model.name}_owner_version`)} ON ${this.table} (_owner, _version)`,
      );
    }
    return statements;
  }

  /**
   * Given the table's existing columns (name → declared type), the statements that bring it up
   * to the model: new fields are added as columns; anything else is a mismatch we refuse rather
   * than silently reinterpret stored data.
   */
  upgradeStatements(existing: ReadonlyMap<string, string>): string[] {
    const statements: string[] = [];
    for (const field of this.model.fields) {
      const declared = existing.get(field.name.toLowerCase());
      if (declared === undefined) {
        if (!field.nullable) {
          throw new SchemaMismatchError(
            `model "${this.model.name}": new field "${field.name}" must be nullable, because existing rows have no value for it`,
          );
        }
        statements.push(`ALTER TABLE ${this.table} ADD COLUMN ${quoteIdent(field.name)} ${SQL_TYPES[field.type]}`);
      } else if (declared.toUpperCase() !== SQL_TYPES[field.type]) {
        throw new SchemaMismatchError(
          `model "${this.model.name}": field "${field.name}" is stored as ${declared}, the model declares ${field.type}`,
        );
      }
    }
    for (const column of this.meta) {
      if (existing.has(column.name)) continue;
      if (ADDED_LATER.has(column)) {
        statements.push(`ALTER TABLE ${this.table} ADD COLUMN ${column.name} ${column.definition}`);
      } else {
        throw new SchemaMismatchError(
          `table "${this.model.name}" lacks sync column ${column.name}: it was created with another ownership or conflict rule`,
        );
      }
    }
    return statements;
  }

  selectByIdsSql(count: number): string {
    return `SELECT * FROM ${this.table} WHERE id IN (${new Array(count).fill('?').join(', ')})`;
  }

  /**
   * Writes whole rows. Row-level LWW tables keep a stored row whose clock is newer than the one
   * written, so a local upsert can be written without reading the row first (see
   * `LocalWriter.upsert`) and the newer row still wins. One with the same clock is replaced: a
   * remote row is written only as its merge's result, which may take another change of one clock
   * (a fork's, ordered by content: `mergeRowLww`).
   */
  upsertSql(rowCount: number): string {
    const values = new Array(rowCount).fill(this.rowPlaceholder).join(', ');
    if (this.model.ownership === 'device' || this.model.conflict !== 'lww') {
      return `INSERT OR REPLACE INTO ${this.table} (${this.columnList}) VALUES ${values}`;
    }
    return `INSERT INTO ${this.table} (${this.columnList}) VALUES ${values} ON CONFLICT (id) DO UPDATE SET ${this.replaceAll} WHERE excluded._hlc >= ${this.table}._hlc`;
  }

  /** Inserts whole rows, skipping ids already held. */
  insertIfAbsentSql(rowCount: number): string {
    return `INSERT INTO ${this.table} (${this.columnList}) VALUES ${new Array(rowCount).fill(this.rowPlaceholder).join(', ')} ON CONFLICT (id) DO NOTHING`;
  }

  /** Rows of one owner with `after < _version <= through`, in version order (device-owned tables). */
  ownedAfterSql(): string {
    return `SELECT * FROM ${this.table} WHERE _owner = ? AND _version > ? AND _version <= ? ORDER BY _version LIMIT ?`;
  }

  /** Rows of one owner at one version, at most a given number (device-owned tables). */
  ownedAtSql(): string {
    return `SELECT * FROM ${this.table} WHERE _owner = ? AND _version = ? ORDER BY id LIMIT ?`;
  }

  /** How many rows of one owner have `after < _version <= through` (device-owned tables). */
  ownedCountSql(): string {
    return `SELECT count(*) AS n FROM ${this.table} WHERE _owner = ? AND _version > ? AND _version <= ?`;
  }

  /** A row of one owner written after a clock, if any (device-owned tables). */
  ownedAfterClockSql(): string {
    return `SELECT 1 AS found FROM ${this.table} WHERE _owner = ? AND _hlc > ? LIMIT 1`;
  }

  /** Every row, tombstones included, in id order (snapshots). */
  allRowsSql(withAfter: boolean): string {
    return `SELECT * FROM ${this.table}${withAfter ? ' WHERE id > ?' : ''} ORDER BY id LIMIT ?`;
  }

  liveRowsSql(withAfter: boolean): string {
    return `SELECT * FROM ${this.table} WHERE _deleted = 0${withAfter ? ' AND id > ?' : ''} ORDER BY id LIMIT ?`;
  }

  sharedParams(state: SharedRowState, out: StoredValue[]): void {
    out.push(state.id);
    this.pushValues(state.values, out);
    out.push(state.hlc, state.deleted ? 1 : 0);
    if (usesFieldClocks(this.model)) out.push(this.encodeClocks(state));
  }

  ownedParams(state: OwnedRowState, out: StoredValue[]): void {
    out.push(state.id);
    this.pushValues(state.values, out);
    out.push(state.hlc, state.deleted ? 1 : 0, state.owner, state.version, state.cert);
  }

  sharedFromRow(row: SqlRow): SharedRowState {
    const hlc = row._hlc as string;
    const deleted = row._deleted === 1;
    const values = this.valuesFromRow(row);
    if (usesFieldClocks(this.model)) return { id: row.id as string, values, hlc, deleted, ...this.decodeClocks(row._clocks as string | null, hlc) };
    // Row LWW: the winning clock is that of the upsert or of the delete that won.
    return {
      id: row.id as string,
      values,
      hlc,
      deleted,
      fieldHlcs: null,
      upsertHlc: deleted ? null : hlc,
      deleteHlc: deleted ? hlc : null,
    };
  }

  ownedFromRow(row: SqlRow): OwnedRowState {
    return {
      id: row.id as string,
      values: this.valuesFromRow(row),
      hlc: row._hlc as string,
      deleted: row._deleted === 1,
      owner: row._owner as string,
      version: row._version as number,
      cert: (row._cert as Uint8Array | null) ?? null,
    };
  }

  /**
   * The row's columns in canonical order: what the digest hashes. A certificate is proof, not
   * data: a row held with it and the same row adopted from before owned rows were signed are alike.
   */
  canonicalTuple(row: SqlRow): StoredValue[] {
    return this.columns.filter((c) => c !== CERT.name).map((c) => row[c] ?? null);
  }

  valuesFromRow(row: SqlRow): StoredValues {
    const values: StoredValues = {};
    for (const field of this.model.fields) values[field.name] = row[field.name] ?? null;
    return values;
  }

  private pushValues(values: StoredValues, out: StoredValue[]): void {
    for (const field of this.model.fields) out.push(values[field.name] ?? null);
  }

  /**
   * The clocks of a field-rule row as compact, canonical JSON `{"u": …, "d": …, "f": {…}}`,
   * in that key order and fields in declaration order, so equal states are stored
   * byte-identically: `u` the newest upsert's clock (left out when it equals `_hlc`, the usual
   * case), `d` the newest delete's (left out when there was none), `f` the sparse field clocks
   * (see `mergeFieldLww`: fields without an entry are at `u`). NULL when nothing remains.
   */
  private encodeClocks(state: SharedRowState): string | null {
    const clocks: { u?: string | null; d?: string; f?: Record<string, string> } = {};
    let empty = true;
    if (state.upsertHlc !== state.hlc) {
      clocks.u = state.upsertHlc;
      empty = false;
    }
    if (state.deleteHlc !== null) {
      clocks.d = state.deleteHlc;
      empty = false;
    }
    const fieldHlcs = state.fieldHlcs ?? {};
    for (const field of this.model.fields) {
      const hlc = fieldHlcs[field.name];
      if (hlc !== undefined) {
        (clocks.f ??= {})[field.name] = hlc;
        empty = false;
      }
    }
    return empty ? null : JSON.stringify(clocks);
  }

  private decodeClocks(
    encoded: string | null,
    hlc: string,
  ): Pick<SharedRowState, 'fieldHlcs' | 'upsertHlc' | 'deleteHlc'> {
    if (encoded === null) return { fieldHlcs: {}, upsertHlc: hlc, deleteHlc: null };
    const clocks: { u?: string | null; d?: string; f?: Record<string, string> } = JSON.parse(encoded);
    return { fieldHlcs: clocks.f ?? {}, upsertHlc: clocks.u === undefined ? hlc : clocks.u, deleteHlc: clocks.d ?? null };
  }
}
