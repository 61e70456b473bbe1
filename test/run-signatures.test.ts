/**
 * Issue 13, the unit of signing: a run's id commits to the library, the origin, its seqs, the
 * run before it and its entries, and only the author's key verifies its signature. Node's native
 * Ed25519 and SHA-256 (`src/node/native-signatures.ts`); no network.
 */
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../src/errors.js';
import { encodeHlc } from '../src/hlc/index.js';
import { deviceSignatures } from '../src/node/native-signatures.js';
import { encodeChunks } from '../src/peer-log/chunk.js';
import { GENESIS, runId, signRun, verifyRun } from '../src/peer-log/signed-runs.js';

const library = '6c1e4f62-3a57-4c39-9a86-1f6a4f3b0a11';
const origin = '2b7a3c11-90d4-4e55-8a61-0c9f3e2d1b44';

function run(titles: string[], firstSeq = 1) {
  const entries = titles.map((title, i) => ({
    origin,
    seq: firstSeq + i,
    hlc: encodeHlc({ wallMs: 1_700_000_000_000 + i, counter: 0, deviceId: origin }),
    model: 'note',
    id: `n${firstSeq + i}`,
    op: 'upsert' as const,
    fields: { title, body: null },
  }));
  const [body] = encodeChunks(entries);
  return body!;
}

describe('a signed run', () => {
  it("verifies with its author's PeerId only, and its id changes with every part it commits to", async () => {
    const key = await generateKeyPair('Ed25519');
    const author = peerIdFromPrivateKey(key).toString();
    const other = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString();
    const signatures = deviceSignatures(key);
    const first = run(['a', 'b']);
    const { chunk, id } = signRun(signatures, library, first, GENESIS);
    expect(verifyRun(signatures, library, { ...chunk, author })).toEqual(id);
    expect(() => verifyRun(signatures, library, { ...chunk, author: other })).toThrow(ProtocolError);
    expect(() => verifyRun(signatures, library, { ...chunk, author: 'not-a-peer-id' })).toThrow(/not signed by its author's key/);

    // Each part changes the id, so the signature no longer verifies.
    const ids = new Set([
      runId(signatures, library, first, GENESIS),
      runId(signatures, '6c1e4f62-3a57-4c39-9a86-1f6a4f3b0a12', first, GENESIS),
      runId(signatures, library, { ...first, origin: '2b7a3c11-90d4-4e55-8a61-0c9f3e2d1b45' }, GENESIS),
      runId(signatures, library, run(['a', 'c']), GENESIS),
      runId(signatures, library, first, new Uint8Array(32).fill(1)),
      runId(signatures, library, { ...first, lastSeq: 3 }, GENESIS),
    ]);
    expect(ids.size).toBe(6);
    const tampered = { ...chunk, entries: run(['a', 'c']).entries };
    expect(() => verifyRun(signatures, library, { ...tampered, author })).toThrow(/not signed by its author's key/);
    expect(() => verifyRun(signatures, '6c1e4f62-3a57-4c39-9a86-1f6a4f3b0a12', { ...chunk, author })).toThrow(ProtocolError);

    // The next run commits to this one; a first run must start from GENESIS.
    const next = signRun(signatures, library, run(['c'], 3), id);
    expect(next.chunk.prev).toEqual(id);
    expect(verifyRun(signatures, library, { ...next.chunk, author })).toEqual(next.id);
    const notFirst = signRun(signatures, library, first, id).chunk;
    expect(() => verifyRun(signatures, library, { ...notFirst, author })).toThrow(/first run but follows another/);
  });
});
