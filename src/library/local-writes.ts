import { v5 as uuidv5 } from 'uuid';
import { InternalError, NotFoundError, OwnershipError, ValidationError } from '../errors.js';
import type { HlcClock } from '../hlc/index.js';
import type { DeviceModel, Model, SharedModel } from '../models/define.js';
import { newestClockOf } from '../models/merge.js';
import type { ModelRegistry } from '../models/registry.js';
import type { Change, ChangeOp, OwnedRowState, Row, SharedRowState, StoredValues } from '../models/types.js';
import { checkRecordId, checkRecordSize, rowFromStored, storedFromFullRow, storedFromPartial } from '../models/values.js';
import type { ModelTable } from '../storage/model-table.js';
import type { RecordIds } from '../util/ids.js';
import type { WriteBatch } from './write-batch.js';

/** What a local write needs; one per open library. */
export interface WriteContext {
  readonly libraryId: string;
  readonly deviceId: string;
  readonly clock: HlcClock;
  readonly registry: ModelRegistry;
  readonly tables: ReadonlyMap<string, ModelTable>;
  /** The node's record ids (one pool per node, from its injected random and clock). */
  readonly recordIds: RecordIds;
}

/**
 * Local writes inside one transaction. Each computes the new row through the model registry
 * (the same apply path remote changes take) and, for shared models, appends the change to the
 * peer log with the next own sequence number.
 */
export class LocalWriter {
  constructor(
    private readonly ctx: WriteContext,
    private readonly batch: WriteBatch,
    /** Whether the sync engine's own models (membership) may be written. */
    private readonly allowSystem = false,
  ) {}

  private model(name: string): Model {
    const model = this.ctx.registry.get(name);
    if (model.ownership === 'shared' && model.system && !this.allowSystem) {
      throw new ValidationError(`model "${name}" is maintained by the sync engine and cannot be written directly`);
    }
    return model;
  }

  async upsert(modelName: string, input: Record<string, unknown>): Promise<Row> {
    const model = this.model(modelName);
    const values = storedFromFullRow(model, input);
    if (model.ownership === 'device') {
      const id = input.id === undefined ? this.ctx.recordIds.next() : checkRecordId(model, input.id);
      const current = input.id === undefined ? undefined : await this.ownedRow(model, id);
      return this.writeOwned(model, id, current === undefined ? 'upsert' : 'update', values, false, current);
    }
    const id = this.sharedId(model, input.id, values);
    // No read is needed when the stored row cannot matter: a freshly generated id does not exist
    // yet, and under row-level LWW a local upsert replaces the row whole, with a clock newer than
    // any stored (every transaction that stores a clock makes the clock receive it, see
    // `WriteBatch`). The table keeps a newer stored row regardless, and the batch fails the write
    // if it ever does (`putLocalShared`), so a broken clock cannot make this write lose silently.
    const blind = model.conflict === 'lww' || (input.id === undefined && model.conflict !== 'union');
    return this.writeShared(model, { op: 'upsert', id, fields: values }, blind ? undefined : 'load');
  }

  async update(modelName: string, idInput: string, partial: Record<string, unknown>): Promise<Row> {
    const model = this.model(modelName);
    const id = checkRecordId(model, idInput);
    const changes = storedFromPartial(model, partial);
    if (model.ownership === 'device') {
      const current = await this.liveOwnedRow(model, id);
      return this.writeOwned(model, id, 'update', { ...current.values, ...changes }, false, current);
    }
    const current = await this.liveSharedRow(model, id);
    if (model.conflict === 'lww') {
      // Row-level LWW compares whole rows, so the logged change carries the whole new row.
      return this.writeShared(model, { op: 'upsert', id, fields: { ...current.values, ...changes } }, current);
    }
    for (const key of model.naturalKey) {
      if (!(key in changes)) continue;
      if (changes[key] !== current.values[key]) {
        throw new ValidationError(`${model.name}.${key} is part of the natural key and cannot change`);
      }
      delete changes[key];
    }
    if (Object.keys(changes).length === 0) return rowFromStored(model, id, current.values);
    return this.writeShared(model, { op: 'update', id, fields: changes }, current);
  }

  async delete(modelName: string, idInput: string): Promise<void> {
    const model = this.model(modelName);
    const id = checkRecordId(model, idInput);
    if (model.ownership === 'device') {
      const current = await this.liveOwnedRow(model, id);
      const cleared: StoredValues = {};
      for (const key of Object.keys(current.values)) cleared[key] = null;
      await this.writeOwned(model, id, 'delete', cleared, true, current);
      return;
    }
    const current = await this.liveSharedRow(model, id);
    await this.writeShared(model, { op: 'delete', id, fields: null }, current);
  }

