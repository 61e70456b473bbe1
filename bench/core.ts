import Database from 'better-sqlite3';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSyncNode, defineModel, type Model } from '../src/index.js';
import { HlcClock } from '../src/hlc/index.js';
import { report, timeIt } from './report.js';
import { engineOf } from '../src/library/library.js';

/**
 * Core benchmarks (issue: core). Everything is compared with a floor measured in the same run:
 * raw better-sqlite3 prepared inserts of comparable rows, in one transaction per 1 000 rows,
 * into a WAL file with the same durability settings the library uses.
 */
const ROWS = 100_000;
const TX = 1_000;

const noteFields = { title: 'text', body: { type: 'text', nullable: true }, rank: 'integer' } as const;
export const NoteLww = defineModel({ name: 'note_lww', ownership: 'shared', conflict: 'lww', fields: noteFields });
const NoteFields = defineModel({ name: 'note_fields', ownership: 'shared', conflict: 'lww-field', fields: noteFields });

export function sampleRow(i: number) {
  return { title: `note ${i}`, body: `body of note ${i} with some text`, rank: i };
}

function openFloorDb(path: string): Database.Database {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  return db;
}

const floorId = (i: number) => `0190a0a0-0000-7000-8000-${i.toString(16).padStart(12, '0')}`;
const floorHlc = (i: number) => `${i.toString(16).padStart(16, '0')}00000000-0000-4000-8000-000000000001`;

/** The floor: one prepared insert of a comparable row (id, the fields, a clock) per write. */
export function rawInsertFloor(path: string): number {
  const db = openFloorDb(path);
  db.exec('CREATE TABLE note (id TEXT PRIMARY KEY NOT NULL, title TEXT, body TEXT, rank INTEGER, hlc TEXT)');
  const insert = db.prepare('INSERT INTO note (id, title, body, rank, hlc) VALUES (?, ?, ?, ?, ?)');
  const insertMany = db.transaction((from: number) => {
    for (let i = from; i < from + TX; i++) {
      const row = sampleRow(i);
      insert.run(floorId(i), row.title, row.body, row.rank, floorHlc(i));
    }
  });
  const seconds = timeSync(() => {
    for (let from = 0; from < ROWS; from += TX) insertMany(from);
  });
  db.close();
  return ROWS / seconds;
}

/**
 * Context, not a target: the least SQL a durable shared write needs — the row and a log entry,
 * two prepared inserts per write. Shows how much of the gap to the floor is inherent.
 */
function rawRowPlusLogFloor(dir: string): number {
  const db = openFloorDb(join(dir, 'floor2.sqlite'));
  db.exec('CREATE TABLE note (id TEXT PRIMARY KEY NOT NULL, title TEXT, body TEXT, rank INTEGER, hlc TEXT)');
  db.exec('CREATE TABLE log (origin TEXT, seq INTEGER, hlc TEXT, model TEXT, record_id TEXT, op TEXT, fields BLOB, PRIMARY KEY (origin, seq)) WITHOUT ROWID');
  const insertRow = db.prepare('INSERT INTO note (id, title, body, rank, hlc) VALUES (?, ?, ?, ?, ?)');
  const insertLog = db.prepare('INSERT INTO log VALUES (?, ?, ?, ?, ?, ?, ?)');
  const fields = Buffer.alloc(64);
  const insertMany = db.transaction((from: number) => {
    for (let i = from; i < from + TX; i++) {
      const row = sampleRow(i);
      insertRow.run(floorId(i), row.title, row.body, row.rank, floorHlc(i));
      insertLog.run('00000000-0000-4000-8000-000000000001', i + 1, floorHlc(i).slice(0, 16), 'note', floorId(i), 'upsert', fields);
    }
  });
  const seconds = timeSync(() => {
    for (let from = 0; from < ROWS; from += TX) insertMany(from);
  });
  db.close();
  return ROWS / seconds;
}

function timeSync(fn: () => void): number {
  const start = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

function hlcNowRate(): number {
  const clock = new HlcClock({ deviceId: '00000000-0000-4000-8000-000000000001', wallClock: Date.now });
  const n = 5_000_000;
  let sink = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) sink += clock.now().counter;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (sink < 0) throw new Error('unreachable');
  return n / seconds;
}

interface ModelRates {
  write: number;
  apply: number;
}

