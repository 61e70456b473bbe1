/**
 * An in-process sync node for the fuzz harness: the real core (Library, LibraryReplicator,
 * SyncNetwork) on a `LoopTransport` and in-memory SQLite, wired as `SyncNode.create` wires it
 * but without libp2p, files or a data directory. Each library's database counts writes to its
 * tables (`writes()`), the fuzzer's cheap, exact "was storage touched" oracle.
 */
import { sql, type Kysely } from 'kysely';
import { HlcClock } from '../src/hlc/index.js';
import { Library, type Member } from '../src/library/library.js';
import type { Model } from '../src/models/define.js';
import { ModelRegistry } from '../src/models/registry.js';
import { SYSTEM_MODELS } from '../src/models/system.js';
import { decodeInvite } from '../src/replication/invite-code.js';
import { type SessionErrorEvent, SyncNetwork } from '../src/replication/network.js';
import { LibraryReplicator, type ReplicationTuning } from '../src/replication/replicator.js';
import { BACKFILL_META_KEY } from '../src/backfill/catch-up.js';
import { prepareLibrary } from '../src/storage/open-library.js';
import type { InternalTables } from '../src/storage/schema.js';
import { openSqliteFile } from '../src/storage/sqlite-node.js';
import type { LoopTransport } from './loop-transport.js';

/**
 * Tables whose writes are node-local bookkeeping, not the library's data: when a partner was
 * last heard from (noted on every session close), the history of catch-up runs (one per
 * catch-up a session starts) and saved acks.
 */
const BOOKKEEPING_TABLES = new Set(['sync_last_seen', 'sync_runs', 'sync_acks']);

export interface CoreNodeOptions {
  deviceId: string;
  models: Model[];
  tuning: ReplicationTuning & { maxConcurrentServes: number; handshakeTimeoutMs: number };
  onSessionError: (event: SessionErrorEvent) => void;
}

export interface CoreLibrary {
  library: Library;
  replicator: LibraryReplicator;
  /** Rows inserted, updated or deleted so far, per table (`table:n …`; bookkeeping excepted). */
  writes(): Promise<string>;
}

export class CoreNode {
  readonly libraries = new Map<string, CoreLibrary>();
  private readonly registry: ModelRegistry;
  private readonly clock: HlcClock;
  readonly network: SyncNetwork;

  constructor(
    readonly transport: LoopTransport,
    private readonly options: CoreNodeOptions,
  ) {
    this.registry = new ModelRegistry([...options.models, ...SYSTEM_MODELS]);
    this.clock = new HlcClock({ deviceId: options.deviceId });
    this.network = new SyncNetwork(transport, options.deviceId, {
      backoff: { minMs: 50, maxMs: 500 },
      reconcileMs: 3_600_000,
      handshakeTimeoutMs: options.tuning.handshakeTimeoutMs,
      maxConcurrentServes: options.tuning.maxConcurrentServes,
      deviceName: null,
      bootstrap: [],
      now: Date.now,
      random: Math.random,
      onSessionError: options.onSessionError,
    });
  }

  get deviceId(): string {
    return this.options.deviceId;
  }

  get peer(): string {
    return this.transport.localPeer;
  }

  createLibrary(id: string, name: string): Promise<CoreLibrary> {
    return this.open(id, name, undefined);
  }

  /** Joins through an invite of another node on the hub, as `SyncNode.joinLibrary` does. */
  async joinLibrary(invite: string): Promise<CoreLibrary> {
    const parsed = decodeInvite(invite);
    return this.network.whileJoining(parsed.library, async () => {
      const inviter = await this.network.join(parsed);
      return this.open(parsed.library, inviter.name, { device: inviter.device, peer: parsed.inviterPeer, addrs: parsed.inviterAddrs });
    });
  }

  async stop(): Promise<void> {
    await this.network.stop();
    for (const { library } of this.libraries.values()) await library.close();
  }

  private async open(id: string, name: string, bootstrap: Member | undefined): Promise<CoreLibrary> {
    const db = openSqliteFile(':memory:');
    const meta: Record<string, string> = bootstrap ? { bootstrap_member: JSON.stringify(bootstrap), [BACKFILL_META_KEY]: 'pending' } : {};
    const prepared = await prepareLibrary(db, this.registry, { deviceId: this.deviceId, create: { id, name, meta } });
    const writes = await countWrites(db);
    const library = new Library({
      id,
      name,
      db,
      deviceId: this.deviceId,
      clock: this.clock,
      registry: this.registry,
      tables: prepared.tables,
      counters: prepared.counters,
      ownedConfirmed: prepared.ownedConfirmed,
      release: () => db.destroy(),
    });
    const replicator = new LibraryReplicator(library, this.options.tuning, this.network, bootstrap);
    this.network.add(replicator);
    await replicator.start();
    await replicator.refreshSelfWhenConfirmed();
    const core = { library, replicator, writes };
    this.libraries.set(id, core);
    return core;
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
