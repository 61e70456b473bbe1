import type { VersionVector } from '../peer-log/types.js';

/** Whether `mine` lacks anything `theirs` has. */
export function isBehind(mine: VersionVector, theirs: VersionVector): boolean {
  for (const [origin, seq] of Object.entries(theirs)) if (seq > (mine[origin] ?? 0)) return true;
  return false;
}

/** The entries of `vector` whose origin `keep` accepts. */
export function filterOrigins(vector: VersionVector, keep: (origin: string) => boolean): VersionVector {
  const kept: VersionVector = {};
  for (const [origin, seq] of Object.entries(vector)) if (keep(origin)) kept[origin] = seq;
  return kept;
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
