import { z } from 'zod';

/**
 * The sync wire protocol: every message, with its runtime schema. docs/protocol.md is the
 * prose spec of the same shapes; a message is used only after `decodeMessage` has checked it.
 */

/** libp2p protocol id. The major version is also in `hello`, so a mismatch gets a clear error. */
export const PROTOCOL_ID = '/leaderless-sync/1.0.0';
export const PROTOCOL_VERSION = [1, 1] as const;

/** Hard limit of one frame; a larger frame resets the stream. Pages stay well below it. */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;
/** Upper bounds a server applies to page requests, whatever the requester asks for. */
export const MAX_PAGE_RECORDS = 5_000;
export const MAX_PAGE_BYTES = 1024 * 1024;

const MAX_VECTOR_ORIGINS = 10_000;
const MAX_BATCH_RECORDS = MAX_PAGE_RECORDS;

const uuid = z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const shortText = z.string().max(256);
const fieldValues = z.record(z.string().max(64), z.unknown());

/** `{origin device: last seq}` (shared log) or `{owner device: version}` (device-owned rows). */
const vector = z
  .record(uuid, count)
  .refine((v) => Object.keys(v).length <= MAX_VECTOR_ORIGINS, 'too many origins in a vector');

const bytes = (max: number) =>
  z.custom<Uint8Array>((b) => b instanceof Uint8Array && b.byteLength <= max, `must be at most ${max} bytes`);

/**
 * A run of one origin's log entries: origin, first seq, last seq, and the entries in the log's
 * chunk encoding (docs/protocol.md, "Log chunk"), so stored chunks go out as they are.
 */
const chunkTuple = z
  .tuple([uuid, count.min(1), count.min(1), bytes(MAX_FRAME_BYTES)])
  .refine(([, first, last]) => last >= first && last - first < MAX_BATCH_RECORDS, 'lastSeq must be firstSeq or after');
export type ChunkTuple = z.infer<typeof chunkTuple>;
const chunkList = z
  .array(chunkTuple)
  .max(MAX_BATCH_RECORDS)
  .refine(
    (chunks) => chunks.reduce((n, [, first, last]) => n + last - first + 1, 0) <= MAX_BATCH_RECORDS,
    `at most ${MAX_BATCH_RECORDS} entries`,
  );

/** A device-owned row as a tuple: model, id, owner, version, hlc, deleted, values. */
const ownedRowTuple = z.tuple([shortText, shortText, uuid, count.min(1), shortText, z.boolean(), fieldValues.nullable()]);
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
const writerTips = z.array(z.tuple([uuid, count.min(1), z.string().regex(/^[0-9a-f]{32}$/)])).max(MAX_VECTOR_ORIGINS);
const hello = z.object({
  t: z.literal('hello'),
  v: version,
  ...base,
  device: uuid,
  shared: vector,
  owned: vector,
  tips: writerTips.optional(),
});
const changes = z.object({ t: z.literal('changes'), ...base, batch: count, chunks: chunkList });
const state = z.object({
  t: z.literal('state'),
  ...base,
  batch: count,
  owner: uuid,
  from: count,
  to: count,
  rows: z.array(ownedRowTuple).max(MAX_BATCH_RECORDS),
});
const ack = z.object({ t: z.literal('ack'), ...base, batch: count.nullable(), shared: vector, owned: vector });
const heartbeat = z.object({ t: z.literal('heartbeat'), ...base, shared: vector, owned: vector });
const pullShared = z.object({ t: z.literal('pull-shared'), ...request, after: vector });
const sharedPage = z.object({
  t: z.literal('shared-page'),
  ...base,
  req: count,
  chunks: chunkList,
  hasMore: z.boolean(),
  pruned: z.array(z.tuple([uuid, count, count])).max(MAX_VECTOR_ORIGINS),
});
const pullState = z.object({ t: z.literal('pull-state'), ...request, owner: uuid, after: count });
const statePage = z.object({
  t: z.literal('state-page'),
  ...base,
  req: count,
  owner: uuid,
  from: count,
  to: count,
  rows: z.array(ownedRowTuple).max(MAX_BATCH_RECORDS),
  hasMore: z.boolean(),
});
const pullSnapshot = z.object({ t: z.literal('pull-snapshot'), ...request, after: snapshotPosition.nullable() });
const snapshotPage = z.object({
  t: z.literal('snapshot-page'),
  ...base,
  req: count,
  vector,
  rows: z.array(snapshotRowTuple).max(MAX_BATCH_RECORDS),
  next: snapshotPosition.nullable(),
  total: count.nullable(),
});
const busy = z.object({ t: z.literal('busy'), ...base, req: count, retryAfterMs: count.max(3_600_000) });
const join = z.object({
  t: z.literal('join'),
  v: version,
  ...base,
  invite: uuid,
  proof: bytes(32).refine((b) => b.byteLength === 32, 'proof must be 32 bytes'),
  device: uuid,
  addrs: z.array(z.string().max(512)).max(32),
});
const welcome = z.object({ t: z.literal('welcome'), ...base, name: z.string().max(200), device: uuid });
const error = z.object({
  t: z.literal('error'),
  ...base,
  code: z.string().max(64),
  message: z.string().max(2000),
  req: count.nullable(),
});

export const messageSchema = z.discriminatedUnion('t', [
  hello,
  changes,
  state,
  ack,
  heartbeat,
  pullShared,
  sharedPage,
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
