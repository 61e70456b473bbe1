import { bytesToHex } from '@noble/hashes/utils.js';
import type { Random } from '../runtime/runtime.js';

/**
 * Writer ids: the log origins of one device's own shared changes (docs/architecture.md, "A log
 * position is never reused"). A device's first writer is its device id; a later one keeps the
 * device id's first three groups (`xxxxxxxx-xxxx-4xxx`, 60 random bits of it) and draws the
 * other two at random, so any member maps an origin to its device from the member list alone,
 * without a record that would itself have to travel in the new writer's log first.
 */
const DEVICE_PART = 19;

/** A fresh writer id of `device`: no partner can hold any entry of it. */
export function newWriterId(device: string, source: Random): string {
  const random = source.bytes(8);
  // RFC 4122 variant bits, so the id stays a well-formed v4 uuid.
  random[0] = (random[0]! & 0x3f) | 0x80;
  const hex = bytesToHex(random);
  return `${device.slice(0, DEVICE_PART)}${hex.slice(0, 4)}-${hex.slice(4)}`;
}

/** Whether `origin` is one of `device`'s writers (its device id or one derived from it). */
export function isWriterOf(origin: string, device: string): boolean {
  return origin.length === device.length && origin.startsWith(writerPrefix(device));
}

/** The part of a device id (or of a writer id) that every writer of the device shares. */
export function writerPrefix(id: string): string {
  return id.slice(0, DEVICE_PART);
}

/**
 * The writer this device appends its shared changes to in this run. `confirmed`: no partner
 * can hold a position of it that this device has not written (it was made in this run, or the
 * first partner met holds no more of it, with the same entry at its position). `retired`: a
 * partner held more of it than this device, so it is never appended to again (persisted).
 */
export interface WriterState {
  readonly id: string;
  readonly confirmed: boolean;
  readonly retired: boolean;
}

/** `sync_meta` key of the current writer: `{ "id": uuid, "retired": boolean }`. */
export const WRITER_META_KEY = 'writer';

/** The writer as stored, at library open: never confirmed yet in this run. */
export function storedWriter(device: string, value: string | undefined): WriterState {
  if (value === undefined) return { id: device, confirmed: false, retired: false };
  const { id, retired } = JSON.parse(value) as { id: string; retired: boolean };
  return { id, confirmed: false, retired };
}

/**
 * The writer this device appends to, which no partner may move (a snapshot's vector, for one):
 * the current writer unless retired. A retired writer is never appended to again (the next
 * write goes to a fresh one), and its tail is an origin this device is behind on like any other.
 */
export function appendedWriter(writer: WriterState): string | undefined {
  return writer.retired ? undefined : writer.id;
}

export function writerMetaValue(writer: WriterState): string {
  return JSON.stringify({ id: writer.id, retired: writer.retired });
}

/**
 * Outcome of checking this device's writers against a partner's hello: `confirmed` (the
 * current writer may be appended to), `retired` (the partner holds more of the current writer:
 * a backup or copy of this data directory, or a claim; its tail, if any, arrives by catch-up),
 * `unchanged`.
 */
export type WriterCheck = 'confirmed' | 'retired' | 'unchanged';
