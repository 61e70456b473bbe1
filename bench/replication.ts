import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { Library, SyncNode, SyncTuning } from '../src/index.js';
import { median, NoteLww, rawInsertFloor, sampleRow } from './core.js';
import { report } from './report.js';
import { createBenchNode, isSigning, reportSigningCost, type Signing, SIGNINGS, signingOrder } from './unsigned.js';

/**
 * Replication benchmarks (issue: replication). Two sync nodes, A and B, each with its own SQLite
 * file in a temp dir, connected over libp2p TCP on 127.0.0.1; B joins A's library by invite.
 *
 * - Live throughput: A writes N shared rows (lww, transactions of TX) while B applies them, in
 *   BURSTS bursts of N / BURSTS; changes/s applied on B = N / (the sum over the bursts of the
 *   time from A's first commit until B holds A's last seq).
 * - Propagation latency: single awaited writes on A; from the moment A's upsert resolves
 *   (committed) until B has applied it (B's 'change' event for it, which fires right after B's
 *   transaction commits).
 *
 * B runs on its own thread (a worker with its own event loop), as the second device would; the
 * same measurements with both nodes sharing one thread are reported as context. B tells the main
 * thread how far it holds A's changes through a SharedArrayBuffer, so watching B costs A nothing.
 *
 * Signing (issue 13, cost): each round runs two worker pairs side by side, one whose nodes sign
 * their runs (`createSyncNode`; the figures above are its) and one on the unsigned baseline
 * (bench/unsigned.ts: no Ed25519, no hashing), taking turns burst by burst and latency block by
 * block (which goes first alternates); the worker is told which in its init data. Reported: live push signed, unsigned, and signed / unsigned
 * (target ≥ 0.9); the latency of both as context.
 *
 * A writes its transactions back to back without yielding to the event loop, like a bulk import
 * would: the engine must push while the application keeps writing.
 *
 * Knobs (for investigation; the reported figures use none of them):
 * - BENCH_QUICK=1: N scaled down, for smoke tests.
 * - BENCH_SYNC='{"pushWindow":8,...}': sync tuning of both nodes.
 * - BENCH_YIELD=1: A yields to the event loop (setImmediate) between transactions, like an
 *   application whose writes arrive as I/O events.
 * - BENCH_REPL_SINGLE_THREAD=0: skip the single-thread context run.
 * - BENCH_DEBUG=1: print session errors and the throughput window (for --cpu-prof analysis).
 */
const QUICK = process.env.BENCH_QUICK === '1';
const ROWS = QUICK ? 10_000 : 100_000;
const TX = 1_000;
const LATENCY_WRITES = QUICK ? 200 : 1_000;
const LATENCY_WARMUP = 50;
const ROUNDS = QUICK ? 1 : 3;
const TIMEOUT_MS = 120_000;
const LISTEN = ['/ip4/127.0.0.1/tcp/0'];
const TUNING: Partial<SyncTuning> = process.env.BENCH_SYNC ? (JSON.parse(process.env.BENCH_SYNC) as Partial<SyncTuning>) : {};
const WORKER_ROLE = 'replication-replica';
const SINGLE_THREAD = process.env.BENCH_REPL_SINGLE_THREAD !== '0';
const YIELD = process.env.BENCH_YIELD === '1';

/** The receiving device B, however it runs. */
interface Replica {
  /**
   * Resolves with `performance.now()` (main thread) once B holds A's changes through `seq`.
   * The main thread must be idle (awaiting) for the timestamp to be prompt; it is, while waiting.
   */
  waitForSeq(seq: number, timeoutMs?: number): Promise<number>;
  digest(): Promise<string>;
  /** Sessions of B that ended with an error so far (a dropped session spoils the figures). */
  sessionErrors(): Promise<number>;
  stop(): Promise<void>;
}

interface ReplicaInit {
  role: typeof WORKER_ROLE;
  dataDir: string;
  invite: string;
  origin: string;
  tuning: Partial<SyncTuning>;
  /** Whether B signs (`createSyncNode`) or is the unsigned baseline, as A. */
  signing: Signing;
  /** Int32Array: [0] = B's vector entry for `origin`. */
  shared: SharedArrayBuffer;
}

type ReplicaRequest = { cmd: 'digest' } | { cmd: 'errors' } | { cmd: 'stop' };
type ReplicaReply =
  | { type: 'joined' }
  | { type: 'digest'; digest: string }
  | { type: 'errors'; count: number }
  | { type: 'stopped' }
  | { type: 'error'; message: string };

