/**
 * Property tests for src/hlc: the encoding (fixed width, sortable, strict decoding) and the
 * HlcClock generator (strict monotonicity whatever the wall clock does, the Kulkarni et al.
 * update rules, counter overflow, drift guard).
 */
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { ClockDriftError, ClockRangeError, HlcDecodeError } from '../src/errors.js';
import {
  compareHlc,
  decodeHlc,
  ENCODED_HLC_LENGTH,
  encodeHlc,
  type Hlc,
  HlcClock,
  MAX_COUNTER,
  MAX_WALL_MS,
} from '../src/hlc/index.js';

const sign = (n: number): number => (n < 0 ? -1 : n > 0 ? 1 : 0);
const strcmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

const deviceIdArb = fc.uuid().map((u) => u.toLowerCase());
const fullHlcArb: fc.Arbitrary<Hlc> = fc.record({
  wallMs: fc.integer({ min: 0, max: MAX_WALL_MS }),
  counter: fc.integer({ min: 0, max: MAX_COUNTER }),
  deviceId: deviceIdArb,
});

// Small pools make equal wall times, equal counters and equal devices likely, so the
// tie-breaking levels of the order are exercised, not only the first one.
const DEVICE_POOL = [
  '00000000-0000-4000-8000-000000000000',
  '0fffffff-ffff-4fff-bfff-ffffffffffff',
  '10000000-0000-4000-8000-000000000000',
  'a0000000-0000-4000-8000-000000000001',
  'ffffffff-ffff-4fff-bfff-ffffffffffff',
];
const tieHeavyHlcArb: fc.Arbitrary<Hlc> = fc.record({
  wallMs: fc.oneof(
    fc.constantFrom(0, 1, 15, 16, 255, 256, 0xfff, 0x1000, MAX_WALL_MS - 1, MAX_WALL_MS),
    fc.integer({ min: 0, max: MAX_WALL_MS }),
  ),
  counter: fc.oneof(fc.constantFrom(0, 1, 15, 16, 0xff, 0x100, MAX_COUNTER), fc.integer({ min: 0, max: MAX_COUNTER })),
  deviceId: fc.oneof(fc.constantFrom(...DEVICE_POOL), deviceIdArb),
});
const hlcArb = fc.oneof(fullHlcArb, tieHeavyHlcArb);

