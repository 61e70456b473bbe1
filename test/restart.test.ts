/**
 * Crash/restart tests for design invariants 2 (no lost acknowledged write) and 3 (HLC
 * monotonicity across restarts, also when the wall clock jumps backwards).
 *
 * A child process (test/fixtures/writer-child.mjs, running the built package) writes in a loop
 * and prints every write before it starts ("begin") and after its promise resolved ("ack"). The
 * parent SIGKILLs it after a few hundred acknowledged writes, reopens the data directory
 * in-process and checks, exactly:
 *   - every acknowledged write is there with exactly the acknowledged content, and nothing else
 *     is (the one write in flight at the kill is either wholly committed or wholly absent);
 *   - the peer log holds, per origin, seqs 1..n in commit order with strictly increasing HLCs,
 *     and exactly the acknowledged shared writes;
 *   - the reopened clock starts at or above every persisted HLC and the next HLC it issues is
 *     strictly above all of them, even with the wall clock far in the past;
 *   - the dead child's node.lock is taken over, a live child's lock is respected.
 * Each scenario runs two kill/restart rounds on the same directory.
 */
import Database from 'better-sqlite3';
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  createSyncNode,
  defineModel,
  type Library,
  type ModelInput,
  SyncNode,
} from '../src/index.js';
import type { LogEntry } from '../src/peer-log/types.js';
import {
  ensureBuilt,
  LineChild,
  killRunningChildren,
  makeTempDir,
  removeTempDirs,
  REPO_ROOT,
} from './helpers/child-process.js';
import { engineOf } from '../src/library/library.js';

const CHILD_SCRIPT = join(REPO_ROOT, 'test', 'fixtures', 'writer-child.mjs');

/** Shared row LWW, shared field LWW and a device-owned model. Sent to the child as JSON. */
const MODEL_INPUTS: ModelInput[] = [
  {
    name: 'note',
    ownership: 'shared',
    conflict: 'lww',
    fields: { title: 'text', body: 'text', pinned: 'boolean', rank: 'real', meta: { type: 'json', nullable: true } },
  },
  {
    name: 'tag',
    ownership: 'shared',
    conflict: 'lww-field',
    fields: { label: 'text', color: 'text', weight: 'integer', extra: { type: 'json', nullable: true } },
  },
  { name: 'volume', ownership: 'device', fields: { name: 'text', bytes: 'integer', online: 'boolean' } },
];
const models = () => MODEL_INPUTS.map((m) => defineModel(m));

const EVERYTHING = { maxRecords: 1_000_000, maxBytes: 1 << 30 };
const DAY_MS = 24 * 60 * 60 * 1000;
/** A wall clock far in the past: 2001-01-01. */
const PAST_MS = Date.UTC(2001, 0, 1);

type RowJson = { id: string; [field: string]: unknown };
type LogOp = 'upsert' | 'update' | 'delete';

interface PlannedWrite {
  model: string;
  kind: 'create' | 'overwrite' | 'update' | 'delete';
  /** null when the library generates the id. */
  id: string | null;
  /** The op of the log entry this write appends, null for device-owned models. */
  logOp: LogOp | null;
  /** The row the write leaves (id null when generated), null for a delete. */
  expect: (Omit<RowJson, 'id'> & { id: string | null }) | null;
}

interface ReadyLine {
  t: 'ready';
  pid: number;
  deviceId: string;
  libraryId: string;
  highWater: string;
}
interface BeginLine {
  t: 'begin';
  op: number;
  tx: boolean;
  writes: PlannedWrite[];
}
interface AckLine {
  t: 'ack';
  op: number;
  rows: (RowJson | null)[];
}
type ChildLine = ReadyLine | BeginLine | AckLine;

interface Expected {
  model: string;
  id: string;
  /** Content the last committed write left; null when deleted. */
  row: RowJson | null;
}

