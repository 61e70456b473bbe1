/**
 * Wraps an async round so that triggers coalesce: a trigger while a round runs asks for one
 * more round after it, and rounds never overlap. A failing round is handed to `onError`.
 */
export function coalescing(round: () => Promise<void>, onError: (err: unknown) => void): () => void {
  let running = false;
  let again = false;
  return () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    void (async () => {
      try {
        do {
          again = false;
          await round();
        } while (again);
      } catch (err) {
        onError(err);
      } finally {
        running = false;
      }
    })();
  };
}
