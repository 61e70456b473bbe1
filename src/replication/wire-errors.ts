import {
  InviteError,
  type InviteErrorCode,
  NotMemberError,
  ProtocolError,
  ProtocolVersionError,
  type RemovalInfo,
  RemovedError,
  SYNC_ERROR_CODES,
  SyncError,
  type SyncErrorCode,
} from '../errors.js';
import { type Message, PROTOCOL_VERSION } from '../protocol/messages.js';

/** A session that could not start or ended with an error, as reported to the node's listeners. */
export interface SessionErrorEvent {
  peer: string;
  /** The library concerned, when known. */
  library: string | undefined;
  /** Which side of the handshake this node was: `outbound` opened the stream. */
  direction: 'inbound' | 'outbound';
  error: Error;
}

/** The same answer for an unknown library and a non-member: a stranger learns nothing. */
export function notMember(peer: string): NotMemberError {
  return new NotMemberError(`peer ${peer} is not a member of this library`);
}

const INVITE_CODES: ReadonlySet<string> = new Set<InviteErrorCode>(['INVITE_INVALID', 'INVITE_EXPIRED', 'INVITE_USED', 'INVITE_REVOKED']);
const KNOWN_CODES: ReadonlySet<string> = new Set(SYNC_ERROR_CODES);
const reportedByPeer = new WeakSet<Error>();

/** Whether an error is one a peer reported (not something this node detected). */
export function isPeerReported(err: Error): boolean {
  return reportedByPeer.has(err);
}

/** Errors that mean a peer sent bad input: they are counted as protocol errors. */
const BAD_INPUT_CODES: ReadonlySet<string> = new Set(['PROTOCOL', 'VALIDATION', 'OWNERSHIP', 'HLC_DECODE', 'NOT_FOUND', 'CLOCK_DRIFT']);

export function isBadInput(err: Error): boolean {
  return !reportedByPeer.has(err) && BAD_INPUT_CODES.has((err as { code?: string }).code ?? '');
}

/**
 * The typed error for an `error` message a peer sent. Only the code is trusted for the type;
 * the message is the peer's text, prefixed so it is never mistaken for a local diagnosis.
 */
export function errorFromWire(code: string, message: string, removal?: RemovalInfo): SyncError {
  const err = code === 'REMOVED' ? new RemovedError(`peer reported: ${message || '(no message)'}`, removal ?? null) : typedError(code, message);
  reportedByPeer.add(err);
  return err;
}

function typedError(code: string, peerMessage: string): SyncError {
  // The schema allows an empty message: the text still says where the error came from.
  const message = peerMessage === '' ? '(no message)' : peerMessage;
  const text = `peer reported: ${message}`;
  if (code === 'PROTOCOL_VERSION') {
    const remote = /speaks (\S+),/.exec(message)?.[1] ?? 'unknown';
    return new ProtocolVersionError(PROTOCOL_VERSION.join('.'), remote);
  }
  if (code === 'NOT_MEMBER') return new NotMemberError(text);
  if (code === 'PROTOCOL') return new ProtocolError(text);
  if (INVITE_CODES.has(code)) return new InviteError(code as InviteErrorCode, text);
  if (KNOWN_CODES.has(code)) return new SyncError(code as SyncErrorCode, text);
  return new SyncError('PROTOCOL', `peer reported unknown error ${JSON.stringify(code)}: ${message}`);
}

/** An `error` message for `err`: a refusal as removed carries the removal the refuser holds. */
export function errorMessage(library: string, err: SyncError, req: number | null): Message {
  return {
    t: 'error',
    library,
    code: err.code,
    message: err.message,
    req,
    ...(err instanceof RemovedError && err.removal ? { removal: err.removal } : {}),
  };
}
