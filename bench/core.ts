import Database from 'better-sqlite3';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineModel, type Library, type Model, type SyncNode } from '../src/index.js';
import type { Chunk } from '../src/peer-log/chunk.js';
import { HlcClock } from '../src/hlc/index.js';
import { median, report, timeIt } from './report.js';
import { engineOf } from '../src/library/library.js';
import { createBenchNode, reportSigningCost, type Signing, SIGNINGS, signingOrder } from './unsigned.js';

export { median };

/**
 * Core benchmarks (issue: core). Everything is compared with a floor measured in the same run:
 * raw better-sqlite3 prepared inserts of comparable rows, in one transaction per 1 000 rows,
 * into a WAL file with the same durability settings the library uses.
 *
 * Signing (issue 13, cost): every figure of the library is measured twice in each round, on a
 * node that signs its runs (`createSyncNode`) and on the unsigned baseline (bench/unsigned.ts:
 * no Ed25519, no hashing), open side by side and interleaved: transaction by transaction, apply
 * batch by apply batch, block of single writes by block (the order alternating). Reported: both values
 * and signed / unsigned, against the targets local writes in transactions of TX ≥ 0.9 and
 * single-row local writes (SINGLE_WRITES awaited `lib.upsert`s, each its own transaction) ≥ 0.8.
 * The replica's apply (`remote_apply_*`) is the receiving half of live push and backfill, where
 * runs are verified; its ratio is context (the targets are end to end, bench/replication.ts and
 * bench/backfill.ts).
 */
const ROWS = 100_000;
const TX = 1_000;
const SINGLE_WRITES = 2_000;
/**
 * The core's nodes need no network (the replica is fed runs directly): they listen nowhere and
 * send no mDNS, so no session with another node on the machine (the bench's own others, or
 * another process's) can start and perturb the figures.
 */
const OFFLINE = { listen: [], discovery: { mdns: false } };

const noteFields = { title: 'text', body: { type: 'text', nullable: true }, rank: 'integer' } as const;
export const NoteLww = defineModel({ name: 'note_lww', ownership: 'shared', conflict: 'lww', fields: noteFields });
const NoteFields = defineModel({ name: 'note_fields', ownership: 'shared', conflict: 'lww-field', fields: noteFields });
/** Device-owned rows: signed per transaction with a Merkle path per row (docs/protocol.md, "Signed owned rows"). */
const NoteOwned = defineModel({ name: 'note_owned', ownership: 'device', fields: noteFields });

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
  /**
   * Writes and the first read of them for a partner, rows/s: a device signs its own rows there,
   * not at the write (src/library/sign-own-rows.ts). Device-owned models only.
   */
  served?: number;
}

/**
 * Local writes in transactions of TX on one node, then the same entries applied on another: for
 * both signings at once. A signed writer and an unsigned one (each with its own replica, which
 * signs or not as its writer) are open side by side, and their transactions alternate, then their
 * replicas' applies alternate batch by batch (which of the two goes first alternates too), each
 * timed on its own: a slow stretch of the machine falls on both, not on one of them.
 */
async function measureModel(dir: string, model: Model, round: number): Promise<Map<Signing, ModelRates>> {
  const nodes: SyncNode[] = [];
  try {
    const sides = new Map<Signing, { lib: Library; owner: string; writeSeconds: number; applySeconds: number; serveSeconds: number }>();
    for (const signing of SIGNINGS) {
      const writer = await createBenchNode(signing, { dataDir: join(dir, `${signing}-a`), models: [model], ...OFFLINE });
      nodes.push(writer);
      const lib = await writer.createLibrary({ name: 'bench' });
      sides.set(signing, { lib, owner: writer.deviceId, writeSeconds: 0, applySeconds: 0, serveSeconds: 0 });
    }
    for (let from = 0, n = 0; from < ROWS; from += TX, n++) {
      for (const signing of signingOrder(round + n)) {
        const side = sides.get(signing)!;
        side.writeSeconds += await timeIt(() =>
          side.lib.transaction(async (tx) => {
            for (let i = from; i < from + TX; i++) await tx.upsert(model.name, sampleRow(i));
          }),
        );
      }
    }
    const applies = new Map<Signing, { replica: Library; batches: ApplyBatch[] }>();
    for (const signing of SIGNINGS) {
      const side = sides.get(signing)!;
      let batches: ApplyBatch[] = [];
      side.serveSeconds = await timeIt(async () => void (batches = await applyBatches(side.lib, side.owner, model)));
      const receiver = await createBenchNode(signing, { dataDir: join(dir, `${signing}-b`), models: [model], ...OFFLINE });
      nodes.push(receiver);
      applies.set(signing, { replica: await receiver.createLibrary({ name: 'bench', id: side.lib.id }), batches });
    }
    const batches = Math.max(...[...applies.values()].map((a) => a.batches.length));
    for (let b = 0; b < batches; b++) {
      for (const signing of signingOrder(round + b)) {
        const { replica, batches } = applies.get(signing)!;
        const batch = batches[b];
        if (batch) sides.get(signing)!.applySeconds += await timeIt(async () => void (await batch(replica)));
      }
    }
    const rates = new Map<Signing, ModelRates>();
    for (const signing of SIGNINGS) {
      const side = sides.get(signing)!;
      if ((await applies.get(signing)!.replica.digest()) !== (await side.lib.digest())) throw new Error(`bench replica diverged from the writer (${signing})`);
      const served = model.ownership === 'device' ? { served: ROWS / (side.writeSeconds + side.serveSeconds) } : {};
      rates.set(signing, { write: ROWS / side.writeSeconds, apply: ROWS / side.applySeconds, ...served });
    }
    return rates;
  } finally {
    for (const node of nodes) await node.stop();
  }
}