describe('encodeHlc / decodeHlc', () => {
  test('roundtrip: decode(encode(h)) equals h, encodings are fixed width lowercase', () => {
    fc.assert(
      fc.property(hlcArb, (h) => {
        const encoded = encodeHlc(h);
        expect(encoded).toHaveLength(ENCODED_HLC_LENGTH);
        expect(encoded).toBe(encoded.toLowerCase());
        expect(decodeHlc(encoded)).toEqual(h);
        // and the other way round
        expect(encodeHlc(decodeHlc(encoded))).toBe(encoded);
      }),
      { numRuns: 2000 },
    );
  });

  test('string order of encodings equals compareHlc order', () => {
    fc.assert(
      fc.property(hlcArb, hlcArb, (a, b) => {
        const byValue = sign(compareHlc(a, b));
        expect(sign(strcmp(encodeHlc(a), encodeHlc(b)))).toBe(byValue);
        // compareHlc is antisymmetric and 0 exactly on equal values
        expect(sign(compareHlc(b, a))).toBe(sign(-byValue)); // sign() turns -0 into 0 for toBe
        expect(byValue === 0).toBe(a.wallMs === b.wallMs && a.counter === b.counter && a.deviceId === b.deviceId);
      }),
      { numRuns: 5000 },
    );
  });

  test('sorting encodings sorts values', () => {
    fc.assert(
      fc.property(fc.array(hlcArb, { maxLength: 30 }), (values) => {
        const byString = values.map(encodeHlc).sort();
        const byValue = [...values].sort(compareHlc).map(encodeHlc);
        expect(byString).toEqual(byValue);
      }),
    );
  });

  const expectDecodeError = (input: unknown): void => {
    let thrown: unknown;
    try {
      decodeHlc(input);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(HlcDecodeError);
    expect((thrown as HlcDecodeError).code).toBe('HLC_DECODE');
  };

  test('rejects wrong length (truncated or extended) with HlcDecodeError', () => {
    fc.assert(
      fc.property(
        hlcArb,
        fc.integer({ min: 1, max: ENCODED_HLC_LENGTH }),
        fc.string({ unit: fc.constantFrom(...'0123456789abcdef-'), minLength: 1, maxLength: 20 }),
        fc.boolean(),
        (h, cut, extra, extend) => {
          const encoded = encodeHlc(h);
          const bad = extend ? encoded + extra : encoded.slice(0, ENCODED_HLC_LENGTH - cut);
          expect(bad.length).not.toBe(ENCODED_HLC_LENGTH);
          expectDecodeError(bad);
          if (extend) expectDecodeError(extra + encoded);
        },
      ),
    );
  });

  test('rejects uppercase hex with HlcDecodeError', () => {
    fc.assert(
      fc.property(hlcArb, fc.nat(), (h, pick) => {
        const encoded = encodeHlc(h);
        const letters = [...encoded].flatMap((ch, i) => (/[a-f]/.test(ch) ? [i] : []));
        // The whole string uppercased is rejected whenever it differs.
        if (encoded.toUpperCase() !== encoded) expectDecodeError(encoded.toUpperCase());
        if (letters.length === 0) return;
        const i = letters[pick % letters.length]!;
        expectDecodeError(encoded.slice(0, i) + encoded[i]!.toUpperCase() + encoded.slice(i + 1));
      }),
    );
  });

  test('rejects a non-hex character at any position with HlcDecodeError', () => {
    const notHex = fc.constantFrom(...'ghijklmnopqrstuvwxyzG Z_+./:\u00e9\u0000');
    fc.assert(
      fc.property(hlcArb, fc.integer({ min: 0, max: ENCODED_HLC_LENGTH - 1 }), notHex, fc.constantFrom(...'0a9f'), (h, i, bad, hex) => {
        const encoded = encodeHlc(h);
        // A dash may only stand where the uuid has one, and a hex digit never there.
        const replacement = encoded[i] === '-' ? hex : bad;
        expectDecodeError(encoded.slice(0, i) + replacement + encoded.slice(i + 1));
        if (encoded[i] !== '-') expectDecodeError(encoded.slice(0, i) + '-' + encoded.slice(i + 1));
      }),
    );
  });

  test('rejects non-string input with HlcDecodeError', () => {
    fc.assert(
      fc.property(
        fc.anything().filter((v) => typeof v !== 'string'),
        (value) => expectDecodeError(value),
      ),
    );
    for (const value of [undefined, null, 42, 0n, true, {}, [], new Uint8Array(52), Symbol('x'), () => 'x']) {
      expectDecodeError(value);
    }
    expectDecodeError('');
  });
});

// ---------------------------------------------------------------------------------------------
// HlcClock

const MAX_DRIFT = 60_000;
const BASE_WALL = 1_700_000_000_000;

type ClockOp =
  | { kind: 'now' }
  | { kind: 'setWall'; delta: number }
  | { kind: 'receive'; offset: number; counter: number; device: number }
  | { kind: 'receiveFar'; beyond: number; counter: number; device: number };

const clockOpArb = (maxRemoteCounter: number): fc.Arbitrary<ClockOp> =>
  fc.oneof(
    { weight: 4, arbitrary: fc.constant<ClockOp>({ kind: 'now' }) },
    {
      weight: 3,
      // the wall clock moves up and down, by small and by huge amounts
      arbitrary: fc
        .oneof(fc.integer({ min: -3, max: 3 }), fc.integer({ min: -86_400_000, max: 86_400_000 }))
        .map((delta): ClockOp => ({ kind: 'setWall', delta })),
    },
    {
      weight: 3,
      // remote wall anywhere from far behind up to exactly the drift bound ahead
      arbitrary: fc
        .record({
          offset: fc.oneof(fc.integer({ min: -5, max: 5 }), fc.integer({ min: -86_400_000, max: MAX_DRIFT })),
          counter: fc.integer({ min: 0, max: maxRemoteCounter }),
          device: fc.nat({ max: DEVICE_POOL.length - 1 }),
        })
        .map((r): ClockOp => ({ kind: 'receive', ...r })),
    },
    {
      weight: 1,
      arbitrary: fc
        .record({
          beyond: fc.integer({ min: 1, max: 10_000_000 }),
          counter: fc.integer({ min: 0, max: maxRemoteCounter }),
          device: fc.nat({ max: DEVICE_POOL.length - 1 }),
        })
        .map((r): ClockOp => ({ kind: 'receiveFar', ...r })),
    },
  );

const LOCAL_DEVICE = '5a5a5a5a-0000-4000-8000-000000000000';

describe('HlcClock', () => {
  test('every issued value is strictly greater than everything issued or received before', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 * BASE_WALL }),
        fc.array(clockOpArb(MAX_COUNTER), { minLength: 1, maxLength: 200 }),
        (startWall, ops) => {
          let wall = startWall;
          const clock = new HlcClock({ deviceId: LOCAL_DEVICE, wallClock: () => wall, maxClockDriftMs: MAX_DRIFT });
          let highest: Hlc | undefined; // greatest value issued or received so far
          const above = (v: Hlc): void => {
            if (highest !== undefined) expect(compareHlc(v, highest)).toBeGreaterThan(0);
            expect(encodeHlc(v) > (highest ? encodeHlc(highest) : '')).toBe(true);
          };
          for (const op of ops) {
            switch (op.kind) {
              case 'now': {
                const v = clock.now();
                above(v);
                expect(v.deviceId).toBe(LOCAL_DEVICE);
                expect(clock.last()).toEqual(v);
                highest = v;
                break;
              }
              case 'setWall':
                wall = Math.max(0, wall + op.delta);
                break;
              case 'receive': {
                const remote: Hlc = {
                  wallMs: Math.max(0, wall + op.offset),
                  counter: op.counter,
                  deviceId: DEVICE_POOL[op.device]!,
                };
                const v = clock.receive(remote);
                above(v);
                expect(compareHlc(v, remote)).toBeGreaterThan(0);
                expect(v.deviceId).toBe(LOCAL_DEVICE);
                expect(clock.last()).toEqual(v);
                highest = compareHlc(v, remote) > 0 ? v : remote;
                break;
              }
              case 'receiveFar': {
                const before = clock.last();
                const remote: Hlc = {
                  wallMs: wall + MAX_DRIFT + op.beyond,
                  counter: op.counter,
                  deviceId: DEVICE_POOL[op.device]!,
                };
                expect(() => clock.receive(remote)).toThrow(ClockDriftError);
                expect(() => clock.checkDrift(remote)).toThrow(ClockDriftError);
                // refused before it touches the clock
                expect(clock.last()).toEqual(before);
                break;
              }
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  test('Kulkarni update rules hold exactly (l = max(prev l, pt, remote l); c as in the paper)', () => {
    // Counters stay far from the 16-bit limit here, so the overflow rule never applies.
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 * BASE_WALL }),
        fc.array(clockOpArb(0xf000), { minLength: 1, maxLength: 150 }),
        (startWall, ops) => {
          let wall = startWall;
          const clock = new HlcClock({ deviceId: LOCAL_DEVICE, wallClock: () => wall, maxClockDriftMs: MAX_DRIFT });
          let l = 0;
          let c = 0;
          for (const op of ops) {
            const pt = wall;
            if (op.kind === 'setWall') {
              wall = Math.max(0, wall + op.delta);
            } else if (op.kind === 'now') {
              const v = clock.now();
              const nl = Math.max(l, pt);
              const nc = nl === l ? c + 1 : 0;
              expect(v).toEqual({ wallMs: nl, counter: nc, deviceId: LOCAL_DEVICE });
              [l, c] = [nl, nc];
            } else if (op.kind === 'receive') {
              const rl = Math.max(0, wall + op.offset);
              const rc = op.counter;
              const v = clock.receive({ wallMs: rl, counter: rc, deviceId: DEVICE_POOL[op.device]! });
              const nl = Math.max(l, pt, rl);
              let nc: number;
              if (nl === l && nl === rl) nc = Math.max(c, rc) + 1;
              else if (nl === l) nc = c + 1;
              else if (nl === rl) nc = rc + 1;
              else nc = 0;
              expect(v).toEqual({ wallMs: nl, counter: nc, deviceId: LOCAL_DEVICE });
              [l, c] = [nl, nc];
            } else {
              expect(() =>
                clock.receive({ wallMs: wall + MAX_DRIFT + op.beyond, counter: op.counter, deviceId: DEVICE_POOL[op.device]! }),
              ).toThrow(ClockDriftError);
            }
            expect(clock.last()).toEqual({ wallMs: l, counter: c, deviceId: LOCAL_DEVICE });
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  test('the wall clock jumping backwards never makes the clock go backwards', () => {
    let wall = BASE_WALL;
    const clock = new HlcClock({ deviceId: LOCAL_DEVICE, wallClock: () => wall });
    const a = clock.now();
    wall = BASE_WALL - 3_600_000;
    const b = clock.now();
    const c = clock.now();
    expect(compareHlc(b, a)).toBeGreaterThan(0);
    expect(compareHlc(c, b)).toBeGreaterThan(0);
    expect(b).toEqual({ wallMs: BASE_WALL, counter: 1, deviceId: LOCAL_DEVICE });
    wall = BASE_WALL + 5;
    expect(clock.now()).toEqual({ wallMs: BASE_WALL + 5, counter: 0, deviceId: LOCAL_DEVICE });
  });

  test('starts strictly above a persisted high-water mark, whatever the wall clock says', () => {
    fc.assert(
      fc.property(
        fc.record({
          wallMs: fc.integer({ min: 0, max: 4 * BASE_WALL }),
          counter: fc.integer({ min: 0, max: MAX_COUNTER }),
          deviceId: fc.constant(LOCAL_DEVICE),
        }),
        fc.integer({ min: 0, max: 4 * BASE_WALL }),
        (highWater, wall) => {
          const clock = new HlcClock({ deviceId: LOCAL_DEVICE, wallClock: () => wall, highWater });
          expect(clock.last()).toEqual(highWater);
          const next = clock.now();
          expect(compareHlc(next, highWater)).toBeGreaterThan(0);
          expect(encodeHlc(next) > encodeHlc(highWater)).toBe(true);
        },
      ),
    );
  });

  test('counter overflow with a frozen wall clock never throws and stays strictly increasing', () => {
    const frozen = BASE_WALL;
    const clock = new HlcClock({ deviceId: LOCAL_DEVICE, wallClock: () => frozen });
    const calls = 65_536 + 1_000;
    let previous = clock.now();
    expect(previous).toEqual({ wallMs: frozen, counter: 0, deviceId: LOCAL_DEVICE });
    let previousEncoded = encodeHlc(previous);
    for (let i = 1; i < calls; i++) {
      const v = clock.now();
      const encoded = encodeHlc(v);
      if (!(compareHlc(v, previous) > 0) || !(encoded > previousEncoded)) {
        throw new Error(`call ${i}: ${encoded} is not above ${previousEncoded}`);
      }
      if (v.counter > MAX_COUNTER) throw new Error(`call ${i}: counter ${v.counter} exceeds 16 bits`);
      previous = v;
      previousEncoded = encoded;
    }
    // 65 536 values fit in (frozen, 0..0xffff); the rest roll into the next millisecond.
    expect(previous).toEqual({ wallMs: frozen + 1, counter: calls - 65_537, deviceId: LOCAL_DEVICE });
    expect(decodeHlc(previousEncoded)).toEqual(previous);
  });

  test('receive of a remote value with a saturated counter rolls into the next millisecond', () => {
    const wall = BASE_WALL;
    const clock = new HlcClock({ deviceId: LOCAL_DEVICE, wallClock: () => wall });
    const remote: Hlc = { wallMs: wall, counter: MAX_COUNTER, deviceId: DEVICE_POOL[4]! };
    const v = clock.receive(remote);
    expect(compareHlc(v, remote)).toBeGreaterThan(0);
    expect(v).toEqual({ wallMs: wall + 1, counter: 0, deviceId: LOCAL_DEVICE });
    const w = clock.now();
    expect(compareHlc(w, v)).toBeGreaterThan(0);
  });

  test('drift guard: a remote value more than maxClockDriftMs ahead is refused and leaves the clock unchanged', () => {
    const wall = BASE_WALL;
    const clock = new HlcClock({ deviceId: LOCAL_DEVICE, wallClock: () => wall, maxClockDriftMs: 1_000 });
    clock.now();
    const before = clock.last();
    let thrown: unknown;
    try {
      clock.receive({ wallMs: wall + 1_001, counter: 0, deviceId: DEVICE_POOL[0]! });
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(ClockDriftError);
    expect(thrown).toMatchObject({ code: 'CLOCK_DRIFT', remoteWallMs: wall + 1_001, localWallMs: wall, maxDriftMs: 1_000 });
    expect(clock.last()).toEqual(before);
    // exactly at the bound is accepted
    const v = clock.receive({ wallMs: wall + 1_000, counter: 7, deviceId: DEVICE_POOL[0]! });
    expect(v).toEqual({ wallMs: wall + 1_000, counter: 8, deviceId: LOCAL_DEVICE });
  });

  test('never issues a value outside the 48-bit encoding: at the end of the range it refuses with ClockRangeError', () => {
    // A wall clock at (or past) MAX_WALL_MS plus a counter overflow: wallMs = MAX_WALL_MS + 1
    // would encode to 13 digits and sort below older values, so the clock must refuse instead.
    const clock = new HlcClock({ deviceId: LOCAL_DEVICE, wallClock: () => MAX_WALL_MS + 10 });
    let previous: Hlc | undefined;
    for (let i = 0; i <= MAX_COUNTER; i++) {
      const v = clock.now();
      if (encodeHlc(v).length !== ENCODED_HLC_LENGTH || (previous && !(compareHlc(v, previous) > 0))) {
        expect.fail(`call ${i} issued ${JSON.stringify(v)}`);
      }
      previous = v;
    }
    expect(previous).toEqual({ wallMs: MAX_WALL_MS, counter: MAX_COUNTER, deviceId: LOCAL_DEVICE });
    expect(() => clock.now()).toThrow(ClockRangeError);
    expect(() => clock.now()).toThrow(expect.objectContaining({ code: 'CLOCK_RANGE' }));
    expect(clock.last()).toEqual(previous);
  });

  test('a receive refused with ClockRangeError leaves the clock unchanged', () => {
    // Local wall 5 ms before the end of the range; a remote value at the very end (within the
    // drift bound) whose counter is saturated cannot be followed by a larger encodable value.
    const clock = new HlcClock({ deviceId: LOCAL_DEVICE, wallClock: () => MAX_WALL_MS - 5 });
    const issued = clock.now();
    expect(issued).toEqual({ wallMs: MAX_WALL_MS - 5, counter: 0, deviceId: LOCAL_DEVICE });
    const remote: Hlc = { wallMs: MAX_WALL_MS, counter: MAX_COUNTER, deviceId: DEVICE_POOL[1]! };
    expect(() => clock.receive(remote)).toThrow(ClockRangeError);
    // Refused like a drift violation: the state is what it was before the call.
    expect(clock.last()).toEqual(issued);
  });
});
