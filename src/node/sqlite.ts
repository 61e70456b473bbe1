import Database from 'better-sqlite3';
import { Kysely, SqliteDialect, type SqliteDatabase, type SqliteStatement } from 'kysely';
import type { InternalTables } from '../storage/schema.js';

/** Distinct statements kept prepared; the write path uses a few dozen shapes. */
const STATEMENT_CACHE_SIZE = 200;

/**
 * Kysely prepares every query anew; parsing a 1 000-row multi-value insert costs about as much
 * as running it. Statements are pure functions of their SQL text, so a small LRU of prepared
 * statements keyed by that text is safe (better-sqlite3 runs them synchronously, never
 * interleaved).
 */
function withStatementCache(database: Database.Database): SqliteDatabase {
  const cache = new Map<string, SqliteStatement>();
  return {
    close: () => database.close(),
    prepare(sql: string): SqliteStatement {
      let statement = cache.get(sql);
      if (statement) {
        cache.delete(sql);
      } else {
        statement = database.prepare(sql) as unknown as SqliteStatement;
        if (cache.size >= STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value!);
      }
      cache.set(sql, statement);
      return statement;
    },
  };
}

function kyselyOver(database: Database.Database): Kysely<InternalTables> {
  return new Kysely<InternalTables>({ dialect: new SqliteDialect({ database: withStatementCache(database) }) });
}

/**
 * Node edge: a Kysely instance over a better-sqlite3 file. WAL lets readers run beside the
 * writer; synchronous=FULL makes every committed transaction durable before the write's promise
 * resolves (an acknowledged write survives kill -9 and power loss).
 */
export function openSqliteFile(path: string): Kysely<InternalTables> {
  const database = new Database(path);
  database.pragma('journal_mode = WAL');
  database.pragma('synchronous = FULL');
  database.pragma('busy_timeout = 5000');
  return kyselyOver(database);
}

/** A library database in memory and its better-sqlite3 handle. */
export interface MemorySqlite {
  db: Kysely<InternalTables>;
  database: Database.Database;
}

/**
 * An in-memory better-sqlite3 database (the simulator's storage): empty, or the content of
 * `image` (what `database.serialize()` returned). The same SQL engine as a file. The handle is
 * returned with it: the simulator serializes it to keep what a crash leaves on disk, and closes
 * it so that the abandoned node cannot write any more.
 */
export function openMemorySqlite(image?: Buffer): MemorySqlite {
  const database = image ? new Database(image) : new Database(':memory:');
  return { db: kyselyOver(database), database };
}
