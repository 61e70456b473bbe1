/**
 * Signed device-owned rows (issue 13): the owner's certificate of each row, one signature per
 * tree of rows (`src/models/signed-owned-rows.ts`). Unit tests of the proofs themselves; what
 * nodes do with them is in owned-sync, forged-owned-rows and upgrade tests.
 */
import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../src/errors.js';
import { encodeHlc } from '../src/index.js';
import { MAX_SIGNED_ROWS, type OwnedRowContent, OwnedRowVerifier, signOwnedRows } from '../src/models/signed-owned-rows.js';
import { namedPeerSignatures } from '../src/node/native-signatures.js';
import { pack, unpack } from '../src/util/msgpack.js';

const LIBRARY = '0190a0a0-0000-7000-8000-000000000001';
const OWNER = '0190a0a0-0000-7000-8000-0000000000aa';
const owner = namedPeerSignatures('owner');
const other = namedPeerSignatures('other');

function rowsOf(count: number): OwnedRowContent[] {
  return Array.from({ length: count }, (_, i) => ({
    model: 'volume',
    id: `vol-${i}`,
    version: i + 1,
    hlc: encodeHlc({ wallMs: 1_750_000_000_000 + i, counter: 0, deviceId: OWNER }),
    deleted: i % 7 === 3,
    values: i % 7 === 3 ? null : { path: `/v${i}`, bytes: i, blob: new Uint8Array([i & 0xff]) },
  }));
}

/** Each row checked on its own (a verifier per row: nothing proven before). */
const verify = (row: OwnedRowContent, cert: Uint8Array, library = LIBRARY, rowOwner = OWNER, author = owner.peer) =>
  new OwnedRowVerifier(owner, library, rowOwner, author).verify(row, cert);

