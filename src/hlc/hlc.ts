import { HlcDecodeError } from '../errors.js';

/**
 * A hybrid logical clock value (Kulkarni et al., "Logical Physical Clocks", 2014).
 * Total order: wall milliseconds, then counter, then issuing device id. The device id makes
 * two values issued by different devices never equal, so it is the final tie-breaker.
 */
export interface Hlc {
  readonly wallMs: number;
  readonly counter: number;
  readonly deviceId: string;
}

/** 48 bits of milliseconds reach the year 10889; the encoding is fixed-width up to there. */
export const MAX_WALL_MS = 0xffff_ffff_ffff;
/** Past this the counter rolls into the next millisecond (see `HlcClock`). */
export const MAX_COUNTER = 0xffff;

const WALL_DIGITS = 12;
const COUNTER_DIGITS = 4;
const DEVICE_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const TIME_PREFIX = /^[0-9a-f]{16}/;
const ENCODED = /^[0-9a-f]{16}[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Length of every encoded HLC. */
export const ENCODED_HLC_LENGTH = WALL_DIGITS + COUNTER_DIGITS + 36;
/** Length of the time part (wall + counter) that precedes the device id in an encoded HLC. */
export const HLC_TIME_LENGTH = WALL_DIGITS + COUNTER_DIGITS;

/** Device and library ids are lowercase uuids. */
export function isDeviceId(value: unknown): value is string {
  return typeof value === 'string' && DEVICE_ID.test(value);
}

/**
 * Whether `encoded` is a well-formed HLC issued by `deviceId`, itself known to be a device id:
 * `decodeHlc`'s check without decoding, for checking many values of one device.
 */
export function isHlcOf(encoded: string, deviceId: string): boolean {
  return encoded.length === ENCODED_HLC_LENGTH && encoded.endsWith(deviceId) && TIME_PREFIX.test(encoded);
}

export function compareHlc(a: Hlc, b: Hlc): number {
  if (a.wallMs !== b.wallMs) return a.wallMs < b.wallMs ? -1 : 1;
  if (a.counter !== b.counter) return a.counter < b.counter ? -1 : 1;
  if (a.deviceId === b.deviceId) return 0;
  return a.deviceId < b.deviceId ? -1 : 1;
}

/**
 * Fixed-width lowercase hex text: 12 digits of wall ms, 4 of counter, then the device uuid.
 * Byte-wise (and therefore SQLite TEXT) order equals `compareHlc` order, so encoded values can
 * be compared as strings and used as index keys.
 */
export function encodeHlc(hlc: Hlc): string {
  // Consecutive values mostly share their millisecond: reuse its digits.
  if (hlc.wallMs !== lastWallMs) {
    lastWallMs = hlc.wallMs;
    lastWallDigits = hlc.wallMs.toString(16).padStart(WALL_DIGITS, '0');
  }
  // MAX_COUNTER + 1 = 16^COUNTER_DIGITS: adding it and dropping the leading 1 zero-pads.
  return lastWallDigits + (MAX_COUNTER + 1 + hlc.counter).toString(16).slice(1) + hlc.deviceId;
}

let lastWallMs = -1;
let lastWallDigits = '';

export function decodeHlc(encoded: unknown): Hlc {
  if (typeof encoded !== 'string' || encoded.length !== ENCODED_HLC_LENGTH || !ENCODED.test(encoded)) {
    const shown = typeof encoded === 'string' ? JSON.stringify(encoded.slice(0, 80)) : typeof encoded;
    throw new HlcDecodeError(
      `malformed HLC ${shown}: expected ${ENCODED_HLC_LENGTH} lowercase hex characters ` +
        `(12 wall, 4 counter, then a device uuid)`,
    );
  }
  return {
    wallMs: parseInt(encoded.slice(0, WALL_DIGITS), 16),
    counter: parseInt(encoded.slice(WALL_DIGITS, HLC_TIME_LENGTH), 16),
    deviceId: encoded.slice(HLC_TIME_LENGTH),
  };
}

/** Encoded HLCs compare correctly as plain strings; this names that intent at call sites. */
export function maxEncodedHlc(a: string | null, b: string | null): string | null {
  if (a === null) return b;
  if (b === null) return a;
  return a >= b ? a : b;
}
