import { ValidationError } from '../errors.js';
import type { FieldDefinition, SharedModel } from './define.js';
import { decodeHlc, isDeviceId } from '../hlc/index.js';
import { isWriterOf } from '../library/writers.js';
import { mayBind } from '../membership/device-id.js';
import { newerState } from './merge.js';
import { canonicalJson } from './values.js';
import type { Change, SharedRowState, StoredValues } from './types.js';

const memberFields: readonly FieldDefinition[] = [
  { name: 'peer', type: 'text', nullable: false },
  { name: 'addrs', type: 'json', nullable: false },
  // Added with protocol 1.2: rows written by 1.1 devices carry none (see checkFields).
  { name: 'name', type: 'text', nullable: true },
];

/**
 * The member list of a library is itself synced data: one row per member device (id = device
 * id) with its PeerId, last known addresses and name (`deviceName`). Written only by the engine
 * (invites, the device's own address and name refresh); the public write API refuses it.
 *
 * A row is written whole, and its merge (`applyMember`) keeps what a member cannot take from
 * another: the PeerId a device id is bound to never changes, and once the device wrote its own
 * row, only its own writes change it (docs/architecture.md, "Trust model").
 */
export const MEMBERS_MODEL: SharedModel = {
  name: 'sync_members',
  ownership: 'shared',
  conflict: 'lww-field',
  naturalKey: [],
  apply: applyMember,
  system: true,
  checkRecord: checkMemberRecord,
  join: joinMembers,
  fields: memberFields,
  fieldsByName: new Map(memberFields.map((f) => [f.name, f])),
};

/**
 * A member row's merge. The binding of device id to PeerId is fixed by the first row held: a
 * key-derived id only ever binds its own PeerId (`checkMemberRecord` refuses another), and a
 * pre-2.0 id keeps the PeerId it was first held with, so a row naming another PeerId changes
 * nothing (a no-op, not an error: the entry stays in its writer's log, which must not stall).
 * Of the rows naming the bound PeerId, one the device wrote itself beats one written by another
 * member (the inviter's first row, or a member's attempt to move its addresses), and among
 * equals the newer clock wins: a join, whatever the order rows arrive in.
 */
function applyMember(current: SharedRowState | undefined, change: Change): SharedRowState {
  if (change.op !== 'upsert') throw new ValidationError('sync_members: a member row is written whole (upsert), never partially');
  const proposed = memberState(change);
  return current === undefined ? proposed : joinMembers(current, proposed);
}

/** The join of two states of one member row; `held` keeps its PeerId if they differ. */
function joinMembers(held: SharedRowState, other: SharedRowState): SharedRowState {
  if (held.values.peer !== other.values.peer) return held;
  const rank = (state: SharedRowState) => (isWriterOf(decodeHlc(state.hlc).deviceId, state.id) ? 1 : 0);
  const [heldRank, otherRank] = [rank(held), rank(other)];
  if (otherRank !== heldRank) return otherRank > heldRank ? other : held;
  return newerState(MEMBERS_MODEL, held, other);
}

function memberState(change: Change): SharedRowState {
  const values = { ...change.fields! };
  if (!('name' in values)) values.name = null;
  return { id: change.id, values, hlc: change.hlc, deleted: false, fieldHlcs: {}, upsertHlc: change.hlc, deleteHlc: null };
}

/** Bounds of a member row, as for the addresses a joiner sends (`join.addrs`). */
export const MAX_MEMBER_ADDRS = 32;
export const MAX_ADDR_LENGTH = 512;
export const MAX_PEER_ID_LENGTH = 128;
/** Longest device name (`createSyncNode({ deviceName })`, `join.name`), in UTF-16 units. */
export const MAX_DEVICE_NAME_LENGTH = 128;

/** Whether `name` can be a device name: a string of 1 to `MAX_DEVICE_NAME_LENGTH` units, not blank. */
export function isDeviceName(name: unknown): name is string {
  return typeof name === 'string' && name.trim() !== '' && name.length <= MAX_DEVICE_NAME_LENGTH;
}

/**
 * A member row is written whole (the engine only ever upserts it), so its PeerId and addresses
 * are checked together: every address is a multiaddr string, and one that ends in a PeerId must
 * end in the row's own. Dialling an address that ends in another PeerId reaches that peer (a
 * member's address listed under another member would make this node dial the wrong peer).
 */
