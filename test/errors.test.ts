/**
 * No typed error is ever built with an empty message from something foreign: libp2p's
 * `StreamClosedError` (a name, no message), events used as rejections, a peer's empty text.
 */
import { describe, expect, it } from 'vitest';
import { describeError, InternalError, NetworkError, toSyncError } from '../src/errors.js';
import { errorFromWire, isBadInput, isPeerReported } from '../src/replication/wire-errors.js';

class StreamClosedError extends Error {
  override name = 'StreamClosedError';
}

describe('errors from elsewhere', () => {
  it('are described by their name when they have no message, and by their type when they are events', () => {
    expect(describeError(new StreamClosedError())).toBe('StreamClosedError');
    expect(describeError(new TypeError('x is not a function'))).toBe('TypeError: x is not a function');
    expect(describeError({ type: 'close' })).toBe('close event');
    expect(describeError('a string')).toBe('a string');
    expect(describeError('')).not.toBe('');
    expect(describeError(undefined)).toBe('undefined');
  });

  it('become INTERNAL (or what the caller wraps them as) with that description; typed ones pass as they are', () => {
    const internal = toSyncError(new StreamClosedError());
    expect(internal).toBeInstanceOf(InternalError);
    expect(internal).toMatchObject({ code: 'INTERNAL', message: 'StreamClosedError' });
    const network = toSyncError(new StreamClosedError(), (cause) => new NetworkError(`send failed: ${cause}`));
    expect(network).toMatchObject({ code: 'NETWORK', message: 'send failed: StreamClosedError' });
    expect(toSyncError(network)).toBe(network);
  });

  it('an error frame with an empty message still says who reported it, and is not counted', () => {
    const err = errorFromWire('NETWORK', '');
    expect(err).toMatchObject({ code: 'NETWORK', message: 'peer reported: (no message)' });
    expect(isPeerReported(err)).toBe(true);
    const protocol = errorFromWire('PROTOCOL', '');
    expect(protocol.message).toBe('peer reported: (no message)');
    expect(isBadInput(protocol)).toBe(false);
  });
});
