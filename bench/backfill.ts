import Database from 'better-sqlite3';
import { type ChildProcess, fork } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { DEFAULT_SYNC_TUNING, type Library, type SyncNode, type SyncTuning } from '../src/index.js';
import { median, NoteLww, sampleRow } from './core.js';
import { report } from './report.js';
import { createBenchNode, isSigning, reportSigningCost, type Signing, SIGNINGS, signingOrder } from './unsigned.js';

/**
 * Backfill benchmarks (issue: backfill). A fresh device B joins a library whose only other
 * member, A, already holds N shared rows, and backfills all of them over libp2p TCP on
 * 127.0.0.1. Both nodes keep their library in a SQLite file (WAL, synchronous=FULL).
 *
 * - A runs in this process. Setup (not measured): A creates the library and writes N shared
 *   row-level-LWW rows (`NoteLww`, ids chosen by the library) in transactions of SETUP_TX.
 * - B runs in a child process (this same file, forked), so that its memory is its own: its peak
 *   RSS is the larger of (a) `process.memoryUsage.rss()` sampled every 50 ms and (b) the
 *   kernel's high-water mark `process.resourceUsage().maxRSS`, both read when `lib.synced()`
 *   resolves (before B computes its digest). (b) is exact and also covers stretches where B's
 *   event loop is busy and the sampler cannot run; it covers the child's whole life so far
 *   (start-up included), which is below the backfill peak anyway.
 * - Timed: from the call of `joinLibrary(invite)` on B (the invite handshake included) until
 *   `lib.synced()` resolves on B. `join_s` (the handshake alone) is reported as context.
 *   records/s = N / that time. B's `synced()` resolves on the status event of the change to
 *   `ready`, which is emitted at once (not throttled).
 * - Then B's digest must equal A's (the bench throws otherwise).
 *
 * Floor (same run): with better-sqlite3 directly, copy A's N rows (read from A's library file,
 * the very rows B receives) into a fresh file with the same table definition and the library's
 * pragmas (WAL, synchronous=FULL), one prepared insert per row, FLOOR_TX rows per transaction
 * (the size of a backfill page, `batchRecords`). Measured right before each backfill and again
 * after it (once B is stopped: the copy blocks A's event loop); their mean is its floor.
 *
 * Each round is a fresh A and a fresh B process, so B always starts with cold JIT, as a newly
 * joined device would; this weighs on the small size most. Session errors counted are those up
 * to synced(): the digests afterwards hold both event loops for seconds at 1M rows, and the
 * sessions may time out then.
 *
 * Metrics (one per size unless noted): backfill.records_per_s (target 100 000/s),
 * backfill.ratio_to_floor (target 0.5), backfill.floor_copy_rows_per_s,
 * backfill.peak_rss_mb (target 300 MB at 1M), backfill.seconds (context), and once
 * backfill.linearity = time(large) / time(small) (target ≤ 11 for 1M vs 100k).
 *
 * Signing (issue 13, cost): each round backfills twice, back to back, the order alternating by
 * round: once with A and B signing their runs (`createSyncNode`; the metrics above are this
 * one's) and once with both on the unsigned baseline (bench/unsigned.ts: no Ed25519, no
 * hashing); B's process is told which by its environment (CHILD_SIGNING_ENV). Per size:
 * signing.backfill.signed_records_per_s, signing.backfill.unsigned_records_per_s and
 * signing.backfill_vs_unsigned = signed / unsigned (target ≥ 0.9; the figure is at
 * 1 000 000 records: BENCH_BACKFILL_SIZES=1000000). The largest size runs once of each.
 *
 * Knobs (for investigation):
 * - BENCH_QUICK=1: sizes 10 000 and 100 000.
 * - BENCH_BACKFILL_SIZES=100000,1000000: explicit sizes (any order; linearity uses the smallest
 *   and the largest).
 * - BENCH_BACKFILL_ROUNDS=n: rounds of every size but the largest (default 3, 1 with
 *   BENCH_QUICK); the largest always runs once. Figures are medians.
 * - BENCH_BACKFILL_CPU_PROF=<dir>: B runs with --cpu-prof, profiles written to <dir>.
 * - BENCH_BACKFILL_TIMEOUT_MS: how long one backfill may take (default 600 000).
 * - BENCH_BACKFILL_BASELINE=0: skip the unsigned baseline (no signing.* figures), half the time.
 * - BENCH_SYNC='{"batchRecords":5000,...}': sync tuning of both nodes.
 * - BENCH_DEBUG=1: print to stderr session errors, phase timings, B's memory every second, B's
 *   ms per page by tenth of the run, and the backfill window on the clock cpu profiles use.
 */
