import type { VersionVector } from '../peer-log/types.js';

/** Whether `mine` lacks anything `theirs` has. */
export function isBehind(mine: VersionVector, theirs: VersionVector): boolean {
  for (const [origin, seq] of Object.entries(theirs)) if (seq > (mine[origin] ?? 0)) return true;
  return false;
}

/** Raises `target` to `source` origin by origin; returns whether anything rose. */
export function mergeMax(target: VersionVector, source: VersionVector): boolean {
  let rose = false;
  for (const [origin, seq] of Object.entries(source)) {
    if (seq > (target[origin] ?? 0)) {
      target[origin] = seq;
      rose = true;
    }
  }
  return rose;
}
