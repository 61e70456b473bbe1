import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { createSyncNode, type SyncNode } from '../src/index.js';
import { createSyncNodeSigningWith, type SyncNodeOptions } from '../src/node/sync-node.js';
import type { Signatures } from '../src/runtime/signatures.js';
import { median, report } from './report.js';

/**
 * The baseline of the signing benchmarks (issue 13, cost), and nothing else: `Signatures` that
 * do no Ed25519 and no hashing. `sha256` returns 32 zero bytes, `sign` 64 zero bytes and
 * `verify` accepts every signature, so every run id is zero and any run "verifies": it exists
 * only so that the benches can measure a node exactly like `createSyncNode`'s but for the cost
 * of signing and verifying. Never use it outside bench/: a node on it checks nothing.
 */
export function unsignedSignatures(key: PrivateKey): Signatures {
  return {
    // Runs still name their author: a receiver places them by it, signature or not.
    peer: peerIdFromPrivateKey(key).toString(),
    sha256: () => new Uint8Array(32),
    sign: () => new Uint8Array(64),
    signOffThread: () => Promise.resolve(new Uint8Array(64)),
    verify: () => true,
  };
}

/** Whether a bench node signs its runs (`createSyncNode`) or is the unsigned baseline. */
export type Signing = 'signed' | 'unsigned';
export const SIGNINGS: readonly Signing[] = ['signed', 'unsigned'];

export function isSigning(value: unknown): value is Signing {
  return value === 'signed' || value === 'unsigned';
}

/** `createSyncNode`, or the same node on the unsigned baseline. */
export function createBenchNode(signing: Signing, options: SyncNodeOptions): Promise<SyncNode> {
  return signing === 'signed' ? createSyncNode(options) : createSyncNodeSigningWith(options, unsignedSignatures);
}

/**
 * The order of the two measurements in round `round`: signed first in even rounds, unsigned
 * first in odd ones, so that neither always runs second (warmer caches, a hotter CPU).
 */
export function signingOrder(round: number): readonly Signing[] {
  return round % 2 === 0 ? SIGNINGS : [...SIGNINGS].reverse();
}

/**
 * Reports one signing figure: the signed value, the unsigned value (medians over the rounds) and
 * the ratio signed / unsigned with its target. The ratio is the median of the rounds' own ratios:
 * each round measures both back to back, so a slow stretch of the machine slows both.
 */
export function reportSigningCost(
  name: string,
  unit: string,
  signed: readonly number[],
  unsigned: readonly number[],
  target: number | undefined,
  extra: Record<string, unknown> = {},
): void {
  if (signed.length !== unsigned.length || signed.length === 0) throw new Error(`signing figure ${name}: ${signed.length} signed, ${unsigned.length} unsigned rounds`);
  const slug = unit.replace(/\//g, '_per_');
  const ratios = signed.map((s, i) => s / unsigned[i]!);
  const rounds = signed.length;
  report(`signing.${name}.signed_${slug}`, median([...signed]), unit, { ...extra, rounds });
  report(`signing.${name}.unsigned_${slug}`, median([...unsigned]), unit, { ...extra, rounds, note: 'baseline: no Ed25519, no hashing (bench/unsigned.ts)' });
  report(`signing.${name}_vs_unsigned`, median(ratios), 'ratio', {
    ...extra,
    ...(target !== undefined ? { target } : {}),
    rounds,
    ...(rounds > 1 ? { min: Number(Math.min(...ratios).toFixed(3)), max: Number(Math.max(...ratios).toFixed(3)) } : {}),
  });
}