const QUICK = process.env.BENCH_QUICK === '1';
const SIZES: number[] = process.env.BENCH_BACKFILL_SIZES
  ? process.env.BENCH_BACKFILL_SIZES.split(',').map((s) => Number(s.replace(/_/g, '')))
  : QUICK
    ? [10_000, 100_000]
    : [100_000, 1_000_000];
const ROUNDS = Number(process.env.BENCH_BACKFILL_ROUNDS ?? (QUICK ? 1 : 3));
const SETUP_TX = 5_000;
const LISTEN = ['/ip4/127.0.0.1/tcp/0'];
const TUNING: Partial<SyncTuning> = process.env.BENCH_SYNC ? (JSON.parse(process.env.BENCH_SYNC) as Partial<SyncTuning>) : {};
const FLOOR_TX = TUNING.batchRecords ?? DEFAULT_SYNC_TUNING.batchRecords;
const TIMEOUT_MS = Number(process.env.BENCH_BACKFILL_TIMEOUT_MS ?? 600_000);
const CPU_PROF_DIR = process.env.BENCH_BACKFILL_CPU_PROF;
const DEBUG = process.env.BENCH_DEBUG === '1';
const BASELINE = process.env.BENCH_BACKFILL_BASELINE !== '0';
const ROLE_ENV = 'BENCH_BACKFILL_ROLE';
/** Tells B's process whether it signs (`signed`) or is the unsigned baseline (`unsigned`). */
const CHILD_SIGNING_ENV = 'BENCH_BACKFILL_CHILD_SIGNING';
const RSS_SAMPLE_MS = 50;
const MB = 1024 * 1024;

if (SIZES.some((n) => !Number.isSafeInteger(n) || n <= 0)) throw new Error(`bad BENCH_BACKFILL_SIZES: ${process.env.BENCH_BACKFILL_SIZES}`);

const debug = (message: string) => {
  if (DEBUG) console.error(`[backfill] ${message}`);
};

// ---------------------------------------------------------------------------------------------
// Messages between A (this process) and B (the child).

type ParentMessage = { cmd: 'join'; invite: string } | { cmd: 'digest' } | { cmd: 'stop' };

interface SyncedReport {
  /** Seconds from the call of joinLibrary until synced() resolved. */
  totalS: number;
  /** Seconds of the invite handshake (joinLibrary until it resolved). */
  joinS: number;
  /** Seconds from joinLibrary's resolution until the first page was applied (progress event). */
  firstPageS: number;
  /** Largest sampled rss during the backfill, bytes. */
  sampledPeakRss: number;
  /** resourceUsage().maxRSS at synced(), bytes. */
  maxRss: number;
  /** rss before joining, bytes. */
  baselineRss: number;
  /** rss and V8 heap when synced() resolved, bytes. */
  rssAtSynced: number;
  heapUsedAtSynced: number;
  /** CPU seconds B used during the backfill (user + system). */
  cpuS: number;
  pages: number;
  run: { added: number; updated: number; bytes: number; outcome: string } | null;
  sessionErrors: number;
}

type ChildMessage =
  | { type: 'ready'; rss: number }
  | ({ type: 'synced' } & SyncedReport)
  | { type: 'digest'; digest: string }
  | { type: 'stopped' }
  | { type: 'error'; message: string };

