import type { Kysely } from 'kysely';
import type { InternalTables } from '../storage/schema.js';
import type { InviteInfo } from './types.js';

/**
 * The invites this device issued (`sync_invites`). Device-local: only the inviter holds an
 * invite's secret hash and admits with it, so nothing here is synced.
 */

type Db = Kysely<InternalTables>;

/** An invite as stored: the hash of its secret, never the secret. */
export interface StoredInvite {
  id: string;
  secretHash: string;
  expiresAt: number;
  /** PeerId of the device that joined with it; null while unused. */
  usedBy: string | null;
  createdAt: number | null;
  revokedAt: number | null;
}

export type NewInvite = Pick<StoredInvite, 'id' | 'secretHash' | 'expiresAt' | 'createdAt'>;

/** What `revokeInvite` found: only an unused, unrevoked invite is revoked. */
export type RevokeOutcome = { kind: 'revoked' } | { kind: 'already-revoked' } | { kind: 'unknown' } | { kind: 'used'; by: string };

export async function insertInvite(db: Db, invite: NewInvite): Promise<void> {
  await db
    .insertInto('sync_invites')
    .values({ id: invite.id, secret_hash: invite.secretHash, expires_at: invite.expiresAt, used_by: null, created_at: invite.createdAt, revoked_at: null })
    .execute();
}

export async function readInvite(db: Db, id: string): Promise<StoredInvite | undefined> {
  const row = await db.selectFrom('sync_invites').selectAll().where('id', '=', id).executeTakeFirst();
  return (
    row && {
      id: row.id,
      secretHash: row.secret_hash,
      expiresAt: row.expires_at,
      usedBy: row.used_by,
      createdAt: row.created_at,
      revokedAt: row.revoked_at,
    }
  );
}

export async function markInviteUsed(db: Db, id: string, by: string): Promise<void> {
  await db.updateTable('sync_invites').set({ used_by: by }).where('id', '=', id).execute();
}

/** Revokes invite `id` at `now` if it is unused and unrevoked; says what it found. */
export async function revokeInvite(db: Db, id: string, now: number): Promise<RevokeOutcome> {
  const invite = await readInvite(db, id);
  if (!invite) return { kind: 'unknown' };
  if (invite.revokedAt !== null) return { kind: 'already-revoked' };
  if (invite.usedBy !== null) return { kind: 'used', by: invite.usedBy };
  await db.updateTable('sync_invites').set({ revoked_at: now }).where('id', '=', id).execute();
  return { kind: 'revoked' };
}

/** Invites not used, revoked or expired at `now`, newest first. */
export async function pendingInvites(db: Db, now: number): Promise<InviteInfo[]> {
  const rows = await db
    .selectFrom('sync_invites')
    .select(['id', 'created_at', 'expires_at'])
    .where('used_by', 'is', null)
    .where('revoked_at', 'is', null)
    .where('expires_at', '>=', now)
    .execute();
  // Invites from before `created_at` was recorded have none: they sort last.
  const newestFirst = (a: (typeof rows)[number], b: (typeof rows)[number]) =>
    (b.created_at ?? -1) - (a.created_at ?? -1) || b.expires_at - a.expires_at;
  return rows.sort(newestFirst).map((r) => ({ id: r.id, createdAt: r.created_at, expiresAt: r.expires_at }));
}
