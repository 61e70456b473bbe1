import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { createSyncNode, type Library, type SyncNode, type SyncTuning } from '../src/index.js';
import { median, NoteLww, rawInsertFloor, sampleRow } from './core.js';
import { report } from './report.js';

/**
 * Replication benchmarks (issue: replication). Two sync nodes, A and B, each with its own SQLite
 * file in a temp dir, connected over libp2p TCP on 127.0.0.1; B joins A's library by invite.
 *
 * - Live throughput: A writes N shared rows (lww, transactions of TX) while B applies them;
 *   changes/s applied on B = N / (time from A's first commit until B holds A's last seq).
 * - Propagation latency: single awaited writes on A; from the moment A's upsert resolves
 *   (committed) until B has applied it (B's 'change' event for it, which fires right after B's
 *   transaction commits).
 *
 * B runs on its own thread (a worker with its own event loop), as the second device would; the
 * same measurements with both nodes sharing one thread are reported as context. B tells the main
 * thread how far it holds A's changes through a SharedArrayBuffer, so watching B costs A nothing.
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
async function startLocalReplica(dataDir: string, invite: string, origin: string): Promise<Replica> {
  const node = await createSyncNode({ dataDir, models: [NoteLww], listen: LISTEN, sync: TUNING });
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
async function startWorkerReplica(dataDir: string, invite: string, origin: string): Promise<Replica> {
  const shared = new SharedArrayBuffer(4);
  const held = new Int32Array(shared);
  const init: ReplicaInit = { role: WORKER_ROLE, dataDir, invite, origin, tuning: TUNING, shared };
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
    node = await createSyncNode({ dataDir: init.dataDir, models: [NoteLww], listen: LISTEN, sync: init.tuning });
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

/** Runs both measurements on one A–B pair; `mode` decides where B runs. */
async function measurePair(dir: string, mode: 'worker' | 'same-thread'): Promise<PairResult> {
  const a = await createSyncNode({ dataDir: join(dir, 'a'), models: [NoteLww], listen: LISTEN, sync: TUNING });
  const sessionErrorsOfA = countSessionErrors(a, 'A');
  let replica: Replica | undefined;
  try {
    const libA = await a.createLibrary({ name: 'bench' });
    const origin = a.deviceId;
    const invite = await libA.createInvite();
    replica = await (mode === 'worker' ? startWorkerReplica : startLocalReplica)(join(dir, 'b'), invite, origin);
    const seqOfA = () => libA.versionVector()[origin] ?? 0;

    // The session is live once a write of A reaches B by push (B pulls what A had at hello first).
    let next = 0;
    for (let i = 0; i < 10; i++) await libA.upsert(NoteLww.name, { id: rowId(next), ...sampleRow(next++) });
    await replica.waitForSeq(seqOfA(), 30_000);
    // Errors while the join settles (a hello racing the joiner's library setup) are not counted.
    const errorsBefore = sessionErrorsOfA() + (await replica.sessionErrors());

    // Live throughput: A writes in transactions of TX; B applies as pushes arrive.
    const start = performance.now();
    let firstCommit = 0;
    for (let from = 0; from < ROWS; from += TX) {
      await libA.transaction(async (tx) => {
        for (let i = 0; i < TX; i++) await tx.upsert(NoteLww.name, { id: rowId(next), ...sampleRow(next++) });
      });
      if (firstCommit === 0) firstCommit = performance.now();
      if (YIELD) await new Promise((resolve) => setImmediate(resolve));
    }
    const written = performance.now();
    const done = await replica.waitForSeq(seqOfA());
    // With BENCH_DEBUG=1: the throughput window on the monotonic clock (µs) cpu profiles use.
    if (process.env.BENCH_DEBUG === '1') {
      const toMicros = (t: number) => Math.round((Number(process.hrtime.bigint()) / 1e6 - (performance.now() - t)) * 1000);
      console.error(`throughput window (${mode}): ${toMicros(firstCommit)} ${toMicros(done)}`);
    }
    const applied = ROWS / ((done - firstCommit) / 1000);
    const endToEnd = ROWS / ((done - start) / 1000);

    // Latency: one awaited write at a time, then wait until B applied it.
    const latencies: number[] = [];
    for (let w = 0; w < LATENCY_WARMUP + LATENCY_WRITES; w++) {
      await libA.upsert(NoteLww.name, { id: rowId(next), ...sampleRow(next++) });
      const t0 = performance.now();
      const t1 = await replica.waitForSeq(seqOfA(), 10_000);
      if (w >= LATENCY_WARMUP) latencies.push(t1 - t0);
    }

    const [digestA, digestB] = [await libA.digest(), await replica.digest()];
    if (digestA !== digestB) throw new Error(`replication bench (${mode}): B diverged from A`);
    const sessionErrors = sessionErrorsOfA() + (await replica.sessionErrors()) - errorsBefore;
    return { applied, endToEnd, written: ROWS / ((written - start) / 1000), latencies, sessionErrors };
  } finally {
    await replica?.stop().catch(() => undefined);
    await a.stop();
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
    // Each round is a fresh A–B pair bracketed by its own floor (measured right before and right
    // after; their mean is its floor), so a noisy neighbour slows both and the ratio holds.
    // Figures are medians over the rounds.
    const rounds: (PairResult & { floor: number })[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const before = rawInsertFloor(join(dir, `floor-before-${round}.sqlite`));
      const pair = await measurePair(join(dir, `worker-${round}`), 'worker');
      const floor = (before + rawInsertFloor(join(dir, `floor-after-${round}.sqlite`))) / 2;
      rounds.push({ ...pair, floor });
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

    if (SINGLE_THREAD) {
      // Context: A and B sharing one thread, so A's writes and B's applies take turns.
      const same = await measurePair(join(dir, 'same-thread'), 'same-thread');
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
