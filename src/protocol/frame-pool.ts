/**
 * Reusable buffers for large received frames.
 *
 * A 1 MiB DATA frame arrives as some 64 TLS records and is assembled into one buffer. A new
 * buffer per frame is external memory to V8, and when those buffers live past the next
 * scavenge (queued for a write, hashed, handed through promises) their growth starts a full
 * mark-compact every few tens of MiB: on the target that was a third of its CPU per GiB
 * received (docs/performance.md, "Received frames in reused buffers"). The decoder takes
 * frames of at least `from` bytes from here instead, and whoever consumes the message gives
 * the buffer back with `release()` once nothing reads it any more (its write has completed).
 *
 * A buffer never released is simply not reused (the pool allocates another, up to nothing:
 * it never blocks); releasing twice is harmless. The pool keeps at most `keep` buffers.
 */
export class FramePool {
  readonly size: number;
  readonly from: number;
  readonly #keep: number;
  readonly #free: Buffer[] = [];
  /** Frames served from a kept buffer, frames that needed a new one, and buffers not yet given back. */
  readonly stats = { reused: 0, allocated: 0, outstanding: 0 };

  constructor(opts: { size: number; from: number; keep: number }) {
    this.size = opts.size;
    this.from = opts.from;
    this.#keep = opts.keep;
  }

  /** A buffer of exactly `n` bytes (a view of a pooled one) and the call that gives it back. */
  take(n: number): { buf: Buffer; release: () => void } {
    if (n > this.size) return { buf: Buffer.allocUnsafe(n), release: noop };
    let whole = this.#free.pop();
    if (whole) this.stats.reused++;
    else {
      whole = Buffer.allocUnsafe(this.size);
      this.stats.allocated++;
    }
    this.stats.outstanding++;
    let given = false;
    const back = whole;
    return {
      buf: whole.subarray(0, n),
      release: () => {
        if (given) return;
        given = true;
        this.stats.outstanding--;
        if (this.#free.length < this.#keep) this.#free.push(back);
      },
    };
  }
}

export function noop(): void {}