const keyOf = (model: string, id: string) => `${model}/${id}`;
const expectedRow = (w: PlannedWrite, id: string): RowJson | null => (w.expect === null ? null : { ...w.expect, id });

/**
 * What the data directory must hold: the content of every record an acknowledged write
 * touched, and the shared writes the log must contain in commit order. Fed by the child's
 * lines; the op in flight at a kill stays pending until the reopened store shows whether it
 * committed (all of it, or nothing).
 */
class Ledger {
  deviceId: string | undefined;
  libraryId: string | undefined;
  readonly rows = new Map<string, Expected>();
  readonly logged: { model: string; id: string; op: LogOp }[] = [];
  /** Ops begun and never acknowledged (at most one per killed round), not yet resolved. */
  readonly pending: BeginLine[] = [];
  roundAckedWrites = 0;
  totals = { acked: 0, inflightCommitted: 0, inflightLost: 0 };
  private outstanding: BeginLine | undefined;
  private lastOp = 0;

  startRound(): void {
    expect(this.pending, 'previous round was verified').toEqual([]);
    this.roundAckedWrites = 0;
    this.outstanding = undefined;
    this.lastOp = 0;
  }

  onLine(message: ChildLine): void {
    if (message.t === 'ready') {
      this.deviceId ??= message.deviceId;
      this.libraryId ??= message.libraryId;
      expect(message.deviceId, 'the device id survives restarts').toBe(this.deviceId);
      expect(message.libraryId, 'the library is reopened, not recreated').toBe(this.libraryId);
    } else if (message.t === 'begin') {
      expect(this.outstanding, 'writes are sequential').toBeUndefined();
      expect(message.op).toBe(this.lastOp + 1);
      this.outstanding = message;
    } else {
      const begun = this.outstanding;
      expect(begun?.op, 'ack matches the op begun').toBe(message.op);
      expect(message.rows).toHaveLength(begun!.writes.length);
      begun!.writes.forEach((w, i) => {
        const row = message.rows[i]!;
        if (w.expect === null) {
          expect(row).toBeNull();
          return;
        }
        expect(typeof row?.id).toBe('string');
        if (w.id !== null) expect(row!.id).toBe(w.id);
        // The child's prediction of each write's result is what resolves the in-flight op after
        // a kill, so check it against what the library returned for every acknowledged write.
        expect(row, `op ${message.op} write ${i} (${w.kind} ${w.model})`).toEqual(expectedRow(w, row!.id));
      });
      begun!.writes.forEach((w, i) => this.commit(w, w.id ?? message.rows[i]!.id));
      this.outstanding = undefined;
      this.lastOp = message.op;
      this.roundAckedWrites += begun!.writes.length;
      this.totals.acked += begun!.writes.length;
    }
  }

  /** After the kill: the op that was begun but not acknowledged, if any, is now in doubt. */
  endRound(): void {
    if (this.outstanding) this.pending.push(this.outstanding);
    this.outstanding = undefined;
  }

  /** A write known to be committed (acknowledged, made in-process, or proven by the store). */
  commit(w: PlannedWrite, id: string): void {
    this.rows.set(keyOf(w.model, id), { model: w.model, id, row: expectedRow(w, id) });
    if (w.logOp !== null) this.logged.push({ model: w.model, id, op: w.logOp });
  }

  liveIds(model: string): Set<string> {
    const ids = new Set<string>();
    for (const e of this.rows.values()) if (e.model === model && e.row !== null) ids.add(e.id);
    return ids;
  }
}

async function allLiveRows(lib: Library, model: string): Promise<Map<string, RowJson>> {
  const rows = new Map<string, RowJson>();
  let after: string | undefined;
  for (;;) {
    const page = await lib.list(model, after === undefined ? { limit: 1000 } : { limit: 1000, after });
    for (const row of page) rows.set(row.id, row as RowJson);
    if (page.length < 1000) return rows;
    after = page[page.length - 1]!.id;
  }
}

