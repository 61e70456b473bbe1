import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSyncNode, defineModel } from 'leaderless-sync';

const Tag = defineModel({ name: 'tag', ownership: 'shared', conflict: 'union', naturalKey: ['label'], fields: { label: 'text', color: { type: 'text', nullable: true } } });
const Note = defineModel({ name: 'note', ownership: 'shared', conflict: 'lww-field', fields: { title: 'text', body: { type: 'text', nullable: true } } });
const Location = defineModel({ name: 'location', ownership: 'device', fields: { path: 'text' } });
const models = [Tag, Note, Location];

// Two devices in one process, each with its own data directory, listening on loopback only.
const listen = ['/ip4/127.0.0.1/tcp/0'];
const a = await createSyncNode({ dataDir: join(mkdtempSync(join(tmpdir(), 'ls-')), 'node-a'), models, listen });
const b = await createSyncNode({ dataDir: join(mkdtempSync(join(tmpdir(), 'ls-')), 'node-b'), models, listen });
for (const node of [a, b]) node.on('session-error', (e) => console.error('session error', e.direction, e.error.message));

// A creates a library and invites B; B joins with the invite string (dials A, proves the secret).
const lib = await a.createLibrary({ name: 'Home' });
const libB = await b.joinLibrary(await lib.createInvite({ ttlMs: 60_000 }));
lib.on('change', (e) => console.log('change', e.model, e.op, e.origin));

const note = await lib.upsert('note', { title: 'Groceries', body: null });
await lib.update('note', note.id, { body: 'milk, bread' });
await lib.transaction(async (tx) => {
  await tx.upsert('tag', { label: 'home', color: 'green' });
  await tx.upsert('location', { path: '/home/me/photos' });
});

// Wait (at most 10 s) until B holds exactly what A holds: equal digests.
const deadline = Date.now() + 10_000;
while ((await libB.digest()) !== (await lib.digest())) {
  if (Date.now() > deadline) throw new Error('B did not catch up within 10 s');
  await new Promise((resolve) => setTimeout(resolve, 20));
}
console.log('B sees', await libB.get('note', note.id), await libB.list('tag', { limit: 10 }));
console.log('digest', await libB.digest(), 'vector', libB.versionVector());
const { partners } = await lib.status();
console.log('A partners', partners.map((p) => `${p.device} connected=${p.connected} ${p.state}`));
await Promise.all([a.stop(), b.stop()]);
