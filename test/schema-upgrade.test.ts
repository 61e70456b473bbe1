/**
 * Model changes across restarts: a library opened with a model that gained a nullable field gets
 * the column; a change that would reinterpret stored data is refused with SchemaMismatchError,
 * and a refused open changes nothing in the file (the upgrade runs in one transaction).
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, expect, test } from 'vitest';
import { defineModel, SchemaMismatchError } from '../src/index.js';
import { makeTempDir, removeTempDirs } from './helpers/child-process.js';
import { startNode, stopAllNodes, stopNode, useMemoryTransport } from './helpers/cluster.js';

useMemoryTransport();

const noteV1 = defineModel({ name: 'note', ownership: 'shared', conflict: 'lww', fields: { title: 'text' } });
const noteV2 = defineModel({
  name: 'note',
  ownership: 'shared',
  conflict: 'lww',
  fields: { title: 'text', tags: { type: 'json', nullable: true } },
});
const countV1 = defineModel({ name: 'tally', ownership: 'shared', conflict: 'lww-field', fields: { n: 'integer' } });
const countRetyped = defineModel({ name: 'tally', ownership: 'shared', conflict: 'lww-field', fields: { n: 'text' } });

afterEach(async () => {
  await stopAllNodes();
  await removeTempDirs();
});

function columns(dataDir: string, libraryId: string, table: string): string[] {
  const db = new Database(path.join(dataDir, 'libraries', `${libraryId}.sqlite`), { readonly: true });
  try {
    return (db.prepare('SELECT name FROM pragma_table_info(?)').all(table) as { name: string }[]).map((c) => c.name);
  } finally {
    db.close();
  }
}

test('a new nullable field becomes a column on reopen: old rows read it as null, new writes store it', async () => {
  const dataDir = await makeTempDir('lsync-schema-');
  const first = await startNode(dataDir, { models: [noteV1] });
  const lib = await first.createLibrary({ name: 'main' });
  const old = await lib.upsert('note', { title: 'before' });
  await stopNode(first);

  const second = await startNode(dataDir, { models: [noteV2] });
  const reopened = second.library(lib.id);
  expect(await reopened.get('note', old.id)).toEqual({ id: old.id, title: 'before', tags: null });
  const fresh = await reopened.upsert('note', { title: 'after', tags: ['x'] });
  expect(await reopened.get('note', fresh.id)).toEqual({ id: fresh.id, title: 'after', tags: ['x'] });
  expect(columns(dataDir, lib.id, 'note')).toContain('tags');
});

test('a retyped field is refused, and the refused open leaves the file as it was', async () => {
  const dataDir = await makeTempDir('lsync-schema-');
  const first = await startNode(dataDir, { models: [noteV1, countV1] });
  const lib = await first.createLibrary({ name: 'main' });
  await lib.upsert('tally', { n: 1 });
  const digest = await lib.digest();
  await stopNode(first);

  // Models are prepared in name order: the note table gains its column before the retyped
  // tally field is found.
  const models = [noteV2, countRetyped];
  let thrown: unknown;
  try {
    await startNode(dataDir, { models });
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(SchemaMismatchError);
  expect(columns(dataDir, lib.id, 'note')).not.toContain('tags');

  const again = await startNode(dataDir, { models: [noteV1, countV1] });
  expect(await again.library(lib.id).digest()).toBe(digest);
});

/**
 * Puts a library file back to its schema before device names, invite revocation and last-seen
 * (protocol 1.1): no `name` column in the member table, no `created_at` / `revoked_at` in the
 * invites, no last-seen table, an unsigned log (2.0 came later still), and the migrations that
 * add them not yet run.
 */
