/**
 * Input generation for the fuzz harness: frames made from a corpus of valid frames by byte-level
 * mutations (bit flips, byte insert/delete, splices, truncation), by structured ones on the
 * decoded message (wrong types in a field, integer boundary values, huge strings, deep nesting,
 * unknown kinds, another library, fields swapped or dropped, chunks claiming another origin or
 * other positions) and from nothing (random bytes, raw msgpack headers that claim huge lengths,
 * extension types). Every choice comes from one `SeededRandom`, so a seed names its inputs.
 */
import { concatBytes } from '../src/util/bytes.js';
import { decodeChunk, encodeChunks } from '../src/peer-log/chunk.js';
import type { SeededRandom } from '../src/sim/prng.js';
import { pack, unpack, unpackEach } from '../src/util/msgpack.js';

/** A valid frame recorded from a real session, with the message kind it carries. */
export interface CorpusFrame {
  kind: string;
  frame: Uint8Array;
}

/** Ids worth putting anywhere an id goes: the session's devices, libraries and writers. */
export interface KnownIds {
  uuids: readonly string[];
}

type Value = unknown;

export class Mutator {
  constructor(
    private readonly rng: SeededRandom,
    private readonly corpus: readonly CorpusFrame[],
    private readonly ids: KnownIds,
  ) {}

  /** One input frame, and a short name of how it was made (for the report of a failure). */
  next(): { frame: Uint8Array; how: string } {
    const r = this.rng.next();
    if (r < 0.08) return { frame: this.fromNothing(), how: 'generated' };
    const base = this.rng.pick(this.corpus);
    if (r < 0.1) return { frame: base.frame, how: `valid ${base.kind}` };
    if (r < 0.4) return { frame: this.bytes(base.frame), how: `bytes of ${base.kind}` };
    let structured: Uint8Array;
    try {
      structured = this.structured(base);
    } catch {
      // A value the encoder cannot take (the mutation made something msgpack has no form for).
      return { frame: this.bytes(base.frame), how: `bytes of ${base.kind}` };
    }
    return this.rng.chance(0.1) ? { frame: this.bytes(structured), how: `structure+bytes of ${base.kind}` } : { frame: structured, how: `structure of ${base.kind}` };
  }

  /** Byte-level mutations of a frame: 1 to 4 of them. */
  bytes(frame: Uint8Array): Uint8Array {
    let out = frame;
    const rounds = 1 + this.rng.int(4);
    for (let i = 0; i < rounds; i++) out = this.byteMutation(out);
    return out;
  }

  private byteMutation(input: Uint8Array): Uint8Array {
    const rng = this.rng;
    const out = new Uint8Array(input);
    const at = out.byteLength === 0 ? 0 : rng.int(out.byteLength);
    switch (rng.int(8)) {
      case 0: // bit flip
        if (out.byteLength > 0) out[at]! ^= 1 << rng.int(8);
        return out;
      case 1: // interesting byte (type bytes of msgpack, boundaries)
        if (out.byteLength > 0) out[at] = rng.pick(INTERESTING_BYTES);
        return out;
      case 2: // insert bytes
        return concatBytes([input.subarray(0, at), rng.bytes(1 + rng.int(8)), input.subarray(at)]);
      case 3: // delete a range
        return concatBytes([input.subarray(0, at), input.subarray(Math.min(input.byteLength, at + 1 + rng.int(16)))]);
      case 4: // truncate
        return input.subarray(0, at);
      case 5: // splice with another frame
        return concatBytes([input.subarray(0, at), rng.pick(this.corpus).frame.subarray(at)]);
      case 6: // duplicate a range
        return concatBytes([input.subarray(0, at), input.subarray(at, at + 1 + rng.int(32)), input.subarray(at)]);
      default: // an interesting integer over 1, 2, 4 or 8 bytes
        {
          const width = rng.pick([1, 2, 4, 8]);
          const value = rng.pick([0, 0xff, 0x7f, 0x80]);
          for (let i = 0; i < width && at + i < out.byteLength; i++) out[at + i] = value;
        }
        return out;
    }
  }

