import { NotFoundError, ValidationError } from '../errors.js';
import { type Model, type SharedModel, usesFieldClocks } from './define.js';
import { mergeFieldLww, mergeRowLww } from './merge.js';
import type { Change, SharedRowState } from './types.js';

/**
 * The model registry: the set of models of a node and the apply function of each. Every row
 * change, local or remote, is computed here, so a local write and the same change arriving from
 * a peer always produce the same state.
 */
export class ModelRegistry {
  private readonly byName: ReadonlyMap<string, Model>;

  constructor(models: readonly Model[]) {
    const byName = new Map<string, Model>();
    for (const model of models) {
      if (byName.has(model.name)) throw new ValidationError(`model "${model.name}" is declared twice`);
      byName.set(model.name, model);
    }
    this.byName = byName;
  }

  /** Models in canonical (name) order. */
  all(): Model[] {
    return [...this.byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  get(name: string): Model {
    const model = typeof name === 'string' ? this.byName.get(name) : undefined;
    if (!model) throw new NotFoundError(`unknown model ${JSON.stringify(name)}`);
    return model;
  }

  shared(name: string): SharedModel {
    const model = this.get(name);
    if (model.ownership !== 'shared') throw new ValidationError(`model "${name}" is device-owned, not shared`);
    return model;
  }

  /** Computes the state of a shared row after `change`. */
  applyShared(model: SharedModel, current: SharedRowState | undefined, change: Change): SharedRowState {
    if (change.op === 'update' && !usesFieldClocks(model)) {
      throw new ValidationError(`${model.name}: partial updates are not valid under row-level LWW`);
    }
    if (model.apply) return checkCustomResult(model, model.apply(current, change), change);
    return model.conflict === 'lww' ? mergeRowLww(model, current, change) : mergeFieldLww(model, current, change);
  }
}

/** A custom apply function is host code: make sure what it returns can be stored. */
function checkCustomResult(model: SharedModel, state: SharedRowState, change: Change): SharedRowState {
  if (
    state === null ||
    typeof state !== 'object' ||
    state.id !== change.id ||
    typeof state.hlc !== 'string' ||
    typeof state.deleted !== 'boolean' ||
    state.values === null ||
    typeof state.values !== 'object'
  ) {
    throw new ValidationError(`${model.name}: custom apply returned an invalid state for record ${change.id}`);
  }
  for (const name of Object.keys(state.values)) {
    if (!model.fieldsByName.has(name)) {
      throw new ValidationError(`${model.name}: custom apply returned unknown field "${name}"`);
    }
  }
  return state;
}