function checkMemberRecord(fields: StoredValues, whole: boolean, id: string): void {
  if (!whole) throw new ValidationError('sync_members: a member row is written whole (upsert), never partially');
  const peer = fields.peer;
  if (typeof peer !== 'string' || peer.length === 0 || peer.length > MAX_PEER_ID_LENGTH || peer.includes('/')) {
    throw new ValidationError(`sync_members: peer must be a PeerId of 1 to ${MAX_PEER_ID_LENGTH} characters`);
  }
  if (!mayBind(id, peer)) {
    throw new ValidationError(`sync_members: device id ${id} is derived from another key than PeerId ${peer}`);
  }
  if (fields.name !== null && fields.name !== undefined && !isDeviceName(fields.name)) {
    throw new ValidationError(`sync_members: name must be null or a non-blank string of at most ${MAX_DEVICE_NAME_LENGTH} characters`);
  }
  const addrs: unknown = JSON.parse(fields.addrs as string);
  if (!Array.isArray(addrs) || addrs.length > MAX_MEMBER_ADDRS) {
    throw new ValidationError(`sync_members: addrs must be an array of at most ${MAX_MEMBER_ADDRS} multiaddrs`);
  }
  for (const addr of addrs) {
    if (typeof addr !== 'string' || !addr.startsWith('/') || addr.length > MAX_ADDR_LENGTH) {
      throw new ValidationError(`sync_members: an address must be a multiaddr string of at most ${MAX_ADDR_LENGTH} characters`);
    }
    const target = endingPeerId(addr);
    if (target !== undefined && target !== peer) {
      throw new ValidationError(`sync_members: address ${addr} ends in PeerId ${target}, not the member's ${peer}`);
    }
  }
}

/** The PeerId a multiaddr string ends in (`…/p2p/<id>`, or the older `…/ipfs/<id>`), if any. */
function endingPeerId(addr: string): string | undefined {
  const parts = addr.split('/');
  const protocol = parts.at(-2);
  return protocol === 'p2p' || protocol === 'ipfs' ? parts.at(-1) : undefined;
}

const removalFields: readonly FieldDefinition[] = [
  { name: 'by', type: 'text', nullable: false },
  { name: 'kind', type: 'text', nullable: false },
];

/**
 * Removals of member devices (`lib.removeMember`, `lib.leave`): one row per removed device (id =
 * its device id), with the remover's device id (`by`) and `kind` ('removed' or 'left'). Written
 * only by the engine, never deleted or undone. The row's clock is the removal's cutoff: changes
 * the removed device authored after it are refused by every member. Of concurrent removals of
 * one device the EARLIEST wins (rights only shrink, and every replica must agree on one cutoff),
 * so the row keeps the upsert with the smallest clock: a join like any conflict rule (the set
 * of removals decides it, not their order). The table is field-LWW shaped (written whole, with
 * `INSERT OR REPLACE`), so the smaller clock can replace a stored greater one.
 */
export const REMOVALS_MODEL: SharedModel = {
  name: 'sync_removals',
  ownership: 'shared',
  conflict: 'lww-field',
  naturalKey: [],
  apply: applyRemoval,
  system: true,
  checkRecord: checkRemovalRecord,
  join: earlierRemoval,
  fields: removalFields,
  fieldsByName: new Map(removalFields.map((f) => [f.name, f])),
};

function applyRemoval(current: SharedRowState | undefined, change: Change): SharedRowState {
  if (change.op !== 'upsert') throw new ValidationError('sync_removals: a removal is written whole and never changed or deleted');
  const proposed = { id: change.id, values: change.fields!, hlc: change.hlc, deleted: false, fieldHlcs: {}, upsertHlc: change.hlc, deleteHlc: null };
  return current === undefined ? proposed : earlierRemoval(current, proposed);
}

/**
 * The earlier of two removals of one device; of two with one clock (only a forked device signs
 * such), the one `newerState` orders first by content, so every replica keeps the same.
 */
function earlierRemoval(held: SharedRowState, other: SharedRowState): SharedRowState {
  if (held.hlc !== other.hlc) return other.hlc < held.hlc ? other : held;
  return newerState(REMOVALS_MODEL, held, other);
}

function checkRemovalRecord(fields: StoredValues, whole: boolean): void {
  if (!whole) throw new ValidationError('sync_removals: a removal is written whole (upsert), never partially');
  if (!isDeviceId(fields.by)) throw new ValidationError('sync_removals: by must be a device id');
  if (fields.kind !== 'removed' && fields.kind !== 'left') throw new ValidationError("sync_removals: kind must be 'removed' or 'left'");
}