describe('certificates of device-owned rows', () => {
  it('prove every row of trees of every size, and only that row', () => {
    for (const size of [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 33, 100]) {
      const rows = rowsOf(size);
      const certs = signOwnedRows(owner, LIBRARY, OWNER, rows);
      expect(certs).toHaveLength(size);
      rows.forEach((row, i) => {
        expect(() => verify(row, certs[i]!), `row ${i} of ${size}`).not.toThrow();
        // Another row's certificate proves another leaf.
        if (size > 1) expect(() => verify(row, certs[(i + 1) % size]!), `row ${i} with another's certificate`).toThrow(ProtocolError);
      });
    }
  });

  it('are one signature per tree of at most MAX_SIGNED_ROWS rows', () => {
    const rows = rowsOf(MAX_SIGNED_ROWS + 3);
    let signed = 0;
    const counting = { ...owner, sign: (message: Uint8Array) => (signed++, owner.sign(message)) };
    const certs = signOwnedRows(counting, LIBRARY, OWNER, rows);
    expect(signed).toBe(2);
    const sizes = certs.map((cert) => (unpack(cert) as [number])[0]);
    expect(new Set(sizes)).toEqual(new Set([MAX_SIGNED_ROWS, 3]));
    rows.forEach((row, i) => expect(() => verify(row, certs[i]!)).not.toThrow());
  });

  it('fail for any change of the row, another library, owner or key', () => {
    const rows = rowsOf(6);
    const certs = signOwnedRows(owner, LIBRARY, OWNER, rows);
    const row = rows[2]!;
    const cert = certs[2]!;
    const changed: OwnedRowContent[] = [
      { ...row, model: 'volume2' },
      { ...row, id: 'vol-x' },
      { ...row, version: row.version + 1 },
      { ...row, hlc: encodeHlc({ wallMs: 1_750_000_000_999, counter: 0, deviceId: OWNER }) },
      { ...row, deleted: true },
      { ...row, values: { ...row.values, bytes: 99 } },
      { ...row, values: { ...row.values, extra: 'x' } },
    ];
    for (const variant of changed) expect(() => verify(variant, cert), JSON.stringify(variant)).toThrow(ProtocolError);
    expect(() => verify(row, cert, '0190a0a0-0000-7000-8000-000000000002')).toThrow(/not signed by its owner's key/);
    expect(() => verify(row, cert, LIBRARY, '0190a0a0-0000-7000-8000-0000000000bb')).toThrow(/not signed by its owner's key/);
    expect(() => verify(row, cert, LIBRARY, OWNER, other.peer)).toThrow(/not signed by its owner's key/);
    // Signed by another key for this owner: refused too.
    const forged = signOwnedRows(other, LIBRARY, OWNER, rows)[2]!;
    expect(() => verify(row, forged)).toThrow(/not signed by its owner's key/);
  });

  it('treat a null field and an absent one alike (a replica whose model has one more nullable field)', () => {
    const [row] = rowsOf(1);
    const [cert] = signOwnedRows(owner, LIBRARY, OWNER, [row!]);
    expect(() => verify({ ...row!, values: { ...row!.values, added: null } }, cert!)).not.toThrow();
  });

  it('that are malformed are a ProtocolError, whatever the bytes', () => {
    const rows = rowsOf(5);
    const certs = signOwnedRows(owner, LIBRARY, OWNER, rows);
    const [size, index, path, sig] = unpack(certs[1]!) as [number, number, Uint8Array, Uint8Array];
    const malformed = [
      new Uint8Array([1, 2, 3]),
      pack('not a certificate'),
      pack([size, index, path]),
      pack([size, size, path, sig]),
      pack([0, 0, path, sig]),
      pack([MAX_SIGNED_ROWS + 1, index, path, sig]),
      pack([size, index, path.subarray(0, 31), sig]),
      pack([size, index, path.subarray(0, 32), sig]),
      pack([size, index, new Uint8Array([...path, ...path]), sig]),
      pack([size, index, path, sig.subarray(0, 63)]),
      pack([size, -1, path, sig]),
      new Uint8Array(4096),
    ];
    for (const cert of malformed) expect(() => verify(rows[1]!, cert)).toThrow(ProtocolError);
  });

  it('checked by one verifier: every row of every tree, one signature check per tree, in any order', () => {
    for (const size of [1, 2, 3, 5, 8, 13, 100]) {
      const rows = rowsOf(size);
      const certs = signOwnedRows(owner, LIBRARY, OWNER, rows);
      let checks = 0;
      const counting = { ...owner, verify: (...args: Parameters<typeof owner.verify>) => (checks++, owner.verify(...args)) };
      const verifier = new OwnedRowVerifier(counting, LIBRARY, OWNER, owner.peer);
      // Every third row first, then the others backwards: joins at every level.
      const order = [...rows.keys()].filter((i) => i % 3 === 0).concat([...rows.keys()].filter((i) => i % 3 !== 0).reverse());
      for (const i of order) expect(() => verifier.verify(rows[i]!, certs[i]!), `row ${i} of ${size}`).not.toThrow();
      expect(checks, `size ${size}`).toBe(1);
    }
  });

  it('checked by one verifier after others of their tree: a changed row, path or length is still refused', () => {
    const rows = rowsOf(16);
    const certs = signOwnedRows(owner, LIBRARY, OWNER, rows);
    const verifier = new OwnedRowVerifier(owner, LIBRARY, OWNER, owner.peer);
    for (let i = 0; i < 15; i++) verifier.verify(rows[i]!, certs[i]!);
    const [size, index, path, sig] = unpack(certs[15]!) as [number, number, Uint8Array, Uint8Array];
    const withPath = (p: Uint8Array) => pack([size, index, p, sig]);
    const changedAt = (at: number) => {
      const p = new Uint8Array(path);
      p[at] = p[at]! ^ 1;
      return withPath(p);
    };
    expect(() => verifier.verify({ ...rows[15]!, version: 99 }, certs[15]!)).toThrow(ProtocolError);
    // Each hash of the path, the last ones above where the path joins the rows proven.
    for (let level = 0; level < path.byteLength / 32; level++) expect(() => verifier.verify(rows[15]!, changedAt(level * 32)), `level ${level}`).toThrow(ProtocolError);
    expect(() => verifier.verify(rows[15]!, withPath(new Uint8Array([...path, ...path.subarray(0, 32)])))).toThrow(ProtocolError);
    expect(() => verifier.verify(rows[15]!, withPath(path.subarray(0, path.byteLength - 32)))).toThrow(ProtocolError);
    // Another row's certificate for a proven row: its place differs.
    expect(() => verifier.verify(rows[3]!, certs[4]!)).toThrow(ProtocolError);
    expect(() => verifier.verify(rows[15]!, certs[15]!)).not.toThrow();
  });
});
