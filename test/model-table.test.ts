import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { defineModel, encodeHlc } from '../src/index.js';
import { ModelTable, type SqlRow } from '../src/storage/model-table.js';
import { openSqliteFile } from '../src/node/sqlite.js';
import { runSql } from '../src/util/sql.js';

const fields = { title: 'text', rank: { type: 'integer', nullable: true } } as const;
const Lww = defineModel({ name: 'note', ownership: 'shared', conflict: 'lww', fields });
const FieldLww = defineModel({ name: 'card', ownership: 'shared', conflict: 'lww-field', fields });

const device = '00000000-0000-4000-8000-000000000001';
const hlcAt = (wallMs: number) => encodeHlc({ wallMs, counter: 0, deviceId: device });

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

async function tableWith(model: typeof Lww | typeof FieldLww) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-model-table-'));
  dirs.push(dir);
  const db = openSqliteFile(path.join(dir, 'db.sqlite'));
  const table = new ModelTable(model);
  for (const statement of table.createStatements()) await runSql(db, statement);
  const write = (id: string, title: string, hlc: string) => {
    const out: unknown[] = [];
    table.sharedParams(
      { id, values: { title, rank: null }, hlc, deleted: false, fieldHlcs: model === Lww ? null : {}, upsertHlc: hlc, deleteHlc: null },
      out as never,
    );
    return runSql(db, table.upsertSql(1), out);
  };
  const read = async (id: string) => (await runSql<SqlRow>(db, table.selectByIdsSql(1), [id]))[0];
  return { db, write, read };
}

describe('model table writes', () => {
  it('a row-level LWW table keeps a stored row whose clock is newer than the written one', async () => {
    const { db, write, read } = await tableWith(Lww);
    await write('n1', 'newer', hlcAt(2_000));
    await write('n1', 'older', hlcAt(1_000));
    expect(await read('n1')).toMatchObject({ title: 'newer', _hlc: hlcAt(2_000) });
    await write('n1', 'newest', hlcAt(3_000));
    expect(await read('n1')).toMatchObject({ title: 'newest', _hlc: hlcAt(3_000) });
    await db.destroy();
  });

  it('a field-rule table takes the merged row as written (the merge already decided)', async () => {
    const { db, write, read } = await tableWith(FieldLww);
    await write('c1', 'first', hlcAt(2_000));
    await write('c1', 'merged', hlcAt(2_000));
    expect(await read('c1')).toMatchObject({ title: 'merged' });
    await db.destroy();
  });
});