/** One batch of a replica's apply, as a live push of one TX-row transaction brings it. */
type ApplyBatch = (replica: Library) => Promise<unknown>;

/**
 * What a replica of `lib` applies, in batches of about TX rows: runs of the log (up to 256 entries
 * each) for a shared model, pages of the owner's rows (each checked against its certificates) for
 * a device-owned one. Read before the timing starts.
 */
async function applyBatches(lib: Library, owner: string, model: Model): Promise<ApplyBatch[]> {
  const engine = engineOf(lib);
  if (model.ownership === 'device') {
    const batches: ApplyBatch[] = [];
    for (let after = 0; after < ROWS; ) {
      const page = await engine.ownedAfter(owner, after, { maxRecords: TX, maxBytes: 256 * 1024 * 1024 });
      const coverage = { owner, from: page.from, to: page.to };
      batches.push((replica) => engineOf(replica).applyRemoteOwned(page, coverage));
      after = page.to;
    }
    return batches;
  }
  const page = await engine.chunksAfter({}, { maxRecords: ROWS, maxBytes: 256 * 1024 * 1024 });
  if (page.entries !== ROWS) throw new Error(`expected ${ROWS} log entries, read ${page.entries}`);
  const perBatch = Math.max(1, Math.round(TX / 256));
  const batches: ApplyBatch[] = [];
  for (let from = 0; from < page.chunks.length; from += perBatch) {
    const chunks: Chunk[] = page.chunks.slice(from, from + perBatch);
    batches.push((replica) => engineOf(replica).applyRemoteChunks(chunks));
  }
  return batches;
}

/** Awaited single writes per block of the single-row measurement (the signings alternate by block). */
const SINGLE_BLOCK = 100;

/**
 * Single-row local writes: SINGLE_WRITES awaited `lib.upsert`s one after another, each its own
 * transaction, on a signed node and on an unsigned one open side by side, alternating in blocks of
 * SINGLE_BLOCK (which goes first alternates), each block timed on its own. Writes/s of each.
 * `served`: each write is followed by the read a live push makes of it, which signs what is not
 * signed yet: a device-owned row (one signature per write, the worst case: a push that finds
 * several writes signs them together), or a shared run whose signature has not come back from
 * the thread pool yet (`own-run-signatures.ts`).
 */