/** Counts a node's failed sessions; with BENCH_DEBUG=1 also prints them. */
function countSessionErrors(node: SyncNode, name: string): () => number {
  let count = 0;
  node.on('session-error', ({ error }) => {
    count += 1;
    if (process.env.BENCH_DEBUG === '1') console.error(`session error on ${name}: ${error.message}`);
  });
  return () => count;
}

/**
 * Reports on every commit of B how far it holds `origin`, coalescing the change events of one
 * transaction (they are emitted synchronously after the commit) into one update.
 */
function watchOrigin(lib: Library, origin: string, onSeq: (seq: number) => void): () => void {
  let scheduled = false;
  const listener = () => {
    if (scheduled) return;
    scheduled = true;
    queueMicrotask(() => {
      scheduled = false;
      onSeq(lib.versionVector()[origin] ?? 0);
    });
  };
  lib.on('change', listener);
  return () => lib.off('change', listener);
}

/** B on the main thread, next to A. */
async function startLocalReplica(dataDir: string, invite: string, origin: string, signing: Signing): Promise<Replica> {
  const node = await createBenchNode(signing, { dataDir, models: [NoteLww], listen: LISTEN, sync: TUNING });
  const sessionErrors = countSessionErrors(node, 'B');
  const lib = await node.joinLibrary(invite);
  let held = 0;
  const waiters = new Set<{ seq: number; resolve: (t: number) => void }>();
  const unwatch = watchOrigin(lib, origin, (seq) => {
    held = seq;
    for (const w of waiters) {
      if (held >= w.seq) {
        waiters.delete(w);
        w.resolve(performance.now());
      }
    }
  });
  return {
    waitForSeq(seq, timeoutMs = TIMEOUT_MS) {
      if (held >= seq) return Promise.resolve(performance.now());
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`replica did not reach seq ${seq} within ${timeoutMs} ms (holds ${held})`));
        }, timeoutMs);
        const waiter = {
          seq,
          resolve: (t: number) => {
            clearTimeout(timer);
            resolve(t);
          },
        };
        waiters.add(waiter);
      });
    },
    digest: () => lib.digest(),
    sessionErrors: async () => sessionErrors(),
    async stop() {
      unwatch();
      await node.stop();
    },
  };
}

type WaitAsync = (array: Int32Array, index: number, value: number, timeout?: number) =>
  | { async: false; value: 'not-equal' | 'timed-out' }
  | { async: true; value: Promise<'ok' | 'timed-out'> };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

/** B in a worker thread: its own event loop, like a second device. */
async function startWorkerReplica(dataDir: string, invite: string, origin: string, signing: Signing): Promise<Replica> {
  const shared = new SharedArrayBuffer(4);
  const held = new Int32Array(shared);
  const init: ReplicaInit = { role: WORKER_ROLE, dataDir, invite, origin, tuning: TUNING, signing, shared };
  const worker = new Worker(new URL(import.meta.url), { workerData: init });
  const replies: ReplicaReply[] = [];
  let waiting: ((reply: ReplicaReply) => void) | undefined;
  let failure: Error | undefined;
  const fail = (err: Error) => {
    failure ??= err;
    const w = waiting;
    waiting = undefined;
    w?.({ type: 'error', message: err.message });
  };
  worker.on('message', (reply: ReplicaReply) => {
    if (waiting) {
      const w = waiting;
      waiting = undefined;
      w(reply);
    } else replies.push(reply);
  });
  worker.on('error', fail);
  worker.on('exit', (code) => fail(new Error(`replica worker exited with code ${code}`)));
  const next = async <T extends ReplicaReply['type']>(type: T): Promise<Extract<ReplicaReply, { type: T }>> => {
    const reply =
      replies.shift() ??
      (failure
        ? { type: 'error' as const, message: failure.message }
        : await new Promise<ReplicaReply>((resolve) => (waiting = resolve)));
    if (reply.type === 'error') throw new Error(`replica: ${reply.message}`);
    if (reply.type !== type) throw new Error(`replica: expected ${type}, got ${reply.type}`);
    return reply as Extract<ReplicaReply, { type: T }>;
  };
  const request = (message: ReplicaRequest) => worker.postMessage(message);
  try {
    await next('joined');
  } catch (err) {
    await worker.terminate();
    throw err;
  }
  return {
    async waitForSeq(seq, timeoutMs = TIMEOUT_MS) {
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        const current = Atomics.load(held, 0);
        if (current >= seq) return performance.now();
        if (failure) throw failure;
        const remaining = deadline - performance.now();
        if (remaining <= 0) throw new Error(`replica did not reach seq ${seq} within ${timeoutMs} ms (holds ${current})`);
        // Wake on B's next update, and at least every 50 ms to notice a dead worker.
        const wait = waitAsync(held, 0, current, Math.min(remaining, 50));
        if (wait.async) await wait.value;
      }
    },
    async digest() {
      request({ cmd: 'digest' });
      return (await next('digest')).digest;
    },
    async sessionErrors() {
      request({ cmd: 'errors' });
      return (await next('errors')).count;
    },
    async stop() {
      request({ cmd: 'stop' });
      await next('stopped');
      worker.removeAllListeners('exit');
      await worker.terminate();
    },
  };
}

