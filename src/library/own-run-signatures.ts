import { bytesToHex } from '@noble/hashes/utils.js';
import { InternalError } from '../errors.js';
import type { RunSignature, SignStoredRun } from '../peer-log/log-store.js';
import { runId } from '../peer-log/signed-runs.js';
import type { Signatures } from '../runtime/signatures.js';

/** A run of this device's a write stored unsigned: where it is, and its id (what is signed). */
export interface WrittenRun {
  origin: string;
  lastSeq: number;
  id: Uint8Array;
}

/**
 * Signatures of this device's own runs, which a write stores unsigned so that no signature is
 * on the write's path (a single-row write would spend about a fifth of its time on it):
 * - a read of the log that finds a run not signed yet signs it on this thread at once
 *   (`signStored`): it never waits for the thread pool, whose round trip costs more than a
 *   signature;
 * - the runs no read signed by the next macrotask after their commit (a live push reads its
 *   write's runs at once) are signed off this thread (`Signatures.signOffThread`: Node's thread
 *   pool, on another core), while the writes go on: no run is signed twice over, which would
 *   take a core from the replica or the next write;
 * - signatures made are stored with their runs many at a time (`take`, `storeRunSignatures`),
 *   and at close once those still on the thread pool are back (`settled`).
 * A signature lost in a crash is made again when its run is next read: Ed25519 signatures are
 * deterministic, so it is the same one.
 *
 * Signatures are stored by position (origin, last seq), so only those of committed runs are
 * kept: a committed run's seq is never written again, while a transaction that rolls back
 * leaves its seqs to the next. A read inside a transaction signs without keeping
 * (`signUncommitted`).
 */
export class OwnRunSignatures {
  /** Runs committed and not handed to the thread pool yet (`dispatch`, at the next macrotask). */
  private committed: WrittenRun[] = [];
  /** Runs being signed off this thread, by id (hex). */
  private readonly signing = new Map<string, Promise<void>>();
  /** Signatures made and not stored yet, by run id (hex). */
  private readonly made = new Map<string, RunSignature>();

  constructor(
    private readonly signatures: Signatures,
    private readonly library: string,
    /** Called when `made` has grown to `storeEvery` signatures not stored yet. */
    private readonly onMany: () => void,
    private readonly storeEvery: number,
    /** Runs a function at the next macrotask (the node's scheduler). */
    private readonly macrotask: (fn: () => void) => void,
  ) {}

  /** Has the runs a committed write stored unsigned signed (`dispatch`) unless a read signs them first. */
  signCommitted(runs: readonly WrittenRun[]): void {
    if (runs.length === 0) return;
    if (this.committed.length === 0) this.macrotask(() => this.dispatch());
    this.committed.push(...runs);
  }

  /** Hands the committed runs no read has signed to the thread pool. */
  private dispatch(): void {
    const runs = this.committed;
    this.committed = [];
    for (const { origin, lastSeq, id } of runs) {
      const key = bytesToHex(id);
      if (this.made.has(key)) continue;
      const signed = this.signatures.signOffThread(id).then(
        (sig) => {
          if (this.signing.delete(key)) this.keep(key, { origin, lastSeq, sig });
        },
        // Not signed there: the run's first read signs it.
        () => void this.signing.delete(key),
      );
      this.signing.set(key, signed);
    }
  }

  /** The signature of a committed run of this device's stored unsigned: the one made, or one made now and kept. */
  readonly signStored: SignStoredRun = (run) => {
    const { id, key } = this.idOf(run);
    const made = this.made.get(key);
    if (made) return made.sig;
    this.signing.delete(key);
    const sig = this.signatures.sign(id);
    this.keep(key, { origin: run.origin, lastSeq: run.lastSeq, sig });
    return sig;
  };

  /** `signStored` for a run read inside a transaction, which may still roll back: not kept. */
  readonly signUncommitted: SignStoredRun = (run) => {
    const { id, key } = this.idOf(run);
    return this.made.get(key)?.sig ?? this.signatures.sign(id);
  };

  /** Resolves once every committed run is signed (or its signing failed): those not handed to the thread pool yet too. */
  async settled(): Promise<void> {
    this.dispatch();
    while (this.signing.size > 0) await Promise.all(this.signing.values());
  }

  /** The signatures made and not stored yet, handed over to be stored. */
  take(): RunSignature[] {
    const taken = [...this.made.values()];
    this.made.clear();
    return taken;
  }

  private idOf(run: Parameters<SignStoredRun>[0]): { id: Uint8Array; key: string } {
    // Only this device's own runs are stored unsigned: a library file moved under another key is not signed for its old author.
    if (run.author !== this.signatures.peer) {
      throw new InternalError(`internal: run ${run.origin}#${run.firstSeq}..${run.lastSeq} of ${run.author} is stored unsigned, but this device is ${this.signatures.peer}`);
    }
    const id = runId(this.signatures, this.library, run, run.prev);
    return { id, key: bytesToHex(id) };
  }

  private keep(key: string, signature: RunSignature): void {
    this.made.set(key, signature);
    if (this.made.size === this.storeEvery) this.onMany();
  }
}
