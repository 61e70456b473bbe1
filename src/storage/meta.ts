import type { Kysely } from 'kysely';
import type { InternalTables } from './schema.js';

/**
 * The engine's own settings stored with a library (`sync_meta`: one string per key). Kept apart
 * from `library/open-library.ts` so that the write path (which persists settings inside its
 * transactions) does not import the code that opens a library (which reads the write path's
 * counters).
 */

/** Sets one setting. */
export async function putMeta(db: Kysely<InternalTables>, key: string, value: string): Promise<void> {
  await db
    .insertInto('sync_meta')
    .values({ key, value })
    .onConflict((oc) => oc.column('key').doUpdateSet({ value }))
    .execute();
}

/** Reads one setting. */
export async function readMeta(db: Kysely<InternalTables>, key: string): Promise<string | undefined> {
  const row = await db.selectFrom('sync_meta').select('value').where('key', '=', key).executeTakeFirst();
  return row?.value;
}

/** Deletes one setting (none held: nothing happens). */
export async function deleteMeta(db: Kysely<InternalTables>, key: string): Promise<void> {
  await db.deleteFrom('sync_meta').where('key', '=', key).execute();
}
