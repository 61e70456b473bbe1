import { ProtocolError } from '../errors.js';
import { pack, unpack } from '../util/msgpack.js';
import { MAX_FRAME_BYTES, type Message, messageSchema } from './messages.js';

export function encodeMessage(message: Message): Uint8Array {
  const frame = pack(message);
  if (frame.byteLength > MAX_FRAME_BYTES) {
    throw new ProtocolError(`internal: a ${message.t} message of ${frame.byteLength} bytes exceeds the frame limit`);
  }
  return frame;
}

/** Decodes and validates one frame; anything unexpected is a `ProtocolError`. */
export function decodeMessage(frame: Uint8Array): Message {
  let raw: unknown;
  try {
    raw = unpack(frame);
  } catch (err) {
    throw new ProtocolError(`frame is not valid msgpack: ${(err as Error).message}`);
  }
  const parsed = messageSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0 ? ` at ${issue.path.join('.')}` : '';
    throw new ProtocolError(`invalid message${where}: ${issue?.message ?? 'unknown shape'}`);
  }
  return parsed.data;
}
