import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createSyncNode, defineModel, type SyncNode } from '../src/index.js';

const Note = defineModel({ name: 'note', ownership: 'shared', conflict: 'lww', fields: { title: 'text' } });

describe('data directory', () => {
  const dirs: string[] = [];
  const nodes: SyncNode[] = [];
  const tempDir = () => {
    const dir = mkdtempSync(join(tmpdir(), 'ls-datadir-'));
    dirs.push(dir);
    return dir;
  };
  afterEach(async () => {
    for (const node of nodes.splice(0)) await node.stop();
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('keeps the device id across restarts', async () => {
    const dataDir = tempDir();
    const first = await createSyncNode({ dataDir, models: [Note], listen: [] });
    const id = first.deviceId;
    await first.stop();
    const second = await createSyncNode({ dataDir, models: [Note], listen: [] });
    nodes.push(second);
    expect(second.deviceId).toBe(id);
    expect(JSON.parse(readFileSync(join(dataDir, 'node.json'), 'utf8')).deviceId).toBe(id);
  });

  it('refuses a second node on the same directory in the same process, and the first keeps working', async () => {
    const dataDir = tempDir();
    const first = await createSyncNode({ dataDir, models: [Note], listen: [] });
    nodes.push(first);
    const lib = await first.createLibrary({ name: 'one' });
    await expect(createSyncNode({ dataDir, models: [Note], listen: [] })).rejects.toMatchObject({ code: 'STOPPED' });
    expect(existsSync(join(dataDir, 'node.lock'))).toBe(true);
    await lib.upsert('note', { title: 'still writable' });
    expect(lib.versionVector()[first.deviceId]).toBe(1);
  });

  it('takes over a lock left by a process that no longer runs', async () => {
    const dataDir = tempDir();
    const first = await createSyncNode({ dataDir, models: [Note], listen: [] });
    await first.stop();
    expect(existsSync(join(dataDir, 'node.lock'))).toBe(false);
    // A pid far above any pid_max in use is certainly not running.
    writeFileSync(join(dataDir, 'node.lock'), '4194303\n');
    const second = await createSyncNode({ dataDir, models: [Note], listen: [] });
    nodes.push(second);
    expect(readFileSync(join(dataDir, 'node.lock'), 'utf8').trim()).toBe(String(process.pid));
  });
});