// ---------------------------------------------------------------------------------------------
// B: the child process.

async function replicaMain(): Promise<void> {
  const dataDir = process.env.BENCH_BACKFILL_DATA_DIR!;
  const tuning = JSON.parse(process.env.BENCH_BACKFILL_TUNING ?? '{}') as Partial<SyncTuning>;
  const timeoutMs = Number(process.env.BENCH_BACKFILL_TIMEOUT_MS ?? TIMEOUT_MS);
  const send = (message: ChildMessage) => process.send!(message);
  let node: SyncNode | undefined;
  let lib: Library | undefined;
  let sessionErrors = 0;
  let sampledPeak = 0;
  const sample = () => {
    const rss = process.memoryUsage.rss();
    if (rss > sampledPeak) sampledPeak = rss;
  };
  const sampler = setInterval(sample, RSS_SAMPLE_MS);
  if (DEBUG) {
    // Memory over time, to tell a peak from a trend.
    const started = performance.now();
    setInterval(() => {
      const m = process.memoryUsage();
      const mb = (n: number) => (n / MB).toFixed(0);
      console.error(`[backfill] B t=${((performance.now() - started) / 1000).toFixed(1)}s rss ${mb(m.rss)} heapUsed ${mb(m.heapUsed)} heapTotal ${mb(m.heapTotal)} external ${mb(m.external)} arrayBuffers ${mb(m.arrayBuffers)} MB`);
    }, 1_000).unref();
  }
  const fail = (err: unknown) => send({ type: 'error', message: String((err as Error)?.stack ?? err) });

  // The parent is gone (it failed or was killed): do not linger.
  process.on('disconnect', () => process.exit(1));
  process.on('message', (message: ParentMessage) => {
    void (async () => {
      try {
        if (message.cmd === 'join') {
          sample();
          const baselineRss = process.memoryUsage.rss();
          sampledPeak = baselineRss;
          let pages = 0;
          let firstPage = 0;
          const cpu0 = process.cpuUsage();
          const t0 = performance.now();
          lib = await node!.joinLibrary(message.invite);
          const t1 = performance.now();
          const pageTimes: number[] = [];
          lib.on('progress', () => {
            if (pages++ === 0) firstPage = performance.now();
            if (DEBUG) pageTimes.push(performance.now());
          });
          await lib.synced({ signal: AbortSignal.timeout(timeoutMs) });
          const t2 = performance.now();
          const cpu = process.cpuUsage(cpu0);
          if (DEBUG) {
            // The backfill window on the monotonic clock (µs) cpu profiles use.
            const toMicros = (t: number) => Math.round((Number(process.hrtime.bigint()) / 1e6 - (performance.now() - t)) * 1000);
            console.error(`[backfill] B window: join ${toMicros(t0)} first page ${toMicros(firstPage)} synced ${toMicros(t2)}`);
            // Mean ms per page over tenths of the run: flat if the cost per page does not grow.
            const tenth = Math.max(1, Math.floor(pageTimes.length / 10));
            const means: string[] = [];
            for (let i = tenth; i < pageTimes.length; i += tenth) means.push(((pageTimes[i]! - pageTimes[i - tenth]!) / tenth).toFixed(1));
            console.error(`[backfill] B ms per page, by tenth of the run: ${means.join(' ')}`);
          }
          sample();
          const maxRss = process.resourceUsage().maxRSS * 1024;
          const memory = process.memoryUsage();
          const runs = await lib.syncHistory();
          const run = runs.find((r) => r.kind === 'backfill');
          send({
            type: 'synced',
            totalS: (t2 - t0) / 1000,
            joinS: (t1 - t0) / 1000,
            firstPageS: firstPage ? (firstPage - t1) / 1000 : 0,
            sampledPeakRss: sampledPeak,
            maxRss,
            baselineRss,
            rssAtSynced: memory.rss,
            heapUsedAtSynced: memory.heapUsed,
            cpuS: (cpu.user + cpu.system) / 1e6,
            pages,
            run: run ? { added: run.added, updated: run.updated, bytes: run.bytes, outcome: run.outcome } : null,
            sessionErrors,
          });
        } else if (message.cmd === 'digest') {
          send({ type: 'digest', digest: await lib!.digest() });
        } else {
          clearInterval(sampler);
          await node?.stop();
          // Exit (writing the cpu profile, if any) once the parent has the reply.
          process.send!({ type: 'stopped' } satisfies ChildMessage, () => process.exit(0));
        }
      } catch (err) {
        fail(err);
      }
    })();
  });

  try {
    const signing = process.env[CHILD_SIGNING_ENV];
    if (!isSigning(signing)) throw new Error(`replica: bad ${CHILD_SIGNING_ENV}: ${signing}`);
    node = await createBenchNode(signing, { dataDir, models: [NoteLww], listen: LISTEN, sync: tuning });
    node.on('session-error', ({ error }) => {
      sessionErrors += 1;
      if (process.env.BENCH_DEBUG === '1') console.error(`[backfill] session error on B: ${error.message}`);
    });
    send({ type: 'ready', rss: process.memoryUsage.rss() });
  } catch (err) {
    fail(err);
  }
}