/** The worker side of `startWorkerReplica`. */
async function replicaWorkerMain(init: ReplicaInit): Promise<void> {
  const port = parentPort!;
  const held = new Int32Array(init.shared);
  let node: SyncNode | undefined;
  try {
    if (!isSigning(init.signing)) throw new Error(`replica worker: bad signing ${String(init.signing)}`);
    node = await createBenchNode(init.signing, { dataDir: init.dataDir, models: [NoteLww], listen: LISTEN, sync: init.tuning });
    const sessionErrors = countSessionErrors(node, 'B');
    const lib = await node.joinLibrary(init.invite);
    watchOrigin(lib, init.origin, (seq) => {
      Atomics.store(held, 0, seq);
      Atomics.notify(held, 0);
    });
    port.on('message', (message: ReplicaRequest) => {
      void (async () => {
        try {
          if (message.cmd === 'digest') {
            port.postMessage({ type: 'digest', digest: await lib.digest() } satisfies ReplicaReply);
          } else if (message.cmd === 'errors') {
            port.postMessage({ type: 'errors', count: sessionErrors() } satisfies ReplicaReply);
          } else {
            await node!.stop();
            port.postMessage({ type: 'stopped' } satisfies ReplicaReply);
            port.close();
          }
        } catch (err) {
          port.postMessage({ type: 'error', message: String((err as Error)?.stack ?? err) } satisfies ReplicaReply);
        }
      })();
    });
    port.postMessage({ type: 'joined' } satisfies ReplicaReply);
  } catch (err) {
    port.postMessage({ type: 'error', message: String((err as Error)?.stack ?? err) } satisfies ReplicaReply);
    await node?.stop().catch(() => undefined);
    port.close();
  }
}

interface PairResult {
  /** Changes/s applied on B, from A's first commit until B holds A's last change. */
  applied: number;
  /** Changes/s from the start of A's first transaction until B holds A's last change. */
  endToEnd: number;
  /** A's own write rate during the run. */
  written: number;
  /** Per-write latencies, ms. */
  latencies: number[];
  /** Sessions that ended with an error on A or B once live (expected 0). */
  sessionErrors: number;
}

const rowId = (i: number) => `0190a0a0-0000-7000-8000-${i.toString(16).padStart(12, '0')}`;

/** Bursts a pair's ROWS live-throughput rows are written in (the signings alternate by burst). */
const BURSTS = 10;
/** Latency writes per block (the signings alternate by block). */
const LATENCY_BLOCK = 100;

/** One A–B pair, set up and live. */
interface Pair {
  signing: Signing;
  a: SyncNode;
  libA: Library;
  replica: Replica | undefined;
  seqOfA: () => number;
  next: number;
  sessionErrorsOfA: () => number;
  errorsBefore: number;
  applyMs: number;
  endToEndMs: number;
  writeMs: number;
  latencies: number[];
}

async function startPair(dir: string, mode: 'worker' | 'same-thread', signing: Signing): Promise<Pair> {
  const a = await createBenchNode(signing, { dataDir: join(dir, 'a'), models: [NoteLww], listen: LISTEN, sync: TUNING });
  const pair: Pair = {
    signing,
    a,
    libA: undefined as unknown as Library,
    replica: undefined,
    seqOfA: () => 0,
    next: 0,
    sessionErrorsOfA: countSessionErrors(a, 'A'),
    errorsBefore: 0,
    applyMs: 0,
    endToEndMs: 0,
    writeMs: 0,
    latencies: [],
  };
  try {
    const libA = await a.createLibrary({ name: 'bench' });
    const origin = a.deviceId;
    const invite = await libA.createInvite();
    pair.libA = libA;
    pair.replica = await (mode === 'worker' ? startWorkerReplica : startLocalReplica)(join(dir, 'b'), invite, origin, signing);
    pair.seqOfA = () => libA.versionVector()[origin] ?? 0;
    // The session is live once a write of A reaches B by push (B pulls what A had at hello first).
    for (let i = 0; i < 10; i++) await libA.upsert(NoteLww.name, { id: rowId(pair.next), ...sampleRow(pair.next++) });
    await pair.replica.waitForSeq(pair.seqOfA(), 30_000);
    // Errors while the join settles (a hello racing the joiner's library setup) are not counted.
    pair.errorsBefore = pair.sessionErrorsOfA() + (await pair.replica.sessionErrors());
    return pair;
  } catch (err) {
    await stopPair(pair);
    throw err;
  }
}

