import { type Generated, type Kysely, type Migration, type MigrationProvider, sql } from 'kysely';

/** Types of the library database's internal tables (model tables are dynamic, see model-table.ts). */
export interface InternalTables {
  sync_meta: { key: string; value: string };
  /**
   * The peer log in signed runs: a contiguous run of one origin's entries per row, as its author
   * signed it (peer-log/chunk.ts, peer-log/signed-runs.ts).
   */
  sync_log: { origin: string; first_seq: number; last_seq: number; entries: Uint8Array; prev: Uint8Array; sig: Uint8Array; author: string };
  /**
   * `head`: the id of the run ending at `seq`, null when not known (a prefix held from before 2.0,
   * or adopted from a snapshot before 3.2). `proof`: the proof of that run, for a prefix adopted
   * from a snapshot (`packProof`).
   */
  sync_vector: { origin: string; seq: number; pruned_through: number; head: Uint8Array | null; proof: Uint8Array | null };
  sync_acks: { partner: string; origin: string; seq: number };
  /** `author`: the PeerId whose key signs the owner's rows (null until one of its rows is held). */
  sync_owner_versions: { owner: string; version: number; author: string | null };
  /** The first fork found of each origin: the run held here and the other one (`packRun`). */
  sync_forks: { origin: string; seq: number; device: string | null; detected_at: number; held: Uint8Array; other: Uint8Array };
  /**
   * Signed runs of forked origins that are not in `sync_log` (another branch, or positions after
   * the origin was closed), applied like any; with `sync_log`'s runs of the origin from the fork
   * on, what this device relays as fork evidence (`library/forked-runs.ts`).
   */
  sync_forked_runs: { id: Uint8Array; origin: string; first_seq: number; last_seq: number; entries: Uint8Array; prev: Uint8Array; sig: Uint8Array; author: string };
  /**
   * Invites this device issued; only the inviter can honour (or revoke) its own invites.
   * `created_at` is null for invites issued before it was recorded.
   */
  sync_invites: {
    id: string;
    secret_hash: string;
    expires_at: number;
    used_by: string | null;
    created_at: number | null;
    revoked_at: number | null;
  };
  /** Wall ms at which each partner device was last heard from (device-local, never synced). */
  sync_last_seen: { device: string; seen_at: number };
  /** Backfill and catch-up runs (`lib.syncHistory()`); JSON in `peers` and `resumed_from`. */
  sync_runs: {
    id: Generated<number>;
    kind: string;
    started_at: number;
    ended_at: number | null;
    peers: string;
    added: number;
    updated: number;
    deleted: number;
    bytes: number;
    busy_replies: number;
    outcome: string;
    resumed_from: string | null;
    error: string | null;
  };
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
      // WITHOUT ROWID: (origin, last_seq) is the only access path ("chunks reaching past seq n").
      await db.schema
        .createTable('sync_log')
        .addColumn('origin', 'text', (c) => c.notNull())
        .addColumn('first_seq', 'integer', (c) => c.notNull())
        .addColumn('last_seq', 'integer', (c) => c.notNull())
        .addColumn('entries', 'blob', (c) => c.notNull())
        .addPrimaryKeyConstraint('sync_log_pk', ['origin', 'last_seq'])
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
  '0002-invites': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('sync_invites')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('secret_hash', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'integer', (c) => c.notNull())
        .addColumn('used_by', 'text')
        .execute();
    },
  },
  '0003-sync-runs': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('sync_runs')
        .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('started_at', 'integer', (c) => c.notNull())
        .addColumn('ended_at', 'integer')
        .addColumn('peers', 'text', (c) => c.notNull())
        .addColumn('added', 'integer', (c) => c.notNull())
        .addColumn('updated', 'integer', (c) => c.notNull())
        .addColumn('deleted', 'integer', (c) => c.notNull())
        .addColumn('bytes', 'integer', (c) => c.notNull())
        .addColumn('busy_replies', 'integer', (c) => c.notNull())
        .addColumn('outcome', 'text', (c) => c.notNull())
        .addColumn('resumed_from', 'text')
        .addColumn('error', 'text')
        .execute();
    },
  },
  '0004-invite-revocation': {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable('sync_invites').addColumn('created_at', 'integer').execute();
      await db.schema.alterTable('sync_invites').addColumn('revoked_at', 'integer').execute();
    },
  },
  '0005-last-seen': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('sync_last_seen')
        .addColumn('device', 'text', (c) => c.primaryKey())
        .addColumn('seen_at', 'integer', (c) => c.notNull())
        .execute();
    },
  },
  '0006-signed-runs': {
    // Protocol 2.0: runs are signed by their author. Entries held before are adopted as trusted
    // by the device that holds them, but cannot be relayed (no signature): the log drops them and
    // holds each origin as a pruned prefix, so a partner that lacks some takes a snapshot. The
    // rows they made stay as they are.
    async up(db: Kysely<unknown>) {
      await db.schema.dropTable('sync_log').execute();
      await db.schema
        .createTable('sync_log')
        .addColumn('origin', 'text', (c) => c.notNull())
        .addColumn('first_seq', 'integer', (c) => c.notNull())
        .addColumn('last_seq', 'integer', (c) => c.notNull())
        .addColumn('entries', 'blob', (c) => c.notNull())
        .addColumn('prev', 'blob', (c) => c.notNull())
        .addColumn('sig', 'blob', (c) => c.notNull())
        .addColumn('author', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('sync_log_pk', ['origin', 'last_seq'])
        .modifyEnd(sqlWithoutRowid)
        .execute();
      await db.schema.alterTable('sync_vector').addColumn('head', 'blob').execute();
      await sql`UPDATE sync_vector SET pruned_through = seq`.execute(db);
      await db.schema
        .createTable('sync_forks')
        .addColumn('origin', 'text', (c) => c.primaryKey())
        .addColumn('seq', 'integer', (c) => c.notNull())
        .addColumn('device', 'text')
        .addColumn('detected_at', 'integer', (c) => c.notNull())
        .addColumn('held', 'blob', (c) => c.notNull())
        .addColumn('other', 'blob', (c) => c.notNull())
        .execute();
    },
  },
  '0007-forked-runs': {
    // Every member applies every signed run of a forked origin that any member applied, so that
    // all converge (docs/protocol.md, "Fork evidence"); those off this device's log are kept here.
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('sync_forked_runs')
        .addColumn('id', 'blob', (c) => c.primaryKey())
        .addColumn('origin', 'text', (c) => c.notNull())
        .addColumn('first_seq', 'integer', (c) => c.notNull())
        .addColumn('last_seq', 'integer', (c) => c.notNull())
        .addColumn('entries', 'blob', (c) => c.notNull())
        .addColumn('prev', 'blob', (c) => c.notNull())
        .addColumn('sig', 'blob', (c) => c.notNull())
        .addColumn('author', 'text', (c) => c.notNull())
        .modifyEnd(sqlWithoutRowid)
        .execute();
      await db.schema.createIndex('sync_forked_runs_origin').on('sync_forked_runs').columns(['origin', 'first_seq']).execute();
    },
  },
  '0008-owner-authors': {
    // Device-owned rows are signed by their owners (protocol 3.0): a holder serves another
    // owner's rows with the PeerId that signed them. The tables' `_cert` columns are added as
    // the model tables are opened, and the rows held from before are adopted at open
    // (`adoptUnsignedOwnedRows`).
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable('sync_owner_versions').addColumn('author', 'text').execute();
    },
  },
  '0009-snapshot-proofs': {
    // A snapshot proves the position of each origin it covers (protocol 3.2): a prefix adopted
    // from one keeps the proof of the run ending there, to prove it to others (`packProof`).
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable('sync_vector').addColumn('proof', 'blob').execute();
    },
  },
  '0010-confirmed-acks': {
    // A partner's ack is now a position its `heads` showed it holds with the same runs; acks saved
    // before were positions it advertised, which may hold another history (a fork not found yet).
    // They are dropped, so pruning waits for each partner's heads at its next session.
    async up(db: Kysely<unknown>) {
      await db.deleteFrom('sync_acks' as never).execute();
    },
  },
  '0011-unsigned-own-runs': {
    // Nothing to change: from here on a run of this device's may be stored with an empty `sig`
    // until its signature is stored (`own-run-signatures.ts`). The entry makes an older build,
    // which would serve such a run as it is stored, refuse the library at open.
    async up() {},
  },
};

export const migrationProvider: MigrationProvider = {
  getMigrations: async () => migrations,
};
