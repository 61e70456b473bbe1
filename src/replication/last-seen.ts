import type { Kysely } from 'kysely';
import type { InternalTables } from '../storage/schema.js';

/** How often, at most, the last-seen times of live sessions are written while they run. */
export const LAST_SEEN_SAVE_MS = 5_000;

/** Per partner device, the wall ms of the last frame heard from it, as stored. */
export async function readLastSeen(db: Kysely<InternalTables>): Promise<Map<string, number>> {
  const rows = await db.selectFrom('sync_last_seen').selectAll().execute();
  return new Map(rows.map((r) => [r.device, r.seen_at]));
}

/**
 * When each partner device was last heard from (`lib.members()`). Device-local, not synced:
 * it says what this device heard, which no other device can know. Sessions note every frame in
 * memory (`Session.lastSeenAt`); this keeps the newest time per device and writes the changed
 * ones when a session closes, on stop and every `LAST_SEEN_SAVE_MS`, never per frame.
 */
export class LastSeen {
  private readonly unsaved = new Set<string>();

  private constructor(
    private readonly db: Kysely<InternalTables>,
    private readonly heard: Map<string, number>,
  ) {}

  static async open(db: Kysely<InternalTables>): Promise<LastSeen> {
    return new LastSeen(db, await readLastSeen(db));
  }

  /** Records that `device` was heard at `at` (only a newer time counts). */
  note(device: string, at: number): void {
    if (at <= (this.heard.get(device) ?? -Infinity)) return;
    this.heard.set(device, at);
    this.unsaved.add(device);
  }

  get(device: string): number | null {
    return this.heard.get(device) ?? null;
  }

  /** Writes the times that changed since the last save, in one statement. */
  async save(): Promise<void> {
    if (this.unsaved.size === 0) return;
    const rows = [...this.unsaved].map((device) => ({ device, seen_at: this.heard.get(device)! }));
    this.unsaved.clear();
    try {
      await this.db
        .insertInto('sync_last_seen')
        .values(rows)
        .onConflict((oc) => oc.column('device').doUpdateSet((eb) => ({ seen_at: eb.ref('excluded.seen_at') })))
        .execute();
    } catch (err) {
      // Not written: the next save tries again.
      for (const { device } of rows) this.unsaved.add(device);
      throw err;
    }
  }
}
