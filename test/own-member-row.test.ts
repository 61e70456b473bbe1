/**
 * This device's own member row follows its addresses and name: a joiner that restarts before
 * its row arrived from its inviter refreshes it once it arrives. Real libp2p on 127.0.0.1 and
 * SQLite files on disk.
 */
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import type { Library } from '../src/index.js';
import { MEMBERS_MODEL } from '../src/models/system.js';
import { killRunningChildren, makeTempDir, removeTempDirs } from './helpers/child-process.js';
import { startNode, steadySync, stopAllNodes, stopNode, waitFor } from './helpers/cluster.js';
import { holdPort, tcpPort } from './helpers/port-holder.js';

afterEach(async () => {
  await stopAllNodes();
  await killRunningChildren();
  await removeTempDirs();
});

/** The devices whose member rows the library file in `dataDir` holds (read while no node runs). */
function storedMemberDevices(dataDir: string, library: string): string[] {
  const db = new Database(join(dataDir, 'libraries', `${library}.sqlite`), { readonly: true });
  try {
    return (db.prepare(`SELECT id FROM ${MEMBERS_MODEL.name}`).all() as Array<{ id: string }>).map((r) => r.id);
  } finally {
    db.close();
  }
}

async function memberRowOn(lib: Library, device: string) {
  return (await lib.members()).find((m) => m.device === device);
}

describe('a joiner that restarts before its own member row arrived', () => {
  it('refreshes the row once it arrives: the other members hold its new addresses and name', async () => {
    const a = await startNode(undefined, { deviceName: 'alpha', sync: steadySync });
    const jDir = await makeTempDir('lsync-node-');
    const j = await startNode(jDir, { deviceName: 'joiner', sync: steadySync });
    const libA = await a.createLibrary({ name: 'shared' });
    const backfill = new AbortController();
    await j.joinLibrary(await libA.createInvite(), { signal: backfill.signal });
    // Interrupted before its first page can arrive (a reply needs I/O; this runs before any):
    // J stops holding no member row, its own included (A wrote it when admitting J).
    backfill.abort();
    const oldAddrs = j.multiaddrs();
    await stopNode(j);
    expect(storedMemberDevices(jDir, libA.id)).not.toContain(j.deviceId);
    expect(await memberRowOn(libA, j.deviceId)).toMatchObject({ addrs: oldAddrs, name: 'joiner' });

    // J starts again on another port (its old one is taken) and under another name.
    const { holder } = await holdPort(tcpPort(oldAddrs[0]!));
    const j2 = await startNode(jDir, { deviceName: 'joiner renamed', sync: steadySync });
    const newAddrs = j2.multiaddrs();
    expect(newAddrs).not.toEqual(oldAddrs);
    await j2.library(libA.id).synced();
    const refreshed = async () => {
      const row = await memberRowOn(libA, j.deviceId);
      return isDeepStrictEqual(row?.addrs, newAddrs) && row?.name === 'joiner renamed';
    };
    await waitFor(refreshed, "A to hold J's new addresses and name", 30_000);
    expect(await memberRowOn(j2.library(libA.id), j.deviceId)).toMatchObject({ addrs: newAddrs, name: 'joiner renamed', self: true });
    await holder.kill();
  }, 60_000);
});
