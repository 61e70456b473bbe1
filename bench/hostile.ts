import '../src/network/shims.js';
import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import type { Libp2p, Stream } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import { tcp } from '@libp2p/tcp';
import { createLibp2p } from 'libp2p';
import { encodeUint8Array, encodingLength } from 'uint8-varint';
import { createSyncNode } from '../src/index.js';
import { PROTOCOL_ID } from '../src/protocol/messages.js';
import { report } from './report.js';

/**
 * Memory a non-member can make a node hold (issue 10, item 6: partial frames). The node under
 * attack runs in a child process (this file, forked), so its memory is its own; it samples
 * `process.memoryUsage.rss()` every 20 ms. The attacker, in this process, is a set of plain
 * libp2p peers with fresh keys (never members) that open sync streams and write, on each, a
 * length prefix and all but one byte of its payload, so that no frame ever completes:
 *
 * - `hostile.huge_prefix`: the attack. 2 connections, 80 streams each; each stream sends
 *   a 4 MiB prefix and then 4 MiB − 1 bytes.
 * - `hostile.handshake_size`: the largest first frame allowed: 8 connections (the cap on
 *   strangers) with 64 streams each (the per-connection cap), each stream a 128 KiB prefix and
 *   128 KiB − 1 bytes.
 *
 * Per scenario: `rss_baseline_mb` (after start-up, before the attack), `rss_peak_mb` (the
 * highest sample from the first stream opened until 3 s after the last write), and
 * `rss_growth_mb` (peak − baseline), `live_held_mb` (JS heap and buffers still referenced after
 * a full GC, minus the same before the attack: read 3 s after the last write, while the attack's
 * streams and connections are still open; RSS rarely shrinks, so it shows transient buffering
 * as well as what is held), plus `streams_held`
 * (streams still open then: held by the node for its handshake timeout) and `streams_reset`.
 * Each scenario uses a fresh node process. `BENCH_ONLY=hostile npm run bench` runs them alone.
 */

const MB = 1024 * 1024;
const ROLE_ENV = 'BENCH_HOSTILE_ROLE';
const SETTLE_MS = 3_000;

interface Scenario {
  name: string;
  connections: number;
  streamsPerConnection: number;
  prefixLength: number;
  bytesSent: number;
}

const SCENARIOS: Scenario[] = [
  { name: 'huge_prefix', connections: 2, streamsPerConnection: 80, prefixLength: 4 * MB, bytesSent: 4 * MB - 1 },
  { name: 'handshake_size', connections: 8, streamsPerConnection: 64, prefixLength: 128 * 1024, bytesSent: 128 * 1024 - 1 },
];

type ParentMessage = { cmd: 'peak-from-now' } | { cmd: 'peak' } | { cmd: 'stop' };
type ChildMessage =
  | { type: 'ready'; peerId: string; addrs: string[]; rss: number; live: number }
  | { type: 'peak'; rss: number; live: number }
  | { type: 'stopped' };

async function targetMain(): Promise<void> {
  const dataDir = process.env.BENCH_HOSTILE_DATA_DIR!;
  const send = (message: ChildMessage) => process.send!(message);
  // The handshake timeout outlasts the attack: what is held stays held while measured.
  const node = await createSyncNode({ dataDir, models: [], listen: ['/ip4/127.0.0.1/tcp/0'], sync: { requestTimeoutMs: 120_000 } });
  await node.createLibrary({ name: 'target' });
  let peak = 0;
  setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 20);
  process.on('disconnect', () => process.exit(1));
  process.on('message', (message: ParentMessage) => {
    if (message.cmd === 'peak-from-now') peak = process.memoryUsage.rss();
    else if (message.cmd === 'peak') send({ type: 'peak', rss: peak, live: liveBytes() });
    else void node.stop().then(() => send({ type: 'stopped' }));
  });
  // Start-up allocations settle before the baseline is read.
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  send({ type: 'ready', peerId: node.peerId, addrs: node.multiaddrs(), rss: process.memoryUsage.rss(), live: liveBytes() });
}

