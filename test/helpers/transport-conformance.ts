/**
 * The `Transport` contract the protocol relies on, as tests any implementation must pass
 * (`Libp2pTransport` on loopback, the in-memory one). `setup` starts `count` transports with the
 * given limits, none knowing any peer; `teardown` stops what it started.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { NetworkError, ProtocolError, SyncError } from '../../src/errors.js';
import type { FrameStream, Transport } from '../../src/protocol/transport.js';
import { waitFor } from './cluster.js';

export interface TransportLimits {
  maxFrameBytes: number;
  maxFirstFrameBytes: number;
  maxStrangerConnections: number;
}

export interface TransportFixture {
  transports: Transport[];
  teardown(): Promise<void>;
}

export type TransportSetup = (count: number, limits: TransportLimits) => Promise<TransportFixture>;

const LIMITS: TransportLimits = { maxFrameBytes: 2 * 1024 * 1024, maxFirstFrameBytes: 64 * 1024, maxStrangerConnections: 8 };

/** Reads `stream` to its end; resolves with the frames, or the error it failed with. */
async function readAll(stream: FrameStream): Promise<{ frames: Uint8Array[]; error?: unknown }> {
  const frames: Uint8Array[] = [];
  try {
    for await (const frame of stream.frames()) frames.push(frame);
    return { frames };
  } catch (error) {
    return { frames, error };
  }
}

/**
 * How a stream ends when its connection is closed on purpose (`disconnect`, `stop`): libp2p
 * closes the streams of a connection it hangs up gracefully, the memory transport resets them.
 * The protocol ends its session either way; what must never happen is another kind of error
 * or a stream that never ends.
 */
function expectEndedByConnection(result: { error?: unknown }): void {
  if (result.error !== undefined) expect(result.error).toBeInstanceOf(NetworkError);
}

function nextInbound(transport: Transport): Promise<FrameStream> {
  return new Promise((resolve) => transport.handle(resolve));
}

function frameOf(size: number, fill: number): Uint8Array {
  return new Uint8Array(size).fill(fill);
}