const keptFields: readonly FieldDefinition[] = [
  { name: 'device', type: 'text', nullable: false },
  { name: 'member', type: 'text', nullable: false },
  // `{ writer id: seq }`: positions of the removed device's writers the member held.
  { name: 'writers', type: 'json', nullable: false },
  // The removed device's device-owned version the member held.
  { name: 'owned', type: 'integer', nullable: false },
];

/**
 * What a member took of a removed device after the device's cutoff, before it learned of the
 * removal (docs/architecture.md, "The cutoff rule"): one row per removed device and member
 * (id = `<device>/<member>`), written only by that member's engine (`LibraryEngine.recordKept`),
 * with the positions it held of the device's writers and the version of its device-owned rows.
 * Every member keeps the removed device's changes through the greatest such position (and rows
 * through the greatest version), so members that took them and members that refused them agree.
 * Positions only grow: the merge keeps the greater of each (`joinKept`), whatever the clocks, and
 * a row is refused unless its member wrote it.
 */
export const KEPT_MODEL: SharedModel = {
  name: 'sync_removal_kept',
  ownership: 'shared',
  conflict: 'lww-field',
  naturalKey: [],
  apply: applyKept,
  system: true,
  checkRecord: checkKeptRecord,
  join: joinKept,
  fields: keptFields,
  fieldsByName: new Map(keptFields.map((f) => [f.name, f])),
};

/** The id of `member`'s row of what it kept of removed `device`. */
export function keptRowId(device: string, member: string): string {
  return `${device}/${member}`;
}

/** Positions per writer, as a kept row holds them. */
export function keptWriters(values: StoredValues): Map<string, number> {
  return new Map(Object.entries(JSON.parse(values.writers as string) as Record<string, number>));
}

function applyKept(current: SharedRowState | undefined, change: Change): SharedRowState {
  if (change.op !== 'upsert') throw new ValidationError('sync_removal_kept: a row is written whole (upsert), never partially');
  const author = decodeHlc(change.hlc).deviceId;
  if (!isWriterOf(author, change.fields!.member as string)) {
    throw new ValidationError(`sync_removal_kept: ${change.id} is written by ${author}, not by its member`);
  }
  const proposed = { id: change.id, values: change.fields!, hlc: change.hlc, deleted: false, fieldHlcs: {}, upsertHlc: change.hlc, deleteHlc: null };
  return current === undefined ? proposed : joinKept(current, proposed);
}

/** The greater position of each writer and the greater owned version of two kept rows; the newer clock. */
function joinKept(held: SharedRowState, other: SharedRowState): SharedRowState {
  const writers = keptWriters(held.values);
  for (const [writer, seq] of keptWriters(other.values)) writers.set(writer, Math.max(seq, writers.get(writer) ?? 0));
  const newer = newerState(KEPT_MODEL, held, other);
  return {
    ...newer,
    values: {
      ...newer.values,
      writers: canonicalJson(Object.fromEntries(writers), 'sync_removal_kept'),
      owned: Math.max(held.values.owned as number, other.values.owned as number),
    },
  };
}

function checkKeptRecord(fields: StoredValues, whole: boolean, id: string): void {
  if (!whole) throw new ValidationError('sync_removal_kept: a row is written whole (upsert), never partially');
  const { device, member } = fields;
  if (!isDeviceId(device) || !isDeviceId(member) || device === member || id !== keptRowId(device, member)) {
    throw new ValidationError('sync_removal_kept: device and member must be two device ids, and the id `<device>/<member>`');
  }
  const writers: unknown = JSON.parse(fields.writers as string);
  const positions = writers !== null && typeof writers === 'object' && !Array.isArray(writers) ? Object.entries(writers) : undefined;
  if (!positions || positions.length > MAX_KEPT_WRITERS || positions.some(([writer, seq]) => !isWriterOf(writer, device) || !isPosition(seq))) {
    throw new ValidationError(`sync_removal_kept: writers must map at most ${MAX_KEPT_WRITERS} writers of the device to positions`);
  }
  if (!isPosition(fields.owned)) throw new ValidationError('sync_removal_kept: owned must be a version');
}

/** Writers of one removed device a kept row names at most (a library holds 1 024 origins). */
const MAX_KEPT_WRITERS = 1_024;

function isPosition(value: unknown): boolean {
  return Number.isSafeInteger(value) && (value as number) >= 0 && (value as number) <= 2 ** 52;
}

export const SYSTEM_MODELS: readonly SharedModel[] = [MEMBERS_MODEL, REMOVALS_MODEL, KEPT_MODEL];
