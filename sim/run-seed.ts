import { SyncError } from '../src/errors.js';
import { deviceIdForPeer } from '../src/membership/device-id.js';
import type { Library } from '../src/library/library.js';
import type { LibrarySyncState } from '../src/library/status.js';
import { unpack } from '../src/util/msgpack.js';
import { SeededRandom } from '../src/sim/prng.js';
import { SimDriver, VirtualScheduler } from '../src/sim/virtual-scheduler.js';
import { checkQuietRun, type Failure } from './run-checks.js';
import { type ClaimKind, withFalseClaim } from './run-claims.js';
import { drawFaultPlan, type FaultCounts, type FaultKind, type FaultPlan, noFaults } from './run-faults.js';
import { SimNetwork } from './run-network.js';
import { type DeviceIdentity, SimNode } from './run-node.js';
import { Trace } from './run-trace.js';
import { SimWorkload } from './run-workload.js';

export interface SeedOptions {
  seed: number;
  nodes: number;
  /** Steps of the faulty phase (default 60). */
  steps?: number;
  /** Keep every trace line (for `--trace`); otherwise only the hash and the tail. */
  keepTrace?: boolean;
  /** False claims the liar does not make in this run (to leave out the kind of a known finding). */
  withoutClaims?: readonly ClaimKind[];
  /**
   * Leave out restores of a backup that knows no device still a member (taken before the others
   * joined, or knowing only devices since removed): the restored device refuses every member as
   * a stranger and has no one to learn them from (an open finding, docs/testing.md).
   */
  withoutStaleMemberRestores?: boolean;
}

export interface SeedResult {
  seed: number;
  nodes: number;
  failures: Failure[];
  /** How hostile the run was (drawn from the seed). */
  plan: FaultPlan;
  faults: FaultCounts;
  /** SHA-256 of the whole trace: equal for two runs of one seed. */
  traceHash: string;
  traceLines: number;
  /** The last lines of the trace (all of them with `keepTrace`). */
  trace: readonly string[];
  /** Acknowledged writes. */
  writes: number;
  /** Of them, writes no member held any more when their device came back from a backup or was removed (not in the oracle). */
  lostWrites: number;
  /** Virtual timers run, and the virtual time the run took. */
  events: number;
  virtualMs: number;
}

/** The one command that replays a seed exactly. */
export function replayCommand(seed: number, nodes: number, without: Pick<SeedOptions, 'withoutClaims' | 'withoutStaleMemberRestores'> = {}): string {
  const claims = without.withoutClaims?.length ? ` --without-claims ${without.withoutClaims.join(',')}` : '';
  const restores = without.withoutStaleMemberRestores ? ' --without-stale-member-restores' : '';
  return `npm run sim -- --seed ${seed} --nodes ${nodes}${claims}${restores}`;
}

/** Where virtual time starts: a fixed date, so wall clocks (and HLCs) replay too. */
const EPOCH_MS = Date.UTC(2026, 0, 1);
/** How long one operation (a write, a join, an invite) may take in virtual time. */
const OPERATION_MS = 10 * 60_000;
/** Virtual time a healed run gets to go quiet. */
const QUIET_DEADLINE_MS = 10 * 60_000;
/** Joins a device that failed to join tries once the run healed. */
const JOIN_ATTEMPTS = 3;
/** Largest gap of virtual time between two steps. */
const MAX_GAP_MS = 3_000;
/** A node's clock stays within this of true time (skew plus jumps): well inside the drift guard. */
const MAX_CLOCK_OFFSET_MS = 25_000;

type Action =
  | 'write'
  | 'join'
  | 'crash'
  | 'restart'
  | 'backup'
  | 'partition'
  | 'heal'
  | 'clock-jump'
  | 'remove'
  | 'leave';

/**
 * One seeded run: N devices with the real core over the in-memory network, in-memory SQLite,
 * virtual time and one seeded generator (every other stream is forked from it, in a fixed
 * order). The first device creates the library, the others join by invite, some mid-run; a
 * faulty phase interleaves writes with the plan's faults; then the faults stop, every device
 * comes back, and once the run is quiet the checks compare it with the oracle.
 */
