import { allocAligned } from '../../native/index.js';

/** Smallest and largest size class; a buffer above the largest is allocated for its user alone. */
const MIN_CLASS = 64 << 10;
const MAX_CLASS = 8 << 20;

/** A buffer of the bytes asked for, and the call that hands it back (once; more is harmless). */
export interface ReadBuffer {
  readonly buf: Buffer;
  readonly release: () => void;
}

/**
 * Buffers the source reads file content into, used again once their content has been sent.
 *
 * Every buffer of a MiB or so is memory outside V8's heap, and V8 starts a full
 * mark-compact each time such memory has grown by ~64 MiB since the last one ("external
 * memory pressure"): a copy of 3 GiB in new buffers cost the agent 66 of them, some 2.5 CPU
 * seconds of marking on a two-core machine (docs/performance.md, session 12). Buffers taken
 * from here come back through `release()` once the session has written them (Session.send's
 * `release`), so the same few dozen carry the whole copy.
 *
 * Sizes are rounded up to a power of two from 64 KiB (at most 8 MiB) and every buffer
 * starts at an address aligned for direct reads (allocAligned). A buffer never given back
 * is only not reused (the garbage collector frees it); at most `keepBytes` wait for reuse.
 */
export class ReadBuffers {
  readonly #keepBytes: number;
  readonly #free = new Map<number, Buffer[]>();
  #freeBytes = 0;
  /** Buffers handed out again, and buffers allocated. */
  readonly stats = { reused: 0, allocated: 0 };

  constructor(keepBytes: number) {
    this.#keepBytes = keepBytes;
  }

  /** Bytes kept for reuse now. */
  get keptBytes(): number {
    return this.#freeBytes;
  }

  /**
   * Forgets the buffers kept for reuse (the garbage collector frees them): the agent calls it
   * when a pass ends, so that a source server does not keep tens of MiB between syncs.
   */
  trim(): void {
    this.#free.clear();
    this.#freeBytes = 0;
  }

  /** An aligned buffer of exactly `n` bytes (a view at the start of a pooled one). */
  take(n: number): ReadBuffer {
    let size = MIN_CLASS;
    while (size < n) size *= 2;
    if (size > MAX_CLASS) {
      this.stats.allocated++;
      return { buf: allocAligned(n), release: () => {} };
    }
    let whole = this.#free.get(size)?.pop();
    if (whole) {
      this.#freeBytes -= size;
      this.stats.reused++;
    } else {
      whole = allocAligned(size);
      this.stats.allocated++;
    }
    let given = false;
    const kept = whole;
    return {
      buf: whole.subarray(0, n),
      release: () => {
        if (given) return;
        given = true;
        if (this.#freeBytes + size > this.#keepBytes) return;
        const list = this.#free.get(size);
        if (list) list.push(kept);
        else this.#free.set(size, [kept]);
        this.#freeBytes += size;
      },
    };
  }
}

/**
 * The source's read buffers, shared by every pass of the process: enough kept for what is
 * in flight at once (32 MiB of small files read ahead, a few 1 MiB chunks of a large file,
 * and what waits in the session's queue).
 */
export const readBuffers = new ReadBuffers(48 << 20);
