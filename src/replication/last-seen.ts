/** Where last-seen times are kept (the library engine's store). */
export interface LastSeenStorage {
  read(): Promise<Map<string, number>>;
  write(times: ReadonlyMap<string, number>): Promise<void>;
}

/** How often, at most, the last-seen times of live sessions are written while they run. */
export const LAST_SEEN_SAVE_MS = 5_000;

/**
 * When each partner device was last heard from (`lib.members()`). Device-local, not synced:
 * it says what this device heard, which no other device can know. Sessions note every frame in
 * memory (`Session.lastSeenAt`); this keeps the newest time per device and writes the changed
 * ones when a session closes, on stop and every `LAST_SEEN_SAVE_MS`, never per frame.
 */
export class LastSeen {
  private readonly unsaved = new Set<string>();

  private constructor(
    private readonly storage: LastSeenStorage,
    private readonly heard: Map<string, number>,
  ) {}

  static async open(storage: LastSeenStorage): Promise<LastSeen> {
    return new LastSeen(storage, await storage.read());
  }

  /** Records that `device` was heard at `at` (only a newer time counts). */
  note(device: string, at: number): void {
    if (at <= (this.heard.get(device) ?? -Infinity)) return;
    this.heard.set(device, at);
    this.unsaved.add(device);
  }

  get(device: string): number | null {
    return this.heard.get(device) ?? null;
  }

  /** Writes the times that changed since the last save, in one statement. */
  async save(): Promise<void> {
    if (this.unsaved.size === 0) return;
    const times = new Map([...this.unsaved].map((device) => [device, this.heard.get(device)!]));
    this.unsaved.clear();
    try {
      await this.storage.write(times);
    } catch (err) {
      // Not written: the next save tries again.
      for (const device of times.keys()) this.unsaved.add(device);
      throw err;
    }
  }
}
