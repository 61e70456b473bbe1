/** Rows a batch of remote changes made live, changed or deleted (for sync history). */
export interface RemoteCounts {
  added: number;
  updated: number;
  deleted: number;
}

/** Tallies a row change as added (now live, was absent or deleted), deleted or updated. */
export function countChange(counts: RemoteCounts, before: { deleted: boolean } | undefined, after: { deleted: boolean }): void {
  if (after.deleted) {
    if (before && !before.deleted) counts.deleted += 1;
  } else if (!before || before.deleted) {
    counts.added += 1;
  } else {
    counts.updated += 1;
  }
}
