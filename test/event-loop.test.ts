import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createSyncNode, defineModel, type SyncNode } from '../src/index.js';
import { systemScheduler } from '../src/runtime/system-runtime.js';
import { EventLoopTurns } from '../src/util/event-loop.js';
import { engineOf } from '../src/library/library.js';

const Note = defineModel({ name: 'note', ownership: 'shared', conflict: 'lww', fields: { title: 'text' } });

const nodes: SyncNode[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const node of nodes.splice(0)) await node.stop();
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

async function library() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-event-loop-'));
  dirs.push(dir);
  const node = await createSyncNode({ dataDir: dir, models: [Note], listen: ['/ip4/127.0.0.1/tcp/0'] });
  nodes.push(node);
  return node.createLibrary({ name: 'burst' });
}

describe('event loop turns during write bursts', () => {
  it('a burst of awaited writes lets timers run while it lasts', async () => {
    const lib = await library();
    let ticks = 0;
    const timer = setInterval(() => (ticks += 1), 1);
    try {
      // Awaited SQLite writes resolve as microtasks: without turns, no timer fires until the end.
      // At least 300 ms and 50 writes (a loaded machine may write slowly: time alone could
      // make a burst of a few writes).
      const start = performance.now();
      let writes = 0;
      while (writes < 50 || performance.now() - start < 300) {
        await lib.upsert('note', { title: `n${writes}` });
        writes += 1;
      }
      expect(ticks).toBeGreaterThanOrEqual(5);
    } finally {
      clearInterval(timer);
    }
  });

  it('writes started together commit in call order, also across a turn', async () => {
    const lib = await library();
    // A write, then the loop held past the turn budget: the next writes must wait for a turn.
    const warmUp = lib.upsert('note', { title: 'warm-up' });
    const until = performance.now() + 20;
    while (performance.now() < until) {
      // Busy: no macrotask can run.
    }
    const ids = Array.from({ length: 50 }, (_, i) => `0190a0a0-0000-7000-8000-${String(i).padStart(12, '0')}`);
    await Promise.all([warmUp, ...ids.map((id) => lib.upsert('note', { id, title: id }))]);
    const logged = (await engineOf(lib).entriesAfter({}, { maxRecords: 100_000, maxBytes: 1 << 30 })).entries.map((e) => e.id);
    expect(logged.filter((id) => ids.includes(id))).toEqual(ids);
  });

  it('turn() is free while the loop keeps turning and waits one macrotask once it is starved', async () => {
    const turns = new EventLoopTurns(systemScheduler, 5);
    expect(turns.turn()).toBeUndefined();
    const until = performance.now() + 10;
    while (performance.now() < until) {
      // Busy: no macrotask can run.
    }
    const waiting = turns.turn();
    expect(waiting).toBeInstanceOf(Promise);
    expect(turns.turn()).toBe(waiting);
    let timerRan = false;
    setTimeout(() => (timerRan = true), 0);
    await waiting;
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(timerRan).toBe(true);
    expect(turns.turn()).toBeUndefined();
  });
});
