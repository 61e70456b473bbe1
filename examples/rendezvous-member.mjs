// An always-on member (a home server, a cloud VM): the meeting point and relay for the devices
// of a library. Run it with the application's models and a fixed port, then start every device
// with `bootstrap: [<an address printed below>]` and let it join with the printed invite.
//
//   node examples/rendezvous-member.mjs <dataDir> [listen multiaddr, default /ip4/0.0.0.0/tcp/4001]
//
// The first start creates the library; later starts reopen it from dataDir (same PeerId, same
// port, so the bootstrap address stays valid). Open the port in the firewall / router.
import { createSyncNode, defineModel } from 'leaderless-sync';

const [dataDir = './rendezvous-data', listen = '/ip4/0.0.0.0/tcp/4001'] = process.argv.slice(2);

// The same models as the application: this member stores and serves the library's data.
const models = [
  defineModel({ name: 'note', ownership: 'shared', conflict: 'lww-field', fields: { title: 'text', body: { type: 'text', nullable: true } } }),
];

const node = await createSyncNode({ dataDir, models, listen: [listen] });
node.on('session-error', (e) => console.error('session error', e.peer, e.error.message));
const lib = node.libraries()[0] ?? (await node.createLibrary({ name: 'Home' }));

console.log('bootstrap addresses (one of them goes into each device\'s `bootstrap` option):');
for (const addr of node.multiaddrs()) console.log(`  ${addr}`);
console.log(`invite for one more device (valid 1 h): ${await lib.createInvite({ ttlMs: 60 * 60_000 })}`);

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => void node.stop().then(() => process.exit(0)));
}
