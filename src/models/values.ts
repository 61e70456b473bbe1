import { ValidationError } from '../errors.js';
import type { FieldDefinition, Model } from './define.js';
import type { FieldValue, JsonValue, Row, StoredValue, StoredValues } from './types.js';

const MAX_ID_LENGTH = 256;

export function checkRecordId(model: Model, id: unknown): string {
  if (typeof id !== 'string' || id.length === 0 || id.length > MAX_ID_LENGTH) {
    throw new ValidationError(`${model.name}: id must be a non-empty string of at most ${MAX_ID_LENGTH} characters`);
  }
  return id;
}

/** Converts a host value to its stored form, or throws `ValidationError`. */
export function toStored(model: Model, field: FieldDefinition, value: FieldValue | undefined): StoredValue {
  const where = `${model.name}.${field.name}`;
  if (value === null || value === undefined) {
    if (field.nullable) return null;
    throw new ValidationError(`${where} is required and must not be null`);
  }
  switch (field.type) {
    case 'text':
      if (typeof value === 'string') return value;
      break;
    case 'integer':
      if (typeof value === 'number' && Number.isSafeInteger(value)) return value;
      break;
    case 'real':
      if (typeof value === 'number' && Number.isFinite(value)) return value;
      break;
    case 'boolean':
      if (typeof value === 'boolean') return value ? 1 : 0;
      break;
    case 'json':
      return canonicalJson(value, where);
    case 'blob':
      if (value instanceof Uint8Array) return value;
      break;
  }
  throw new ValidationError(`${where} must be of type ${field.type}, got ${describe(value)}`);
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
  const where = `${model.name}.${field.name}`;
  if (value === null || value === undefined) {
    if (field.nullable) return null;
    throw new ValidationError(`${where} is required and must not be null`);
  }
  switch (field.type) {
    case 'text':
      if (typeof value === 'string') return value;
      break;
    case 'integer':
      if (typeof value === 'number' && Number.isSafeInteger(value)) return value;
      break;
    case 'real':
      if (typeof value === 'number' && Number.isFinite(value)) return value;
      break;
    case 'boolean':
      if (value === 0 || value === 1) return value;
      break;
    case 'json':
      if (typeof value === 'string' && isCanonicalJson(value)) return value;
      break;
    case 'blob':
      if (value instanceof Uint8Array) return value;
      break;
  }
  throw new ValidationError(`${where} must be a stored ${field.type}, got ${describe(value)}`);
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
  if (typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    const out: Record<string, JsonValue> = {};
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