class Simulation {
  readonly random: SeededRandom;
  readonly time = new VirtualScheduler();
  readonly driver = new SimDriver(this.time);
  readonly trace: Trace;
  readonly faults = noFaults();
  readonly failures: Failure[] = [];
  readonly plan: FaultPlan;
  readonly network: SimNetwork;
  readonly nodes: SimNode[] = [];
  readonly workload: SimWorkload;
  private readonly byPeer = new Map<string, SimNode>();
  private liar: SimNode | undefined;
  private lying = false;
  /** Set once the run heals: no more faults. */
  private healing = false;
  private readonly liarRandom: SeededRandom;
  private readonly claimKinds: ReadonlySet<ClaimKind>;
  /** Writes acknowledged since each device went down (a member away beyond retention). */
  private readonly writesWhileDown = new Map<SimNode, number>();

  constructor(private readonly options: SeedOptions) {
    this.random = new SeededRandom(options.seed);
    this.trace = new Trace(() => this.time.now(), { keepAll: options.keepTrace });
    this.plan = drawFaultPlan(this.random.fork());
    this.network = new SimNetwork(this.time, this.random.fork(), this.trace, (peer) => this.byPeer.get(peer)?.identity.name ?? peer);
    this.network.storm(this.plan);
    this.workload = new SimWorkload(this.random.fork(), this.trace);
    this.liarRandom = this.random.fork();
    this.claimKinds = new Set(this.plan.claimKinds.filter((kind) => !options.withoutClaims?.includes(kind)));
    for (let i = 0; i < options.nodes; i += 1) {
      const identity = this.newIdentity(i);
      const skew = this.plan.maxSkewMs === 0 ? 0 : this.random.int(2 * this.plan.maxSkewMs + 1) - this.plan.maxSkewMs;
      const node = new SimNode(identity, this.time, this.random.fork(), skew, EPOCH_MS);
      this.nodes.push(node);
      this.byPeer.set(identity.peerId, node);
      if (skew !== 0) this.count('skew');
    }
    if (this.plan.falseClaims > 0 && this.claimKinds.size > 0 && options.nodes > 2) {
      this.liar = this.nodes[1 + this.random.int(options.nodes - 1)];
      this.lying = true;
    }
    this.trace.record('plan', JSON.stringify(this.plan));
  }

  private newIdentity(index: number): DeviceIdentity {
    const peerId = `sim-${hex(this.random.bytes(8))}`;
    return { name: `n${index}`, deviceId: deviceIdForPeer(peerId), peerId };
  }

  count(kind: FaultKind): void {
    this.faults[kind] += 1;
  }

  fail(failure: Failure): void {
    this.failures.push(failure);
    this.trace.record('failure', `${failure.check}: ${failure.detail}`);
  }

  private deadline(): { deadline: number } {
    return { deadline: this.time.now() + OPERATION_MS };
  }

  /** The devices that are members now: up, holding the library, neither removed nor gone. */
  members(): SimNode[] {
    return this.nodes.filter((n) => n.up && !n.gone && n.library() && n.library()!.removal() === null);
  }

  async run(): Promise<void> {
    await this.createLibrary();
    // Some devices join at once, the others mid-run.
    for (const node of this.nodes.slice(1)) if (this.random.chance(0.5)) await this.join(node);
    const steps = this.options.steps ?? 60;
    for (let step = 0; step < steps; step += 1) {
      await this.driver.runFor(this.random.int(MAX_GAP_MS));
      await this.act(this.pickAction());
    }
    await this.heal();
    await checkQuietRun(this, QUIET_DEADLINE_MS);
  }

  private async createLibrary(): Promise<void> {
    const first = this.nodes[0]!;
    await this.startNode(first);
    const lib = await this.driver.complete(first.running().createLibrary({ name: 'sim' }), 'createLibrary', this.deadline());
    first.libraryId = lib.id;
    await this.watch(first, lib);
    this.trace.record('create', `${first.identity.name} library ${lib.id}`);
  }

  private async startNode(node: SimNode): Promise<void> {
    await this.driver.complete(
      node.start(this.network.memory, (to, frame) => this.tap(node, to, frame), {
        retainLogEntries: this.plan.retainLogEntries,
        maxConcurrentServes: this.plan.maxConcurrentServes,
      }),
      `start ${node.identity.name}`,
      this.deadline(),
    );
    const lib = node.library();
    if (lib) await this.watch(node, lib);
    this.trace.record('start', `${node.identity.name} life ${node.lives}`);
  }

