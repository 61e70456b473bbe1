import { ProtocolError } from '../errors.js';
import type { Signatures } from '../runtime/signatures.js';
import type { Chunk, RunBody } from './chunk.js';
import { equalBytes } from '../util/bytes.js';
import { pack, unpack } from '../util/msgpack.js';

/**
 * Signed runs: how a device vouches for what it writes under its origins (docs/protocol.md,
 * "Signed runs"). A run is one stored chunk of an origin's entries, as its author made it. Its
 * id commits to the library, the origin, its seqs, its entries and the id of the run before it
 * (`prev`; the first run of an origin has `GENESIS`), so an origin's runs form a hash chain, and
 * the author signs each run's id with its key. Runs travel and are stored as they were signed,
 * never cut or merged: any member can relay any origin, and every receiver checks the author's
 * signature against the author's member row.
 */

/** `prev` of an origin's first run. */
export const GENESIS: Uint8Array = new Uint8Array(32);
export const RUN_ID_BYTES = 32;
export const SIGNATURE_BYTES = 64;

const DOMAIN = new TextEncoder().encode('leaderless-sync run\u0000');
const ASCII = new TextEncoder();

/** A run's id: SHA-256 over the domain, library, origin, first and last seq, `prev` and the SHA-256 of its entries. */
export function runId(signatures: Signatures, library: string, run: RunBody, prev: Uint8Array): Uint8Array {
  const body = signatures.sha256(run.entries);
  const library_ = ASCII.encode(library);
  const origin = ASCII.encode(run.origin);
  const header = new Uint8Array(DOMAIN.byteLength + library_.byteLength + origin.byteLength + 16 + RUN_ID_BYTES * 2);
  let at = 0;
  for (const part of [DOMAIN, library_, origin]) {
    header.set(part, at);
    at += part.byteLength;
  }
  const view = new DataView(header.buffer);
  view.setBigUint64(at, BigInt(run.firstSeq));
  view.setBigUint64(at + 8, BigInt(run.lastSeq));
  at += 16;
  header.set(prev, at);
  header.set(body, at + RUN_ID_BYTES);
  return signatures.sha256(header);
}

/** A run of this device's, signed: it follows the run whose id is `prev`. */
export function signRun(signatures: Signatures, library: string, run: RunBody, prev: Uint8Array): { chunk: Chunk; id: Uint8Array } {
  const id = runId(signatures, library, run, prev);
  return { chunk: { ...run, prev, sig: signatures.sign(id), author: signatures.peer }, id };
}

/**
 * Checks a received run's signature against the key its `author` PeerId names and returns its
 * id; a run that does not verify is a `ProtocolError` (bad input: refused, counted, never
 * stored). Whether that PeerId may sign for the run's origin is the caller's to check.
 */
export function verifyRun(signatures: Signatures, library: string, chunk: Chunk): Uint8Array {
  const { author } = chunk;
  if (chunk.firstSeq === 1 && !equalBytes(chunk.prev, GENESIS)) {
    throw new ProtocolError(`run ${chunk.origin}#1..${chunk.lastSeq} is an origin's first run but follows another`);
  }
  const id = runId(signatures, library, chunk, chunk.prev);
  if (!signatures.verify(author, id, chunk.sig)) {
    throw new ProtocolError(`run ${chunk.origin}#${chunk.firstSeq}..${chunk.lastSeq} is not signed by its author's key (${author})`);
  }
  return id;
}

/** Whether two runs of an origin are the same run: same seqs, same predecessor, same entries. */
export function sameRun(a: Chunk, b: Chunk): boolean {
  return a.firstSeq === b.firstSeq && a.lastSeq === b.lastSeq && equalBytes(a.prev, b.prev) && equalBytes(a.entries, b.entries);
}

/** A run as fork evidence stores it: the wire's tuple, msgpack-encoded. */
export function packRun(chunk: Chunk): Uint8Array {
  return pack([chunk.origin, chunk.firstSeq, chunk.lastSeq, chunk.entries, chunk.prev, chunk.sig, chunk.author]);
}

/** A run as `packRun` stored it. */
export function unpackRun(bytes: Uint8Array): Chunk {
  const [origin, firstSeq, lastSeq, entries, prev, sig, author] = unpack(bytes) as [string, number, number, Uint8Array, Uint8Array, Uint8Array, string];
  return { origin, firstSeq, lastSeq, entries, prev, sig, author };
}
