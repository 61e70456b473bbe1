import type { VersionVector } from '../src/peer-log/types.js';
import { decodeMessage, encodeMessage } from '../src/protocol/codec.js';
import type { Message } from '../src/protocol/messages.js';
import type { SeededRandom } from '../src/sim/prng.js';

/**
 * A member's false claims, as issue 10 met them: positions and coverage that look valid but that
 * the sender cannot back (a vector ahead of what it holds, a pruned range or snapshot vector
 * reaching past its log, coverage of owned rows beyond the rows it serves, an ack of changes it
 * never received, the receiver's own writes claimed). The liar's honest frame is rewritten on
 * the way out; what the receiver does with it must never damage it, and once the lies stop the
 * liar itself must converge like any member.
 */

export interface FalseClaim {
  frame: Uint8Array;
  /** What was claimed, for the trace: the field and what it now says. */
  claim: string;
}

/** Rewrites one frame with a false claim, or returns undefined when its kind carries no claim. */
export function withFalseClaim(
  frame: Uint8Array,
  receiverDevice: string | undefined,
  kinds: ReadonlySet<ClaimKind>,
  random: SeededRandom,
): FalseClaim | undefined {
  let message: Message;
  try {
    message = decodeMessage(frame);
  } catch {
    return undefined;
  }
  const lie = falseClaim(message, receiverDevice, kinds, random);
  return lie && { frame: encodeMessage(lie), claim: describeClaim(message, lie) };
}

/** The claim `lie` makes that `honest` did not, in short. */
function describeClaim(honest: Message, lie: Message): string {
  const changed = Object.keys(lie).filter((key) => JSON.stringify((honest as Record<string, unknown>)[key]) !== JSON.stringify((lie as Record<string, unknown>)[key]));
  return changed.map((key) => `${key}=${JSON.stringify((lie as Record<string, unknown>)[key])}`).join(' ');
}

/** The kinds of false claim a liar makes (a run's plan picks some). */
export const CLAIM_KINDS = ['shared-vector', 'owned-vector', 'ack', 'owned-coverage', 'pruned', 'snapshot-vector'] as const;
export type ClaimKind = (typeof CLAIM_KINDS)[number];

function falseClaim(message: Message, receiverDevice: string | undefined, kinds: ReadonlySet<ClaimKind>, random: SeededRandom): Message | undefined {
  const ahead = 1 + random.int(random.chance(0.5) ? 5 : 5_000);
  switch (message.t) {
    case 'hello':
    case 'heartbeat': {
      const vectors = (['shared-vector', 'owned-vector'] as const).filter((k) => kinds.has(k));
      if (vectors.length === 0) return undefined;
      return random.pick(vectors) === 'shared-vector'
        ? { ...message, shared: inflated(message.shared, receiverDevice, ahead, random) }
        : { ...message, owned: inflated(message.owned, receiverDevice, ahead, random) };
    }
    case 'ack':
      return kinds.has('ack') ? { ...message, shared: inflated(message.shared, undefined, ahead, random) } : undefined;
    case 'state-page':
    case 'state':
      return kinds.has('owned-coverage') ? { ...message, to: message.to + ahead } : undefined;
    case 'shared-page': {
      if (!kinds.has('pruned')) return undefined;
      const origin = pickOrigin(message.pruned.map(([o]) => o), receiverDevice, random);
      if (!origin) return undefined;
      const held = message.pruned.find(([o]) => o === origin);
      const from = held ? held[1] : 0;
      const to = (held ? held[2] : 0) + ahead;
      return { ...message, pruned: [...message.pruned.filter(([o]) => o !== origin), [origin, from, to]] };
    }
    case 'snapshot-page':
      return kinds.has('snapshot-vector') ? { ...message, vector: inflated(message.vector, receiverDevice, ahead, random) } : undefined;
    default:
      return undefined;
  }
}

function pickOrigin(origins: readonly string[], receiverDevice: string | undefined, random: SeededRandom): string | undefined {
  if (receiverDevice !== undefined && (origins.length === 0 || random.chance(0.3))) return receiverDevice;
  return origins.length === 0 ? undefined : random.pick(origins);
}

/** `vector` with one origin (one it names, or the receiver's own device) moved `ahead`. */
function inflated(vector: VersionVector, receiverDevice: string | undefined, ahead: number, random: SeededRandom): VersionVector {
  const origin = pickOrigin(Object.keys(vector).sort(), receiverDevice, random);
  if (!origin) return vector;
  return { ...vector, [origin]: (vector[origin] ?? 0) + ahead };
}
