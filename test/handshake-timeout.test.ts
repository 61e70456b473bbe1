/**
 * An idle handshake: a stream whose first frame never comes is reset after `requestTimeoutMs`
 * with `TIMEOUT`, and its place in the handshake budgets is freed. In process: the real core
 * over the paired transport, as the fuzz harness runs it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { CoreNode } from '../fuzz/core-node.js';
import { FUZZ_MODELS } from '../fuzz/target.js';
import type { FrameStream } from '../src/protocol/transport.js';
import type { SessionErrorEvent } from '../src/replication/wire-errors.js';
import { waitFor } from './helpers/cluster.js';
import { PairedHub } from './helpers/paired-transport.js';

const nodes: CoreNode[] = [];
afterEach(async () => {
  await Promise.all(nodes.splice(0).map((n) => n.stop()));
});

/** Reads `stream` in the background; the flag turns true once the node reset it. */
function watchReset(stream: FrameStream): { reset: boolean } {
  const state = { reset: false };
  void (async () => {
    try {
      for await (const _ of stream.frames());
    } catch {
      state.reset = true;
    }
  })();
  return state;
}

describe('idle handshakes', () => {
  it('a stream that sends no first frame is reset with TIMEOUT after requestTimeoutMs, freeing its budget', async () => {
    const hub = new PairedHub();
    const errors: SessionErrorEvent[] = [];
    const node = await CoreNode.start(hub.transport('peer-v'), {
      deviceId: '6d1c1a51-1f0e-4c1e-9a5e-0b6f2f7d3a10',
      models: FUZZ_MODELS,
      tuning: { requestTimeoutMs: 300 },
      onSessionError: (event) => errors.push(event),
    });
    nodes.push(node);
    const stranger = hub.transport('peer-stranger');
    // More idle streams than a stranger's handshake budget (16): the ones beyond are reset at
    // once, the others when their handshake times out.
    const streams = await Promise.all(Array.from({ length: 20 }, () => stranger.openStream(node.peer)));
    const watched = streams.map(watchReset);
    await waitFor(() => watched.every((w) => w.reset), 'every idle stream to be reset');
    const timeouts = errors.filter((e) => (e.error as { code?: string }).code === 'TIMEOUT');
    expect(timeouts).toHaveLength(16);
    expect(timeouts[0]!.error.message).toMatch(/did not complete the handshake/);
    // The budget is free again: another stranger's stream is read (and refused for what it is).
    const next = await stranger.openStream(node.peer);
    const answered = watchReset(next);
    await next.send(Uint8Array.of(0xc1));
    await waitFor(() => answered.reset, 'the next stream to be answered');
    expect(errors.at(-1)!.error).toMatchObject({ code: 'PROTOCOL' });
  });
});
