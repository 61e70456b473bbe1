import { type RemovalInfo, RemovedError } from '../errors.js';
import { decodeHlc } from '../hlc/index.js';
import type { LogEntry, VersionVector } from '../peer-log/types.js';
import { MAX_POSITION } from '../protocol/messages.js';
import { isWriterOf } from './writers.js';

/** A removal as the synced `sync_removals` row holds it; `cutoff` is the row's clock. */
export interface Removal {
  readonly device: string;
  readonly by: string;
  readonly kind: RemovalInfo['kind'];
  readonly cutoff: string;
}

/**
 * What members took of one removed device after its cutoff, before they learned of the removal
 * (the `sync_removal_kept` rows of it, merged): per writer the greatest position, and the
 * greatest version of its device-owned rows.
 */
export interface Kept {
  readonly writers: ReadonlyMap<string, number>;
  readonly owned: number;
}

/** `sync_meta` key of the closed origins: `{ origin: last accepted seq }` (JSON). */
export const CLOSED_ORIGINS_META_KEY = 'closed_origins';

export function removalInfo(removal: Removal): RemovalInfo {
  return { kind: removal.kind, by: removal.by, at: decodeHlc(removal.cutoff).wallMs };
}

/** What a device that is no longer a member of `library` is refused with (writes, `synced()`). */
export function noLongerMemberError(library: string, removal: RemovalInfo): RemovedError {
  const how = removal.kind === 'left' ? 'it left' : `removed by ${removal.by}`;
  return new RemovedError(`this device is no longer a member of library ${library} (${how}): its data stays readable, writes are refused`, removal);
}

/**
 * What this library knows of removed devices: their cutoffs, what members kept of them, and the
 * log origins closed. A removed device's changes stamped after its cutoff are refused wherever
 * changes are admitted (`remote-apply.ts`), but for those members kept: took before they learned
 * of the removal (`Kept`), which every member keeps. A writer's clocks grow with its log
 * positions, so the first refused position of an origin closes it: nothing after it is accepted
 * either, what a partner advertises of it beyond does not count as ahead (`cap`), and pulls ask
 * for it after the largest position (`pullAfter`). Only a member's kept position beyond it opens
 * it again (`reopenKept`).
 */
export class Removals {
  private byDevice = new Map<string, Removal>();
  private kept = new Map<string, Kept>();
  private readonly closed: Map<string, number>;
  /** Whether `set` or `close` ran on this copy: only then does `adopt` take it over. */
  private changed = false;

  constructor(closed: ReadonlyMap<string, number> = new Map()) {
    this.closed = new Map(closed);
  }

  /**
   * A copy a transaction changes (`WriteBatch.removals`); the library adopts it once the
   * transaction committed, so a rolled-back one leaves nothing behind.
   */
  copy(): Removals {
    const copy = new Removals(this.closed);
    copy.byDevice = new Map(this.byDevice);
    copy.kept = new Map(this.kept);
    return copy;
  }

  /**
   * Takes over the state of `committed` (a copy made by `copy`, whose transaction committed), if
   * that transaction changed it: one that did not leaves what was set meanwhile (at start) as is.
   */
  adopt(committed: Removals): void {
    if (!committed.changed) return;
    this.byDevice = new Map(committed.byDevice);
    this.kept = new Map(committed.kept);
    this.closed.clear();
    for (const [origin, through] of committed.closed) this.closed.set(origin, through);
  }

  /** Replaces the removals (the `sync_removals` rows as held). */
  set(removals: readonly Removal[]): void {
    this.byDevice = new Map(removals.map((r) => [r.device, r]));
    this.changed = true;
  }

  /** Replaces what members kept of removed devices (the `sync_removal_kept` rows as held, merged per device). */
  setKept(kept: ReadonlyMap<string, Kept>): void {
    this.kept = new Map(kept);
    this.changed = true;
  }

