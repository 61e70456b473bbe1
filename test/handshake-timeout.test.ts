/**
 * An idle handshake: a stream whose first frame never comes is reset after `requestTimeoutMs`
 * with `TIMEOUT`, and its place in the handshake budgets is freed. In process: the real core
 * over the fuzz harness's loop transport.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { CoreNode } from '../fuzz/core-node.js';
import { LoopHub } from '../fuzz/loop-transport.js';
import { FUZZ_MODELS } from '../fuzz/target.js';
import type { SessionErrorEvent } from '../src/replication/wire-errors.js';
import { waitFor } from './helpers/cluster.js';

const nodes: CoreNode[] = [];
afterEach(async () => {
  await Promise.all(nodes.splice(0).map((n) => n.stop()));
});

describe('idle handshakes', () => {
  it('a stream that sends no first frame is reset with TIMEOUT after requestTimeoutMs, freeing its budget', async () => {
    const hub = new LoopHub();
    const errors: SessionErrorEvent[] = [];
    const node = await CoreNode.start(hub.transport('peer-v'), {
      deviceId: '6d1c1a51-1f0e-4c1e-9a5e-0b6f2f7d3a10',
      models: FUZZ_MODELS,
      tuning: { requestTimeoutMs: 300 },
      onSessionError: (event) => errors.push(event),
    });
    nodes.push(node);
    // More idle streams than a stranger's handshake budget (16): the ones beyond are reset at
    // once, the others when their handshake times out.
    const streams = Array.from({ length: 20 }, () => hub.inject(node.peer, 'peer-stranger'));
    await waitFor(() => streams.every((s) => s.endedBy === 'abort'), 'every idle stream to be reset');
    const timeouts = errors.filter((e) => (e.error as { code?: string }).code === 'TIMEOUT');
    expect(timeouts).toHaveLength(16);
    expect(timeouts[0]!.error.message).toMatch(/did not complete the handshake/);
    // The budget is free again: another stranger's stream is read (and refused for what it is).
    const next = hub.inject(node.peer, 'peer-stranger');
    await next.send(Uint8Array.of(0xc1));
    await waitFor(() => next.endedBy === 'abort', 'the next stream to be answered');
    expect(errors.at(-1)!.error).toMatchObject({ code: 'PROTOCOL' });
  });
});
