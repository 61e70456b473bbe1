import { generateKeyPair } from '@libp2p/crypto/keys';
import { afterEach, describe, expect, it } from 'vitest';
import { Libp2pTransport } from '../src/network/libp2p-transport.js';
import type { FrameStream } from '../src/protocol/transport.js';

const PROTOCOL = '/leaderless-sync-test/1.0.0';
const started: Libp2pTransport[] = [];

async function startTransport(maxFrameBytes = 1024): Promise<Libp2pTransport> {
  const transport = await Libp2pTransport.start({
    privateKey: await generateKeyPair('Ed25519'),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    protocol: PROTOCOL,
    maxFrameBytes,
    maxStreams: 8,
  });
  started.push(transport);
  return transport;
}

afterEach(async () => {
  await Promise.all(started.splice(0).map((t) => t.stop()));
});

function nextInbound(transport: Libp2pTransport): Promise<FrameStream> {
  return new Promise((resolve) => transport.handle(resolve));
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
    }).rejects.toThrow(/length/i);
  });
});