  /** Decodes the frame, changes its structure, and encodes it again. */
  structured(base: CorpusFrame): Uint8Array {
    const message = unpack(base.frame) as Record<string, Value>;
    const rng = this.rng;
    switch (rng.int(6)) {
      case 0:
        return pack(this.replaceSomewhere(message));
      case 1:
        return pack(this.reshape(message));
      case 2:
        return pack(this.chunks(message));
      case 3:
        return pack({ ...message, t: rng.pick([...KINDS, 'hola', '', 'HELLO', '__proto__']) });
      case 4:
        return pack({ ...message, library: rng.pick(this.ids.uuids) });
      default:
        return this.rawNested(message);
    }
  }

  /** Replaces one value anywhere in the message (a field, an element, a vector entry) by a hostile one. */
  private replaceSomewhere(message: Record<string, Value>): Value {
    const paths = valuePaths(message);
    const path = this.rng.pick(paths);
    return replaceAt(message, path, this.hostileValue());
  }

  /** Drops, adds, swaps or duplicates fields of the message or of a nested object. */
  private reshape(message: Record<string, Value>): Value {
    const rng = this.rng;
    const copy: Record<string, Value> = { ...message };
    const keys = Object.keys(copy);
    const a = rng.pick(keys);
    const b = rng.pick(keys);
    switch (rng.int(4)) {
      case 0:
        delete copy[a];
        return copy;
      case 1:
        copy[rng.pick(['extra', '__proto__', 'constructor', 'toString', 'x'.repeat(300)])] = this.hostileValue();
        return copy;
      case 2:
        [copy[a], copy[b]] = [copy[b], copy[a]];
        return copy;
      default:
        return Object.values(copy);
    }
  }

  /** Chunk-level changes: another origin, other positions, entries mutated inside the chunk. */
  private chunks(message: Record<string, Value>): Value {
    const chunks = message.chunks;
    if (!Array.isArray(chunks) || chunks.length === 0) return this.replaceSomewhere(message);
    const rng = this.rng;
    const i = rng.int(chunks.length);
    const [origin, first, last, entries] = chunks[i] as [string, number, number, Uint8Array];
    let chunk: Value;
    switch (rng.int(5)) {
      case 0: // claims another origin
        chunk = [rng.pick(this.ids.uuids), first, last, entries];
        break;
      case 1: {
        // other positions, tuples renumbered to match (so the chunk decodes)
        const shift = rng.pick([1, -1, 1000, 2 ** 40, -first + 1]);
        chunk = renumbered(origin, first, last, entries, first + shift) ?? [origin, first + shift, last + shift, entries];
        break;
      }
      case 2: // the entries' tuples with a value replaced
        chunk = [origin, first, last, this.mutateTuples(entries)];
        break;
      case 3: // the entries cut or with bytes changed
        chunk = [origin, first, last, rng.chance(0.5) ? entries.subarray(0, rng.int(entries.byteLength + 1)) : this.bytes(entries)];
        break;
      default: // duplicated, or seq bounds out of line with the entries
        chunk = rng.chance(0.5) ? chunks[i] : [origin, first, last + 1 + rng.int(3), entries];
        if (rng.chance(0.5)) return { ...message, chunks: [...chunks, chunk] };
    }
    const out = [...chunks];
    out[i] = chunk;
    return { ...message, chunks: out };
  }

