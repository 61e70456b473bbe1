import { engineOf } from '../src/library/library.js';
import type { LibraryStatus } from '../src/library/status.js';
import type { SimNode } from './run-node.js';
import type { Simulation } from './run-seed.js';

/** The checks a run makes once it healed; `run` is an exception out of the run itself. */
export type CheckName = 'run' | 'quiet' | 'converged' | 'ready' | 'oracle' | 'bounds' | 'removed';

export interface Failure {
  check: CheckName;
  detail: string;
}

/** How often (virtual ms) a healing run is looked at to see whether it went quiet. */
const QUIET_POLL_MS = 2_000;
/**
 * Timers one device may have set at once once quiet: a few per partner session (heartbeat,
 * request timeouts) and per library (prune, last-seen, status), plus the network's. More is a
 * leak: something keeps scheduling work that never ends.
 */
const TIMERS_PER_PARTNER = 4;
const TIMERS_PER_NODE = 16;

interface MemberView {
  node: SimNode;
  status: LibraryStatus;
  digest: string;
}

async function viewOf(node: SimNode): Promise<MemberView> {
  const lib = node.library()!;
  return { node, status: await lib.status(), digest: await lib.digest() };
}

/**
 * Quiet: every member is `ready` with every partner session live, and all hold one digest (and,
 * checked beside it, every removed device that runs knows it).
 */
function isQuiet(views: readonly MemberView[]): boolean {
  if (views.length === 0) return true;
  return (
    views.every((v) => v.status.state === 'ready' && v.status.partners.every((p) => !p.connected || p.state === 'live')) &&
    new Set(views.map((v) => v.digest)).size === 1
  );
}

/**
 * Runs the healed simulation until it goes quiet (or `deadlineMs` of virtual time passes), then
 * checks it: one digest everywhere, every library ready, the rows equal to the oracle's over
 * every acknowledged write (so none is lost), devices that were removed know it, and no device
 * holds more timers, partners or streams than its sessions explain.
 */
export async function checkQuietRun(sim: Simulation, deadlineMs: number): Promise<void> {
  const deadline = sim.time.now() + deadlineMs;
  let views: MemberView[] = [];
  let goneKnow = false;
  for (;;) {
    await sim.driver.runFor(QUIET_POLL_MS);
    views = await Promise.all(sim.members().map(viewOf));
    // A removal notice may still be on its way to a removed device that runs (`checkRemoved`).
    goneKnow = (await removedNotKnowing(sim)).length === 0;
    if ((isQuiet(views) && goneKnow) || sim.time.now() >= deadline) break;
  }
  const quiet = isQuiet(views) && goneKnow;
  // A removed device's writes that no member had received when it was removed reach no one:
  // members no longer sync with it (docs/testing.md, "Findings").
  const removed = new Set(views.flatMap((v) => v.node.library()!.removals().map((r) => r.device)));
  if (removed.size > 0) {
    sim.trace.record('removed-writes', `${sim.workload.dropUnheld(views.map((v) => v.node.library()!), removed)} held by no member are lost`);
  }
  sim.trace.record('quiet', quiet ? 'yes' : 'no');
  for (const v of views) sim.trace.record('digest', `${v.node.identity.name} ${v.digest} ${v.status.state}`);
  if (!quiet) {
    sim.fail({ check: 'quiet', detail: `not quiet after ${deadlineMs} virtual ms` });
    await traceWhereStuck(sim, views);
  }

  const digests = new Set(views.map((v) => v.digest));
  if (digests.size > 1) {
    sim.fail({ check: 'converged', detail: views.map((v) => `${v.node.identity.name}=${v.digest.slice(0, 12)}`).join(' ') });
  }
  const notReady = views.filter((v) => v.status.state !== 'ready');
  if (notReady.length > 0) {
    sim.fail({
      check: 'ready',
      detail: notReady.map((v) => `${v.node.identity.name} ${v.status.state}${v.status.error ? ` (${v.status.error.code}: ${v.status.error.message})` : ''}`).join('; '),
    });
  }
  // One member per digest against the oracle: equal digests hold equal rows.
  const checked = new Set<string>();
  for (const v of views) {
    if (checked.has(v.digest)) continue;
    checked.add(v.digest);
    const differences = await sim.workload.compare(v.node.library()!);
    if (differences.length > 0) {
      sim.fail({ check: 'oracle', detail: `${v.node.identity.name}: ${differences.slice(0, 5).join('; ')}${differences.length > 5 ? ` (+${differences.length - 5} more)` : ''}` });
    }
  }
  await checkRemoved(sim);
  checkBounds(sim, views);
}

/** What each member knows and how its partners stand, for the report of a run that did not go quiet. */
async function traceWhereStuck(sim: Simulation, views: readonly MemberView[]): Promise<void> {
  const name = (device: string) => sim.nodes.find((n) => n.identity.deviceId === device)?.identity.name ?? device;
  for (const v of views) {
    const lib = v.node.library()!;
    const rows = (await engineOf(lib).memberRows()).map((m) => name(m.device)).join(',');
    const removed = lib.removals().map((r) => `${name(r.device)} by ${name(r.by)}`).join(',');
    const partners = v.status.partners.map((p) => `${name(p.device)}:${p.connected ? p.state : 'offline'}`).join(' ');
    const vector = Object.entries(v.status.vector).map(([origin, seq]) => `${name(origin)}:${seq}`).join(',');
    sim.trace.record('stuck', `${v.node.identity.name} ${v.status.state} member rows ${rows} removed ${removed || 'none'} partners ${partners} vector ${vector}`);
  }
}

/** A device removed (or that left) and is up knows it is no longer a member. */
async function checkRemoved(sim: Simulation): Promise<void> {
  for (const { node, state } of await removedNotKnowing(sim)) {
    sim.fail({ check: 'removed', detail: `${node.identity.name} is ${state}, not removed` });
  }
}

/** The devices removed (or that left) that are up and do not know it yet, with their state. */
async function removedNotKnowing(sim: Simulation): Promise<{ node: SimNode; state: string }[]> {
  const found: { node: SimNode; state: string }[] = [];
  for (const node of sim.nodes) {
    const lib = node.library();
    if (!node.gone || !lib) continue;
    const { state } = await lib.status();
    if (state !== 'removed') found.push({ node, state });
  }
  return found;
}

/** Streams one connection may carry once quiet: the session's, plus a short one (a join, a removal notice). */
const STREAMS_PER_CONNECTION = 2;

function checkBounds(sim: Simulation, views: readonly MemberView[]): void {
  for (const v of views) {
    const connections = sim.network.memory.connectionsOf(v.node.identity.peerId);
    const streams = connections.reduce((sum, c) => sum + c.streams.size, 0);
    if (streams > STREAMS_PER_CONNECTION * connections.length) {
      sim.fail({ check: 'bounds', detail: `${v.node.identity.name} has ${streams} streams open on ${connections.length} connections` });
    }
    const timers = v.node.scheduler?.pendingTimers() ?? 0;
    const bound = TIMERS_PER_NODE + TIMERS_PER_PARTNER * v.status.partners.length;
    if (timers > bound) sim.fail({ check: 'bounds', detail: `${v.node.identity.name} holds ${timers} timers (bound ${bound})` });
    if (v.status.partners.length > sim.nodes.length - 1) {
      sim.fail({ check: 'bounds', detail: `${v.node.identity.name} lists ${v.status.partners.length} partners of ${sim.nodes.length - 1} devices` });
    }
  }
}
