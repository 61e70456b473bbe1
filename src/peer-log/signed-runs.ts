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
  return headerId(signatures, library, { origin: run.origin, firstSeq: run.firstSeq, lastSeq: run.lastSeq, prev, body: signatures.sha256(run.entries) });
}

function headerId(signatures: Signatures, library: string, header: Omit<RunProof, 'sig' | 'author'>): Uint8Array {
  const library_ = ASCII.encode(library);
  const origin = ASCII.encode(header.origin);
  const bytes = new Uint8Array(DOMAIN.byteLength + library_.byteLength + origin.byteLength + 16 + RUN_ID_BYTES * 2);
  let at = 0;
  for (const part of [DOMAIN, library_, origin]) {
    bytes.set(part, at);
    at += part.byteLength;
  }
  const view = new DataView(bytes.buffer);
  view.setBigUint64(at, BigInt(header.firstSeq));
  view.setBigUint64(at + 8, BigInt(header.lastSeq));
  at += 16;
  bytes.set(header.prev, at);
  bytes.set(header.body, at + RUN_ID_BYTES);
  return signatures.sha256(bytes);
}

/**
 * A signed run without its entries: the SHA-256 of the entries (`body`) stands for them, so the
 * author's signature still verifies. It proves that the author wrote its origin through
 * `lastSeq`, and which run ends there, where the entries themselves are no longer held (a
 * snapshot's vector: docs/protocol.md, "Snapshot proofs").
 */
export interface RunProof {
  origin: string;
  firstSeq: number;
  lastSeq: number;
  prev: Uint8Array;
  body: Uint8Array;
  sig: Uint8Array;
  author: string;
}

/** The proof of a stored or received run. */
export function proofOf(signatures: Signatures, chunk: Chunk): RunProof {
  const { origin, firstSeq, lastSeq, prev, sig, author } = chunk;
  return { origin, firstSeq, lastSeq, prev, body: signatures.sha256(chunk.entries), sig, author };
}

/**
 * Checks a proof's signature against the key its `author` PeerId names and returns the id of the
 * run it stands for; one that does not verify is a `ProtocolError`. Whether that PeerId may sign
 * for the origin is the caller's to check, as for `verifyRun`.
 */
export function verifyProof(signatures: Signatures, library: string, proof: RunProof): Uint8Array {
  if (proof.firstSeq === 1 && !equalBytes(proof.prev, GENESIS)) {
    throw new ProtocolError(`run ${proof.origin}#1..${proof.lastSeq} is an origin's first run but follows another`);
  }
  const id = proofId(signatures, library, proof);
  if (!signatures.verify(proof.author, id, proof.sig)) {
    throw new ProtocolError(`run ${proof.origin}#${proof.firstSeq}..${proof.lastSeq} is not signed by its author's key (${proof.author})`);
  }
  return id;
}

/** The id of the run a proof stands for (its signature not checked: see `verifyProof`). */
export function proofId(signatures: Signatures, library: string, proof: RunProof): Uint8Array {
  return headerId(signatures, library, proof);
}

/** A proof as `sync_vector.proof` and a snapshot checkpoint store it: the wire's tuple, msgpack-encoded. */
export function packProof(proof: RunProof): Uint8Array {
  return pack(proofToTuple(proof));
}

export function unpackProof(bytes: Uint8Array): RunProof {
  return proofFromTuple(unpack(bytes) as ProofTuple);
}

export type ProofTuple = [origin: string, firstSeq: number, lastSeq: number, prev: Uint8Array, body: Uint8Array, sig: Uint8Array, author: string];

export function proofToTuple(p: RunProof): ProofTuple {
  return [p.origin, p.firstSeq, p.lastSeq, p.prev, p.body, p.sig, p.author];
}

export function proofFromTuple([origin, firstSeq, lastSeq, prev, body, sig, author]: ProofTuple): RunProof {
  return { origin, firstSeq, lastSeq, prev, body, sig, author };
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
  return verifyProof(signatures, library, proofOf(signatures, chunk));
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