  /** Follows a library's sync on this life of `node` (to crash it mid-backfill or mid-snapshot). */
  private async watch(node: SimNode, lib: Library): Promise<void> {
    const life = node.lives;
    const learn = (state: LibrarySyncState) => {
      if (node.lives !== life) return;
      node.syncState = state;
      if (state === 'ready') node.wasReady = true;
    };
    lib.on('progress', (p) => {
      if (node.lives === life) node.lastProgressPhase = p.phase;
    });
    lib.on('status', (status) => learn(status.state));
    const { state } = await lib.status();
    if (node.syncState === undefined) learn(state);
  }

  /**
   * Whether a membership change may happen now: only once every member completed its backfill.
   * A joiner whose inviter is removed (or leaves) before it learned of anyone else knows no
   * member that would still talk to it: it is cut off for good, as designed, so the run could
   * not converge (see docs/testing.md, "What the simulator does not model").
   */
  private membershipSettled(): boolean {
    return this.nodes.every((n) => !n.libraryId || n.gone || n.wasReady);
  }

  /** Every frame a device sends: traced, counted when `busy`, and rewritten when the liar lies. */
  private tap(node: SimNode, to: string, frame: Uint8Array): Uint8Array {
    const receiver = this.byPeer.get(to);
    let sent = frame;
    let claim = '';
    if (this.lying && node === this.liar && this.liarRandom.chance(this.plan.falseClaims)) {
      const lie = withFalseClaim(frame, receiver?.identity.deviceId, this.claimKinds, this.liarRandom);
      if (lie) {
        sent = lie.frame;
        claim = ` lie ${lie.claim}`;
        this.count('false-claim');
      }
    }
    const kind = messageKind(sent);
    if (kind === 'busy') this.count('busy');
    this.trace.record('send', `${node.identity.name}>${receiver?.identity.name ?? to} ${kind} ${sent.byteLength}${claim}`);
    return sent;
  }

  private pickAction(): Action {
    const p = this.plan;
    const weights: [Action, number][] = [
      ['write', 1],
      ['join', this.nodes.some((n) => !n.libraryId && !n.gone) ? 0.08 : 0],
      ['crash', p.crash],
      ['restart', this.nodes.some((n) => !n.up && n.lives > 0 && !n.gone) ? p.restart : 0],
      ['backup', p.backup],
      ['partition', p.partition],
      ['heal', this.network.partitioned ? p.heal : 0],
      ['clock-jump', p.clockJump],
      ['remove', p.remove],
      ['leave', p.leave],
    ];
    const total = weights.reduce((sum, [, w]) => sum + w, 0);
    let x = this.random.next() * total;
    for (const [action, w] of weights) {
      x -= w;
      if (x < 0) return action;
    }
    return 'write';
  }

  private async act(action: Action): Promise<void> {
    switch (action) {
      case 'write':
        return this.write();
      case 'join': {
        const candidates = this.nodes.filter((n) => !n.libraryId && !n.gone);
        if (candidates.length > 0) await this.join(this.random.pick(candidates));
        return;
      }
      case 'crash':
        return this.crash();
      case 'restart':
        return this.restart();
      case 'backup':
        return this.backup();
      case 'partition':
        return this.partition();
      case 'heal':
        this.network.heal();
        this.count('heal');
        return;
      case 'clock-jump':
        return this.clockJump();
      case 'remove':
        return this.remove();
      case 'leave':
        return this.leave();
    }
  }

  private async write(): Promise<void> {
    const members = this.members();
    if (members.length === 0) return;
    const node = this.random.pick(members);
    const acknowledged = await this.workload.write(node, this.driver, this.deadline());
    if (acknowledged > 0) {
      for (const [down, writes] of this.writesWhileDown) this.writesWhileDown.set(down, writes + acknowledged);
    }
  }

  /** `node` joins through an invite from a member (starting it first if it never ran). */
  async join(node: SimNode): Promise<void> {
    // A device still backfilling does not invite: its joiner would complete its own backfill
    // from a partner lacking the history (docs/testing.md, "Findings").
    // A member whose only partner is a device admitted by a lost `welcome` is never `ready`
    // (no session of it went live): with no ready member, another that is not backfilling.
    const others = this.members().filter((n) => n !== node && n.syncState !== 'backfilling');
    const ready = others.filter((n) => n.syncState === 'ready');
    const inviters = ready.length > 0 ? ready : others;
    if (inviters.length === 0) return;
    const inviter = this.random.pick(inviters);
    try {
      if (!node.up) await this.startNode(node);
      const invite = await this.driver.complete(inviter.library()!.createInvite({ ttlMs: OPERATION_MS }), 'createInvite', this.deadline());
      const lib = await this.driver.complete(node.running().joinLibrary(invite), `join ${node.identity.name}`, this.deadline());
      node.libraryId = lib.id;
      await this.watch(node, lib);
      this.trace.record('join', `${node.identity.name} via ${inviter.identity.name}`);
      if (!this.healing && this.plan.crash > 0 && this.random.chance(this.plan.crashBackfilling / 2)) await this.crashWhileBackfilling(node);
    } catch (err) {
      // A join through a partition or a lossy link may fail; the device tries again later.
      this.trace.record('join-failed', `${node.identity.name} via ${inviter.identity.name}: ${describe(err)}`);
    }
  }

