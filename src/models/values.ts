import { pack } from '../util/msgpack.js';
import { ValidationError } from '../errors.js';
import type { FieldDefinition, Model } from './define.js';
import type { FieldValue, JsonValue, Row, StoredValue, StoredValues } from './types.js';

const MAX_ID_LENGTH = 256;

export function checkRecordId(model: Model, id: unknown): string {
  if (typeof id !== 'string' || id.length === 0 || id.length > MAX_ID_LENGTH || !isWellFormed(id)) {
    throw new ValidationError(`${model.name}: id must be a non-empty string of at most ${MAX_ID_LENGTH} characters, without lone surrogates`);
  }
  return id;
}

/** A surrogate half without its other half. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Whether a string is well-formed UTF-16 (no lone surrogate, e.g. an emoji cut in half by
 * `slice`). Such a string cannot be stored or sent as it is: msgpack and SQLite turn each lone
 * surrogate into U+FFFD, so replicas would hold other text than the writer, and a device-owned
 * row's certificate (over the text as written) would verify nowhere.
 */
function isWellFormed(text: string): boolean {
  return !LONE_SURROGATE.test(text);
}

/**
 * Text, integer, real and blob values have the same form for the host and in storage; returns
 * the value if it fits the type, otherwise undefined.
 */
function sameFormValue(field: FieldDefinition, value: unknown): StoredValue | undefined {
  switch (field.type) {
    case 'text':
      return typeof value === 'string' && isWellFormed(value) ? value : undefined;
    case 'integer':
      return typeof value === 'number' && Number.isSafeInteger(value) ? value : undefined;
    case 'real':
      return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
    case 'blob':
      return value instanceof Uint8Array ? value : undefined;
    default:
      return undefined;
  }
}

/** null for a nullable field; throws for a required one. */
function checkNull(model: Model, field: FieldDefinition): null {
  if (field.nullable) return null;
  throw new ValidationError(`${model.name}.${field.name} is required and must not be null`);
}

/** Converts a host value to its stored form, or throws `ValidationError`. */
export function toStored(model: Model, field: FieldDefinition, value: FieldValue | undefined): StoredValue {
  if (value === null || value === undefined) return checkNull(model, field);
  const where = `${model.name}.${field.name}`;
  if (field.type === 'json') return canonicalJson(value, where);
  const stored = field.type === 'boolean' ? (typeof value === 'boolean' ? (value ? 1 : 0) : undefined) : sameFormValue(field, value);
  if (stored === undefined && typeof value === 'string' && field.type === 'text') {
    throw new ValidationError(`${where} holds a lone surrogate (half of a character, e.g. an emoji cut by slice): it cannot be stored as written`);
  }
  if (stored === undefined) throw new ValidationError(`${where} must be of type ${field.type}, got ${describe(value)}`);
  return stored;
}

/** Converts a stored value back to what the host wrote. */
export function fromStored(field: FieldDefinition, value: StoredValue): FieldValue {
  if (value === null) return null;
  switch (field.type) {
    case 'boolean':
      return value === 1;
    case 'json':
      return JSON.parse(value as string) as JsonValue;
    case 'blob':
      // Drivers hand back their own byte type (Buffer in Node); hosts get a plain view.
      return value instanceof Uint8Array && value.constructor !== Uint8Array
        ? new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
        : value;
    default:
      return value;
  }
}

/**
 * Checks a value that arrived in stored form (from a peer): the type must match exactly and
 * json must be canonical, so that every device stores byte-identical values.
 */
export function checkStored(model: Model, field: FieldDefinition, value: unknown): StoredValue {
  if (value === null || value === undefined) return checkNull(model, field);
  let stored: StoredValue | undefined;
  if (field.type === 'boolean') stored = value === 0 || value === 1 ? value : undefined;
  else if (field.type === 'json') stored = typeof value === 'string' && isCanonicalJson(value) ? value : undefined;
  else stored = sameFormValue(field, value);
  if (stored === undefined) {
    throw new ValidationError(`${model.name}.${field.name} must be a stored ${field.type}, got ${describe(value)}`);
  }
  return stored;
}