/**
 * Decides whether the op in flight at the kill committed, checks it committed all-or-nothing,
 * and records it in the ledger if it did. `entries` is the whole log after reopening.
 */
async function resolveInFlight(ledger: Ledger, lib: Library, entries: LogEntry[]): Promise<void> {
  const acknowledged = ledger.logged.length;
  if (entries.length < acknowledged) {
    fail(`the log holds ${entries.length} entries but ${acknowledged} shared writes were acknowledged`);
  }
  expect(
    entries.slice(0, acknowledged).map((e) => ({ model: e.model, id: e.id, op: e.op })),
    'the log starts with the acknowledged shared writes, in order',
  ).toEqual(ledger.logged);
  for (const op of ledger.pending.splice(0)) {
    const known = ledger.logged.length;
    const sharedWrites = op.writes.filter((w) => w.logOp !== null);
    const extraEntries = entries.length - known;
    let committed: boolean;
    if (sharedWrites.length > 0) {
      // A transaction's log entries commit together with its rows: all of them or none.
      expect([0, sharedWrites.length], `log entries beyond the acknowledged ${known}`).toContain(extraEntries);
      committed = extraEntries > 0;
    } else {
      expect(extraEntries, 'a device-owned op appends no log entries').toBe(0);
      // Device-owned only: decide from a record whose content the op would change.
      const decided: boolean[] = [];
      const finals = new Map<string, { before: RowJson | null; after: RowJson | null }>();
      for (const w of op.writes) {
        if (w.id === null) continue;
        const key = keyOf(w.model, w.id);
        const before = finals.get(key)?.before ?? ledger.rows.get(key)?.row ?? null;
        finals.set(key, { before, after: expectedRow(w, w.id) });
      }
      for (const [key, { before, after }] of finals) {
        const [model, id] = key.split('/') as [string, string];
        const stored = ((await lib.get(model, id)) ?? null) as RowJson | null;
        const isBefore = equal(stored, before);
        const isAfter = equal(stored, after);
        expect(isBefore || isAfter, `${key} holds its state from before or after the in-flight op`).toBe(true);
        if (!(isBefore && isAfter)) decided.push(isAfter);
      }
      const creates = op.writes.filter((w) => w.id === null);
      if (decided.length === 0 && creates.length > 0) {
        // Only creates with library-generated ids: count rows nobody acknowledged.
        let extra = 0;
        for (const model of new Set(creates.map((w) => w.model))) {
          extra += (await allLiveRows(lib, model)).size - ledger.liveIds(model).size;
        }
        expect([0, creates.length]).toContain(extra);
        decided.push(extra > 0);
      }
      expect(new Set(decided).size, 'the in-flight op committed all or nothing').toBeLessThanOrEqual(1);
      // No evidence either way means the op left every record as it was: same rows both ways.
      committed = decided[0] ?? true;
    }
    if (!committed) {
      ledger.totals.inflightLost += 1;
      continue;
    }
    ledger.totals.inflightCommitted += 1;
    let next = known;
    const unidentified: PlannedWrite[] = [];
    for (const w of op.writes) {
      let id = w.id;
      if (w.logOp !== null) {
        const entry = entries[next++]!;
        expect({ model: entry.model, op: entry.op }).toEqual({ model: w.model, op: w.logOp });
        if (id !== null) expect(entry.id).toBe(id);
        id = entry.id;
      }
      if (id === null) unidentified.push(w);
      else ledger.commit(w, id);
    }
    // Device-owned creates with generated ids: the rows nobody knew must be exactly these.
    for (const model of new Set(unidentified.map((w) => w.model))) {
      const creates = unidentified.filter((w) => w.model === model);
      const known = ledger.liveIds(model);
      const extras = [...(await allLiveRows(lib, model)).values()].filter((r) => !known.has(r.id));
      expect(extras).toHaveLength(creates.length);
      for (const w of creates) {
        const match = extras.findIndex((r) => equal(r, expectedRow(w, r.id)));
        expect(match, `a stored ${model} row matches the in-flight create ${JSON.stringify(w.expect)}`).toBeGreaterThanOrEqual(0);
        ledger.commit(w, extras.splice(match, 1)[0]!.id);
      }
    }
  }
}

