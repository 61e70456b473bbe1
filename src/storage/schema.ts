import { type Kysely, type Migration, type MigrationProvider, sql } from 'kysely';

/** Types of the library database's internal tables (model tables are dynamic, see model-table.ts). */
export interface InternalTables {
  sync_meta: { key: string; value: string };
  sync_log: {
    origin: string;
    seq: number;
    hlc: string;
    model: string;
    record_id: string;
    op: string;
    fields: Uint8Array | null;
  };
  sync_vector: { origin: string; seq: number; pruned_through: number };
  sync_acks: { partner: string; origin: string; seq: number };
  sync_owner_versions: { owner: string; version: number };
}

export type LibraryDb = Kysely<InternalTables>;

/**
 * Versioned migrations of the internal tables, applied in order by Kysely's Migrator when a
 * library is opened. Append new versions; never edit a released one.
 */
const sqlWithoutRowid = sql`without rowid`;

const migrations: Record<string, Migration> = {
  '0001-peer-log': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('sync_meta')
        .addColumn('key', 'text', (c) => c.primaryKey())
        .addColumn('value', 'text', (c) => c.notNull())
        .execute();
      // WITHOUT ROWID: the (origin, seq) key is the only access path, so one b-tree suffices.
      await db.schema
        .createTable('sync_log')
        .addColumn('origin', 'text', (c) => c.notNull())
        .addColumn('seq', 'integer', (c) => c.notNull())
        .addColumn('hlc', 'text', (c) => c.notNull())
        .addColumn('model', 'text', (c) => c.notNull())
        .addColumn('record_id', 'text', (c) => c.notNull())
        .addColumn('op', 'text', (c) => c.notNull())
        .addColumn('fields', 'blob')
        .addPrimaryKeyConstraint('sync_log_pk', ['origin', 'seq'])
        .modifyEnd(sqlWithoutRowid)
        .execute();
      await db.schema
        .createTable('sync_vector')
        .addColumn('origin', 'text', (c) => c.primaryKey())
        .addColumn('seq', 'integer', (c) => c.notNull())
        .addColumn('pruned_through', 'integer', (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema
        .createTable('sync_acks')
        .addColumn('partner', 'text', (c) => c.notNull())
        .addColumn('origin', 'text', (c) => c.notNull())
        .addColumn('seq', 'integer', (c) => c.notNull())
        .addPrimaryKeyConstraint('sync_acks_pk', ['partner', 'origin'])
        .execute();
      await db.schema
        .createTable('sync_owner_versions')
        .addColumn('owner', 'text', (c) => c.primaryKey())
        .addColumn('version', 'integer', (c) => c.notNull())
        .execute();
    },
  },
};

export const migrationProvider: MigrationProvider = {
  getMigrations: async () => migrations,
};
