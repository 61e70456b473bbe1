import Database from 'better-sqlite3';
import { Kysely, SqliteDialect } from 'kysely';
import type { InternalTables } from './schema.js';

/**
 * Node edge: a Kysely instance over a better-sqlite3 file. WAL lets readers run beside the
 * writer; synchronous=FULL makes every committed transaction durable before the write's promise
 * resolves (an acknowledged write survives kill -9 and power loss).
 */
export function openSqliteFile(path: string): Kysely<InternalTables> {
  const database = new Database(path);
  database.pragma('journal_mode = WAL');
  database.pragma('synchronous = FULL');
  database.pragma('foreign_keys = ON');
  database.pragma('busy_timeout = 5000');
  return new Kysely<InternalTables>({ dialect: new SqliteDialect({ database }) });
}
