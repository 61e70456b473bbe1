import { bytesToHex } from '@noble/hashes/utils.js';
import type { RunSignature, SignStoredRun, UnsignedRun } from '../peer-log/log-store.js';
import { runId } from '../peer-log/signed-runs.js';
import type { Signatures } from '../runtime/signatures.js';

/** A run of this device's a committed write stored unsigned, with its id. */
export interface WrittenRun {
  run: UnsignedRun;
  id: Uint8Array;
}

/**
 * Signatures of this device's own runs, which a write stores unsigned so that no signature is
 * on the write's path (a single-row write would spend about a fifth of its time on it):
 * - once the write commits, each run is signed off this thread (`Signatures.signOffThread`:
 *   Node's thread pool, on another core), while the next write goes on;
 * - a read of the log that finds a run not signed yet signs it on this thread at once
 *   (`signStored`): it never waits for the thread pool, whose round trip costs more than a
 *   signature;
 * - signatures made are stored with their runs many at a time (`take`, `storeRunSignatures`).
 * A signature lost in a stop is made again when its run is next read: Ed25519 signatures are
 * deterministic, so it is the same one. Signatures are kept by run id, so one made for a run
 * that another stored since (a transaction rolled back, the seq written again) is never used.
 */
export class OwnRunSignatures {
  /** Runs being signed off this thread, by id (hex). */
  private readonly signing = new Map<string, RunSignature>();
  /** Signatures made and not stored yet, by run id (hex). */
  private readonly made = new Map<string, RunSignature>();

  constructor(
    private readonly signatures: Signatures,
    private readonly library: string,
    /** Called when `made` has grown to `storeEvery` signatures not stored yet. */
    private readonly onMany: () => void,
    private readonly storeEvery: number,
  ) {}

  /** Starts signing the runs a committed write stored unsigned. */
  signCommitted(runs: readonly WrittenRun[]): void {
    for (const { run, id } of runs) {
      const key = bytesToHex(id);
      this.signing.set(key, { origin: run.origin, lastSeq: run.lastSeq, sig: new Uint8Array(0) });
      this.signatures.signOffThread(id).then(
        (sig) => {
          if (this.signing.delete(key)) this.keep(key, { origin: run.origin, lastSeq: run.lastSeq, sig });
        },
        // Not signed there: the run's first read signs it.
        () => this.signing.delete(key),
      );
    }
  }

  /** The signature of a stored run of this device's not signed yet: the one made, or one made now. */
  readonly signStored: SignStoredRun = (run) => {
    const id = runId(this.signatures, this.library, run, run.prev);
    const key = bytesToHex(id);
    const made = this.made.get(key);
    if (made) return made.sig;
    this.signing.delete(key);
    const sig = this.signatures.sign(id);
    this.keep(key, { origin: run.origin, lastSeq: run.lastSeq, sig });
    return sig;
  };

  /** The signatures made and not stored yet, handed over to be stored. */
  take(): RunSignature[] {
    const taken = [...this.made.values()];
    this.made.clear();
    return taken;
  }

  private keep(key: string, signature: RunSignature): void {
    this.made.set(key, signature);
    if (this.made.size === this.storeEvery) this.onMany();
  }
}
