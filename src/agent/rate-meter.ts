/** Bytes per second over a sliding window of samples; takes the clock as data. */
export class RateMeter {
  readonly #windowMs: number;
  #samples: { t: number; bytes: number }[] = [];

  constructor(windowMs = 5000) {
    this.#windowMs = windowMs;
  }

  sample(t: number, totalBytes: number): number {
    this.#samples.push({ t, bytes: totalBytes });
    while (this.#samples.length > 2 && t - this.#samples[0]!.t > this.#windowMs) this.#samples.shift();
    const first = this.#samples[0]!;
    const dt = (t - first.t) / 1000;
    return dt > 0 ? Math.max(0, Math.round((totalBytes - first.bytes) / dt)) : 0;
  }

  reset(): void {
    this.#samples = [];
  }
}