async function stopPair(pair: Pair): Promise<void> {
  await pair.replica?.stop().catch(() => undefined);
  await pair.a.stop();
}

/**
 * Live throughput, one burst of `rows` on one pair: A writes in transactions of TX (back to back)
 * while B applies them as pushes arrive; timed until B holds A's last change.
 */
async function burst(pair: Pair, rows: number, mode: string): Promise<void> {
  const { libA, replica } = pair;
  const start = performance.now();
  let firstCommit = 0;
  for (let from = 0; from < rows; from += TX) {
    await libA.transaction(async (tx) => {
      for (let i = 0; i < TX; i++) await tx.upsert(NoteLww.name, { id: rowId(pair.next), ...sampleRow(pair.next++) });
    });
    if (firstCommit === 0) firstCommit = performance.now();
    if (YIELD) await new Promise((resolve) => setImmediate(resolve));
  }
  const written = performance.now();
  const done = await replica!.waitForSeq(pair.seqOfA());
  // With BENCH_DEBUG=1: the throughput window on the monotonic clock (µs) cpu profiles use.
  if (process.env.BENCH_DEBUG === '1') {
    const toMicros = (t: number) => Math.round((Number(process.hrtime.bigint()) / 1e6 - (performance.now() - t)) * 1000);
    console.error(`throughput window (${mode}, ${pair.signing}): ${toMicros(firstCommit)} ${toMicros(done)}`);
  }
  pair.applyMs += done - firstCommit;
  pair.endToEndMs += done - start;
  pair.writeMs += written - start;
}

/** Latency: `count` awaited writes on A, one at a time, each timed until B applied it. */
async function latencyBlock(pair: Pair, count: number, warmup: boolean): Promise<void> {
  for (let w = 0; w < count; w++) {
    await pair.libA.upsert(NoteLww.name, { id: rowId(pair.next), ...sampleRow(pair.next++) });
    const t0 = performance.now();
    const t1 = await pair.replica!.waitForSeq(pair.seqOfA(), 10_000);
    if (!warmup) pair.latencies.push(t1 - t0);
  }
}

/**
 * Runs both measurements on one A–B pair per signing of `signings` (`mode` decides where B runs),
 * all pairs set up and live side by side: the live throughput in BURSTS bursts and the latency in
 * blocks of LATENCY_BLOCK writes, the pairs taking turns burst by burst and block by block (which
 * goes first alternates, from `round`), so that a slow stretch of the machine falls on all of them.
 */
