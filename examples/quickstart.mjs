import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSyncNode, defineModel } from 'leaderless-sync';

const Tag = defineModel({ name: 'tag', ownership: 'shared', conflict: 'union', naturalKey: ['label'], fields: { label: 'text', color: { type: 'text', nullable: true } } });
const Note = defineModel({ name: 'note', ownership: 'shared', conflict: 'lww-field', fields: { title: 'text', body: { type: 'text', nullable: true } } });
const Location = defineModel({ name: 'location', ownership: 'device', fields: { path: 'text' } });

const node = await createSyncNode({ dataDir: join(mkdtempSync(join(tmpdir(), 'ls-')), 'node'), models: [Tag, Note, Location] });
const lib = await node.createLibrary({ name: 'Home' });
lib.on('change', (e) => console.log('change', e.model, e.op, e.origin));

const note = await lib.upsert('note', { title: 'Groceries', body: null });
await lib.update('note', note.id, { body: 'milk, bread' });
await lib.transaction(async (tx) => {
  await tx.upsert('tag', { label: 'home', color: 'green' });
  await tx.upsert('location', { path: '/home/me/photos' });
});
console.log(await lib.get('note', note.id), await lib.list('tag', { limit: 10 }));
console.log('digest', await lib.digest(), 'vector', lib.versionVector());
await node.stop();