  /**
   * Crashes a joiner in the middle of its backfill: once it applied a page (of its snapshot,
   * half of the time, when it takes one), if it is not `ready` by then.
   */
  private async crashWhileBackfilling(node: SimNode): Promise<void> {
    const phase = this.random.chance(0.5) ? 'snapshot' : undefined;
    await this.driver.runUntil(
      () => node.syncState === 'ready' || (phase === undefined ? node.lastProgressPhase !== undefined : node.lastProgressPhase === phase),
      { deadline: this.time.now() + MAX_GAP_MS * 10 },
    );
    if (!node.up || node.syncState === 'ready') return;
    this.trace.record('crash', `${node.identity.name} mid-${node.lastProgressPhase ?? 'backfill'}`);
    this.count('crash-backfilling');
    if (node.lastProgressPhase === 'snapshot') this.count('crash-snapshot');
    node.crash();
    this.writesWhileDown.set(node, 0);
  }

  private crash(): void {
    const up = this.nodes.filter((n) => n.up);
    if (up.length === 0) return;
    const backfilling = up.filter((n) => n.syncState === 'backfilling' || n.syncState === 'catching-up');
    const pickBackfilling = backfilling.length > 0 && this.random.chance(this.plan.crashBackfilling);
    const node = this.random.pick(pickBackfilling ? backfilling : up);
    this.trace.record('crash', `${node.identity.name}${pickBackfilling ? ` mid-${node.lastProgressPhase}` : ''}`);
    this.count(pickBackfilling ? 'crash-backfilling' : 'crash');
    if (pickBackfilling && node.lastProgressPhase === 'snapshot') this.count('crash-snapshot');
    node.crash();
    this.writesWhileDown.set(node, 0);
  }

  private async restart(): Promise<void> {
    const down = this.nodes.filter((n) => !n.up && n.lives > 0 && !n.gone);
    if (down.length === 0) return;
    await this.restartNode(this.random.pick(down), this.random.chance(this.plan.restore));
  }

  async restartNode(node: SimNode, fromBackup: boolean): Promise<void> {
    // A restore is judged against every other member's holdings, so they must all be up.
    const stale = this.options.withoutStaleMemberRestores && !this.nodes.some((n) => n !== node && !n.gone && n.libraryId && node.backupMembers.includes(n.identity.deviceId));
    const restore = fromBackup && node.backup !== undefined && !stale && this.nodes.every((n) => n === node || n.up || !n.libraryId || n.gone);
    if (restore) {
      node.disk.restore(node.backup!);
      this.count('restore');
    }
    const away = this.writesWhileDown.get(node) ?? 0;
    this.writesWhileDown.delete(node);
    if (this.plan.retainLogEntries > 0 && away > this.plan.retainLogEntries) this.count('prune-away');
    await this.startNode(node);
    this.count('restart');
    if (restore) {
      const holders = this.nodes.filter((n) => !n.gone && n.library()).map((n) => n.library()!);
      this.trace.record('restore', `${node.identity.name}: ${this.workload.dropUnheld(holders)} writes held nowhere else are lost`);
    }
  }

  private async backup(): Promise<void> {
    const candidates = this.nodes.filter((n) => n.up && n.libraryId);
    if (candidates.length === 0) return;
    const node = this.random.pick(candidates);
    const lib = node.library();
    const members = lib ? await this.driver.complete(lib.members(), 'members', this.deadline()) : [];
    const image = node.disk.backup();
    if (!image) return;
    node.backup = image;
    node.backupMembers = members.filter((m) => !m.self).map((m) => m.device);
    this.count('backup');
    this.trace.record('backup', node.identity.name);
  }