  /** The greatest position of `origin` (a removed device's writer) that a member kept. */
  keptThrough(origin: string): number {
    let through = 0;
    for (const [device, kept] of this.kept) if (isWriterOf(origin, device)) through = Math.max(through, kept.writers.get(origin) ?? 0);
    return through;
  }

  /**
   * Reopens closed origins that members kept beyond where they were closed (unless `stays`, an
   * origin closed for a fork), so their kept changes are pulled. Returns whether any was.
   */
  reopenKept(stays: (origin: string) => boolean): boolean {
    let reopened = false;
    for (const [origin, through] of this.closed) {
      if (this.cutoffFor(origin) === undefined || this.keptThrough(origin) <= through || stays(origin)) continue;
      this.closed.delete(origin);
      reopened = this.changed = true;
    }
    return reopened;
  }

  of(device: string): Removal | undefined {
    return this.byDevice.get(device);
  }

  /**
   * The PeerIds that removed devices' member rows name, with the removal. A row of another device
   * id naming one of them is no member either: written before the removal, it would let the
   * removed device back in as that device.
   */
  peersOf(rows: readonly { device: string; peer: string }[]): Map<string, Removal> {
    const peers = new Map<string, Removal>();
    for (const row of rows) {
      const removal = this.byDevice.get(row.device);
      if (removal) peers.set(row.peer, removal);
    }
    return peers;
  }

  all(): Removal[] {
    return [...this.byDevice.values()];
  }

  /** The cutoff of the removed device `origin` is a writer of, if it was removed. */
  cutoffFor(origin: string, extra?: ReadonlyMap<string, string>): string | undefined {
    let cutoff: string | undefined;
    const consider = (device: string, hlc: string) => {
      if (isWriterOf(origin, device) && (cutoff === undefined || hlc < cutoff)) cutoff = hlc;
    };
    for (const removal of this.byDevice.values()) consider(removal.device, removal.cutoff);
    for (const [device, hlc] of extra ?? []) consider(device, hlc);
    return cutoff;
  }

  /** Whether an entry of a removed device's writer was stamped after its cutoff, beyond what members kept. */
  refuses(entry: Pick<LogEntry, 'origin' | 'seq' | 'hlc'>, extra?: ReadonlyMap<string, string>): boolean {
    const cutoff = this.cutoffFor(entry.origin, extra);
    return cutoff !== undefined && entry.hlc > cutoff && entry.seq > this.keptThrough(entry.origin);
  }

  /** Whether a removed device's own row was written after its cutoff, beyond the version members kept. */
  refusesOwned(row: { owner: string; version: number; hlc: string }): boolean {
    const cutoff = this.cutoffFor(row.owner);
    return cutoff !== undefined && row.hlc > cutoff && row.version > (this.kept.get(row.owner)?.owned ?? 0);
  }

  /** The last accepted seq of a closed origin. */
  closedThrough(origin: string): number | undefined {
    return this.closed.get(origin);
  }

  close(origin: string, through: number): void {
    this.closed.set(origin, through);
    this.changed = true;
  }

  closedValue(): string {
    return JSON.stringify(Object.fromEntries(this.closed));
  }

  /** `vector` with closed origins at what this device accepted of them at most. */
  cap(vector: VersionVector): VersionVector {
    if (this.closed.size === 0) return vector;
    const capped = { ...vector };
    for (const [origin, through] of this.closed) if ((capped[origin] ?? 0) > through) capped[origin] = through;
    return capped;
  }

  /** `vector` without the origins of removed devices' writers. */
  withoutRemoved(vector: VersionVector): VersionVector {
    if (this.byDevice.size === 0) return vector;
    return Object.fromEntries(Object.entries(vector).filter(([origin]) => this.cutoffFor(origin) === undefined));
  }

  /** A pull's `after`: closed origins at the largest position, so no partner serves them. */
  pullAfter(vector: VersionVector): VersionVector {
    if (this.closed.size === 0) return vector;
    const after = { ...vector };
    for (const origin of this.closed.keys()) after[origin] = MAX_POSITION;
    return after;
  }
}
