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
 *   shared:  _hlc, _deleted, _field_hlcs (JSON, field rules), _upsert_hlc, _delete_hlc
 *   device:  _hlc, _deleted, _owner, _version
 */
const SQL_TYPES: Record<FieldType, string> = {
  text: 'TEXT',
  integer: 'INTEGER',
  real: 'REAL',
  boolean: 'INTEGER',
  json: 'TEXT',
  blob: 'BLOB',
};

const SHARED_META = ['_hlc', '_deleted', '_field_hlcs', '_upsert_hlc', '_delete_hlc'] as const;
const OWNED_META = ['_hlc', '_deleted', '_owner', '_version'] as const;

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
  private readonly columnList: string;
  private readonly rowPlaceholder: string;

  constructor(model: Model) {
    this.model = model;
    this.table = quoteIdent(model.name);
    const meta = model.ownership === 'shared' ? SHARED_META : OWNED_META;
    this.columns = ['id', ...model.fields.map((f) => f.name), ...meta];
    this.columnList = this.columns.map(quoteIdent).join(', ');
    this.rowPlaceholder = `(${this.columns.map(() => '?').join(', ')})`;
    this.rowsPerStatement = Math.max(1, Math.floor(MAX_PARAMS_PER_STATEMENT / this.columns.length));
  }

  createStatements(): string[] {
    const fieldColumns = this.model.fields.map((f) => `${quoteIdent(f.name)} ${SQL_TYPES[f.type]}`);
    const metaColumns =
      this.model.ownership === 'shared'
        ? ['_hlc TEXT NOT NULL', '_deleted INTEGER NOT NULL', '_field_hlcs TEXT', '_upsert_hlc TEXT', '_delete_hlc TEXT']
        : ['_hlc TEXT NOT NULL', '_deleted INTEGER NOT NULL', '_owner TEXT NOT NULL', '_version INTEGER NOT NULL'];
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
    for (const column of this.columns) {
      if (column.startsWith('_') && !existing.has(column)) {
        throw new SchemaMismatchError(
          `table "${this.model.name}" lacks sync column ${column}: it was created with another ownership or conflict rule`,
        );
      }
    }
    return statements;
  }

  selectByIdsSql(count: number): string {
    return `SELECT * FROM ${this.table} WHERE id IN (${new Array(count).fill('?').join(', ')})`;
  }

  upsertSql(rowCount: number): string {
    return `INSERT OR REPLACE INTO ${this.table} (${this.columnList}) VALUES ${new Array(rowCount)
      .fill(this.rowPlaceholder)
      .join(', ')}`;
  }

  liveRowsSql(withAfter: boolean): string {
    return `SELECT * FROM ${this.table} WHERE _deleted = 0${withAfter ? ' AND id > ?' : ''} ORDER BY id LIMIT ?`;
  }

  sharedParams(state: SharedRowState, out: StoredValue[]): void {
    out.push(state.id);
    this.pushValues(state.values, out);
    out.push(
      state.hlc,
      state.deleted ? 1 : 0,
      state.fieldHlcs === null ? null : this.encodeFieldHlcs(state.fieldHlcs),
      state.upsertHlc,
      state.deleteHlc,
    );
  }

  ownedParams(state: OwnedRowState, out: StoredValue[]): void {
    out.push(state.id);
    this.pushValues(state.values, out);
    out.push(state.hlc, state.deleted ? 1 : 0, state.owner, state.version);
  }

  sharedFromRow(row: SqlRow): SharedRowState {
    const fieldHlcs = row._field_hlcs as string | null;
    return {
      id: row.id as string,
      values: this.valuesFromRow(row),
      hlc: row._hlc as string,
      deleted: row._deleted === 1,
      fieldHlcs: fieldHlcs === null ? (usesFieldClocks(this.model) ? {} : null) : JSON.parse(fieldHlcs),
      upsertHlc: row._upsert_hlc as string | null,
      deleteHlc: row._delete_hlc as string | null,
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
    };
  }

  /** The row's columns in canonical order: what the digest hashes. */
  canonicalTuple(row: SqlRow): StoredValue[] {
    return this.columns.map((c) => row[c] ?? null);
  }

  valuesFromRow(row: SqlRow): StoredValues {
    const values: StoredValues = {};
    for (const field of this.model.fields) values[field.name] = row[field.name] ?? null;
    return values;
  }

  private pushValues(values: StoredValues, out: StoredValue[]): void {
    for (const field of this.model.fields) out.push(values[field.name] ?? null);
  }

  /** Field clocks in declaration order, so equal states are stored byte-identically. */
  private encodeFieldHlcs(fieldHlcs: Readonly<Record<string, string>>): string {
    const ordered: Record<string, string> = {};
    for (const field of this.model.fields) {
      const hlc = fieldHlcs[field.name];
      if (hlc !== undefined) ordered[field.name] = hlc;
    }
    return JSON.stringify(ordered);
  }
}
