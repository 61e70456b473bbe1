import { z } from 'zod';
import { isDeviceName, MAX_ADDR_LENGTH, MAX_DEVICE_NAME_LENGTH, MAX_MEMBER_ADDRS, MAX_PEER_ID_LENGTH } from '../models/system.js';
import { MAX_RECORD_BYTES } from '../models/values.js';
import { MAX_CHUNK_BYTES } from '../peer-log/chunk.js';
import { RUN_ID_BYTES, SIGNATURE_BYTES } from '../peer-log/signed-runs.js';
import { MAX_CERT_BYTES } from '../models/signed-owned-rows.js';
import { MAX_VECTOR_ORIGINS } from '../peer-log/types.js';

/**
 * The sync wire protocol: every message, with its runtime schema. docs/protocol.md is the
 * prose spec of the same shapes; a message is used only after `decodeMessage` has checked it.
 */

/** libp2p protocol id. The major version is also in `hello`, so a mismatch gets a clear error. */
export const PROTOCOL_ID = '/leaderless-sync/1.0.0';
export const PROTOCOL_VERSION = [3, 2] as const;
/** The first minor version of the current major that sends `owned-digests` (3.0 refuses a message it does not know). */
export const OWNED_DIGESTS_MINOR = 1;
/** The first minor version whose snapshots prove their vectors (`proofs` of `snapshot-page`). */
export const SNAPSHOT_PROOFS_MINOR = 2;

/** Hard limit of one frame; a larger frame resets the stream. Pages stay well below it. */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;
/** Upper bounds a server applies to page requests (and a sender to its pushes), whatever is asked. */
export const MAX_PAGE_RECORDS = 5_000;
export const MAX_PAGE_BYTES = 1024 * 1024;

/** Entries of one version vector and of a `pruned` list: what a library holds at most. */
export { MAX_VECTOR_ORIGINS };
/**
 * Largest first frame of a stream (`hello`, `join`, or the `hello` / `welcome` / `error`
 * answering them), checked before the peer is known to be a member: a `hello` with two full
 * vectors takes about 96 KB, a `join` about 17 KB. Until it is accepted, a peer can make this
 * node hold at most this much per stream, instead of a whole `MAX_FRAME_BYTES`.
 */
export const MAX_HANDSHAKE_FRAME_BYTES = 128 * 1024;
const MAX_BATCH_RECORDS = MAX_PAGE_RECORDS;

/**
 * Bytes a page or batch message holds at most besides its records: a vector or `pruned` list at
 * its maximum (`MAX_VECTOR_ORIGINS` origins of 46 and 56 bytes), a snapshot position of two
 * 256-character ids, a snapshot's proofs (`MAX_VECTOR_ORIGINS` of at most 250 bytes) and the
 * other fields; rounded up.
 */
export const MAX_PAGE_ENVELOPE_BYTES = 384 * 1024;
/**
 * Bytes one record's tuple takes at most: its values at the record limit, plus id (256 UTF-16
 * units), model name, owner, clocks and up to `MAX_FIELDS` field clocks; rounded up.
 */
export const MAX_RECORD_TUPLE_BYTES = MAX_RECORD_BYTES + 64 * 1024;

/**
 * Bytes of one run's entries at most: a run of several entries is bounded by `MAX_CHUNK_BYTES`,
 * one of a single entry by that entry's tuple, so a page always has room for its first run.
 */
export const MAX_RUN_BYTES = Math.max(MAX_CHUNK_BYTES, MAX_RECORD_TUPLE_BYTES);

// Readers count each record (or run) by an upper bound of its encoding and stop before
// `MAX_PAGE_BYTES`, except that a page always carries its first record or run, whatever its
// size: so a page holds records worth at most `MAX_PAGE_BYTES`, or one alone. Either fits one frame.
if (Math.max(MAX_PAGE_BYTES, 2 * MAX_RUN_BYTES) + MAX_PAGE_ENVELOPE_BYTES > MAX_FRAME_BYTES) {
  throw new Error('internal: a page of records, one run of the largest size, or a fork evidence pair must fit one frame');
}

/**
 * Largest log position (seq) or owned version a message may carry: 2^52, far beyond any real
 * count (a million writes a second for 142 years), with room below 2^53 - 1 so that nothing
 * computed from a position (the next seq, a run's length) leaves the safe-integer range.
 */
export const MAX_POSITION = 2 ** 52;

const uuid = z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
/** A log position (seq) or an owned version: every vector entry, seq, version and coverage bound. */
const position = z.number().int().min(0).max(MAX_POSITION);
const shortText = z.string().max(256);
/** A PeerId string, as member rows hold them (`MAX_PEER_ID_LENGTH`). */
const peerId = z.string().min(1).max(MAX_PEER_ID_LENGTH);
const fieldValues = z.record(z.string().max(64), z.unknown());