  private sharedId(model: SharedModel, given: unknown, values: StoredValues): string {
    if (model.conflict !== 'union') return given === undefined ? this.ctx.recordIds.next() : checkRecordId(model, given);
    const derived = naturalKeyId(this.ctx.libraryId, model, values);
    if (given !== undefined && given !== derived) {
      throw new ValidationError(
        `${model.name}: id ${JSON.stringify(given)} does not match the id derived from its natural key (${derived})`,
      );
    }
    return derived;
  }

  private async writeShared(
    model: SharedModel,
    change: Omit<Change, 'hlc'>,
    current: SharedRowState | undefined | 'load',
  ): Promise<Row> {
    if (change.fields) {
      checkRecordSize(model.name, change.fields);
      model.checkRecord?.(change.fields, change.op === 'upsert', change.id);
    }
    const table = this.table(model);
    const before = current === 'load' ? await this.batch.loadShared(table, change.id) : current;
    // The HLC's device part is the writer: two writers of this device never issue equal values.
    const origin = this.batch.ownOrigin(this.ctx.deviceId);
    const hlc = this.batch.stamp(origin);
    if (before) assertNewer(hlc, newestClockOf(before), model, change.id);
    const stamped: Change = { op: change.op, id: change.id, fields: change.fields, hlc };
    const state = this.ctx.registry.applyShared(model, before, stamped);
    // The row is what a snapshot carries: a write must not grow it past the limit either.
    checkRecordSize(`${model.name} ${change.id} after this write`, state.values);
    this.batch.putLocalShared(table, state);
    this.batch.appendLog({
      origin,
      seq: this.batch.seqOf(origin) + 1,
      hlc: stamped.hlc,
      model: model.name,
      id: change.id,
      op: change.op,
      fields: change.fields,
    });
    this.batch.events.push({ model: model.name, id: change.id, op: change.op, origin: 'local' });
    if (this.batch.full) await this.batch.flush();
    return rowFromStored(model, change.id, state.values);
  }

  private async writeOwned(
    model: DeviceModel,
    id: string,
    op: ChangeOp,
    values: StoredValues,
    deleted: boolean,
    current: OwnedRowState | undefined,
  ): Promise<Row> {
    checkRecordSize(model.name, values);
    const owner = this.ctx.deviceId;
    const version = this.batch.versionOf(owner) + 1;
    const hlc = this.batch.stamp();
    if (current) assertNewer(hlc, current.hlc, model, id);
    this.batch.setVersion(owner, version);
    // Signed with the other rows of the transaction when it writes them out (`WriteBatch.flush`).
    this.batch.putOwned(this.table(model), { id, values, owner, version, hlc, deleted, cert: null });
    this.batch.events.push({ model: model.name, id, op, origin: 'local' });
    if (this.batch.full) await this.batch.flush();
    return rowFromStored(model, id, values);
  }

  /** A device-owned row, if any; throws if it belongs to another device. */
  private async ownedRow(model: DeviceModel, id: string): Promise<OwnedRowState | undefined> {
    const current = await this.batch.loadOwned(this.table(model), id);
    if (current && current.owner !== this.ctx.deviceId) {
      throw new OwnershipError(
        `${model.name} ${id} is owned by device ${current.owner}; only its owner may write it`,
      );
    }
    return current;
  }

  private async liveOwnedRow(model: DeviceModel, id: string) {
    const current = await this.ownedRow(model, id);
    if (!current || current.deleted) throw new NotFoundError(`${model.name} ${id} does not exist`);
    return current;
  }

  private async liveSharedRow(model: SharedModel, id: string) {
    const current = await this.batch.loadShared(this.table(model), id);
    if (!current || current.deleted) throw new NotFoundError(`${model.name} ${id} does not exist`);
    return current;
  }

  private table(model: Model): ModelTable {
    return this.ctx.tables.get(model.name)!;
  }
}

/**
 * A local write replaces a row only with a clock newer than every clock the row holds; otherwise
 * it would resolve and lose (invariant 3 broken somewhere): fail the transaction instead.
 */
function assertNewer(hlc: string, newestHeld: string, model: Model, id: string): void {
  if (hlc > newestHeld) return;
  throw new InternalError(
    `internal: the clock issued ${hlc} for a write of ${model.name} ${id}, which holds a clock as new as ` +
      `${newestHeld} (HLC invariant broken); the transaction is rolled back`,
  );
}

/**
 * The id of a `union` record: UUID v5 of its natural-key values, namespaced by the library, so
 * every device that creates "the same" record computes the same id.
 */
export function naturalKeyId(libraryId: string, model: SharedModel, values: StoredValues): string {
  const key = JSON.stringify([model.name, ...model.naturalKey.map((k) => values[k] ?? null)]);
  return uuidv5(key, libraryId);
}
