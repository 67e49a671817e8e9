/**
 * The two loops every agent and target keeps with the console: a heartbeat every
 * interval (and at once when kicked, e.g. to report an event), never two at a time; and a
 * long poll repeated until stopped, waiting an interval after a failed attempt.
 */
export class Heartbeat {
  readonly #beat: () => Promise<void>;
  readonly #intervalMs: number;
  #timer: NodeJS.Timeout | null = null;
  #running = false;
  #again = false;
  #stopped = false;

  constructor(beat: () => Promise<void>, intervalMs: number) {
    this.#beat = beat;
    this.#intervalMs = intervalMs;
  }

  /** Beats now (or right after the beat in progress). */
  kick(): void {
    void this.#loop();
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
  }

  async #loop(): Promise<void> {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    if (this.#timer) clearTimeout(this.#timer);
    this.#running = true;
    try {
      await this.#beat();
    } finally {
      this.#running = false;
    }
    if (this.#stopped) return;
    if (this.#again) {
      this.#again = false;
      void this.#loop();
    } else this.#timer = setTimeout(() => void this.#loop(), this.#intervalMs);
  }
}

/** Repeats `poll` until `stopped()`; after a failure waits `retryMs` before the next try. */
export async function pollUntilStopped(
  poll: () => Promise<void>,
  stopped: () => boolean,
  retryMs: number,
): Promise<void> {
  while (!stopped()) {
    try {
      await poll();
    } catch {
      if (!stopped()) await new Promise((r) => setTimeout(r, retryMs));
    }
  }
}
