/**
 * The summary mismatches that a repair answered (`owned-digests`: per partner, owner, version and
 * both sides' summaries), across the sessions of a library. The same mismatch again would pull
 * the same rows again for nothing: a false summary, or rows no repair changes (a row over the
 * record limit against an older, smaller version of it; equal versions with other clocks). A
 * repair that took rows changes this device's summary, so a later mismatch is another one.
 * Bounded: the oldest are forgotten first, and then cost one more repair each.
 */
export class RepairLedger {
  private readonly answered = new Set<string>();

  constructor(private readonly capacity = 4_096) {}

  has(mismatch: string): boolean {
    return this.answered.has(mismatch);
  }

  add(mismatch: string): void {
    if (this.answered.size >= this.capacity) this.answered.delete(this.answered.values().next().value!);
    this.answered.add(mismatch);
  }
}
