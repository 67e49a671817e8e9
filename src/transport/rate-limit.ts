/**
 * A token bucket that paces bytes to a rate that may change at any moment (a new limit
 * from the console, a time-of-day window). Pure arithmetic over an injected clock; the
 * only effect is the sleep in `pace`. A rate of 0 means unlimited.
 */
export class RateLimiter {
  readonly #rate: () => number;
  readonly #now: () => number;
  #tokens = 0;
  #last: number;
  #lastRate = 0;

  /** `rate()` is read on every call, in bytes per second; `now()` is in milliseconds. */
  constructor(rate: () => number, now: () => number = () => performance.now()) {
    this.#rate = rate;
    this.#now = now;
    this.#last = now();
  }

  /** Takes `n` bytes; returns how many milliseconds to wait before sending them. */
  delayFor(n: number): number {
    const rate = this.#rate();
    const now = this.#now();
    if (rate <= 0) {
      this.#tokens = 0;
      this.#last = now;
      this.#lastRate = 0;
      return 0;
    }
    const burst = Math.max(64 * 1024, rate / 20); // 50 ms worth: smooth, yet no stall per frame
    if (rate !== this.#lastRate) {
      this.#tokens = Math.min(this.#tokens, burst);
      this.#lastRate = rate;
    }
    this.#tokens = Math.min(burst, this.#tokens + ((now - this.#last) / 1000) * rate);
    this.#last = now;
    this.#tokens -= n;
    return this.#tokens >= 0 ? 0 : (-this.#tokens / rate) * 1000;
  }

  async pace(n: number): Promise<void> {
    const ms = this.delayFor(n);
    if (ms > 0) await new Promise((r) => setTimeout(r, ms));
  }
}
