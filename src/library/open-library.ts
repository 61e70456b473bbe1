import { type Kysely, Migrator } from 'kysely';
import { SchemaMismatchError } from '../errors.js';
import { decodeHlc, type Hlc } from '../hlc/index.js';
import type { ModelRegistry } from '../models/registry.js';
import { runSql } from '../util/sql.js';
import { readVector } from '../peer-log/log-store.js';
import { putMeta } from '../storage/meta.js';
import { ModelTable } from '../storage/model-table.js';
import { type InternalTables, migrationProvider } from '../storage/schema.js';
import type { SyncCounters } from './write-batch.js';
import { storedWriter, WRITER_META_KEY } from './writers.js';
import { adoptUnsignedOwnedRows } from './adopt-owned-rows.js';
import { lowestUnsignedOwnVersion } from './sign-own-rows.js';
import type { Signatures } from '../runtime/signatures.js';

export interface LibraryMeta {
  id: string;
  name: string;
  /** The device this database belongs to: a library file must not be reused by another device. */
  deviceId: string;
}

export interface PreparedLibrary {
  meta: LibraryMeta;
  tables: Map<string, ModelTable>;
  counters: SyncCounters;
  /** The persisted HLC high-water mark, if any write ever happened. */
  highWater: Hlc | undefined;
  /** Own device-owned version known to be held alike by partners (see `OWNED_CONFIRMED_META_KEY`). */
  ownedConfirmed: number;
}

/**
 * `sync_meta` key: the version through which this device's own device-owned rows are known to
 * be held alike by its partners. A restored data directory holds it from before the backup,
 * so pulling its own rows after it from a partner brings back whatever the backup lacks.
 */
export const OWNED_CONFIRMED_META_KEY = 'owned_confirmed';

export interface PrepareOptions {
  deviceId: string;
  /** This device's key: it signs the device-owned rows of a library from before 3.0 at open. */
  signatures: Signatures;
  create?: { id: string; name: string; meta?: Readonly<Record<string, string>> };
}

/**
 * Brings a library database up to date (internal migrations, then one table per model) and
 * reads what the library needs in memory. `create` is given for a new library (its `meta` is
 * stored with the identity, in the same statement); an existing one must carry matching metadata.
 */
export async function prepareLibrary(
  db: Kysely<InternalTables>,
  registry: ModelRegistry,
  expected: PrepareOptions,
): Promise<PreparedLibrary> {
  // One transaction: an upgrade is all or nothing, and creating a library costs one commit
  // (one fsync) rather than one per statement. Kysely's SQLite migrator runs its migrations
  // without a transaction of its own, on the single connection, so they join this one.
  await runSql(db, 'BEGIN IMMEDIATE');
  try {
    const prepared = await prepareInTransaction(db, registry, expected);
    await runSql(db, 'COMMIT');
    return prepared;
  } catch (err) {
    await runSql(db, 'ROLLBACK');
    throw err;
  }
}

async function prepareInTransaction(
  db: Kysely<InternalTables>,
  registry: ModelRegistry,
  expected: PrepareOptions,
): Promise<PreparedLibrary> {
  const migrated = await new Migrator({ db, provider: migrationProvider }).migrateToLatest();
  if (migrated.error) throw migrated.error;

  if (expected.create) {
    await db
      .insertInto('sync_meta')
      .values([
        { key: 'library_id', value: expected.create.id },
        { key: 'library_name', value: expected.create.name },
        { key: 'device_id', value: expected.deviceId },
        ...Object.entries(expected.create.meta ?? {}).map(([key, value]) => ({ key, value })),
      ])
      .execute();
  }
  const metaRows = await db.selectFrom('sync_meta').selectAll().execute();
  const metaMap = new Map(metaRows.map((r) => [r.key, r.value]));
  const meta: LibraryMeta = {
    id: metaMap.get('library_id') ?? '',
    name: metaMap.get('library_name') ?? '',
    deviceId: metaMap.get('device_id') ?? '',
  };
  if (!meta.id) throw new SchemaMismatchError('database holds no library metadata');
  if (meta.deviceId !== expected.deviceId) {
    throw new SchemaMismatchError(
      `library ${meta.id} belongs to device ${meta.deviceId}, not ${expected.deviceId}; a library file cannot be copied between devices`,
    );
  }

  const tables = new Map<string, ModelTable>();
  const unsigned: ModelTable[] = [];
  for (const model of registry.all()) {
    const table = new ModelTable(model);
    const existing = await runSql<{ name: string; type: string }>(db, `PRAGMA table_info(${table.table})`);
    const columns = new Map(existing.map((c) => [c.name.toLowerCase(), c.type]));
    const statements = existing.length === 0 ? table.createStatements() : table.upgradeStatements(columns);
    for (const statement of statements) await runSql(db, statement);
    // A device-owned table from before 3.0, whichever open brings its model back.
    if (existing.length > 0 && table.model.ownership === 'device' && !columns.has('_cert')) unsigned.push(table);
    tables.set(model.name, table);
  }
  await adoptUnsignedOwnedRows(db, unsigned, meta.deviceId);
  const ownedTables = [...tables.values()].filter((t) => t.model.ownership === 'device');
  const unsignedOwnFrom = await lowestUnsignedOwnVersion(db, ownedTables, meta.deviceId);

  const held = await readVector(db);
  const vector = new Map([...held].map(([origin, v]) => [origin, v.seq]));
  const heads = new Map([...held].flatMap(([origin, v]) => (v.head === null ? [] : [[origin, v.head] as const])));
  const owners = await db.selectFrom('sync_owner_versions').selectAll().execute();
  const ownerVersions = new Map(owners.map((o) => [o.owner, o.version]));
  const ownerAuthors = new Map(owners.flatMap((o) => (o.author === null ? [] : [[o.owner, o.author] as const])));
  const hlc = metaMap.get('hlc');
  let ownedConfirmed = Number(metaMap.get(OWNED_CONFIRMED_META_KEY));
  if (!Number.isSafeInteger(ownedConfirmed)) {
    // A library from before this key: what it holds is taken as confirmed.
    ownedConfirmed = ownerVersions.get(meta.deviceId) ?? 0;
    await putMeta(db, OWNED_CONFIRMED_META_KEY, String(ownedConfirmed));
  }
  return {
    meta,
    tables,
    counters: { vector, ownerVersions, ownerAuthors, writer: storedWriter(meta.deviceId, metaMap.get(WRITER_META_KEY)), heads, unsignedOwnFrom },
    highWater: hlc === undefined ? undefined : decodeHlc(hlc),
    ownedConfirmed,
  };
}
