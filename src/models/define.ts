import { ModelDefinitionError } from '../errors.js';
import type { Change, FieldType, SharedRowState, StoredValues } from './types.js';

export interface FieldSpec {
  type: FieldType;
  nullable?: boolean;
}

/** A field given as a bare type is required (not nullable). */
export type FieldInput = FieldType | FieldSpec;

/**
 * A custom conflict rule. It must be a pure function of its inputs, and merging must be
 * commutative, associative and idempotent: applying the same set of changes in any order, with
 * duplicates, must produce the same state. See docs/models.md for the contract.
 */
export type ApplyFunction = (current: SharedRowState | undefined, change: Change) => SharedRowState;

export type ConflictRule = 'lww' | 'lww-field' | 'union';

interface ModelInputBase {
  name: string;
  fields: Record<string, FieldInput>;
}

export interface DeviceModelInput extends ModelInputBase {
  ownership: 'device';
}

export interface SharedModelInput extends ModelInputBase {
  ownership: 'shared';
  conflict: ConflictRule;
  /** Required for `union`: fields whose values identify the record (deterministic id). */
  naturalKey?: string[];
  /** Replaces the built-in merge of `conflict`; the stored shape is still `conflict`'s. */
  apply?: ApplyFunction;
}

export type ModelInput = DeviceModelInput | SharedModelInput;

export interface FieldDefinition {
  readonly name: string;
  readonly type: FieldType;
  readonly nullable: boolean;
}

interface ModelBase {
  readonly name: string;
  /** Fields in declaration order: the canonical order for storage and digests. */
  readonly fields: readonly FieldDefinition[];
  readonly fieldsByName: ReadonlyMap<string, FieldDefinition>;
}

export interface DeviceModel extends ModelBase {
  readonly ownership: 'device';
}

export interface SharedModel extends ModelBase {
  readonly ownership: 'shared';
  readonly conflict: ConflictRule;
  readonly naturalKey: readonly string[];
  readonly apply: ApplyFunction | undefined;
  /** Internal to the sync engine (membership): the public write API refuses it. */
  readonly system?: true;
  /**
   * System models only: checks beyond the field types, run on every record of the model that is
   * written here or arrives (a change's fields, `whole` for an upsert; a live snapshot row's
   * values, whole), with the record id. Throws `ValidationError`.
   */
  readonly checkRecord?: (fields: StoredValues, whole: boolean, id: string) => void;
  /**
   * System models with a custom apply only: the join of two states of a row (snapshot merges),
   * which a custom apply otherwise lacks (the newer clock wins).
   */
  readonly join?: (a: SharedRowState, b: SharedRowState) => SharedRowState;
}

export type Model = DeviceModel | SharedModel;

/** Fields of one model at most, so a row's clocks stay small beside its values (see MAX_RECORD_BYTES). */
export const MAX_FIELDS = 256;
const MODEL_NAME = /^[a-z][a-z0-9_]{0,62}$/;
const FIELD_NAME = /^[A-Za-z][A-Za-z0-9_]{0,62}$/;
const FIELD_TYPES: ReadonlySet<string> = new Set(['text', 'integer', 'real', 'boolean', 'json', 'blob']);
const RESERVED_FIELDS = new Set(['id']);

/** Field-level rules keep one HLC per field; row LWW keeps one per row. */
export function usesFieldClocks(model: Model): boolean {
  return model.ownership === 'shared' && model.conflict !== 'lww';
}

/**
 * Declares a data model: its name, who writes it (`ownership`), its fields and, for shared
 * models, the conflict rule that decides between concurrent writes (docs/models.md). Throws
 * `ModelDefinitionError` for a definition that breaks a rule.
 *
 * @example
 * ```ts
 * const Note = defineModel({ name: 'note', ownership: 'shared', conflict: 'lww-field', fields: { title: 'text', body: { type: 'text', nullable: true } } });
 * const Tag = defineModel({ name: 'tag', ownership: 'shared', conflict: 'union', naturalKey: ['label'], fields: { label: 'text' } });
 * const Location = defineModel({ name: 'location', ownership: 'device', fields: { path: 'text' } });
 * const node = await createSyncNode({ dataDir, models: [Note, Tag, Location] });
 * ```
 */