function downgradeToSchema11(dataDir: string, libraryId: string): void {
  const db = new Database(path.join(dataDir, 'libraries', `${libraryId}.sqlite`));
  try {
    db.exec(`
      ALTER TABLE "sync_members" DROP COLUMN "name";
      ALTER TABLE sync_invites DROP COLUMN created_at;
      ALTER TABLE sync_invites DROP COLUMN revoked_at;
      DROP TABLE sync_last_seen;
      DROP TABLE sync_forks;
      DROP TABLE sync_forked_runs;
      ALTER TABLE sync_vector DROP COLUMN head;
      ALTER TABLE sync_vector DROP COLUMN proof;
      CREATE TABLE sync_log_11 (origin TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, entries BLOB NOT NULL, PRIMARY KEY (origin, last_seq)) WITHOUT ROWID;
      INSERT INTO sync_log_11 SELECT origin, first_seq, last_seq, entries FROM sync_log;
      DROP TABLE sync_log;
      ALTER TABLE sync_log_11 RENAME TO sync_log;
      ALTER TABLE sync_owner_versions DROP COLUMN author;
      DELETE FROM kysely_migration WHERE name IN ('0004-invite-revocation', '0005-last-seen', '0006-signed-runs', '0007-forked-runs', '0008-owner-authors', '0009-snapshot-proofs', '0010-confirmed-acks', '0011-unsigned-own-runs');
    `);
  } finally {
    db.close();
  }
}

test('a library from before device names and invite revocation opens, gets its name, lists and revokes its invites', async () => {
  const dataDir = await makeTempDir('lsync-schema-');
  const first = await startNode(dataDir, { models: [noteV1], deviceName: 'old name' });
  const lib = await first.createLibrary({ name: 'main' });
  const invite = await lib.createInvite({ ttlMs: 600_000 });
  const expiresAt = (await lib.invites())[0]!.expiresAt;
  await stopNode(first);
  downgradeToSchema11(dataDir, lib.id);
  expect(columns(dataDir, lib.id, 'sync_members')).not.toContain('name');

  const second = await startNode(dataDir, { models: [noteV1], deviceName: 'new name' });
  const reopened = second.library(lib.id);
  expect(columns(dataDir, lib.id, 'sync_members')).toContain('name');
  expect(columns(dataDir, lib.id, 'sync_invites')).toEqual(expect.arrayContaining(['created_at', 'revoked_at']));
  expect(await reopened.members()).toEqual([
    expect.objectContaining({ device: second.deviceId, name: 'new name', self: true, lastSeenAt: null }),
  ]);
  // The invite issued before creation times were recorded has none.
  expect(await reopened.invites()).toEqual([{ id: expect.any(String), createdAt: null, expiresAt }]);
  await reopened.revokeInvite(invite);
  expect(await reopened.invites()).toEqual([]);
});

test('acks saved before they were confirmed by heads are dropped at open; later ones are kept', async () => {
  const dataDir = await makeTempDir('lsync-schema-acks-');
  const first = await startNode(dataDir, { models: [noteV1] });
  const lib = await first.createLibrary({ name: 'acks' });
  await stopNode(first);
  const file = path.join(dataDir, 'libraries', `${lib.id}.sqlite`);
  const acksIn = () => {
    const db = new Database(file, { readonly: true });
    try {
      return (db.prepare('SELECT count(*) AS n FROM sync_acks').get() as { n: number }).n;
    } finally {
      db.close();
    }
  };
  const saveAck = (migrated: boolean) => {
    const db = new Database(file);
    try {
      db.prepare('INSERT INTO sync_acks (partner, origin, seq) VALUES (?, ?, ?)').run('0190a0a0-0000-7000-8000-0000000000bb', first.deviceId, 1);
      if (!migrated) db.prepare("DELETE FROM kysely_migration WHERE name IN ('0010-confirmed-acks', '0011-unsigned-own-runs')").run();
    } finally {
      db.close();
    }
  };
  // An ack the previous version saved (a position the partner advertised): gone once opened.
  saveAck(false);
  await stopNode(await startNode(dataDir, { models: [noteV1] }));
  expect(acksIn()).toBe(0);
  // One saved since is kept across opens.
  saveAck(true);
  await stopNode(await startNode(dataDir, { models: [noteV1] }));
  expect(acksIn()).toBe(1);
});
