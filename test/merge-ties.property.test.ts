/**
 * Two different changes with one clock (unit test of the conflict rules). An honest device never
 * stamps two changes alike, but a device that forks its log signs two histories, and every member
 * applies the runs of both (docs/protocol.md, "Fork evidence"): such changes must then give the
 * same row whatever the order they arrive in, on every rule and in the state join snapshots use.
 */
import fc from 'fast-check';
import { expect, test } from 'vitest';
import { defineModel, type SharedModel } from '../src/models/define.js';
import { mergeFieldLww, mergeRowLww, mergeStates } from '../src/models/merge.js';
import type { Change, SharedRowState } from '../src/models/types.js';
import { encodeHlc } from '../src/hlc/hlc.js';

const DEVICE = '0a1b2c3d-0000-8000-8000-000000000001';
const HLC = encodeHlc({ wallMs: 1_750_000_000_000, counter: 0, deviceId: DEVICE });
const EARLIER = encodeHlc({ wallMs: 1_749_999_999_000, counter: 0, deviceId: DEVICE });

const fields = { title: { type: 'text', nullable: true }, n: { type: 'integer', nullable: true }, data: { type: 'blob', nullable: true } } as const;
const lww = defineModel({ name: 'note', ownership: 'shared', conflict: 'lww', fields }) as SharedModel;
const fieldRule = defineModel({ name: 'task', ownership: 'shared', conflict: 'lww-field', fields }) as SharedModel;

const value = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: null });
const values = fc.record({
  title: value(fc.string({ maxLength: 3 })),
  n: value(fc.integer({ min: -2, max: 2 })),
  data: value(fc.uint8Array({ maxLength: 2 })),
});
const change = (full: boolean) =>
  fc.oneof(
    values.map((v): Change => ({ op: 'upsert', id: 'r', hlc: HLC, fields: v })),
    fc.constant<Change>({ op: 'delete', id: 'r', hlc: HLC, fields: null }),
    ...(full ? [] : [values.map((v): Change => ({ op: 'update', id: 'r', hlc: HLC, fields: { title: v.title } }))]),
  );
const base: Change = { op: 'upsert', id: 'r', hlc: EARLIER, fields: { title: 'base', n: 0, data: null } };

function applyAll(merge: (current: SharedRowState | undefined, c: Change) => SharedRowState, changes: readonly Change[]): SharedRowState {
  return changes.reduce<SharedRowState | undefined>((state, c) => merge(state, c), undefined)!;
}

test('row LWW keeps the same one of two changes with one clock, whatever the order', () => {
  const merge = (s: SharedRowState | undefined, c: Change) => mergeRowLww(lww, s, c);
  fc.assert(
    fc.property(change(true), change(true), (a, b) => {
      expect(applyAll(merge, [base, a, b])).toEqual(applyAll(merge, [base, b, a]));
      expect(mergeStates(lww, merge(undefined, a), merge(undefined, b))).toEqual(mergeStates(lww, merge(undefined, b), merge(undefined, a)));
    }),
  );
});

test('field LWW keeps the same value of each field of two changes with one clock, whatever the order', () => {
  const merge = (s: SharedRowState | undefined, c: Change) => mergeFieldLww(fieldRule, s, c);
  fc.assert(
    fc.property(change(false), change(false), (a, b) => {
      const ab = applyAll(merge, [base, a, b]);
      expect(ab).toEqual(applyAll(merge, [base, b, a]));
      // The state join agrees with applying the changes.
      expect(mergeStates(fieldRule, applyAll(merge, [base, a]), applyAll(merge, [base, b]))).toEqual(ab);
    }),
  );
});
