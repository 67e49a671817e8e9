/**
 * Reusable buffers for large received frames.
 *
 * A 1 MiB DATA frame arrives as some 64 TLS records and is assembled into one buffer; a
 * new buffer per frame is an allocation (and page faults) per MiB received, held until the
 * frame's write completes. The decoder takes the buffer of every frame that spans reads
 * from here: those of `from` to `size` bytes come from kept buffers, and whoever consumes
 * the message gives the buffer back with `release()` once nothing reads it any more (its
 * write has completed). See docs/performance.md, "Received frames and V8's heap".
 *
 * A buffer never released is simply not reused (the pool allocates another: it never
 * blocks); releasing twice is harmless. The pool keeps at most `keep` buffers.
 *
 * With `align`, each pooled frame starts where its payload, `after` header bytes in, lies
 * at an address that is a multiple of `bytes` (`offsetOf` tells where that is in a buffer,
 * below `bytes`: the native alignedOffset, passed in because the codec does no I/O): a DATA
 * chunk written past the page cache (writeDirect) then goes from the frame itself.
 */
export class FramePool {
  readonly #size: number;
  readonly #from: number;
  readonly #keep: number;
  readonly #align: FrameAlignment | undefined;
  readonly #free: { whole: Buffer; at: number }[] = [];
  /** Frames served from a kept buffer, frames that needed a new one, and buffers not yet given back. */
  readonly stats = { reused: 0, allocated: 0, outstanding: 0 };

  constructor(opts: {
    size: number;
    from: number;
    keep: number;
    align?: FrameAlignment;
  }) {
    this.#size = opts.size;
    this.#from = opts.from;
    this.#keep = opts.keep;
    this.#align = opts.align;
  }

  /**
   * A buffer of exactly `n` bytes and the call that gives it back: a view of a pooled one
   * when `from` ≤ n ≤ `size`, else a buffer of its own (and a release that does nothing).
   */
  take(n: number): { buf: Buffer; release: () => void } {
    if (n < this.#from || n > this.#size) return { buf: Buffer.allocUnsafe(n), release: noop };
    let kept = this.#free.pop();
    if (kept) this.stats.reused++;
    else {
      const a = this.#align;
      if (!a) kept = { whole: Buffer.allocUnsafe(this.#size), at: 0 };
      else {
        const whole = Buffer.allocUnsafeSlow(this.#size + a.bytes);
        const at = a.offsetOf(whole, a.after);
        if (!(at >= 0 && at < a.bytes)) throw new RangeError(`alignment offset ${at} out of range`);
        kept = { whole, at };
      }
      this.stats.allocated++;
    }
    this.stats.outstanding++;
    let given = false;
    const back = kept;
    return {
      buf: kept.whole.subarray(kept.at, kept.at + n),
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

/** Where pooled frames are placed: their payload, `after` bytes in, on a multiple of `bytes`. */
export interface FrameAlignment {
  after: number;
  bytes: number;
  offsetOf: (buf: Buffer, headerBytes: number) => number;
}
