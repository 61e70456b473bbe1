/**
 * An in-process sync node for the fuzz harness: the real core (`SyncNode.create` of
 * src/core/sync-node.ts) on an in-process `PairedTransport` and in-memory SQLite. Each library's database
 * counts the rows written to its tables (`writes()`), the fuzzer's cheap, exact "was storage
 * touched" oracle; its triggers are installed once the library exists (`watchWrites`).
 */
import { namedPeerSignatures } from '../src/node/native-signatures.js';
import { sql, type Kysely } from 'kysely';
import type { LibraryStorage } from '../src/core/storage.js';
import { SyncNode } from '../src/core/sync-node.js';
import { DEFAULT_SYNC_TUNING, type SyncTuning } from '../src/core/tuning.js';
import { engineOf, type Library } from '../src/library/library.js';
import type { LibraryEngine } from '../src/library/engine.js';
import type { Model } from '../src/models/define.js';
import { openMemorySqlite } from '../src/node/sqlite.js';
import type { Transport } from '../src/protocol/transport.js';
import type { SessionErrorEvent } from '../src/replication/wire-errors.js';
import { systemRuntime } from '../src/runtime/system-runtime.js';
import type { InternalTables } from '../src/storage/schema.js';

/**
 * Tables whose writes are node-local bookkeeping, not the library's data: when a partner was
 * last heard from (noted on every session close), the history of catch-up runs (one per
 * catch-up a session starts) and saved acks.
 */
const BOOKKEEPING_TABLES = new Set(['sync_last_seen', 'sync_runs', 'sync_acks']);

export interface CoreNodeOptions {
  deviceId: string;
  models: Model[];
  tuning: Partial<SyncTuning>;
  onSessionError: (event: SessionErrorEvent) => void;
}

export interface CoreLibrary {
  library: Library;
  engine: LibraryEngine;
  /** Rows inserted, updated or deleted so far, per table (`table:n …`; bookkeeping excepted). */
  writes(): Promise<string>;
}

export class CoreNode {
  private readonly dbs = new Map<string, Kysely<InternalTables>>();

  private constructor(
    readonly node: SyncNode,
    readonly transport: Transport,
    dbs: Map<string, Kysely<InternalTables>>,
  ) {
    this.dbs = dbs;
  }

  static async start(transport: Transport, options: CoreNodeOptions): Promise<CoreNode> {
    const dbs = new Map<string, Kysely<InternalTables>>();
    const storage: LibraryStorage = {
      deviceId: options.deviceId,
      signatures: namedPeerSignatures(transport.localPeer),
      libraryIds: async () => [...dbs.keys()],
      open: async (id) => ({ db: dbs.get(id)!, release: () => dbs.get(id)!.destroy() }),
      create: async (id) => {
        const { db } = openMemorySqlite();
        dbs.set(id, db);
        return { db, release: () => db.destroy() };
      },
      close: async () => undefined,
    };
    const node = await SyncNode.create({
      models: options.models,
      openStorage: async () => storage,
      startTransport: async () => transport,
      runtime: systemRuntime(),
      tuning: { ...DEFAULT_SYNC_TUNING, ...options.tuning },
      deviceName: null,
      bootstrap: [],
    });
    node.on('session-error', options.onSessionError);
    return new CoreNode(node, transport, dbs);
  }

  get deviceId(): string {
    return this.node.deviceId;
  }

  get peer(): string {
    return this.transport.localPeer;
  }

  /** The library with a write counter on its tables (installed now: count from here on). */
  async watchWrites(library: Library): Promise<CoreLibrary> {
    const db = this.dbs.get(library.id);
    if (!db) throw new Error(`no database of library ${library.id}`);
    return { library, engine: engineOf(library), writes: await countWrites(db) };
  }

  stop(): Promise<void> {
    return this.node.stop();
  }
}

/** Temporary triggers that count the rows written to each of the library's tables (bookkeeping excepted). */
async function countWrites(db: Kysely<InternalTables>): Promise<() => Promise<string>> {
  await sql`CREATE TEMP TABLE fuzz_writes (tbl TEXT PRIMARY KEY, n INTEGER NOT NULL)`.execute(db);
  const tables = await sql<{ name: string }>`SELECT name FROM main.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`.execute(db);
  for (const { name } of tables.rows) {
    if (BOOKKEEPING_TABLES.has(name)) continue;
    await sql`INSERT INTO temp.fuzz_writes VALUES (${name}, 0)`.execute(db);
    for (const op of ['INSERT', 'UPDATE', 'DELETE']) {
      const trigger = sql.id(`fuzz_${op.toLowerCase()}_${name}`);
      // A meta key rewritten with its value (a confirmation repeated) changes nothing.
      const when = op === 'UPDATE' && name === 'sync_meta' ? sql`WHEN OLD.value IS NOT NEW.value` : sql``;
      await sql`CREATE TEMP TRIGGER ${trigger} AFTER ${sql.raw(op)} ON main.${sql.id(name)} ${when} BEGIN UPDATE fuzz_writes SET n = n + 1 WHERE tbl = ${sql.lit(name)}; END`.execute(db);
    }
  }
  return async () => {
    const rows = await sql<{ tbl: string; n: number }>`SELECT tbl, n FROM temp.fuzz_writes WHERE n > 0 ORDER BY tbl`.execute(db);
    return rows.rows.map((r) => `${r.tbl}:${r.n}`).join(' ');
  };
}
