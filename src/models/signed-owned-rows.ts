import { ProtocolError } from '../errors.js';
import type { Signatures } from '../runtime/signatures.js';
import type { StoredValues } from './types.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { concatBytes, equalBytes } from '../util/bytes.js';
import { pack, unpack } from '../util/msgpack.js';

/**
 * Signed device-owned rows: how a device vouches for its own state (docs/protocol.md, "Signed
 * owned rows"). Owned rows sync by state, so a row travels alone, long after the write that made
 * it, and the rows written with it may be gone (written again since). Each row therefore carries
 * its own proof, a certificate: the rows a transaction writes are the leaves of a Merkle tree
 * (RFC 9162's shape), the owner signs the tree's root once, and each row keeps the signature,
 * the tree's size, its place in it and the hashes that lead from it to the root. One signature
 * per transaction (a few per very large one) keeps writes fast; a receiver checks a row with a
 * few hashes, and the signature once per tree (`Signatures.verify` remembers it).
 */

/** Leaves of one tree at most: a larger set of rows is signed as several trees. */
export const MAX_SIGNED_ROWS = 1_024;
const HASH_BYTES = 32;
const SIGNATURE_BYTES = 64;
/** Hashes a row's path holds at most: the depth of a tree of `MAX_SIGNED_ROWS` leaves. */
const MAX_PATH_HASHES = Math.ceil(Math.log2(MAX_SIGNED_ROWS));
/** Bytes of a certificate at most: its msgpack array of size, place, path and signature. */
export const MAX_CERT_BYTES = 16 + 5 + MAX_PATH_HASHES * HASH_BYTES + 2 + SIGNATURE_BYTES;

const DOMAIN = new TextEncoder().encode('leaderless-sync owned rows\u0000');
const TEXT = new TextEncoder();
const LEAF = 0x00;
const NODE = 0x01;

/** What a row's signature covers: everything a receiver stores of it but its owner (in the root). */
export interface OwnedRowContent {
  readonly model: string;
  readonly id: string;
  readonly version: number;
  readonly hlc: string;
  readonly deleted: boolean;
  /** The row's values (ignored for a tombstone). */
  readonly values: StoredValues | null;
}

interface Certificate {
  readonly size: number;
  readonly index: number;
  readonly path: Uint8Array;
  readonly sig: Uint8Array;
}

/**
 * Certificates for `rows` of `owner`, signed with this device's key, in the order given: one
 * tree per `MAX_SIGNED_ROWS` rows.
 */
export function signOwnedRows(signatures: Signatures, library: string, owner: string, rows: readonly OwnedRowContent[]): Uint8Array[] {
  const certs: Uint8Array[] = [];
  for (let start = 0; start < rows.length; start += MAX_SIGNED_ROWS) {
    const leaves = rows.slice(start, start + MAX_SIGNED_ROWS).map((row) => leafHash(signatures, row));
    const levels = treeLevels(signatures, leaves);
    const sig = signatures.sign(statement(signatures, library, owner, leaves.length, levels[levels.length - 1]![0]!));
    leaves.forEach((_, index) => {
      certs.push(pack([leaves.length, index, concatBytes(auditPath(levels, index)), sig]));
    });
  }
  return certs;
}

/**
 * Checks rows of `owner` against the key `author` (a PeerId) names, a message at a time: a row
 * whose certificate does not prove it signed by that key is a `ProtocolError` (bad input:
 * refused, counted, never stored). Whether that PeerId may sign for the owner is the caller's to
 * check. The nodes of a tree a row proved are remembered, so the next row of the same tree costs
 * its leaf and a hash or two, then byte comparisons up to the root, and the signature is checked
 * once per tree.
 */
export class OwnedRowVerifier {
  /** Per tree (its size and signature), the nodes proven so far, by `nodeKey`. */
  private readonly trees = new Map<string, Map<number, Uint8Array>>();

  constructor(
    private readonly signatures: Signatures,
    private readonly library: string,
    private readonly owner: string,
    private readonly author: string,
  ) {}

  verify(row: OwnedRowContent, cert: Uint8Array): void {
    const where = `${row.model} ${row.id} of ${this.owner} (version ${row.version})`;
    const { size, index, path, sig } = decodeCertificate(cert, where);
    const treeKey = `${size}:${bytesToHex(sig)}`;
    const proven = this.trees.get(treeKey) ?? new Map<number, Uint8Array>();
    const walk = walkToRoot(this.signatures, leafHash(this.signatures, row), index, size, path, proven);
    if (walk === null) throw new ProtocolError(`${where}: its certificate's path does not fit a tree of ${size} rows`);
    if (!walk.known && !this.signatures.verify(this.author, statement(this.signatures, this.library, this.owner, size, walk.root), sig)) {
      throw new ProtocolError(`${where} is not signed by its owner's key (${this.author})`);
    }
    for (const [key, node] of walk.nodes) proven.set(key, node);
    this.trees.set(treeKey, proven);
  }
}

