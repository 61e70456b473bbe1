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
});