  /** The chunk's msgpack tuples with one value replaced (re-encoded as one run of tuples). */
  private mutateTuples(entries: Uint8Array): Uint8Array {
    const tuples: Value[] = [];
    try {
      unpackEach(entries, (tuple) => tuples.push(tuple));
    } catch {
      return this.bytes(entries);
    }
    if (tuples.length === 0) return entries;
    const i = this.rng.int(tuples.length);
    const tuple = tuples[i];
    if (Array.isArray(tuple)) {
      const copy = [...tuple];
      copy[this.rng.int(copy.length + 1)] = this.hostileValue();
      tuples[i] = copy;
    } else tuples[i] = this.hostileValue();
    return concatBytes(tuples.map((t) => pack(t)));
  }

  /** The message packed with one value swapped for raw bytes no encoder produces: deep nesting, ext types, lying lengths. */
  private rawNested(message: Record<string, Value>): Uint8Array {
    const marker = 'FUZZ-MARKER-0123456789';
    const paths = valuePaths(message);
    const encoded = pack(replaceAt(message, this.rng.pick(paths), marker));
    const needle = pack(marker);
    const at = indexOf(encoded, needle);
    if (at < 0) return encoded;
    return concatBytes([encoded.subarray(0, at), this.rawValue(), encoded.subarray(at + needle.byteLength)]);
  }

