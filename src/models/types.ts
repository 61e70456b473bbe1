/** Column types a model field may have. */
export type FieldType = 'text' | 'integer' | 'real' | 'boolean' | 'json' | 'blob';

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** A field value as the host application sees it. */
export type FieldValue = string | number | boolean | null | Uint8Array | JsonValue;

/**
 * A field value in its stored form, identical in SQLite, in peer-log entries and on the wire:
 * booleans as 0/1, json as canonical JSON text (sorted keys), blobs as bytes.
 */
export type StoredValue = string | number | Uint8Array | null;

export type StoredValues = Record<string, StoredValue>;

/** A row as the host application reads and writes it. */
export interface Row {
  id: string;
  [field: string]: FieldValue;
}

export type ChangeOp = 'upsert' | 'update' | 'delete';

/**
 * One change to a shared record, as a conflict rule sees it. `upsert` carries every field of
 * the model, `update` only the fields it changes (field-level rules only), `delete` none.
 */
export interface Change {
  readonly op: ChangeOp;
  readonly id: string;
  /** Encoded HLC of the write. */
  readonly hlc: string;
  readonly fields: StoredValues | null;
}

/**
 * The stored state of a shared record, including everything its conflict rule needs, so the
 * outcome of a merge never depends on the peer log (which may be pruned).
 */
export interface SharedRowState {
  readonly id: string;
  /** Visible values; all null while the row is not live. */
  readonly values: StoredValues;
  /** Greatest HLC ever applied to the row: the winning clock for row-level LWW. */
  readonly hlc: string;
  /** Not live: deleted, or (field rules) only partial updates seen so far. */
  readonly deleted: boolean;
  /** Field rules only: the winning HLC of each field that was ever written. */
  readonly fieldHlcs: Readonly<Record<string, string>> | null;
  /** Field rules only: greatest HLC of a full write (`upsert`). */
  readonly upsertHlc: string | null;
  /** Greatest HLC of a delete (field rules), or of the delete that won (row LWW). */
  readonly deleteHlc: string | null;
}

/** The stored state of a device-owned record: single writer, ordered by the owner's version. */
export interface OwnedRowState {
  readonly id: string;
  readonly values: StoredValues;
  readonly owner: string;
  /** Per-owner version, strictly increasing over all of that owner's writes. */
  readonly version: number;
  readonly hlc: string;
  readonly deleted: boolean;
  /**
   * The owner's proof of this write (`library/signed-owned-rows.ts`); null for a row of this
   * device's not signed yet (signed when first read to be served: `sign-own-rows.ts`) or one
   * held from before owned rows were signed (adopted as trusted, never served).
   */
  readonly cert: Uint8Array | null;
}