/** A full row from the host: every non-nullable field present, no unknown fields. */
export function storedFromFullRow(model: Model, input: Record<string, unknown>): StoredValues {
  rejectUnknownFields(model, input, true);
  const values: StoredValues = {};
  for (const field of model.fields) values[field.name] = toStored(model, field, input[field.name] as FieldValue);
  return values;
}

/** A partial change from the host: only declared fields, at least one. */
export function storedFromPartial(model: Model, input: Record<string, unknown>): StoredValues {
  if (input === null || typeof input !== 'object') throw new ValidationError(`${model.name}: change must be an object`);
  rejectUnknownFields(model, input, false);
  const values: StoredValues = {};
  for (const [name, value] of Object.entries(input)) {
    values[name] = toStored(model, model.fieldsByName.get(name)!, value as FieldValue);
  }
  if (Object.keys(values).length === 0) throw new ValidationError(`${model.name}: update names no fields`);
  return values;
}

/**
 * The record size limit: the largest encoding (msgpack, stored form) of the field values one
 * record carries — a log entry's fields, a device-owned row's values, a snapshot row's values,
 * a member row. It holds for every record, written here or received: a larger one is refused
 * (`ValidationError`), so every record fits one page and one frame with room to spare (the
 * relation is checked in `src/protocol/messages.ts`).
 */
export const MAX_RECORD_BYTES = 1024 * 1024;

/**
 * An upper bound of `pack(values).byteLength`, without encoding: the map header, and per field
 * its key and value (UTF-8 takes at most 3 bytes per UTF-16 unit; 5 bytes of header each).
 */
export function encodedSizeBound(values: StoredValues): number {
  let bytes = 5;
  for (const [key, value] of Object.entries(values)) {
    bytes += key.length * 3 + 5;
    bytes += typeof value === 'string' ? value.length * 3 + 5 : value instanceof Uint8Array ? value.byteLength + 5 : 9;
  }
  return bytes;
}

/** Whether `values` encode to more than the record size limit (encoded only when they may). */
export function exceedsRecordLimit(values: StoredValues): boolean {
  return encodedSizeBound(values) > MAX_RECORD_BYTES && pack(values).byteLength > MAX_RECORD_BYTES;
}

/** Refuses a record over the size limit (`where` names it in the message). */
export function checkRecordSize(where: string, values: StoredValues): void {
  if (exceedsRecordLimit(values)) {
    throw new ValidationError(`${where}: record is larger than ${MAX_RECORD_BYTES} bytes encoded (${pack(values).byteLength})`);
  }
}

export function rowFromStored(model: Model, id: string, values: StoredValues): Row {
  const row: Row = { id };
  for (const field of model.fields) row[field.name] = fromStored(field, values[field.name] ?? null);
  return row;
}

function rejectUnknownFields(model: Model, input: Record<string, unknown>, allowId: boolean): void {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new ValidationError(`${model.name}: row must be an object`);
  }
  for (const name of Object.keys(input)) {
    if (name === 'id' && allowId) continue;
    if (!model.fieldsByName.has(name)) {
      throw new ValidationError(`${model.name}: unknown field "${name}"`);
    }
  }
}

/** JSON text with object keys sorted, so equal values are stored byte-identically everywhere. */
export function canonicalJson(value: unknown, where: string): string {
  return JSON.stringify(canonicalize(value, where));
}

function canonicalize(value: unknown, where: string): JsonValue {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') {
    if (Number.isFinite(value)) return value;
    throw new ValidationError(`${where}: json numbers must be finite`);
  }
  if (Array.isArray(value)) return value.map((item) => canonicalize(item, where));
  const proto = typeof value === 'object' ? Object.getPrototypeOf(value) : undefined;
  if (proto === Object.prototype || proto === null) {
    // No prototype, so an own "__proto__" key (as JSON.parse makes) stays an ordinary key.
    const out: Record<string, JsonValue> = Object.create(null);
    for (const key of Object.keys(value as object).sort()) {
      const item = (value as Record<string, unknown>)[key];
      if (item !== undefined) out[key] = canonicalize(item, where);
    }
    return out;
  }
  throw new ValidationError(`${where} must be a JSON value, got ${describe(value)}`);
}

function isCanonicalJson(text: string): boolean {
  try {
    return canonicalJson(JSON.parse(text), '') === text;
  } catch {
    return false;
  }
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (value instanceof Uint8Array) return 'bytes';
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  return typeof value;
}