/** Bytes still referenced after a full garbage collection: JS heap and buffers. */
function liveBytes(): number {
  (globalThis as { gc?: () => void }).gc!();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

class Target {
  private readonly waiters: Array<(m: ChildMessage) => void> = [];

  private constructor(
    private readonly child: ChildProcess,
    private readonly dataDir: string,
  ) {
    child.on('message', (m: ChildMessage) => this.waiters.shift()?.(m));
  }

  static async start(): Promise<{ target: Target; ready: Extract<ChildMessage, { type: 'ready' }> }> {
    const dataDir = mkdtempSync(join(tmpdir(), 'lsync-bench-hostile-'));
    const child = fork(fileURLToPath(import.meta.url), [], {
      env: { ...process.env, [ROLE_ENV]: 'target', BENCH_HOSTILE_DATA_DIR: dataDir },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      execArgv: ['--expose-gc'],
    });
    const target = new Target(child, dataDir);
    const ready = await target.next();
    if (ready.type !== 'ready') throw new Error(`unexpected ${ready.type}`);
    return { target, ready };
  }

  next(): Promise<ChildMessage> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  send(message: ParentMessage): void {
    this.child.send(message);
  }

  /** The highest RSS sampled since `peak-from-now`, and the live bytes now. */
  async peak(): Promise<{ peak: number; live: number }> {
    this.send({ cmd: 'peak' });
    const m = await this.next();
    if (m.type !== 'peak') throw new Error(`unexpected ${m.type}`);
    return { peak: m.rss, live: m.live };
  }

  async stop(): Promise<void> {
    this.send({ cmd: 'stop' });
    await this.next();
    this.child.kill();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Dials until the connection is up: libp2p admits 5 new connections a second per host. */
async function connect(attacker: Libp2p, addrs: string[]): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await attacker.dial(addrs.map((a) => multiaddr(a)));
      return;
    } catch (err) {
      if (attempt >= 20) throw err;
      await sleep(300);
    }
  }
}

async function runScenario(scenario: Scenario): Promise<void> {
  const { target, ready } = await Target.start();
  const attackers: Libp2p[] = [];
  const streams: Stream[] = [];
  try {
    for (let i = 0; i < scenario.connections; i++) {
      const attacker = await createLibp2p({
        addresses: { listen: [] },
        transports: [tcp()],
        connectionEncrypters: [noise()],
        streamMuxers: [yamux({ maxOutboundStreams: 1_000 })],
      });
      attackers.push(attacker);
      await connect(attacker, ready.addrs);
    }
    const prefix = new Uint8Array(encodingLength(scenario.prefixLength));
    encodeUint8Array(scenario.prefixLength, prefix);
    const payload = new Uint8Array(scenario.bytesSent).fill(7);
    target.send({ cmd: 'peak-from-now' });
    await Promise.all(
      attackers.map(async (attacker) => {
        const peer = attacker.getConnections()[0]!.remotePeer;
        for (let s = 0; s < scenario.streamsPerConnection; s++) {
          try {
            const stream = await attacker.dialProtocol(peer, PROTOCOL_ID, { maxOutboundStreams: 1_000 });
            streams.push(stream);
            // A refused stream may close under the write: that is the point.
            if (!stream.send(prefix)) await stream.onDrain().catch(() => undefined);
            if (stream.status === 'open' && !stream.send(payload)) await stream.onDrain().catch(() => undefined);
          } catch {
            // Refused at negotiation (per-connection stream cap) or reset: counted below.
          }
        }
      }),
    );
    await sleep(SETTLE_MS);
    const { peak, live } = await target.peak();
    const held = streams.filter((s) => s.status === 'open').length;
    const metric = (name: string, value: number, unit: string) =>
      report(`hostile.${scenario.name}.${name}`, value, unit, {
        connections: scenario.connections,
        streams: scenario.connections * scenario.streamsPerConnection,
        prefix_bytes: scenario.prefixLength,
        sent_bytes_per_stream: scenario.bytesSent,
      });
    metric('rss_baseline_mb', ready.rss / MB, 'MB');
    metric('rss_peak_mb', peak / MB, 'MB');
    metric('rss_growth_mb', (peak - ready.rss) / MB, 'MB');
    metric('live_held_mb', (live - ready.live) / MB, 'MB');
    metric('streams_held', held, 'streams');
    metric('streams_reset', scenario.connections * scenario.streamsPerConnection - held, 'streams');
  } finally {
    await Promise.all(attackers.map((a) => a.stop()));
    await target.stop();
  }
}

export async function runHostileBenchmarks(): Promise<void> {
  for (const scenario of SCENARIOS) await runScenario(scenario);
}

if (process.env[ROLE_ENV] === 'target' && process.send) await targetMain();
