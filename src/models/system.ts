import type { FieldDefinition, SharedModel } from './define.js';

const memberFields: readonly FieldDefinition[] = [
  { name: 'peer', type: 'text', nullable: false },
  { name: 'addrs', type: 'json', nullable: false },
];

/**
 * The member list of a library is itself synced data: one row per member device (id = device
 * id) with its PeerId and last known addresses. Field-level LWW lets a device refresh its own
 * addresses without clobbering anything else. Written only by the engine (invites, address
 * refresh); the public write API refuses it.
 */
export const MEMBERS_MODEL: SharedModel = {
  name: 'sync_members',
  ownership: 'shared',
  conflict: 'lww-field',
  naturalKey: [],
  apply: undefined,
  system: true,
  fields: memberFields,
  fieldsByName: new Map(memberFields.map((f) => [f.name, f])),
};

export const SYSTEM_MODELS: readonly SharedModel[] = [MEMBERS_MODEL];