async function measurePairs(dir: string, mode: 'worker' | 'same-thread', signings: readonly Signing[], round = 0): Promise<Map<Signing, PairResult>> {
  const pairs = new Map<Signing, Pair>();
  try {
    for (const signing of signings) pairs.set(signing, await startPair(join(dir, signing), mode, signing));
    const order = (n: number) => signingOrder(round + n).filter((s) => pairs.has(s));
    const perBurst = Math.ceil(ROWS / BURSTS / TX) * TX;
    for (let n = 0, rows = 0; rows < ROWS; n++, rows += perBurst) {
      for (const signing of order(n)) await burst(pairs.get(signing)!, Math.min(perBurst, ROWS - rows), mode);
    }
    for (const pair of pairs.values()) await latencyBlock(pair, LATENCY_WARMUP, true);
    for (let n = 0, done = 0; done < LATENCY_WRITES; n++, done += LATENCY_BLOCK) {
      for (const signing of order(n)) await latencyBlock(pairs.get(signing)!, Math.min(LATENCY_BLOCK, LATENCY_WRITES - done), false);
    }
    const results = new Map<Signing, PairResult>();
    for (const [signing, pair] of pairs) {
      const [digestA, digestB] = [await pair.libA.digest(), await pair.replica!.digest()];
      if (digestA !== digestB) throw new Error(`replication bench (${mode}, ${signing}): B diverged from A`);
      results.set(signing, {
        applied: ROWS / (pair.applyMs / 1000),
        endToEnd: ROWS / (pair.endToEndMs / 1000),
        written: ROWS / (pair.writeMs / 1000),
        latencies: pair.latencies,
        sessionErrors: pair.sessionErrorsOfA() + (await pair.replica!.sessionErrors()) - pair.errorsBefore,
      });
    }
    return results;
  } finally {
    for (const pair of pairs.values()) await stopPair(pair);
  }
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export async function runReplicationBenchmarks(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ls-bench-repl-'));
  try {
    const tag = {
      rows: ROWS,
      transaction: TX,
      model: NoteLww.name,
      ...(QUICK ? { quick: true } : {}),
      ...(YIELD ? { writer_yields: true } : {}),
      ...(process.env.BENCH_SYNC ? { sync: TUNING } : {}),
    };
    // Each round is a fresh signed A–B pair and a fresh unsigned one (side by side, taking turns),
    // bracketed by the round's floor (measured right before and right after; their mean is its
    // floor), so a noisy neighbour slows all and the ratios hold. Figures are medians over the
    // rounds.
    const rounds: (PairResult & { floor: number })[] = [];
    const unsignedRounds: PairResult[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const before = rawInsertFloor(join(dir, `floor-before-${round}.sqlite`));
      const pairs = await measurePairs(join(dir, `worker-${round}`), 'worker', SIGNINGS, round);
      const floor = (before + rawInsertFloor(join(dir, `floor-after-${round}.sqlite`))) / 2;
      rounds.push({ ...pairs.get('signed')!, floor });
      unsignedRounds.push(pairs.get('unsigned')!);
    }
    const of = (fn: (r: PairResult & { floor: number }) => number) => median(rounds.map(fn));
    const sessionErrors = rounds.reduce((sum, r) => sum + r.sessionErrors, 0);
    const latencyTag = { writes: LATENCY_WRITES, rounds: ROUNDS };
    report('replication.raw_sqlite_insert_rows_per_s', of((r) => r.floor), 'rows/s', {
      note: 'floor: prepared inserts, 1000 per transaction',
      rounds: ROUNDS,
    });
    report('replication.live.changes_per_s', of((r) => r.applied), 'changes/s', {
      ...tag,
      rounds: ROUNDS,
      replica: 'worker thread',
      target: 50_000,
      ...(sessionErrors > 0 ? { session_errors: sessionErrors } : {}),
    });
    report('replication.live.ratio_to_floor', of((r) => r.applied / r.floor), 'ratio', { ...tag, rounds: ROUNDS });
    report('replication.live.end_to_end_changes_per_s', of((r) => r.endToEnd), 'changes/s', {
      ...tag,
      note: 'context: from the start of the first write on A',
      writer_rows_per_s: Math.round(of((r) => r.written)),
    });
    report('replication.latency.p50_ms', of((r) => percentile(r.latencies, 50)), 'ms', latencyTag);
    report('replication.latency.p99_ms', of((r) => percentile(r.latencies, 99)), 'ms', { ...latencyTag, target: 20 });
    const unsignedErrors = unsignedRounds.reduce((sum, r) => sum + r.sessionErrors, 0);
    reportSigningCost('live_push', 'changes/s', rounds.map((r) => r.applied), unsignedRounds.map((r) => r.applied), 0.9, {
      ...tag,
      replica: 'worker thread',
      ...(sessionErrors + unsignedErrors > 0 ? { session_errors: { signed: sessionErrors, unsigned: unsignedErrors } } : {}),
    });
    report('signing.latency.unsigned_p50_ms', median(unsignedRounds.map((r) => percentile(r.latencies, 50))), 'ms', {
      ...latencyTag,
      note: 'context: replication.latency.p50_ms on the unsigned baseline',
    });
    report('signing.latency.unsigned_p99_ms', median(unsignedRounds.map((r) => percentile(r.latencies, 99))), 'ms', {
      ...latencyTag,
      note: 'context: replication.latency.p99_ms on the unsigned baseline',
    });

    if (SINGLE_THREAD) {
      // Context: A and B sharing one thread, so A's writes and B's applies take turns.
      const same = (await measurePairs(join(dir, 'same-thread'), 'same-thread', ['signed'])).get('signed')!;
      const note = 'context: A and B on one thread';
      report('replication.live.single_thread_changes_per_s', same.applied, 'changes/s', {
        ...tag,
        note,
        ...(same.sessionErrors > 0 ? { session_errors: same.sessionErrors } : {}),
      });
      report('replication.latency.single_thread_p50_ms', percentile(same.latencies, 50), 'ms', { note });
      report('replication.latency.single_thread_p99_ms', percentile(same.latencies, 99), 'ms', { note });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (!isMainThread && (workerData as ReplicaInit | undefined)?.role === WORKER_ROLE) {
  await replicaWorkerMain(workerData as ReplicaInit);
}
