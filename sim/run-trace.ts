import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';

/** Lines of a trace kept in memory for the report of a failing seed. */
const TAIL_LINES = 40;

/**
 * Everything a simulated run did, in order: writes, frames delivered or faulted, crashes,
 * restarts, partitions, the final digests. Each line starts with the virtual time. The trace
 * is hashed as it grows (a run may deliver millions of frames): two runs of one seed are the
 * same run exactly when their hashes are equal. Only the tail is kept, unless `keepAll`.
 */
export class Trace {
  private readonly hash = sha256.create();
  private readonly encoder = new TextEncoder();
  private readonly tailLines: string[] = [];
  private readonly all: string[] | undefined;
  lines = 0;

  constructor(
    private readonly now: () => number,
    options: { keepAll?: boolean } = {},
  ) {
    this.all = options.keepAll ? [] : undefined;
  }

  record(kind: string, detail: string): void {
    const line = `${this.now()} ${kind} ${detail}`;
    this.hash.update(this.encoder.encode(`${line}\n`));
    this.lines += 1;
    this.tailLines.push(line);
    if (this.tailLines.length > TAIL_LINES) this.tailLines.shift();
    this.all?.push(line);
  }

  /** The hex SHA-256 of every line so far (the trace can still grow afterwards). */
  digest(): string {
    return bytesToHex(this.hash.clone().digest());
  }

  tail(): readonly string[] {
    return this.tailLines;
  }

  /** Every line, when the trace was made with `keepAll`. */
  lineList(): readonly string[] | undefined {
    return this.all;
  }
}
