import type { SyncError } from '../errors.js';
import type { FrameStream } from '../protocol/transport.js';
import type { Scheduler } from '../runtime/runtime.js';
import { encodeMessage } from '../protocol/codec.js';
import { errorMessage, isPeerReported } from './wire-errors.js';

/** How long a peer gets to take the frame that tells it why its stream is reset. */
const ERROR_FRAME_GRACE_MS = 2_000;

/**
 * Tells the peer why (unless it told us), then resets the stream. Sends wait for the peer to
 * read: one that stopped reading must not keep the stream (a slot of its connection, and its
 * buffers) open by never taking the error frame, so the reset follows after a grace at most.
 */
export async function refuseStream(
  stream: FrameStream,
  library: string,
  error: SyncError,
  scheduler: Scheduler,
): Promise<void> {
  if (!isPeerReported(error)) {
    const frame = encodeMessage(errorMessage(library, error, null));
    let cancel: (() => void) | undefined;
    const told = stream.send(frame).catch(() => undefined);
    await Promise.race([told, new Promise<void>((resolve) => (cancel = scheduler.setTimeout(resolve, ERROR_FRAME_GRACE_MS)))]);
    cancel?.();
  }
  stream.abort(error);
}