function fail(message: string): never {
  throw new Error(message);
}

function equal(a: unknown, b: unknown): boolean {
  try {
    expect(a).toEqual(b);
    return true;
  } catch {
    return false;
  }
}

/**
 * White-box: the clock high-water mark persisted in the library file and the largest row clock
 * (`_hlc`, each row's winning/newest clock in every model table). Device-owned writes append no
 * log entry, so their clocks are only visible here.
 */
function persistedHlcs(file: string): { highWater: string; maxRow: string } {
  const db = new Database(file, { fileMustExist: true });
  try {
    const one = (sql: string) => (db.prepare(sql).get() as { h: string | null } | undefined)?.h ?? '';
    let maxRow = '';
    for (const m of MODEL_INPUTS) {
      const h = one(`SELECT max(_hlc) AS h FROM "${m.name}"`);
      if (h > maxRow) maxRow = h;
    }
    return { highWater: one(`SELECT value AS h FROM sync_meta WHERE key = 'hlc'`), maxRow };
  } finally {
    db.close();
  }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/**
 * Runs one child on `dataDir` until it has acknowledged at least `killAfter` writes, checks
 * the lock is respected while it lives, then SIGKILLs it. Returns the child's pid.
 */
async function runChildRound(
  dataDir: string,
  ledger: Ledger,
  options: { seed: number; killAfter: number; wallOffsetMs: number },
): Promise<number> {
  const entry = await ensureBuilt();
  ledger.startRound();
  let ready = false;
  const config = { entry, dataDir, models: MODEL_INPUTS, seed: options.seed, wallOffsetMs: options.wallOffsetMs };
  const child = new LineChild(CHILD_SCRIPT, [JSON.stringify(config)], (line) => {
    const message = JSON.parse(line) as ChildLine;
    if (message.t === 'ready') {
      expect(message.pid).toBe(child.pid);
      ready = true;
    }
    ledger.onLine(message);
  });
  await child.waitFor(() => ready, 'the child to open its node', 15_000);

  // While the child lives, its lock keeps a second node off the directory.
  const intruder = await createSyncNode({ dataDir, models: models(), listen: [] }).then(
    (node) => node,
    (err: unknown) => err,
  );
  if (intruder instanceof SyncNode) {
    await intruder.stop();
    fail(`a second node opened ${dataDir} while process ${child.pid} held it`);
  }
  expect(intruder).toMatchObject({ code: 'STOPPED', message: expect.stringContaining(`in use by process ${child.pid}`) });

  await child.waitFor(() => ledger.roundAckedWrites >= options.killAfter, `${options.killAfter} acknowledged writes`, 20_000);
  const exit = await child.kill('SIGKILL');
  expect(exit, `child stderr:\n${child.stderr}`).toEqual({ code: null, signal: 'SIGKILL' });
  expect(child.trailing, 'stdout lines are written whole').toBe('');
  ledger.endRound();
  return child.pid;
}

/**
 * Reopens the directory in-process (with `wallClock`) after a kill and checks everything the
 * ledger knows, then makes a few writes of its own (recorded in the ledger) and stops.
 */
async function verifyReopened(
  dataDir: string,
  ledger: Ledger,
  deadChildPid: number,
  wallClock: () => number,
): Promise<void> {
  const lockFile = join(dataDir, 'node.lock');
  expect(Number((await readFile(lockFile, 'utf8')).trim()), 'the killed child left its lock').toBe(deadChildPid);

  const node = await createSyncNode({ dataDir, models: models(), listen: [], wallClock });
  try {
    expect(Number((await readFile(lockFile, 'utf8')).trim()), 'the dead process lock is taken over').toBe(process.pid);
    expect(node.deviceId).toBe(ledger.deviceId);
    expect(node.libraries().map((l) => l.id)).toEqual([ledger.libraryId]);
    const lib = node.library(ledger.libraryId!);
    const deviceId = node.deviceId;

    // Peer log: one origin, seqs 1..n, HLCs strictly increasing in seq order (across rounds).
    const log = await engineOf(lib).entriesAfter({}, EVERYTHING);
    expect(log.hasMore).toBe(false);
    expect(log.pruned).toEqual([]);
    const entries = log.entries;
    const n = entries.length;
    expect(new Set(entries.map((e) => e.origin))).toEqual(new Set(n > 0 ? [deviceId] : []));
    expect(entries.map((e) => e.seq)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    for (let i = 1; i < n; i++) {
      if (!(entries[i]!.hlc > entries[i - 1]!.hlc)) {
        fail(`log HLC not increasing at seq ${i + 1}: ${entries[i - 1]!.hlc} then ${entries[i]!.hlc}`);
      }
    }
    expect(lib.versionVector()).toEqual(n > 0 ? { [deviceId]: n } : {});

    // Every acknowledged write is there, the in-flight one wholly or not at all.
    await resolveInFlight(ledger, lib, entries);
    expect(
      entries.map((e) => ({ model: e.model, id: e.id, op: e.op })),
      'the log holds exactly the committed shared writes, in commit order',
    ).toEqual(ledger.logged);
    for (const e of ledger.rows.values()) {
      const stored = (await lib.get(e.model, e.id)) ?? null;
      if (!equal(stored, e.row)) expect(stored, `acknowledged content of ${e.model} ${e.id}`).toEqual(e.row);
    }
    for (const m of MODEL_INPUTS) {
      const live = [...(await allLiveRows(lib, m.name)).keys()].sort();
      expect(live, `live ${m.name} rows are exactly the acknowledged ones`).toEqual([...ledger.liveIds(m.name)].sort());
    }

    // HLC: the clock starts at or above everything persisted; the next value is above it all.
    const libraryFile = join(dataDir, 'libraries', `${ledger.libraryId}.sqlite`);
    const persisted = persistedHlcs(libraryFile);
    const maxLog = n > 0 ? entries[n - 1]!.hlc : '';
    if (!(persisted.highWater >= persisted.maxRow && persisted.highWater >= maxLog)) {
      fail(`persisted high-water ${persisted.highWater} is below a stored row (${persisted.maxRow}) or log (${maxLog}) HLC`);
    }
    const maxStored = [persisted.highWater, persisted.maxRow, maxLog].reduce(
      (a, b) => (a > b ? a : b),
      '',
    );
    const before = engineOf(lib).clockHighWater();
    expect(before).toHaveLength(52);
    if (!(before >= maxStored)) fail(`reopened clock ${before} starts below persisted ${maxStored}`);

    const note = await lib.upsert('note', { title: 'after', body: 'restart', pinned: true, rank: 1.5, meta: null });
    ledger.commit({ model: 'note', kind: 'create', id: note.id, logOp: 'upsert', expect: note }, note.id);
    const next = await engineOf(lib).entriesAfter({ [deviceId]: n }, EVERYTHING);
    expect(next.entries.map((e) => [e.seq, e.id])).toEqual([[n + 1, note.id]]);
    const issued = next.entries[0]!.hlc;
    if (!(issued > maxStored && issued > before)) {
      fail(`next HLC ${issued} is not above every stored HLC (max ${maxStored}, clock ${before})`);
    }
    expect(engineOf(lib).clockHighWater()).toBe(issued);

    // A device-owned write (no log entry) and a transaction also advance the clock.
    const volume = await lib.upsert('volume', { name: 'after-restart', bytes: 42, online: false });
    ledger.commit({ model: 'volume', kind: 'create', id: volume.id, logOp: null, expect: volume }, volume.id);
    const afterVolume = engineOf(lib).clockHighWater();
    if (!(afterVolume > issued)) fail(`device-owned write did not advance the clock: ${afterVolume} <= ${issued}`);
    const tag = await lib.transaction(async (tx) => {
      const created = await tx.upsert('tag', { label: 'x', color: 'red', weight: 1, extra: null });
      return tx.update('tag', created.id, { weight: 2 });
    });
    ledger.commit({ model: 'tag', kind: 'create', id: tag.id, logOp: 'upsert', expect: { ...tag, weight: 1 } }, tag.id);
    ledger.commit({ model: 'tag', kind: 'update', id: tag.id, logOp: 'update', expect: tag }, tag.id);
    const inTx = await engineOf(lib).entriesAfter({ [deviceId]: n + 1 }, EVERYTHING);
    expect(inTx.entries.map((e) => e.seq)).toEqual([n + 2, n + 3]);
    if (!(inTx.entries[0]!.hlc > afterVolume && inTx.entries[1]!.hlc > inTx.entries[0]!.hlc)) {
      fail(`transaction HLCs not increasing: ${afterVolume}, ${inTx.entries.map((e) => e.hlc).join(', ')}`);
    }
  } finally {
    await node.stop();
  }
  expect(await exists(lockFile), 'stop() releases the lock').toBe(false);
}

function randomSeed(): number {
  const fromEnv = process.env.RESTART_TEST_SEED;
  return fromEnv !== undefined ? Number(fromEnv) >>> 0 : Math.floor(Math.random() * 2 ** 32);
}

/** Runs `body`, prefixing any failure with the seed so the write contents can be replayed. */
async function withSeed(seed: number, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    if (err instanceof Error) err.message = `[RESTART_TEST_SEED=${seed}] ${err.message}`;
    throw err;
  }
}

const extra = (n: number) => Math.floor(Math.random() * n);

describe('kill -9 and restart', () => {
  beforeAll(async () => {
    await ensureBuilt();
  }, 180_000);

  afterEach(async () => {
    await killRunningChildren();
  });

  afterAll(async () => {
    await removeTempDirs();
  });

  it('keeps every acknowledged write and a monotonic clock over two kill/restart rounds', async () => {
    const seed = randomSeed();
    await withSeed(seed, async () => {
      const dataDir = await makeTempDir('restart');
      const ledger = new Ledger();

      const pid1 = await runChildRound(dataDir, ledger, { seed, killAfter: 300 + extra(100), wallOffsetMs: 0 });
      await verifyReopened(dataDir, ledger, pid1, Date.now);

      const pid2 = await runChildRound(dataDir, ledger, { seed: seed + 1, killAfter: 200 + extra(100), wallOffsetMs: 0 });
      await verifyReopened(dataDir, ledger, pid2, Date.now);

      expect(ledger.totals.acked).toBeGreaterThanOrEqual(500);
    });
  });

  it('issues HLCs above every stored one when the wall clock jumps backwards across restarts', async () => {
    const seed = randomSeed();
    await withSeed(seed, async () => {
      const dataDir = await makeTempDir('restart-clock');
      const ledger = new Ledger();

      // The writer's clock ran a day fast; the reopening node's clock is frozen in 2001.
      const pid1 = await runChildRound(dataDir, ledger, { seed, killAfter: 300 + extra(100), wallOffsetMs: DAY_MS });
      await verifyReopened(dataDir, ledger, pid1, () => PAST_MS);

      // The next writer's clock runs in 2001; then the node reopens on real time (still a day
      // behind what the first writer stored).
      const pid2 = await runChildRound(dataDir, ledger, {
        seed: seed + 1,
        killAfter: 200 + extra(100),
        wallOffsetMs: PAST_MS - Date.now(),
      });
      await verifyReopened(dataDir, ledger, pid2, Date.now);

      expect(ledger.totals.acked).toBeGreaterThanOrEqual(500);
    });
  });
});
