import type { Kysely } from 'kysely';
import type { InternalTables } from '../storage/schema.js';

/** Per partner device, the wall ms of the last frame heard from it (`sync_last_seen`, device-local). */
export class LastSeenStore {
  constructor(private readonly db: Kysely<InternalTables>) {}

  async read(): Promise<Map<string, number>> {
    const rows = await this.db.selectFrom('sync_last_seen').selectAll().execute();
    return new Map(rows.map((r) => [r.device, r.seen_at]));
  }

  /** Writes the given times in one statement (each replaces the device's stored one). */
  async write(times: ReadonlyMap<string, number>): Promise<void> {
    if (times.size === 0) return;
    const rows = [...times].map(([device, seen_at]) => ({ device, seen_at }));
    await this.db
      .insertInto('sync_last_seen')
      .values(rows)
      .onConflict((oc) => oc.column('device').doUpdateSet((eb) => ({ seen_at: eb.ref('excluded.seen_at') })))
      .execute();
  }
}