  /** Raw msgpack bytes of a hostile value. */
  private rawValue(): Uint8Array {
    const rng = this.rng;
    switch (rng.int(6)) {
      case 0: {
        // arrays nested deeper than any recursive decoder's stack
        const depth = rng.pick([64, 1_000, 20_000, 200_000]);
        const out = new Uint8Array(depth + 1).fill(0x91);
        out[depth] = 0xc0;
        return out;
      }
      case 1: {
        const depth = rng.pick([1_000, 50_000]);
        // maps nested: {"a": {"a": ...}}
        const unit = [0x81, 0xa1, 0x61];
        const out = new Uint8Array(depth * unit.length + 1);
        for (let i = 0; i < depth; i++) out.set(unit, i * unit.length);
        out[depth * unit.length] = 0xc0;
        return out;
      }
      case 2: // an extension type (msgpackr records, timestamps, anything)
        return rng.pick([
          Uint8Array.of(0xd4, 0x72, 0x00),
          Uint8Array.of(0xd6, 0xff, 0, 0, 0, 1),
          Uint8Array.of(0xc7, 0x01, 0x01, 0x00),
          Uint8Array.of(0xd4, 0x00, 0x00),
          Uint8Array.of(0xc1),
        ]);
      case 3: // a header claiming a huge length with little behind it
        return rng.pick([
          Uint8Array.of(0xdd, 0xff, 0xff, 0xff, 0xff),
          Uint8Array.of(0xdf, 0x7f, 0xff, 0xff, 0xff),
          Uint8Array.of(0xdb, 0xff, 0xff, 0xff, 0xf0, 0x61),
          Uint8Array.of(0xc6, 0x7f, 0xff, 0xff, 0xff),
          Uint8Array.of(0xdc, 0xff, 0xff),
        ]);
      case 4: // integers at the edges of every width, and floats that are not integers
        return rng.pick([
          Uint8Array.of(0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
          Uint8Array.of(0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0),
          Uint8Array.of(0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0),
          Uint8Array.of(0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0),
          Uint8Array.of(0xca, 0x3f, 0xc0, 0, 0),
        ]);
      default: // a long string
        return pack('\u0000'.repeat(rng.pick([300, 70_000])));
    }
  }

  /** A value of a random type, often at a boundary. */
  hostileValue(): Value {
    const rng = this.rng;
    switch (rng.int(10)) {
      case 0:
        return rng.pick([null, true, false, undefined]);
      case 1:
        return rng.pick([0, -1, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 52, 2 ** 52 + 1, 2 ** 53 - 1, 2 ** 53, -(2 ** 53), 2 ** 64]);
      case 2:
        return rng.pick([0.5, -0.0, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 1e308]);
      case 3:
        return rng.pick(['', 'x', 'x'.repeat(257), 'x'.repeat(70_000), '\u0000', '\ud800', 'upsert', 'delete', 'update', 'hello']);
      case 4:
        return rng.pick(this.ids.uuids);
      case 5:
        return rng.bytes(rng.pick([0, 1, 32, 33, 1000]));
      case 6:
        return rng.pick([[], [null], [1, 2, 3], new Array(300).fill(0)]);
      case 7:
        return rng.pick([{}, { a: 1 }, { __proto__: null, constructor: 1 } as unknown, { [rng.pick(this.ids.uuids)]: 2 ** 52 }]);
      case 8:
        return Object.fromEntries(Array.from({ length: rng.pick([1, 1025, 3000]) }, (_, i) => [uuidLike(i), i]));
      default: {
        const deep: Value[] = [];
        let at = deep;
        for (let i = 0; i < 100; i++) {
          const next: Value[] = [];
          at.push(next);
          at = next;
        }
        return deep;
      }
    }
  }

  /** A frame made from nothing: random bytes, or a lone msgpack header. */
  private fromNothing(): Uint8Array {
    const rng = this.rng;
    if (rng.chance(0.5)) return rng.bytes(rng.int(64));
    return concatBytes([Uint8Array.of(rng.pick([0x80, 0x8f, 0xde, 0xdf, 0x90, 0xdc, 0xdd, 0xc0, 0xc1, 0xd4])), rng.bytes(rng.int(8))]);
  }
}

/** Message kinds of the protocol (for "another kind than the frame was"). */
const KINDS = [
  'hello', 'changes', 'state', 'ack', 'heartbeat', 'pull-shared', 'shared-page', 'forked', 'heads', 'owned-digests', 'pull-state', 'state-page',
  'pull-snapshot', 'snapshot-page', 'busy', 'join', 'welcome', 'error',
];

const INTERESTING_BYTES = [0x00, 0x7f, 0x80, 0xff, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xd4, 0xd9, 0xdc, 0xdd, 0xde, 0xdf, 0x90, 0x9f, 0x8f, 0xa0, 0xbf];

type Path = Array<string | number>;

/** Paths of every value in the message (objects' keys, arrays' indices), the message itself excepted. */
function valuePaths(root: Value): Path[] {
  const out: Path[] = [];
  const walk = (value: Value, path: Path) => {
    if (path.length > 0) out.push(path);
    if (path.length > 6) return;
    if (Array.isArray(value)) value.forEach((v, i) => walk(v, [...path, i]));
    else if (value !== null && typeof value === 'object' && !(value instanceof Uint8Array)) {
      for (const [k, v] of Object.entries(value)) walk(v, [...path, k]);
    }
  };
  walk(root, []);
  return out.length > 0 ? out : [['t']];
}

function replaceAt(root: Value, path: Path, value: Value): Value {
  if (path.length === 0) return value;
  const [head, ...rest] = path;
  if (Array.isArray(root)) {
    const copy = [...root];
    copy[head as number] = replaceAt(copy[head as number], rest, value);
    return copy;
  }
  const copy = { ...(root as Record<string, Value>) };
  copy[head as string] = replaceAt(copy[head as string], rest, value);
  return copy;
}

/** The chunk's entries renumbered from `first` (undefined when they do not decode). */
function renumbered(origin: string, first: number, last: number, entries: Uint8Array, newFirst: number): Value {
  try {
    const decoded = decodeChunk({ origin, firstSeq: first, lastSeq: last, entries }).map((d, i) => ({ ...d.entry, seq: newFirst + i }));
    const [chunk] = encodeChunks(decoded);
    return chunk && [chunk.origin, chunk.firstSeq, chunk.lastSeq, chunk.entries];
  } catch {
    return undefined;
  }
}

function uuidLike(i: number): string {
  return `${i.toString(16).padStart(8, '0')}-0000-4000-8000-000000000000`;
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.byteLength <= haystack.byteLength; i++) {
    for (let j = 0; j < needle.byteLength; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