export function runTransportTests(name: string, setup: TransportSetup): void {
  describe(`transport conformance: ${name}`, () => {
    const fixtures: TransportFixture[] = [];
    afterEach(async () => {
      await Promise.all(fixtures.splice(0).map((f) => f.teardown()));
    });

    async function start(count: number, limits: Partial<TransportLimits> = {}): Promise<Transport[]> {
      const fixture = await setup(count, { ...LIMITS, ...limits });
      fixtures.push(fixture);
      return fixture.transports;
    }

    /** Two connected transports, a stream from the first, and its inbound end on the second. */
    async function streamPair(limits: Partial<TransportLimits> = {}) {
      const [a, b] = (await start(2, limits)) as [Transport, Transport];
      const inbound = nextInbound(b);
      await a.connect(b.localPeer, b.addresses());
      const out = await a.openStream(b.localPeer);
      return { a, b, out, inStream: await inbound };
    }

    it('lists addresses that end in its PeerId', async () => {
      const [a] = (await start(1)) as [Transport];
      expect(a.addresses().length).toBeGreaterThan(0);
      for (const address of a.addresses()) expect(address.endsWith(`/p2p/${a.localPeer}`)).toBe(true);
    });

    it('connects, reports the connection on both sides, and names the authenticated peer on each stream end', async () => {
      const [a, b] = (await start(2)) as [Transport, Transport];
      const events: string[] = [];
      a.onConnectionChange((peer, connected) => events.push(`a:${peer === b.localPeer ? 'b' : peer}:${connected}`));
      b.onConnectionChange((peer, connected) => events.push(`b:${peer === a.localPeer ? 'a' : peer}:${connected}`));
      const dialled: string[][] = [];
      await a.connect(b.localPeer, b.addresses(), { onDialling: (addresses) => dialled.push([...addresses]) });
      expect(dialled).toHaveLength(1);
      for (const address of dialled[0]!) expect(address.endsWith(`/p2p/${b.localPeer}`)).toBe(true);
      expect(a.isConnected(b.localPeer)).toBe(true);
      expect(a.connectionKind(b.localPeer)).toBe('direct');
      await waitFor(() => b.isConnected(a.localPeer) && events.includes('a:b:true') && events.includes('b:a:true'), 'both sides to report the connection');
      expect(b.connectionKind(a.localPeer)).toBe('direct');

      const inbound = nextInbound(b);
      const out = await a.openStream(b.localPeer);
      await out.send(new Uint8Array([1]));
      const inStream = await inbound;
      expect(out.remotePeer).toBe(b.localPeer);
      expect(inStream.remotePeer).toBe(a.localPeer);

      await a.disconnect(b.localPeer);
      await waitFor(() => events.includes('a:b:false') && events.includes('b:a:false'), 'both sides to report the disconnection');
      expect(a.isConnected(b.localPeer)).toBe(false);
      expect(b.isConnected(a.localPeer)).toBe(false);
      expect(events.filter((e) => e.endsWith(':true'))).toHaveLength(2);
    });

    it('carries frames whole and in order, both ways', async () => {
      const { out, inStream } = await streamPair();
      const sent = [frameOf(3, 1), frameOf(1000, 2), frameOf(200_000, 3), frameOf(1, 4), frameOf(70_000, 5)];
      // Read while sending: how much a transport buffers for a reader that is not reading is
      // not part of the contract (only that a send waits at some point).
      const reading = readAll(inStream);
      for (const frame of sent) await out.send(frame);
      await out.close();
      const { frames, error } = await reading;
      expect(error).toBeUndefined();
      expect(frames.map((f) => [f.byteLength, f[0]])).toEqual(sent.map((f) => [f.byteLength, f[0]]));
      expect(frames.every((f, i) => f.every((byte) => byte === sent[i]![0]))).toBe(true);

      await inStream.send(frameOf(5, 9));
      await inStream.close();
      const reply = await readAll(out);
      expect(reply.error).toBeUndefined();
      expect(reply.frames.map((f) => [...f])).toEqual([[9, 9, 9, 9, 9]]);
    });

    it('keeps the streams of one connection apart', async () => {
      const [a, b] = (await start(2)) as [Transport, Transport];
      const inbound: FrameStream[] = [];
      b.handle((stream) => inbound.push(stream));
      await a.connect(b.localPeer, b.addresses());
      const first = await a.openStream(b.localPeer);
      const second = await a.openStream(b.localPeer);
      await first.send(new Uint8Array([1]));
      await second.send(new Uint8Array([2]));
      await waitFor(() => inbound.length === 2, 'two inbound streams');
      const reading = inbound.map((stream) => readAll(stream));
      first.abort(new Error('only this one'));
      await second.send(new Uint8Array([3]));
      await second.close();
      const byFirstByte = new Map<number, Awaited<ReturnType<typeof readAll>>>();
      for (const result of await Promise.all(reading)) byFirstByte.set(result.frames[0]?.[0] ?? 1, result);
      expect(byFirstByte.get(2)!.frames.map((f) => [...f])).toEqual([[2], [3]]);
      expect(byFirstByte.get(2)!.error).toBeUndefined();
      expect(byFirstByte.get(1)!.error).toBeInstanceOf(NetworkError);
      expect(a.isConnected(b.localPeer)).toBe(true);
    });

    it('close ends the remote frames() after the frames queued before it', async () => {
      const { out, inStream } = await streamPair();
      const reading = readAll(inStream);
      for (let i = 1; i <= 20; i++) await out.send(frameOf(10_000, i));
      await out.close();
      const { frames, error } = await reading;
      expect(error).toBeUndefined();
      expect(frames.map((f) => f[0])).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    });

    it('abort makes the remote frames() throw a NetworkError naming the peer, and later sends fail', async () => {
      const { a, out, inStream } = await streamPair();
      const reading = readAll(inStream);
      out.abort(new Error('given up'));
      const { error } = await reading;
      expect(error).toBeInstanceOf(NetworkError);
      expect((error as Error).message).toContain(a.localPeer);
      const sent = await inStream.send(new Uint8Array([1])).then(() => undefined, (err: unknown) => err);
      expect(sent).toBeInstanceOf(NetworkError);
      expect((sent as Error).message).toContain(a.localPeer);
      const local = await out.send(new Uint8Array([1])).then(() => undefined, (err: unknown) => err);
      expect(local).toBeInstanceOf(SyncError);
    });

    it('disconnect ends the streams of the connection on both sides', async () => {
      const { a, b, out, inStream } = await streamPair();
      const readingOut = readAll(out);
      const readingIn = readAll(inStream);
      await a.disconnect(b.localPeer);
      expectEndedByConnection(await readingOut);
      expectEndedByConnection(await readingIn);
      await expect(out.send(new Uint8Array([1]))).rejects.toBeInstanceOf(NetworkError);
      await waitFor(() => !a.isConnected(b.localPeer) && !b.isConnected(a.localPeer), 'both sides to see the disconnection');
    });

    it('stop ends the remote streams, tells the remote, refuses later dials, and is idempotent', async () => {
      const { a, b, out, inStream } = await streamPair();
      const gone = new Promise<void>((resolve) => a.onConnectionChange((peer, connected) => peer === b.localPeer && !connected && resolve()));
      const reading = readAll(out);
      const addresses = b.addresses();
      await b.stop();
      await b.stop();
      expectEndedByConnection(await reading);
      await gone;
      expect(a.isConnected(b.localPeer)).toBe(false);
      const sent = await inStream.send(new Uint8Array([1])).then(() => undefined, (err: unknown) => err);
      expect(sent).toBeInstanceOf(SyncError);
      await expect(a.connect(b.localPeer, addresses)).rejects.toBeInstanceOf(NetworkError);
      await expect(a.openStream(b.localPeer)).rejects.toBeInstanceOf(NetworkError);
    });

    it('connect to a peer that is not running fails with a NetworkError naming it', async () => {
      const [a, b] = (await start(2)) as [Transport, Transport];
      const addresses = b.addresses();
      await b.stop();
      const err = await a.connect(b.localPeer, addresses).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(NetworkError);
      expect((err as Error).message).toContain(b.localPeer);
      await expect(a.connect(b.localPeer, [])).rejects.toBeInstanceOf(NetworkError);
    });

    it('connect with an aborted signal rejects and connects nothing', async () => {
      const [a, b] = (await start(2)) as [Transport, Transport];
      const controller = new AbortController();
      controller.abort(new Error('no longer wanted'));
      await expect(a.connect(b.localPeer, b.addresses(), { signal: controller.signal })).rejects.toBeInstanceOf(NetworkError);
      expect(a.isConnected(b.localPeer)).toBe(false);
    });

    it('send waits for the reader: a sender never gets far ahead of a reader that lags', async () => {
      const { out, inStream } = await streamPair();
      const count = 64;
      const size = 1024 * 1024;
      let resolved = 0;
      const sending = (async () => {
        await out.send(frameOf(1, 0)); // the first frame is held to the handshake limit
        for (let i = 1; i < count; i++) {
          await out.send(frameOf(size, i));
          resolved += 1;
        }
        await out.close();
      })();
      // Without back-pressure every send resolves before the reader takes the first frame.
      let read = 0;
      let furthestAhead = 0;
      for await (const frame of inStream.frames()) {
        expect(frame[0]).toBe(read % 256);
        read += 1;
        furthestAhead = Math.max(furthestAhead, resolved + 1 - read);
      }
      await sending;
      expect(read).toBe(count);
      expect(furthestAhead).toBeLessThan(count / 2);
    });

    it('a stream the remote closed, or reset, before reading began still ends', async () => {
      const [a, b] = (await start(2)) as [Transport, Transport];
      const inbound: FrameStream[] = [];
      b.handle((stream) => inbound.push(stream));
      await a.connect(b.localPeer, b.addresses());
      const closed = await a.openStream(b.localPeer);
      await closed.send(new Uint8Array([1]));
      await closed.close();
      const reset = await a.openStream(b.localPeer);
      await reset.send(new Uint8Array([2]));
      await waitFor(() => inbound.length === 2, 'two inbound streams');
      reset.abort(new Error('gone'));
      // The end has reached the reader's side before it reads: a new stream opened after both
      // arrives after them on the same connection.
      const later = await a.openStream(b.localPeer);
      await later.send(new Uint8Array([3]));
      await waitFor(() => inbound.length === 3, 'a third inbound stream');
      const [first, second] = await Promise.all([readAll(inbound[0]!), readAll(inbound[1]!)]);
      expect(first.frames.map((f) => [...f])).toEqual([[1]]);
      expect(first.error).toBeUndefined();
      expect(second.error === undefined || second.error instanceof NetworkError).toBe(true);
    });

    it('refuses a frame above the limit, and a first frame above the handshake limit, with a ProtocolError', async () => {
      const { out, inStream } = await streamPair({ maxFrameBytes: 2000, maxFirstFrameBytes: 1000 });
      await out.send(frameOf(1000, 1));
      await out.send(frameOf(2000, 2));
      await out.send(frameOf(2001, 3));
      const { frames, error } = await readAll(inStream);
      expect(frames.map((f) => f.byteLength)).toEqual([1000, 2000]);
      expect(error).toBeInstanceOf(ProtocolError);
      expect((error as Error).message).toMatch(/of 2001 bytes exceeds the limit of 2000/);

      const [a, b] = (await start(2, { maxFirstFrameBytes: 1000 })) as [Transport, Transport];
      const inbound = nextInbound(b);
      await a.connect(b.localPeer, b.addresses());
      const handshake = await a.openStream(b.localPeer);
      await handshake.send(frameOf(1001, 1));
      const first = await readAll(await inbound);
      expect(first.error).toBeInstanceOf(ProtocolError);
      expect((first.error as Error).message).toMatch(/first frame \(handshake\) of 1001 bytes exceeds the limit of 1000/);
    });

    it('admits only a few connections of peers it does not know, and every known peer', async () => {
      const [node, s1, s2] = (await start(3, { maxStrangerConnections: 1 })) as [Transport, Transport, Transport];
      await s1.connect(node.localPeer, node.addresses());
      await waitFor(() => node.isConnected(s1.localPeer), 'the first stranger connected');
      // The second is refused (libp2p: right after its Noise handshake, so its dial may resolve
      // just before the refusal arrives): no stream opens.
      await s2.connect(node.localPeer, node.addresses()).catch(() => undefined);
      await expect(s2.openStream(node.localPeer)).rejects.toBeInstanceOf(NetworkError);
      expect(node.isConnected(s2.localPeer)).toBe(false);

      node.setKnownPeers((peer) => peer === s2.localPeer);
      await s2.connect(node.localPeer, node.addresses());
      const inbound = nextInbound(node);
      await (await s2.openStream(node.localPeer)).send(new Uint8Array([1]));
      expect((await inbound).remotePeer).toBe(s2.localPeer);
    });
  });
}