async function measureSingleWrites(dir: string, model: Model, round: number, served = false): Promise<Map<Signing, number>> {
  const nodes: SyncNode[] = [];
  try {
    const sides = new Map<Signing, { node: SyncNode; lib: Library; seconds: number; pushedThrough: number }>();
    for (const signing of SIGNINGS) {
      const node = await createBenchNode(signing, { dataDir: join(dir, signing), models: [model], ...OFFLINE });
      nodes.push(node);
      sides.set(signing, { node, lib: await node.createLibrary({ name: 'bench' }), seconds: 0, pushedThrough: 0 });
    }
    const limits = { maxRecords: 100, maxBytes: 1 << 20 };
    const push = async (side: { node: SyncNode; lib: Library; pushedThrough: number }) => {
      const self = side.node.deviceId;
      if (model.ownership === 'device') {
        const page = await engineOf(side.lib).ownedAfter(self, side.pushedThrough, limits);
        if (page.rows.length === 0) throw new Error('single writes: a push read found no new row');
        side.pushedThrough = page.to;
      } else {
        const page = await engineOf(side.lib).chunksAfter({ [self]: side.pushedThrough }, limits);
        const own = page.chunks.filter((c) => c.origin === self);
        if (own.length === 0) throw new Error('single writes: a push read found no new run');
        side.pushedThrough = own.at(-1)!.lastSeq;
      }
    };
    for (let from = 0, n = 0; from < SINGLE_WRITES; from += SINGLE_BLOCK, n++) {
      for (const signing of signingOrder(round + n)) {
        const side = sides.get(signing)!;
        side.seconds += await timeIt(async () => {
          for (let i = from; i < Math.min(SINGLE_WRITES, from + SINGLE_BLOCK); i++) {
            await side.lib.upsert(model.name, sampleRow(i));
            if (served) await push(side);
          }
        });
      }
    }
    const rates = new Map<Signing, number>();
    for (const [signing, side] of sides) {
      const held = model.ownership === 'device' ? (await side.lib.list(model.name, { limit: SINGLE_WRITES + 1 })).length : (side.lib.versionVector()[side.node.deviceId] ?? 0);
      if (held < SINGLE_WRITES) throw new Error(`single writes: ${held} of this device's writes are held, expected at least ${SINGLE_WRITES} (${signing})`);
      rates.set(signing, SINGLE_WRITES / side.seconds);
    }
    return rates;
  } finally {
    for (const node of nodes) await node.stop();
  }
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

    const models = [NoteLww, NoteFields, NoteOwned];
    const singleModels = [NoteLww, NoteOwned];
    const floors: number[] = [];
    const rowPlusLog: number[] = [];
    const rates = new Map<Model, { write: number[]; apply: number[]; writeRatio: number[]; applyRatio: number[]; unsignedWrite: number[]; unsignedApply: number[] }>(
      models.map((m) => [m, { write: [], apply: [], writeRatio: [], applyRatio: [], unsignedWrite: [], unsignedApply: [] }]),
    );
    const single = new Map<Model, Record<Signing, number[]>>(singleModels.map((m) => [m, { signed: [], unsigned: [] }]));
    const singleServed = new Map<Model, Record<Signing, number[]>>(singleModels.map((m) => [m, { signed: [], unsigned: [] }]));
    const txServed: Record<Signing, number[]> = { signed: [], unsigned: [] };
    for (let round = 0; round < ROUNDS; round++) {
      const roundDir = join(dir, `round-${round}`);
      mkdirSync(roundDir);
      rowPlusLog.push(rawRowPlusLogFloor(roundDir));
      // Alternate the order so neither model always runs second.
      for (const model of round % 2 === 0 ? models : [...models].reverse()) {
        // The floor is measured just before and just after the model (signed and unsigned,
        // back to back); their mean is its floor.
        const before = rawInsertFloor(join(roundDir, `${model.name}-floor-before.sqlite`));
        const measured = await measureModel(join(roundDir, model.name), model, round);
        const floor = (before + rawInsertFloor(join(roundDir, `${model.name}-floor-after.sqlite`))) / 2;
        floors.push(floor);
        const signed = measured.get('signed')!;
        const unsigned = measured.get('unsigned')!;
        const r = rates.get(model)!;
        r.write.push(signed.write);
        r.apply.push(signed.apply);
        r.writeRatio.push(signed.write / floor);
        r.applyRatio.push(signed.apply / floor);
        r.unsignedWrite.push(unsigned.write);
        r.unsignedApply.push(unsigned.apply);
        if (signed.served !== undefined) {
          txServed.signed.push(signed.served);
          txServed.unsigned.push(unsigned.served!);
        }
      }
      for (const model of singleModels) {
        const singles = await measureSingleWrites(join(roundDir, `single-${model.name}`), model, round);
        for (const signing of SIGNINGS) single.get(model)![signing].push(singles.get(signing)!);
        const served = await measureSingleWrites(join(roundDir, `single-served-${model.name}`), model, round, true);
        for (const signing of SIGNINGS) singleServed.get(model)![signing].push(served.get(signing)!);
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
      const writes = model.ownership === 'shared' ? 'local_shared_writes' : 'local_owned_writes';
      report(`${writes}_per_s`, median(r.write), 'rows/s', { ...tag, transaction: TX });
      report(`${writes}_vs_floor`, median(r.writeRatio), 'ratio', { ...tag, target: 0.4 });
      report('remote_apply_entries_per_s', median(r.apply), 'entries/s', { ...tag, batch: TX });
      report('remote_apply_vs_floor', median(r.applyRatio), 'ratio', { ...tag, target: 0.4 });
    }
    for (const model of models) {
      const r = rates.get(model)!;
      const tag = { model: model.name, conflict: model.ownership === 'shared' ? model.conflict : 'device' };
      reportSigningCost('local_tx_writes', 'rows/s', r.write, r.unsignedWrite, 0.9, { ...tag, transaction: TX });
      reportSigningCost('remote_apply', 'entries/s', r.apply, r.unsignedApply, undefined, {
        ...tag,
        batch: TX,
        note: 'context: the replica verifying runs or row certificates; the targets are live push and backfill end to end',
      });
    }
    for (const [model, rates] of single) {
      reportSigningCost('local_single_writes', 'writes/s', rates.signed, rates.unsigned, 0.8, {
        model: model.name,
        writes: SINGLE_WRITES,
        note: 'awaited lib.upsert one after another, each its own transaction',
      });
    }
    // A device signs its own runs and rows after writing them (runs off this thread once
    // committed, rows when first read for a partner): these include the read a push makes.
    for (const [model, rates] of singleServed) {
      reportSigningCost('local_single_writes_served', 'writes/s', rates.signed, rates.unsigned, 0.8, {
        model: model.name,
        writes: SINGLE_WRITES,
        note: 'each write followed by the read a live push makes of it, which signs what is not signed yet (one signature per write)',
      });
    }
    reportSigningCost('local_tx_writes_served', 'rows/s', txServed.signed, txServed.unsigned, 0.9, {
      model: NoteOwned.name,
      transaction: TX,
      note: 'the writes and the first read of every row for a partner, in pages of TX, where the rows are signed',
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
