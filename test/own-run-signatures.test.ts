/**
 * `OwnRunSignatures` (src/library/own-run-signatures.ts), its logic alone: which signatures are
 * made where, and which are kept to be stored. Signatures are counted through a wrapper of the
 * real native ones; macrotasks are run by the test.
 *
 * - A run a read signs before the next macrotask is not handed to the thread pool as well; one
 *   no read signs is, once; either way it is signed once and its signature kept.
 * - A read inside a transaction signs without keeping; `settled` hands over what is still
 *   queued and waits for it; a run of another author is an internal error.
 */
import { describe, expect, it } from 'vitest';
import { OwnRunSignatures, type WrittenRun } from '../src/library/own-run-signatures.js';
import { namedPeerSignatures } from '../src/node/native-signatures.js';
import type { UnsignedRun } from '../src/peer-log/log-store.js';
import { GENESIS, runId, verifyRun } from '../src/peer-log/signed-runs.js';
import type { Signatures } from '../src/runtime/signatures.js';

const LIBRARY = '0190a0a0-0000-7000-8000-00000000aaaa';
const ORIGIN = '0190a0a0-0000-7000-8000-00000000bbbb';

function counted(): { signatures: Signatures; onThread: () => number; offThread: () => number } {
  const real = namedPeerSignatures('device-a');
  let onThread = 0;
  let offThread = 0;
  const signatures: Signatures = {
    ...real,
    sign: (message) => (onThread++, real.sign(message)),
    signOffThread: (message) => (offThread++, real.signOffThread(message)),
  };
  return { signatures, onThread: () => onThread, offThread: () => offThread };
}

function setUp() {
  const count = counted();
  const macrotasks: (() => void)[] = [];
  const own = new OwnRunSignatures(count.signatures, LIBRARY, () => undefined, 1_000, (fn) => macrotasks.push(fn));
  const runMacrotasks = () => macrotasks.splice(0).forEach((fn) => fn());
  return { ...count, own, runMacrotasks };
}

function written(signatures: Signatures, seq: number): { run: UnsignedRun; at: WrittenRun } {
  const run: UnsignedRun = { origin: ORIGIN, firstSeq: seq, lastSeq: seq, entries: new Uint8Array([seq]), prev: GENESIS, author: signatures.peer };
  return { run, at: { origin: ORIGIN, lastSeq: seq, id: runId(signatures, LIBRARY, run, run.prev) } };
}

/** Lets the promise callbacks of signatures made run. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

describe('OwnRunSignatures', () => {
  it('signs a run read before the next macrotask on this thread only, and one not read off it only', async () => {
    const { signatures, own, runMacrotasks, onThread, offThread } = setUp();
    const read = written(signatures, 1);
    const unread = written(signatures, 2);
    own.signCommitted([read.at, unread.at]);
    const sig = own.signStored(read.run);
    expect(() => verifyRun(signatures, LIBRARY, { ...read.run, sig })).not.toThrow();
    runMacrotasks();
    await settle();
    expect([onThread(), offThread()]).toEqual([1, 1]);
    const kept = own.take();
    expect(kept.map((k) => k.lastSeq).sort()).toEqual([1, 2]);
    for (const k of kept) expect(() => verifyRun(signatures, LIBRARY, { ...(k.lastSeq === 1 ? read : unread).run, sig: k.sig })).not.toThrow();
  });

  it('keeps nothing a read inside a transaction signs, and settles what is still queued', async () => {
    const { signatures, own, onThread, offThread } = setUp();
    const inTransaction = written(signatures, 1);
    expect(() => verifyRun(signatures, LIBRARY, { ...inTransaction.run, sig: own.signUncommitted(inTransaction.run) })).not.toThrow();
    expect(own.take()).toEqual([]);
    const queued = written(signatures, 2);
    own.signCommitted([queued.at]);
    await own.settled();
    expect([onThread(), offThread()]).toEqual([1, 1]);
    expect(own.take().map((k) => k.lastSeq)).toEqual([2]);
  });

  it('refuses to sign a run stored unsigned under another author', () => {
    const { signatures, own } = setUp();
    const { run } = written(signatures, 1);
    expect(() => own.signStored({ ...run, author: namedPeerSignatures('device-b').peer })).toThrow(/stored unsigned/);
  });
});