/** `{origin device: last seq}` (shared log) or `{owner device: version}` (device-owned rows). */
const vector = z
  .record(uuid, position)
  .refine((v) => Object.keys(v).length <= MAX_VECTOR_ORIGINS, 'too many origins in a vector');

const bytes = (max: number) =>
  z.custom<Uint8Array>((b) => b instanceof Uint8Array && b.byteLength <= max, `must be at most ${max} bytes`);

/**
 * A signed run of one origin's log entries: origin, first seq, last seq, the entries in the
 * log's chunk encoding (docs/protocol.md, "Log chunk"), the id of the origin's run before it and
 * the author's signature and PeerId (docs/protocol.md, "Signed runs"), so stored runs go out as
 * they are.
 */
const exactBytes = (length: number) =>
  z.custom<Uint8Array>((b) => b instanceof Uint8Array && b.byteLength === length, `must be ${length} bytes`);
const chunkTuple = z
  .tuple([uuid, position.min(1), position.min(1), bytes(MAX_RUN_BYTES), exactBytes(RUN_ID_BYTES), exactBytes(SIGNATURE_BYTES), peerId])
  .refine(([, first, last]) => last >= first && last - first < MAX_BATCH_RECORDS, 'lastSeq must be firstSeq or after');
export type ChunkTuple = z.infer<typeof chunkTuple>;
/**
 * A signed run without its entries: origin, first seq, last seq, the id of the run before it,
 * the SHA-256 of its entries, the author's signature and PeerId (docs/protocol.md, "Snapshot proofs").
 */
const proofTuple = z
  .tuple([uuid, position.min(1), position.min(1), exactBytes(RUN_ID_BYTES), exactBytes(RUN_ID_BYTES), exactBytes(SIGNATURE_BYTES), peerId])
  .refine(([, first, last]) => last >= first, 'lastSeq must be firstSeq or after');
const chunkList = z
  .array(chunkTuple)
  .max(MAX_BATCH_RECORDS)
  .refine(
    (chunks) => chunks.reduce((n, [, first, last]) => n + last - first + 1, 0) <= MAX_BATCH_RECORDS,
    `at most ${MAX_BATCH_RECORDS} entries`,
  );

/**
 * A device-owned row as a tuple: model, id, owner, version, hlc, deleted, values, and the owner's
 * certificate of the write (docs/protocol.md, "Signed owned rows").
 */
const ownedRowTuple = z.tuple([
  shortText,
  shortText,
  uuid,
  position.min(1),
  shortText,
  z.boolean(),
  fieldValues.nullable(),
  bytes(MAX_CERT_BYTES),
]);
export type OwnedRowTuple = z.infer<typeof ownedRowTuple>;

/**
 * A shared row as it stands, with its conflict metadata: model, id, hlc (the row's newest
 * clock), deleted, values, and for field rules the field clocks, upsert clock and delete clock.
 */
const snapshotRowTuple = z.tuple([
  shortText,
  shortText,
  shortText,
  z.boolean(),
  fieldValues,
  z.record(z.string().max(64), shortText).nullable(),
  shortText.nullable(),
  shortText.nullable(),
]);
export type SnapshotRowTuple = z.infer<typeof snapshotRowTuple>;
/** Where a snapshot read stands: the last model and id returned. */
const snapshotPosition = z.tuple([shortText, shortText]);
export type SnapshotPosition = z.infer<typeof snapshotPosition>;

const version = z.tuple([count, count]);
const base = { library: uuid };
const request = { ...base, req: count, maxRecords: count.min(1), maxBytes: count.min(1) };

/**
 * What the sender holds of the receiver's own writers: origin, last seq held, and the content
 * fingerprint of the entry there (docs/protocol.md, `hello`). Optional: 1.0 peers send none.
 */
const hello = z.object({
  t: z.literal('hello'),
  v: version,
  ...base,
  device: uuid,
  shared: vector,
  owned: vector,
});
const changes = z.object({ t: z.literal('changes'), ...base, batch: count, chunks: chunkList });
/**
 * Coverage `(from, to]` of an owner's versions, and the PeerId whose key signed the owner's rows
 * (null when the sender holds none of them).
 */
const coverage = { owner: uuid, from: position, to: position, author: peerId.nullable() };
const coverageInOrder = (c: { from: number; to: number }) => c.from <= c.to;
const state = z
  .object({ t: z.literal('state'), ...base, batch: count, ...coverage, rows: z.array(ownedRowTuple).max(MAX_BATCH_RECORDS) })
  .refine(coverageInOrder, 'to must not be below from');
const ack = z.object({ t: z.literal('ack'), ...base, batch: count.nullable(), shared: vector, owned: vector });
const heartbeat = z.object({ t: z.literal('heartbeat'), ...base, shared: vector, owned: vector });
const pullShared = z.object({ t: z.literal('pull-shared'), ...request, after: vector });
const sharedPage = z.object({
  t: z.literal('shared-page'),
  ...base,
  req: count,
  chunks: chunkList,
  hasMore: z.boolean(),
  pruned: z.array(z.tuple([uuid, position, position])).max(MAX_VECTOR_ORIGINS),
});
/**
 * Fork evidence (docs/protocol.md, "Fork evidence"): signed runs of a forked origin the sender
 * holds from the fork on. `evidence`, two runs of the origin's author for one place, proves the
 * fork to a receiver that does not know of it; the first message of an origin on a session
 * carries it, and no runs, so each frame stays within bounds.
 */
