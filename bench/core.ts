import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSyncNode, defineModel, HlcClock, type LogEntry } from '../src/index.js';
import { report, timeIt } from './report.js';

/**
 * Core benchmarks (issue: core). Everything is compared with a floor measured in the same run:
 * raw better-sqlite3 prepared inserts of comparable rows, in one transaction per 1 000 rows,
 * into a WAL file with the same durability settings the library uses.
 */
const ROWS = 100_000;
const TX = 1_000;

const Note = defineModel({
  name: 'note',
  ownership: 'shared',
  conflict: 'lww-field',
  fields: { title: 'text', body: { type: 'text', nullable: true }, rank: 'integer' },
});

function sampleRow(i: number) {
  return { title: `note ${i}`, body: `body of note ${i} with some text`, rank: i };
}

function rawInsertFloor(dir: string): number {
  const db = new Database(join(dir, 'floor.sqlite'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec('CREATE TABLE note (id TEXT PRIMARY KEY NOT NULL, title TEXT, body TEXT, rank INTEGER, hlc TEXT)');
  const insert = db.prepare('INSERT INTO note (id, title, body, rank, hlc) VALUES (?, ?, ?, ?, ?)');
  const insertMany = db.transaction((from: number) => {
    for (let i = from; i < from + TX; i++) {
      const row = sampleRow(i);
      insert.run(`0190a0a0-0000-7000-8000-${i.toString(16).padStart(12, '0')}`, row.title, row.body, row.rank, `hlc-${i}`);
    }
  });
  const start = process.hrtime.bigint();
  for (let from = 0; from < ROWS; from += TX) insertMany(from);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  db.close();
  return ROWS / seconds;
}

function hlcNowRate(): number {
  const clock = new HlcClock({ deviceId: '00000000-0000-4000-8000-000000000001' });
  const n = 5_000_000;
  let sink = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) sink += clock.now().counter;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (sink < 0) throw new Error('unreachable');
  return n / seconds;
}

export async function runCoreBenchmarks(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ls-bench-core-'));
  try {
    hlcNowRate(); // warm-up
    report('hlc_now_per_s', hlcNowRate(), 'ops/s', { target: 5_000_000 });

    const floor = rawInsertFloor(dir);
    report('raw_sqlite_insert_rows_per_s', floor, 'rows/s', { note: 'floor: prepared inserts, 1000 per transaction' });

    const writer = await createSyncNode({ dataDir: join(dir, 'a'), models: [Note] });
    const lib = await writer.createLibrary({ name: 'bench' });
    const writeSeconds = await timeIt(async () => {
      for (let from = 0; from < ROWS; from += TX) {
        await lib.transaction(async (tx) => {
          for (let i = from; i < from + TX; i++) await tx.upsert('note', sampleRow(i));
        });
      }
    });
    const writeRate = ROWS / writeSeconds;
    report('local_shared_writes_per_s', writeRate, 'rows/s', { transaction: TX });
    report('local_shared_writes_vs_floor', writeRate / floor, 'ratio', { target: 0.4 });

    const entries: LogEntry[] = [];
    let after = {};
    for (;;) {
      const page = await lib.entriesAfter(after, { maxRecords: 10_000, maxBytes: 64 * 1024 * 1024 });
      entries.push(...page.entries);
      after = lib.versionVector();
      if (!page.hasMore) break;
      const last = page.entries[page.entries.length - 1]!;
      after = { [last.origin]: last.seq };
    }
    const receiver = await createSyncNode({ dataDir: join(dir, 'b'), models: [Note] });
    const replica = await receiver.createLibrary({ name: 'bench', id: lib.id });
    const applySeconds = await timeIt(async () => {
      for (let from = 0; from < entries.length; from += TX) await replica.applyRemote(entries.slice(from, from + TX));
    });
    const applyRate = entries.length / applySeconds;
    report('remote_apply_entries_per_s', applyRate, 'entries/s', { batch: TX });
    report('remote_apply_vs_floor', applyRate / floor, 'ratio', { target: 0.4 });
    if ((await replica.digest()) !== (await lib.digest())) throw new Error('bench replica diverged from the writer');

    await writer.stop();
    await receiver.stop();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