// ---------------------------------------------------------------------------------------------
// A: this process.

/** B, seen from A. */
class ReplicaProcess {
  private readonly replies: ChildMessage[] = [];
  private waiting: ((reply: ChildMessage) => void) | undefined;
  private failure: Error | undefined;

  private constructor(private readonly child: ChildProcess) {
    child.on('message', (reply: ChildMessage) => this.deliver(reply));
    child.on('error', (err) => this.fail(err));
    child.on('exit', (code, signal) => this.fail(new Error(`replica process exited (code ${code}, signal ${signal})`)));
  }

  static async start(dataDir: string, signing: Signing): Promise<{ replica: ReplicaProcess; rss: number }> {
    const execArgv = CPU_PROF_DIR ? ['--cpu-prof', '--cpu-prof-dir', CPU_PROF_DIR] : [];
    const child = fork(fileURLToPath(import.meta.url), [], {
      execArgv,
      env: {
        ...process.env,
        [ROLE_ENV]: 'replica',
        [CHILD_SIGNING_ENV]: signing,
        BENCH_BACKFILL_DATA_DIR: dataDir,
        BENCH_BACKFILL_TUNING: JSON.stringify(TUNING),
        BENCH_BACKFILL_TIMEOUT_MS: String(TIMEOUT_MS),
      },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const replica = new ReplicaProcess(child);
    try {
      const ready = await replica.next('ready');
      return { replica, rss: ready.rss };
    } catch (err) {
      child.kill('SIGKILL');
      throw err;
    }
  }

  async join(invite: string): Promise<SyncedReport> {
    this.child.send({ cmd: 'join', invite } satisfies ParentMessage);
    return this.next('synced');
  }

  async digest(): Promise<string> {
    this.child.send({ cmd: 'digest' } satisfies ParentMessage);
    return (await this.next('digest')).digest;
  }

  async stop(): Promise<void> {
    const child = this.child;
    const exited = new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
    if (!this.failure) {
      child.send({ cmd: 'stop' } satisfies ParentMessage);
      await this.next('stopped').catch(() => undefined);
    }
    // It exits by itself once stopped; make sure it does.
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }

  kill(): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }

  private deliver(reply: ChildMessage): void {
    const w = this.waiting;
    if (w) {
      this.waiting = undefined;
      w(reply);
    } else this.replies.push(reply);
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.deliver({ type: 'error', message: err.message });
  }

  private async next<T extends ChildMessage['type']>(type: T): Promise<Extract<ChildMessage, { type: T }>> {
    const reply = this.replies.shift() ?? (await new Promise<ChildMessage>((resolve) => (this.waiting = resolve)));
    if (reply.type === 'error') throw new Error(`replica: ${reply.message}`);
    if (reply.type !== type) throw new Error(`replica: expected ${type}, got ${reply.type}`);
    return reply as Extract<ChildMessage, { type: T }>;
  }
}

/**
 * The floor: copies the `note_lww` rows of `sourcePath` (A's library file) into a fresh file
 * with the same table definition and the library's pragmas, a prepared insert per row and
 * FLOOR_TX rows per transaction. Returns rows/s.
 */
function rawCopyFloor(sourcePath: string, destPath: string, expected: number): number {
  const table = NoteLww.name;
  const source = new Database(sourcePath, { readonly: true, fileMustExist: true });
  const dest = new Database(destPath);
  try {
    dest.pragma('journal_mode = WAL');
    dest.pragma('synchronous = FULL');
    const ddl = source.prepare('SELECT sql FROM sqlite_master WHERE type = ? AND name = ?').pluck().get('table', table) as string | undefined;
    if (!ddl) throw new Error(`floor: no table ${table} in ${sourcePath}`);
    dest.exec(ddl);
    const columns = (source.prepare(`SELECT name FROM pragma_table_info(?)`).pluck().all(table) as string[]).map((c) => `"${c}"`);
    const read = source.prepare(`SELECT ${columns.join(', ')} FROM "${table}"`).raw();
    const insert = dest.prepare(`INSERT INTO "${table}" (${columns.join(', ')}) VALUES (${columns.map(() => '?').join(', ')})`);
    const insertMany = dest.transaction((rows: unknown[][]) => {
      for (const row of rows) insert.run(row);
    });
    let copied = 0;
    const start = process.hrtime.bigint();
    let batch: unknown[][] = [];
    for (const row of read.iterate() as IterableIterator<unknown[]>) {
      batch.push(row);
      if (batch.length === FLOOR_TX) {
        insertMany(batch);
        copied += batch.length;
        batch = [];
      }
    }
    if (batch.length > 0) {
      insertMany(batch);
      copied += batch.length;
    }
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    if (copied < expected) throw new Error(`floor: copied ${copied} rows, expected at least ${expected}`);
    return copied / seconds;
  } finally {
    source.close();
    dest.close();
  }
}

interface BackfillResult extends SyncedReport {
  rows: number;
  floor: number;
  setupS: number;
  aCpuS: number;
  wallS: number;
}

async function digestsMatch(libA: Library, replica: ReplicaProcess): Promise<void> {
  // B holds A's rows once synced; a member-list write may still be on its way: look again a
  // few times before calling it a divergence.
  for (let attempt = 0; ; attempt++) {
    const [a, b] = await Promise.all([libA.digest(), replica.digest()]);
    if (a === b) return;
    if (attempt >= 5) throw new Error(`backfill bench: B's digest ${b} differs from A's ${a}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/**
 * One fresh A with `rows` shared rows, one fresh B in a child process backfilling them; both sign
 * their runs, or both are the unsigned baseline.
 */
async function measureBackfill(dir: string, rows: number, signing: Signing): Promise<BackfillResult> {
  const a = await createBenchNode(signing, { dataDir: join(dir, 'a'), models: [NoteLww], listen: LISTEN, sync: TUNING });
  let sessionErrorsOfA = 0;
  a.on('session-error', ({ error }) => {
    sessionErrorsOfA += 1;
    debug(`session error on A: ${error.message}`);
  });
  let replica: ReplicaProcess | undefined;
  try {
    const libA = await a.createLibrary({ name: 'bench' });
    const setupStart = performance.now();
    for (let from = 0; from < rows; from += SETUP_TX) {
      const to = Math.min(rows, from + SETUP_TX);
      await libA.transaction(async (tx) => {
        for (let i = from; i < to; i++) await tx.upsert(NoteLww.name, sampleRow(i));
      });
    }
    const setupS = (performance.now() - setupStart) / 1000;
    debug(`A (${signing}) wrote ${rows} rows in ${setupS.toFixed(1)} s (${Math.round(rows / setupS)} rows/s)`);
    const invite = await libA.createInvite();
    const fileA = join(dir, 'a', 'libraries', `${libA.id}.sqlite`);
    if (!existsSync(fileA)) throw new Error(`backfill bench: A's library file is not at ${fileA}`);

    const before = rawCopyFloor(fileA, join(dir, 'floor-before.sqlite'), rows);
    debug(`floor before: ${Math.round(before)} rows/s`);
    rmSync(join(dir, 'floor-before.sqlite'), { force: true });

    const started = await ReplicaProcess.start(join(dir, 'b'), signing);
    replica = started.replica;
    const cpu0 = process.cpuUsage();
    const wall0 = performance.now();
    const synced = await replica.join(invite);
    // Session errors after synced() (the digests below starve the event loop) are not counted.
    const errorsOfA = sessionErrorsOfA;
    const wallS = (performance.now() - wall0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    debug(
      `B (${signing}) synced ${rows} rows in ${synced.totalS.toFixed(2)} s (join ${synced.joinS.toFixed(2)} s, first page after ${synced.firstPageS.toFixed(2)} s, ${synced.pages} pages, ` +
        `B cpu ${synced.cpuS.toFixed(1)} s, A cpu ${((cpu.user + cpu.system) / 1e6).toFixed(1)} s, ` +
        `B peak rss ${(Math.max(synced.maxRss, synced.sampledPeakRss) / MB).toFixed(0)} MB)`,
    );

    const check = performance.now();
    await digestsMatch(libA, replica);
    debug(`digests equal (checked in ${((performance.now() - check) / 1000).toFixed(1)} s)`);
    // B stops before the second floor: the floor blocks A's event loop, B's session would time out.
    await replica.stop();
    replica = undefined;
    const after = rawCopyFloor(fileA, join(dir, 'floor-after.sqlite'), rows);
    debug(`floor after: ${Math.round(after)} rows/s`);
    rmSync(join(dir, 'floor-after.sqlite'), { force: true });
    return {
      ...synced,
      sessionErrors: synced.sessionErrors + errorsOfA,
      rows,
      floor: (before + after) / 2,
      setupS,
      aCpuS: (cpu.user + cpu.system) / 1e6,
      wallS,
    };
  } finally {
    await replica?.stop().catch(() => replica?.kill());
    await a.stop();
  }
}

export async function runBackfillBenchmarks(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ls-bench-backfill-'));
  const benchStart = performance.now();
  try {
    const sizes = [...SIZES].sort((x, y) => x - y);
    const largest = sizes[sizes.length - 1]!;
    const seconds = new Map<number, number>();
    for (const rows of sizes) {
      const rounds = rows === largest ? 1 : Math.max(1, ROUNDS);
      const results: BackfillResult[] = [];
      const unsignedResults: BackfillResult[] = [];
      for (let round = 0; round < rounds; round++) {
        for (const signing of BASELINE ? signingOrder(round) : SIGNINGS.slice(0, 1)) {
          const roundDir = join(dir, `${rows}-${round}-${signing}`);
          try {
            const result = await measureBackfill(roundDir, rows, signing);
            (signing === 'signed' ? results : unsignedResults).push(result);
          } finally {
            rmSync(roundDir, { recursive: true, force: true });
          }
        }
      }
      const of = (fn: (r: BackfillResult) => number) => median(results.map(fn));
      const time = of((r) => r.totalS);
      seconds.set(rows, time);
      const sessionErrors = results.reduce((n, r) => n + r.sessionErrors, 0);
      const tag = {
        rows,
        rounds,
        model: NoteLww.name,
        ...(QUICK ? { quick: true } : {}),
        ...(process.env.BENCH_SYNC ? { sync: TUNING } : {}),
        ...(sessionErrors > 0 ? { session_errors: sessionErrors } : {}),
      };
      const last = results[results.length - 1]!;
      report('backfill.floor_copy_rows_per_s', of((r) => r.floor), 'rows/s', {
        rows,
        rounds,
        note: `floor: copy of A's rows into a fresh file, prepared inserts, ${FLOOR_TX} per transaction, WAL + synchronous=FULL`,
      });
      report('backfill.records_per_s', of((r) => r.rows / r.totalS), 'records/s', {
        ...tag,
        ...(rows >= 100_000 ? { target: 100_000 } : {}),
        note: 'from joinLibrary() on B until synced() resolves; B in a child process',
        join_s: Number(of((r) => r.joinS).toFixed(3)),
        first_page_s: Number(of((r) => r.firstPageS).toFixed(3)),
        pages: last.pages,
        records_applied: last.run?.added,
        page_bytes_avg: last.run && last.pages ? Math.round(last.run.bytes / last.pages) : undefined,
        b_cpu_s: Number(of((r) => r.cpuS).toFixed(2)),
        a_cpu_s: Number(of((r) => r.aCpuS).toFixed(2)),
        setup_write_rows_per_s: Math.round(of((r) => r.rows / r.setupS)),
      });
      report('backfill.ratio_to_floor', of((r) => r.rows / r.totalS / r.floor), 'ratio', { ...tag, target: 0.5 });
      report('backfill.seconds', time, 's', { ...tag, note: 'context: the time records_per_s divides by' });
      report('backfill.peak_rss_mb', of((r) => Math.max(r.maxRss, r.sampledPeakRss)) / MB, 'MB', {
        ...tag,
        ...(rows >= 1_000_000 ? { target: 300 } : {}),
        note: "B's peak: max of getrusage maxRSS and rss sampled every 50 ms",
        max_rss_mb: Number((of((r) => r.maxRss) / MB).toFixed(1)),
        sampled_peak_mb: Number((of((r) => r.sampledPeakRss) / MB).toFixed(1)),
        baseline_rss_mb: Number((of((r) => r.baselineRss) / MB).toFixed(1)),
        rss_at_synced_mb: Number((of((r) => r.rssAtSynced) / MB).toFixed(1)),
        heap_used_at_synced_mb: Number((of((r) => r.heapUsedAtSynced) / MB).toFixed(1)),
      });
      if (BASELINE) {
        const unsignedErrors = unsignedResults.reduce((n, r) => n + r.sessionErrors, 0);
        reportSigningCost('backfill', 'records/s', results.map((r) => r.rows / r.totalS), unsignedResults.map((r) => r.rows / r.totalS), rows >= 100_000 ? 0.9 : undefined, {
          rows,
          model: NoteLww.name,
          ...(QUICK ? { quick: true } : {}),
          ...(process.env.BENCH_SYNC ? { sync: TUNING } : {}),
          ...(sessionErrors + unsignedErrors > 0 ? { session_errors: { signed: sessionErrors, unsigned: unsignedErrors } } : {}),
          b_cpu_s: { signed: Number(of((r) => r.cpuS).toFixed(2)), unsigned: Number(median(unsignedResults.map((r) => r.cpuS)).toFixed(2)) },
          a_cpu_s: { signed: Number(of((r) => r.aCpuS).toFixed(2)), unsigned: Number(median(unsignedResults.map((r) => r.aCpuS)).toFixed(2)) },
        });
      }
    }
    if (sizes.length >= 2) {
      const small = sizes[0]!;
      report('backfill.linearity', seconds.get(largest)! / seconds.get(small)!, 'ratio', {
        note: `time(${largest}) / time(${small})`,
        size_ratio: largest / small,
        ...(largest === 10 * small ? { target: 11 } : {}),
      });
    }
    debug(`backfill bench took ${((performance.now() - benchStart) / 1000).toFixed(1)} s`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.env[ROLE_ENV] === 'replica' && process.send) {
  await replicaMain();
}