const forked = z.object({
  t: z.literal('forked'),
  ...base,
  origin: uuid,
  evidence: z.tuple([chunkTuple, chunkTuple]).nullable(),
  runs: chunkList,
});
/**
 * What the sender holds of each origin's log: the position and the id of the run ending there
 * (docs/protocol.md, "Fork evidence"), so a receiver holding another run there shows it the fork.
 */
const heads = z.object({
  t: z.literal('heads'),
  ...base,
  heads: z
    .array(z.tuple([uuid, position.min(1), exactBytes(RUN_ID_BYTES)]))
    .max(MAX_VECTOR_ORIGINS)
    .refine((heads) => new Set(heads.map(([origin]) => origin)).size === heads.length, 'an origin is named twice'),
});
/**
 * Summaries of owners' device-owned rows the sender serves, one per owner and model, each at
 * the version the sender holds that owner through (docs/protocol.md, `owned-digests`).
 */
export const MAX_OWNED_DIGESTS = MAX_VECTOR_ORIGINS;
/** Bytes of one summary: a SHA-256 prefix (a member cannot choose a row set to match another's). */
export const OWNED_DIGEST_BYTES = 16;
const ownedDigests = z.object({
  t: z.literal('owned-digests'),
  ...base,
  digests: z
    .array(z.tuple([uuid, position.min(1), shortText, exactBytes(OWNED_DIGEST_BYTES)]))
    .max(MAX_OWNED_DIGESTS)
    .refine((digests) => new Set(digests.map(([owner, , model]) => `${owner} ${model}`)).size === digests.length, 'an owner and model are named twice'),
});
const pullState = z.object({ t: z.literal('pull-state'), ...request, owner: uuid, after: position });
const statePage = z
  .object({
    t: z.literal('state-page'),
    ...base,
    req: count,
    ...coverage,
    rows: z.array(ownedRowTuple).max(MAX_BATCH_RECORDS),
    hasMore: z.boolean(),
  })
  .refine(coverageInOrder, 'to must not be below from');
const pullSnapshot = z.object({ t: z.literal('pull-snapshot'), ...request, after: snapshotPosition.nullable() });
const snapshotPage = z.object({
  t: z.literal('snapshot-page'),
  ...base,
  req: count,
  vector,
  rows: z.array(snapshotRowTuple).max(MAX_BATCH_RECORDS),
  next: snapshotPosition.nullable(),
  total: count.nullable(),
  // Sent from 3.2 on, on the first page; a 3.1 partner leaves it out.
  proofs: z
    .array(proofTuple)
    .max(MAX_VECTOR_ORIGINS)
    .refine((proofs) => new Set(proofs.map(([origin]) => origin)).size === proofs.length, 'each origin once')
    .optional(),
});
const busy = z.object({ t: z.literal('busy'), ...base, req: count, retryAfterMs: count.max(3_600_000) });
const join = z.object({
  t: z.literal('join'),
  v: version,
  ...base,
  invite: uuid,
  proof: bytes(32).refine((b) => b.byteLength === 32, 'proof must be 32 bytes'),
  device: uuid,
  addrs: z.array(z.string().max(MAX_ADDR_LENGTH)).max(MAX_MEMBER_ADDRS),
  /** The joiner's device name (1.2; a 1.1 joiner sends none and its member row has no name). */
  name: z.string().refine(isDeviceName, `a device name is a non-blank string of at most ${MAX_DEVICE_NAME_LENGTH} characters`).optional(),
});
const welcome = z.object({ t: z.literal('welcome'), ...base, name: z.string().max(200), device: uuid });
const error = z.object({
  t: z.literal('error'),
  ...base,
  code: z.string().max(64),
  message: z.string().max(2000),
  req: count.nullable(),
  /** `REMOVED` only (1.2): the removal the refusing member holds. */
  removal: z
    .object({ kind: z.enum(['removed', 'left']), by: uuid, at: z.number().int().min(0).max(2 ** 48) })
    .optional(),
});

export const messageSchema = z.discriminatedUnion('t', [
  hello,
  changes,
  state,
  ack,
  heartbeat,
  pullShared,
  sharedPage,
  forked,
  heads,
  ownedDigests,
  pullState,
  statePage,
  pullSnapshot,
  snapshotPage,
  busy,
  join,
  welcome,
  error,
]);

export type Message = z.infer<typeof messageSchema>;
export type MessageOf<T extends Message['t']> = Extract<Message, { t: T }>;
export type Hello = MessageOf<'hello'>;