function decodeCertificate(cert: Uint8Array, where: string): Certificate {
  let decoded: unknown;
  try {
    decoded = cert.byteLength <= MAX_CERT_BYTES ? unpack(cert) : undefined;
  } catch {
    decoded = undefined;
  }
  if (!Array.isArray(decoded) || decoded.length !== 4) throw new ProtocolError(`${where}: its certificate is malformed`);
  const [size, index, path, sig] = decoded as unknown[];
  const valid =
    Number.isSafeInteger(size) &&
    (size as number) >= 1 &&
    (size as number) <= MAX_SIGNED_ROWS &&
    Number.isSafeInteger(index) &&
    (index as number) >= 0 &&
    (index as number) < (size as number) &&
    path instanceof Uint8Array &&
    path.byteLength % HASH_BYTES === 0 &&
    sig instanceof Uint8Array &&
    sig.byteLength === SIGNATURE_BYTES;
  if (!valid) throw new ProtocolError(`${where}: its certificate is malformed`);
  return { size: size as number, index: index as number, path: path as Uint8Array, sig: sig as Uint8Array };
}

/**
 * A row's leaf: its content with the values as sorted `[name, value]` pairs of the non-null
 * fields, so a replica whose model has more (nullable) fields, all null here, hashes it alike.
 */
function leafHash(signatures: Signatures, row: OwnedRowContent): Uint8Array {
  const values = row.deleted || !row.values ? null : Object.entries(row.values).filter(([, v]) => v !== null && v !== undefined).sort(([a], [b]) => (a < b ? -1 : 1));
  return prefixedHash(signatures, LEAF, pack([row.model, row.id, row.version, row.hlc, row.deleted, values]));
}

/** What the owner signs: the domain, library, owner, the tree's size and root. */
function statement(signatures: Signatures, library: string, owner: string, size: number, root: Uint8Array): Uint8Array {
  const size_ = new Uint8Array(4);
  new DataView(size_.buffer).setUint32(0, size);
  return signatures.sha256(concatBytes([DOMAIN, TEXT.encode(library), new Uint8Array([0]), TEXT.encode(owner), size_, root]));
}

/**
 * The tree's levels, leaves first, root last: each level pairs the nodes of the one below, and an
 * unpaired last node moves up as it is. That is RFC 9162's tree (left subtrees of a power of two
 * leaves), built in linear time.
 */
function treeLevels(signatures: Signatures, leaves: readonly Uint8Array[]): Uint8Array[][] {
  const levels = [leaves.slice()];
  for (let level = levels[0]!; level.length > 1; ) {
    const up: Uint8Array[] = [];
    for (let i = 0; i < level.length; i += 2) up.push(i + 1 < level.length ? nodeHash(signatures, level[i]!, level[i + 1]!) : level[i]!);
    levels.push(up);
    level = up;
  }
  return levels;
}

/** The sibling hashes from leaf `index` up to the root (RFC 9162, 2.1.3.1). */
function auditPath(levels: readonly Uint8Array[][], index: number): Uint8Array[] {
  const path: Uint8Array[] = [];
  for (let level = 0, at = index; level < levels.length - 1; level++, at = Math.floor(at / 2)) {
    const sibling = levels[level]![at % 2 === 0 ? at + 1 : at - 1];
    if (sibling) path.push(sibling);
  }
  return path;
}

/** A node's place in its tree: its level (0 for leaves) and position there. */
const nodeKey = (level: number, position: number) => level * MAX_SIGNED_ROWS + position;

/**
 * Walks from a leaf at `index` of a tree of `size` leaves to the root, level by level as
 * `treeLevels` builds them (RFC 9162's tree): at each level the path gives the sibling, unless
 * the node is the unpaired last one, which moves up as it is. Nodes already `proven` (of the
 * same tree, by rows checked before) must match, and above two of them nothing is hashed.
 * Returns the root, the nodes the walk met (to remember once the row is proven), and whether the
 * root was proven before; or null if the path does not fit the tree or contradicts it.
 */
function walkToRoot(
  signatures: Signatures,
  leaf: Uint8Array,
  index: number,
  size: number,
  path: Uint8Array,
  proven: ReadonlyMap<number, Uint8Array>,
): { root: Uint8Array; nodes: Map<number, Uint8Array>; known: boolean } | null {
  const nodes = new Map<number, Uint8Array>();
  let node = leaf;
  let position = index;
  let width = size;
  let level = 0;
  let at = 0;
  const meet = (): boolean | null => {
    const held = proven.get(nodeKey(level, position));
    nodes.set(nodeKey(level, position), node);
    if (held === undefined) return false;
    return equalBytes(held, node) ? true : null;
  };
  let known = meet();
  if (known === null) return null;
  while (width > 1) {
    const sibling = position ^ 1;
    if (sibling < width) {
      if (at + HASH_BYTES > path.byteLength) return null;
      const hash = path.subarray(at, at + HASH_BYTES);
      at += HASH_BYTES;
      const heldSibling = proven.get(nodeKey(level, sibling));
      if (heldSibling !== undefined && !equalBytes(heldSibling, hash)) return null;
      nodes.set(nodeKey(level, sibling), hash);
      const heldParent = known && heldSibling !== undefined ? proven.get(nodeKey(level + 1, position >> 1)) : undefined;
      node = heldParent ?? (position % 2 === 0 ? nodeHash(signatures, node, hash) : nodeHash(signatures, hash, node));
    }
    position >>= 1;
    width = Math.ceil(width / 2);
    level += 1;
    known = meet();
    if (known === null) return null;
  }
  return at === path.byteLength ? { root: node, nodes, known } : null;
}

function nodeHash(signatures: Signatures, left: Uint8Array, right: Uint8Array): Uint8Array {
  return prefixedHash(signatures, NODE, concatBytes([left, right]));
}

function prefixedHash(signatures: Signatures, prefix: number, data: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(1 + data.byteLength);
  bytes[0] = prefix;
  bytes.set(data, 1);
  return signatures.sha256(bytes);
}
