import { CompiledQuery, type Kysely } from 'kysely';

/**
 * Runs a statement built from validated identifiers and bound parameters. Used for the dynamic
 * model tables and the multi-row statements of the write path, where building through the query
 * builder would cost more than the insert itself.
 */
export async function runSql<R = Record<string, unknown>>(
  db: Kysely<any>,
  statement: string,
  params: readonly unknown[] = [],
): Promise<R[]> {
  const result = await db.executeQuery<R>(CompiledQuery.raw(statement, params as unknown[]));
  return result.rows as R[];
}
