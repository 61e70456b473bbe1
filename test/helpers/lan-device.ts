/**
 * A device run as a child process (test/fixtures/lan-child.mjs, the built package) inside a
 * network namespace the test made (test/helpers/netns.ts), with what it reported so far: its
 * invite, start, digest, partner states and member list.
 */
import { join } from 'node:path';
import { expect } from 'vitest';
import type { ModelInput } from '../../src/index.js';
import { LineChild, REPO_ROOT } from './child-process.js';

const CHILD = join(REPO_ROOT, 'test', 'fixtures', 'lan-child.mjs');
const NOTE: ModelInput = { name: 'note', ownership: 'shared', conflict: 'lww', fields: { title: 'text', body: { type: 'text', nullable: true } } };
const SYNC = { heartbeatMs: 200, peerTimeoutMs: 5_000, redialMinMs: 100, redialMaxMs: 1_000, reconcileMs: 200 };

export interface LanDevice {
  child: LineChild;
  invite?: string;
  ready?: { peerId: string; deviceId: string; library: string; mdnsRunning: boolean };
  digest?: string;
  /** Every partner report received, newest last. */
  partners: Array<Array<{ device: string; connected: boolean; state: string }>>;
  /** The member list as last reported (after every change). */
  members: Array<{ device: string; addrs: string[] }>;
}

/**
 * Starts a device in namespace `ns`, listening on `listen`, with the child's `options` (`role`,
 * `invite`, `write`, `discovery`…); `entry` is the built package (`ensureBuilt()`).
 */
export function startLanDevice(entry: string, ns: string, dataDir: string, listen: string[], options: Record<string, unknown>): LanDevice {
  const device: Omit<LanDevice, 'child'> = { partners: [], members: [] };
  const config = { entry, dataDir, models: [NOTE], sync: SYNC, listen, ...options };
  const child = new LineChild(
    CHILD,
    [JSON.stringify(config)],
    (line) => {
      const message = JSON.parse(line);
      if (message.t === 'invite') device.invite = message.code;
      if (message.t === 'ready') device.ready = message;
      if (message.t === 'digest') device.digest = message.value;
      if (message.t === 'partners') device.partners.push(message.partners);
      if (message.t === 'members') device.members = message.members;
    },
    { prefix: ['ip', 'netns', 'exec', ns] },
  );
  return Object.assign(device, { child });
}

/** Stops the device with SIGTERM and expects a clean exit. */
export async function stopLanDevice(device: LanDevice): Promise<void> {
  await device.child.kill('SIGTERM');
  expect(device.child.exit).toEqual({ code: 0, signal: null });
}

/** Waits until both devices reported the same digest. */
export async function converge(a: LanDevice, b: LanDevice, what: string): Promise<void> {
  const same = () => a.digest !== undefined && a.digest === b.digest;
  await Promise.all([a.child.waitFor(same, what, 30_000), b.child.waitFor(same, what, 30_000)]);
}