export function defineModel(input: ModelInput): Model {
  const name = input.name;
  if (typeof name !== 'string' || !MODEL_NAME.test(name) || name.startsWith('sync_')) {
    throw new ModelDefinitionError(
      `model name ${JSON.stringify(name)} must match ${MODEL_NAME} and must not start with "sync_"`,
    );
  }
  const fields = Object.entries(input.fields ?? {}).map(([fieldName, spec]) => defineField(name, fieldName, spec));
  if (fields.length === 0) throw new ModelDefinitionError(`model "${name}" declares no fields`);
  if (fields.length > MAX_FIELDS) throw new ModelDefinitionError(`model "${name}" declares more than ${MAX_FIELDS} fields`);
  const fieldsByName = new Map(fields.map((f) => [f.name, f]));
  // SQLite column names are case-insensitive, so "title" and "Title" would be one column.
  if (new Set(fields.map((f) => f.name.toLowerCase())).size !== fields.length) {
    throw new ModelDefinitionError(`model "${name}" declares two fields whose names differ only in case`);
  }

  if (input.ownership === 'device') {
    if ('conflict' in input || 'naturalKey' in input || 'apply' in input) {
      throw new ModelDefinitionError(
        `model "${name}" is device-owned: only its owner writes it, so conflict, naturalKey and apply do not apply`,
      );
    }
    return { name, ownership: 'device', fields, fieldsByName };
  }
  if (input.ownership !== 'shared') {
    throw new ModelDefinitionError(`model "${name}": ownership must be 'device' or 'shared'`);
  }
  if (input.conflict !== 'lww' && input.conflict !== 'lww-field' && input.conflict !== 'union') {
    throw new ModelDefinitionError(`model "${name}": conflict must be 'lww', 'lww-field' or 'union'`);
  }
  const naturalKey = input.naturalKey ?? [];
  if (input.conflict === 'union') {
    if (naturalKey.length === 0) {
      throw new ModelDefinitionError(`model "${name}" uses 'union' and must declare a naturalKey`);
    }
    for (const key of naturalKey) {
      const field = fieldsByName.get(key);
      if (!field) throw new ModelDefinitionError(`model "${name}": naturalKey field "${key}" is not declared`);
      if (field.nullable) throw new ModelDefinitionError(`model "${name}": naturalKey field "${key}" must not be nullable`);
      if (field.type === 'blob') throw new ModelDefinitionError(`model "${name}": naturalKey field "${key}" must not be a blob`);
    }
  } else if (naturalKey.length > 0) {
    throw new ModelDefinitionError(`model "${name}": naturalKey is only meaningful with conflict 'union'`);
  }
  if (input.apply !== undefined && typeof input.apply !== 'function') {
    throw new ModelDefinitionError(`model "${name}": apply must be a function`);
  }
  return {
    name,
    ownership: 'shared',
    fields,
    fieldsByName,
    conflict: input.conflict,
    naturalKey,
    apply: input.apply,
  };
}

function defineField(model: string, name: string, spec: FieldInput): FieldDefinition {
  if (!FIELD_NAME.test(name) || RESERVED_FIELDS.has(name.toLowerCase())) {
    throw new ModelDefinitionError(
      `model "${model}": field name "${name}" must match ${FIELD_NAME} and must not be "id"`,
    );
  }
  const type = typeof spec === 'string' ? spec : spec?.type;
  if (typeof type !== 'string' || !FIELD_TYPES.has(type)) {
    throw new ModelDefinitionError(`model "${model}": field "${name}" has unknown type ${JSON.stringify(type)}`);
  }
  const nullable = typeof spec === 'object' && spec.nullable === true;
  return { name, type: type as FieldType, nullable };
}