  private partition(): void {
    const peers = this.nodes.map((n) => n.identity.peerId);
    const side = peers.filter(() => this.random.chance(0.5));
    if (side.length === 0 || side.length === peers.length) return;
    this.network.partition(side, peers.filter((p) => !side.includes(p)));
    this.count('partition');
  }

  private clockJump(): void {
    const node = this.random.pick(this.nodes);
    const ms = 1 + this.random.int(MAX_CLOCK_OFFSET_MS);
    if (node.clock.skewMs - ms < -MAX_CLOCK_OFFSET_MS) return;
    node.clock.jumpBack(ms);
    this.count('clock-jump');
    this.trace.record('clock-jump', `${node.identity.name} back ${ms} ms`);
  }

  /** A member removes another one; at least two members are kept. */
  private async remove(): Promise<void> {
    const members = this.members();
    if (members.length < 3 || !this.membershipSettled()) return;
    const by = this.random.pick(members);
    const target = this.random.pick(members.filter((n) => n !== by));
    try {
      await this.driver.complete(by.library()!.removeMember(target.identity.deviceId), 'removeMember', this.deadline());
      target.gone = true;
      this.count('remove');
      this.trace.record('remove', `${target.identity.name} by ${by.identity.name}`);
    } catch (err) {
      this.trace.record('remove-failed', `${target.identity.name} by ${by.identity.name}: ${describe(err)}`);
    }
  }

  /** A member leaves; it stops taking part at once (its leave completes in the background). */
  private leave(): void {
    const members = this.members();
    if (members.length < 3 || !this.membershipSettled()) return;
    const node = this.random.pick(members.slice(1));
    node.gone = true;
    this.count('leave');
    this.trace.record('leave', node.identity.name);
    node
      .library()!
      .leave()
      .then(
        () => this.trace.record('left', node.identity.name),
        (err: unknown) => this.trace.record('leave-ended', `${node.identity.name}: ${describe(err)}`),
      );
  }

  /**
   * Faults off, partitions healed, every device that ran is up again (removed ones too: one
   * removed while away must learn it).
   */
  private async heal(): Promise<void> {
    this.healing = true;
    this.lying = false;
    this.network.calm();
    this.trace.record('heal', 'faults off');
    for (const node of this.nodes) {
      if (!node.up && node.lives > 0) await this.restartNode(node, false);
    }
    // A device whose join failed (say its welcome was lost, after the inviter had admitted it)
    // tries again with a new invite, as its user would: the members are waiting for it.
    for (const node of this.nodes) {
      for (let attempt = 0; attempt < JOIN_ATTEMPTS && node.lives > 0 && !node.libraryId && !node.gone; attempt += 1) await this.join(node);
    }
  }

  /** Abandons every device (the run is over; nothing of it is kept). */
  teardown(): void {
    for (const node of this.nodes) {
      if (node.up) node.crash();
    }
  }

  result(): SeedResult {
    this.network.countFaults(this.faults);
    return {
      seed: this.options.seed,
      nodes: this.options.nodes,
      failures: this.failures,
      plan: this.plan,
      faults: this.faults,
      traceHash: this.trace.digest(),
      traceLines: this.trace.lines,
      trace: this.trace.lineList() ?? this.trace.tail(),
      writes: this.workload.acknowledged(),
      lostWrites: this.workload.lost(),
      events: this.driver.events,
      virtualMs: this.time.now(),
    };
  }
}

export type { Simulation };

/** Runs one seed to the end and reports it; a run never throws (an exception is a failure). */
export async function runSeed(options: SeedOptions): Promise<SeedResult> {
  const sim = new Simulation(options);
  try {
    await sim.run();
  } catch (err) {
    sim.fail({ check: 'run', detail: describe(err, true) });
  } finally {
    sim.teardown();
  }
  return sim.result();
}

export function describe(err: unknown, withStack = false): string {
  if (err instanceof SyncError) return `${err.code}: ${err.message}`;
  if (err instanceof Error) return withStack && err.stack ? err.stack : `${err.name}: ${err.message}`;
  return String(err);
}

/** A frame as the trace shows it: its kind, and an error's code and message. */
function messageKind(frame: Uint8Array): string {
  try {
    const message = unpack(frame) as { t?: unknown; code?: unknown; message?: unknown };
    if (typeof message?.t !== 'string') return '?';
    return message.t === 'error' ? `error ${String(message.code)} ${JSON.stringify(message.message)}` : message.t;
  } catch {
    return '?';
  }
}

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}
