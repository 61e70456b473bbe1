import { generateKeyPair } from '@libp2p/crypto/keys';
import { Libp2pTransport } from '../src/network/libp2p-transport.js';
import { runTransportTests } from './helpers/transport-conformance.js';

runTransportTests('Libp2pTransport on 127.0.0.1', async (count, limits) => {
  const transports: Libp2pTransport[] = [];
  for (let i = 0; i < count; i++) {
    transports.push(
      await Libp2pTransport.start({
        privateKey: await generateKeyPair('Ed25519'),
        listen: ['/ip4/127.0.0.1/tcp/0'],
        protocol: '/leaderless-sync-conformance/1.0.0',
        maxStreams: 8,
        mdns: false,
        ...limits,
      }),
    );
  }
  return { transports, teardown: async () => void (await Promise.all(transports.map((t) => t.stop()))) };
}, {
  // Found by this suite, reported, not fixed here: Libp2pFrameStream iterates the libp2p stream,
  // whose iterator takes every message as it arrives (no pause while the consumer is busy), so
  // the sender's sends resolve and the unread frames wait in the reader's memory (about 60 MiB
  // ahead were measured); and an iteration begun after the remote closed or reset the stream
  // with data still buffered never ends (the events it listens for have passed).
  gaps: {
    laggingReader: 'a lagging reader does not hold back the sender: the frames wait in its memory',
    lateReader: 'a stream the remote ended before its reader began iterating never ends',
  },
});
