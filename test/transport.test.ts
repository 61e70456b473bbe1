import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PeerStore } from '@libp2p/interface';
import { afterEach, describe, expect, it } from 'vitest';
import { NetworkError } from '../src/errors.js';
import { Libp2pTransport } from '../src/network/libp2p-transport.js';
import type { FrameStream } from '../src/protocol/transport.js';
import { waitFor } from './helpers/cluster.js';
import { libp2pStream } from './helpers/raw-peer.js';

const PROTOCOL = '/leaderless-sync-test/1.0.0';
const started: Libp2pTransport[] = [];

async function startTransport(maxFrameBytes = 1024, maxFirstFrameBytes = maxFrameBytes, maxStrangerConnections = 8, maxStreams = 8): Promise<Libp2pTransport> {
  const transport = await Libp2pTransport.start({
    privateKey: await generateKeyPair('Ed25519'),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    protocol: PROTOCOL,
    maxFrameBytes,
    maxFirstFrameBytes,
    maxStreams,
    maxStrangerConnections,
  });
  started.push(transport);
  return transport;
}

/** The transport's libp2p peer store (private to it; what it holds is what a test is about). */
function peerStoreOf(transport: Libp2pTransport): PeerStore {
  return (transport as unknown as { node: { peerStore: PeerStore } }).node.peerStore;
}

afterEach(async () => {
  await Promise.all(started.splice(0).map((t) => t.stop()));
});

function nextInbound(transport: Libp2pTransport): Promise<FrameStream> {
  return new Promise((resolve) => transport.handle(resolve));
}

/** A connected pair of transports and one stream between them, both ends. */
async function streamPair(): Promise<{ a: Libp2pTransport; b: Libp2pTransport; out: FrameStream; inStream: FrameStream }> {
  const a = await startTransport();
  const b = await startTransport();
  const inbound = nextInbound(b);
  await a.connect(b.localPeer, b.addresses());
  const out = await a.openStream(b.localPeer);
  return { a, b, out, inStream: await inbound };
}

/** Reads `stream` to its end in the background; resolves with the error it failed with, if any. */
function readToEnd(stream: FrameStream): Promise<unknown> {
  return (async () => {
    for await (const _ of stream.frames()) void _;
  })().then(
    () => undefined,
    (err: unknown) => err,
  );
}

/**
 * Sends a frame larger than the stream's window while the remote grants no more window (its
 * stream paused), and returns once the send waits for a drain, with the send's outcome (the
 * error, or 'sent').
 */
async function sendUntilDrainWait(out: FrameStream, remote: FrameStream): Promise<{ outcome: Promise<unknown> }> {
  libp2pStream(remote).pause();
  const sending = out.send(new Uint8Array(1024 * 1024)).then(
    () => 'sent',
    (err: unknown) => err,
  );
  await waitFor(() => (libp2pStream(out) as unknown as { writableNeedsDrain: boolean }).writableNeedsDrain, 'the send to wait for a drain');
  // Wrapped: an async function returning the promise itself would wait for it.
  return { outcome: sending };
}

/** What every failure of a stream must be: a NetworkError naming the peer, with a message. */
function expectNetworkError(err: unknown, peer: string, cause: RegExp): void {
  expect(err).toBeInstanceOf(NetworkError);
  const error = err as NetworkError;
  expect(error.code).toBe('NETWORK');
  expect(error.message).toContain(peer);
  expect(error.message).toMatch(cause);
}