/** Local writes in transactions of TX on one node, then the same entries applied on another. */
async function measureModel(dir: string, model: Model): Promise<ModelRates> {
  const writer = await createSyncNode({ dataDir: join(dir, 'a'), models: [model] });
  const lib = await writer.createLibrary({ name: 'bench' });
  const writeSeconds = await timeIt(async () => {
    for (let from = 0; from < ROWS; from += TX) {
      await lib.transaction(async (tx) => {
        for (let i = from; i < from + TX; i++) await tx.upsert(model.name, sampleRow(i));
      });
    }
  });
  const entries = (await engineOf(lib).entriesAfter({}, { maxRecords: ROWS, maxBytes: 256 * 1024 * 1024 })).entries;
  if (entries.length !== ROWS) throw new Error(`expected ${ROWS} log entries, read ${entries.length}`);
  const receiver = await createSyncNode({ dataDir: join(dir, 'b'), models: [model] });
  const replica = await receiver.createLibrary({ name: 'bench', id: lib.id });
  const applySeconds = await timeIt(async () => {
    for (let from = 0; from < entries.length; from += TX) await engineOf(replica).applyRemote(entries.slice(from, from + TX));
  });
  if ((await replica.digest()) !== (await lib.digest())) throw new Error('bench replica diverged from the writer');
  await writer.stop();
  await receiver.stop();
  return { write: ROWS / writeSeconds, apply: entries.length / applySeconds };
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/**
 * Each figure is the median of ROUNDS rounds. In every round each model is bracketed by its own
 * floor (measured right before and right after), so a noisy neighbour or a slow fsync slows both
 * and the ratio stays meaningful.
 */
const ROUNDS = 5;

export async function runCoreBenchmarks(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ls-bench-core-'));
  try {
    hlcNowRate(); // warm-up
    report('hlc_now_per_s', median([hlcNowRate(), hlcNowRate(), hlcNowRate()]), 'ops/s', { target: 5_000_000 });

    const models = [NoteLww, NoteFields];
    const floors: number[] = [];
    const rowPlusLog: number[] = [];
    const rates = new Map<Model, { write: number[]; apply: number[]; writeRatio: number[]; applyRatio: number[] }>(
      models.map((m) => [m, { write: [], apply: [], writeRatio: [], applyRatio: [] }]),
    );
    for (let round = 0; round < ROUNDS; round++) {
      const roundDir = join(dir, `round-${round}`);
      mkdirSync(roundDir);
      rowPlusLog.push(rawRowPlusLogFloor(roundDir));
      // Alternate the order so neither model always runs second.
      for (const model of round % 2 === 0 ? models : [...models].reverse()) {
        // The floor is measured just before and just after the model; their mean is its floor.
        const before = rawInsertFloor(join(roundDir, `${model.name}-floor-before.sqlite`));
        const measured = await measureModel(join(roundDir, model.name), model);
        const floor = (before + rawInsertFloor(join(roundDir, `${model.name}-floor-after.sqlite`))) / 2;
        floors.push(floor);
        const r = rates.get(model)!;
        r.write.push(measured.write);
        r.apply.push(measured.apply);
        r.writeRatio.push(measured.write / floor);
        r.applyRatio.push(measured.apply / floor);
      }
      rmSync(roundDir, { recursive: true, force: true });
    }
    report('raw_sqlite_insert_rows_per_s', median(floors), 'rows/s', { note: 'floor: prepared inserts, 1000 per transaction', rounds: ROUNDS });
    report('raw_sqlite_row_plus_log_per_s', median(rowPlusLog), 'writes/s', {
      note: 'context: two prepared inserts (row + log entry) per write',
    });
    for (const model of models) {
      const r = rates.get(model)!;
      const tag = { model: model.name, conflict: model.ownership === 'shared' ? model.conflict : 'device' };
      report('local_shared_writes_per_s', median(r.write), 'rows/s', { ...tag, transaction: TX });
      report('local_shared_writes_vs_floor', median(r.writeRatio), 'ratio', { ...tag, target: 0.4 });
      report('remote_apply_entries_per_s', median(r.apply), 'entries/s', { ...tag, batch: TX });
      report('remote_apply_vs_floor', median(r.applyRatio), 'ratio', { ...tag, target: 0.4 });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
