import { yamux } from '@chainsafe/libp2p-yamux';
import type { Stream, StreamMuxer } from '@libp2p/interface';
import { multiaddrConnectionPair } from '@libp2p/utils';
import { afterEach, describe, expect, it } from 'vitest';
import { Libp2pFrameStream, YAMUX_STREAM_OPTIONS } from '../src/network/libp2p-frame-stream.js';

const LIMITS = { firstFrameBytes: 64 * 1024, frameBytes: 2 * 1024 * 1024 };

/**
 * Two yamux muxers over an in-memory connection that pretend the link has a 1 s round trip:
 * yamux then grows every stream's receive window to its maximum at once, as it does on a real
 * link with latency (on loopback its measured round trip is about 0 ms and windows barely grow).
 */
function slowLink(streamOptions: object): { client: StreamMuxer; server: StreamMuxer } {
  const [outbound, inbound] = multiaddrConnectionPair();
  const muxer = (connection: typeof outbound) => {
    const created = yamux({ enableKeepAlive: false, streamOptions })().createStreamMuxer(connection);
    (created as unknown as { rtt: number }).rtt = 1000;
    return created;
  };
  return { client: muxer(outbound), server: muxer(inbound) };
}

describe('Libp2pFrameStream', () => {
  const muxers: StreamMuxer[] = [];
  afterEach(async () => {
    await Promise.all(muxers.splice(0).map((m) => m.close().catch(() => undefined)));
  });

  async function framePair(streamOptions: object): Promise<{ out: Libp2pFrameStream; inStream: Libp2pFrameStream }> {
    const { client, server } = slowLink(streamOptions);
    muxers.push(client, server);
    const accepted = new Promise<Stream>((resolve) => server.addEventListener('stream', (evt) => resolve(evt.detail), { once: true }));
    const out = new Libp2pFrameStream(await client.createStream(), 'server', LIMITS);
    await out.send(new Uint8Array([0])); // the stream reaches the server with its first frame
    return { out, inStream: new Libp2pFrameStream(await accepted, 'client', LIMITS) };
  }

  it('holds a sender back on a link whose windows grew large, without the paused stream overflowing', async () => {
    const { out, inStream } = await framePair(YAMUX_STREAM_OPTIONS);
    const count = 48;
    let resolved = 0;
    const sending = (async () => {
      for (let i = 1; i < count; i++) {
        await out.send(new Uint8Array(1024 * 1024).fill(i));
        resolved += 1;
      }
      await out.close();
    })().then(
      () => undefined,
      (err: unknown) => err,
    );
    let read = 0;
    let furthestAhead = 0;
    let error: unknown;
    try {
      for await (const frame of inStream.frames()) {
        expect(frame[0]).toBe(read);
        read += 1;
        furthestAhead = Math.max(furthestAhead, resolved + 1 - read);
        // A reader busy with each frame for a moment: a macrotask per frame.
        await new Promise((resolve) => setImmediate(resolve));
      }
    } catch (err) {
      error = err;
    }
    expect(await sending).toBeUndefined();
    expect(error).toBeUndefined();
    expect(read).toBe(count);
    expect(furthestAhead).toBeLessThan(count / 2);
  });
});