describe('libp2p transport', () => {
  it('carries frames both ways and names the authenticated remote peer', async () => {
    const a = await startTransport();
    const b = await startTransport();
    const inbound = nextInbound(b);
    await a.connect(b.localPeer, b.addresses());
    const out = await a.openStream(b.localPeer);
    const inStream = await inbound;
    expect(inStream.remotePeer).toBe(a.localPeer);
    expect(out.remotePeer).toBe(b.localPeer);

    const sent = [new Uint8Array([1, 2, 3]), new Uint8Array(1000).fill(7), new Uint8Array([4])];
    for (const frame of sent) await out.send(frame);
    const received: Uint8Array[] = [];
    for await (const frame of inStream.frames()) {
      received.push(frame);
      if (received.length === sent.length) break;
    }
    expect(received.map((f) => [...f])).toEqual(sent.map((f) => [...f]));

    await inStream.send(new Uint8Array([9]));
    const reply = await out.frames()[Symbol.asyncIterator]().next();
    expect([...(reply.value as Uint8Array)]).toEqual([9]);
  });

  it('fails the stream on a frame above the size limit', async () => {
    const a = await startTransport();
    const b = await startTransport(100);
    const inbound = nextInbound(b);
    await a.connect(b.localPeer, b.addresses());
    const out = await a.openStream(b.localPeer);
    await out.send(new Uint8Array(101));
    const inStream = await inbound;
    await expect(async () => {
      for await (const _ of inStream.frames()) void _;
    }).rejects.toThrow(/of 101 bytes exceeds the limit of 100/);
  });

  it('holds the first frame of a stream to the smaller handshake limit, later ones to the frame limit', async () => {
    const a = await startTransport();
    const b = await startTransport(1000, 100);
    const inbound: FrameStream[] = [];
    b.handle((stream) => inbound.push(stream));
    await a.connect(b.localPeer, b.addresses());
    const first = await a.openStream(b.localPeer);
    await first.send(new Uint8Array(100).fill(1));
    await first.send(new Uint8Array(1000).fill(2));
    await waitFor(() => inbound.length === 1, 'the first stream');
    const accepted = inbound[0]!.frames()[Symbol.asyncIterator]();
    expect((await accepted.next()).value).toHaveLength(100);
    expect((await accepted.next()).value).toHaveLength(1000);

    const oversize = await a.openStream(b.localPeer);
    await oversize.send(new Uint8Array(101));
    await waitFor(() => inbound.length === 2, 'the second stream');
    await expect(async () => {
      for await (const _ of inbound[1]!.frames()) void _;
    }).rejects.toThrow(/first frame \(handshake\) of 101 bytes exceeds the limit of 100/);
  });

  it('admits only a few connections of peers it does not know, and every known peer', async () => {
    // At most five connection attempts: libp2p refuses a sixth within a second from one host.
    const node = await startTransport(1024, 1024, 2);
    const [s1, s2, s3] = [await startTransport(), await startTransport(), await startTransport()];
    await s1.connect(node.localPeer, node.addresses());
    await s2.connect(node.localPeer, node.addresses());
    await waitFor(() => node.isConnected(s1.localPeer) && node.isConnected(s2.localPeer), 'two strangers connected');
    // The third is refused right after its Noise handshake (its dial may resolve just before
    // the refusal arrives): no stream can open.
    await s3.connect(node.localPeer, node.addresses()).catch(() => undefined);
    await expect(s3.openStream(node.localPeer)).rejects.toThrow(NetworkError);
    expect(node.isConnected(s3.localPeer)).toBe(false);

    node.setKnownPeers((peer) => peer === s3.localPeer);
    await s3.connect(node.localPeer, node.addresses());
    const inbound = new Promise<FrameStream>((resolve) => node.handle(resolve));
    await (await s3.openStream(node.localPeer)).send(new Uint8Array([1]));
    expect((await inbound).remotePeer).toBe(s3.localPeer);
  });

  it('a reset by the remote fails reading and every later send with a NetworkError that says so', async () => {
    const { b, out, inStream } = await streamPair();
    const reading = readToEnd(out);
    inStream.abort(new Error('remote gone'));
    expectNetworkError(await reading, b.localPeer, /reading: StreamResetError/);
    const sent = await out.send(new Uint8Array([1])).then(() => undefined, (err: unknown) => err);
    expectNetworkError(sent, b.localPeer, /stream is reset/);
  });

  it('a send waiting for the stream to drain fails with a NetworkError when the remote resets', async () => {
    const { b, out, inStream } = await streamPair();
    const { outcome: sending } = await sendUntilDrainWait(out, inStream);
    inStream.abort(new Error('remote gone'));
    expectNetworkError(await sending, b.localPeer, /sending: StreamResetError/);
  });

  it('a send waiting for the stream to drain fails with a NetworkError when the connection closes', async () => {
    const { a, b, out, inStream } = await streamPair();
    const { outcome: sending } = await sendUntilDrainWait(out, inStream);
    await b.disconnect(a.localPeer);
    // libp2p rejects the drain with a StreamClosedError, which has no message.
    expectNetworkError(await sending, b.localPeer, /sending: \w+/);
  });

  it('forgets a peer it does not know once it disconnects: strangers with ever new PeerIds hold no memory', async () => {
    const node = await startTransport();
    const stored = async () => (await peerStoreOf(node).all()).length;
    // Three strangers (libp2p refuses a sixth connection within a second from one host).
    const strangers = [await startTransport(), await startTransport(), await startTransport()];
    for (const stranger of strangers) await stranger.connect(node.localPeer, node.addresses());
    // While they are connected, libp2p holds what identify told it about each of them.
    await waitFor(async () => (await stored()) === strangers.length, 'identify to store the strangers');
    await Promise.all(strangers.map((stranger) => stranger.stop()));
    await waitFor(async () => (await stored()) === 0, 'the node to forget the strangers');

    // A known peer is remembered (its addresses are worth dialling again).
    const member = await startTransport();
    node.setKnownPeers((peer) => peer === member.localPeer);
    await member.connect(node.localPeer, node.addresses());
    await waitFor(async () => (await stored()) === 1, 'identify to store the member');
    await member.stop();
    await waitFor(() => !node.isConnected(member.localPeer), 'the member to disconnect');
    expect(await stored()).toBe(1);
  });

  it('refuses an inbound stream beyond its stream limit on one connection, whatever the peer allows itself', async () => {
    const b = await startTransport();
    // A allows itself four times as many streams: the limit that counts is B's own.
    const a = await startTransport(1024, 1024, 8, 32);
    const held: FrameStream[] = [];
    b.handle((stream) => held.push(stream));
    await a.connect(b.localPeer, b.addresses());
    const opened: FrameStream[] = [];
    for (let i = 0; i < 8; i++) {
      const stream = await a.openStream(b.localPeer);
      await stream.send(new Uint8Array([i]));
      opened.push(stream);
    }
    await waitFor(() => held.length === 8, 'B to hold 8 streams');
    const ninth = async () => {
      const stream = await a.openStream(b.localPeer);
      await stream.send(new Uint8Array([9]));
      for await (const frame of stream.frames()) void frame;
    };
    await expect(ninth()).rejects.toBeInstanceOf(NetworkError);
    expect(held).toHaveLength(8);
  });
});

