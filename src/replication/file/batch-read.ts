import { ferryFs, parseXattrBlob, type XattrList } from '../../native/index.js';

/** Files per thread-pool job, and bytes per job: small enough that several jobs overlap. */
const BATCH_FILES = 16;
const BATCH_BYTES = 2 << 20;
/**
 * A batch's buffer when it is reused: BATCH_BYTES plus the largest file read this way
 * (the batch that reaches BATCH_BYTES may overshoot it by one file), and how many such
 * buffers are kept. Without reuse the source allocated 3 GiB of buffers for the 100,000
 * files of the benchmark's `small` tree, and V8 ran a full mark-compact for every ~64
 * MiB of that memory (60 per copy, `--trace-gc`).
 */
const SLAB_BYTES = BATCH_BYTES + (1 << 20);
const SLABS_KEPT = 24;
/** Batches smaller than this get a buffer of their own (a tree of empty or tiny files). */
const SLAB_FROM = 64 * 1024;

/**
 * A small file read whole, with the extended attributes read from the same descriptor.
 * Call `release()` once nothing reads `data` any more (Session.send does it for a FILE
 * message): the batch's buffer is reused when every file of it has been released. Not
 * calling it only costs an allocation; calling it early lets a later batch overwrite `data`.
 */
export interface WholeFile {
  data: Buffer;
  xattrs: XattrList | undefined;
  release: () => void;
}

/**
 * Reads whole small files many at a time (native readFiles: open, fstat, read, the
 * extended attributes and close of a batch in one thread-pool job, into one buffer).
 * `read()` queues a file and returns its content, or null when it cannot be read that way
 * (the caller then takes the ordinary path, which reports the error). A batch starts when
 * it is full or when `flush()` is called; call flush() before awaiting a file that may
 * still be queued. With `direct` (the default), the files are read with O_DIRECT where the
 * file system allows it: a cold tree costs the source server no page cache.
 */
export class BatchReader {
  readonly #direct: boolean;
  #paths: string[] = [];
  #caps: number[] = [];
  #waiters: ((b: WholeFile | null) => void)[] = [];
  #bytes = 0;
  readonly #free: Buffer[] = [];
  /** Batch buffers: allocated, and taken again from the free list. */
  readonly stats = { allocated: 0, reused: 0 };

  constructor(opts: { direct?: boolean } = {}) {
    this.#direct = opts.direct ?? true;
  }

  /** `size` is the scanned size: a file that grew since is read up to it (the next pass sees the change). */
  read(abs: string, size: number): Promise<WholeFile | null> {
    const p = new Promise<WholeFile | null>((resolve) => this.#waiters.push(resolve));
    this.#paths.push(abs);
    this.#caps.push(size);
    this.#bytes += size;
    if (this.#paths.length >= BATCH_FILES || this.#bytes >= BATCH_BYTES) this.flush();
    return p;
  }

  flush(): void {
    if (this.#paths.length === 0) return;
    const paths = this.#paths;
    const caps = this.#caps;
    const waiters = this.#waiters;
    const pooled = this.#bytes >= SLAB_FROM && this.#bytes <= SLAB_BYTES;
    const slab = pooled ? this.#takeSlab() : Buffer.allocUnsafeSlow(this.#bytes);
    let holders = waiters.length;
    const release = () => {
      if (--holders === 0 && pooled && this.#free.length < SLABS_KEPT) this.#free.push(slab);
    };
    this.#paths = [];
    this.#caps = [];
    this.#waiters = [];
    this.#bytes = 0;
    ferryFs.readFiles(paths, caps, slab, true, this.#direct).then(
      ({ sizes, xattrs }) => {
        const lists = parseXattrBlob(xattrs!, waiters.length);
        let at = 0;
        for (let i = 0; i < waiters.length; i++) {
          const n = sizes[i]!;
          if (n < 0) release(); // read the ordinary way: nothing of the buffer is handed out
          waiters[i]!(
            n >= 0 ? { data: slab.subarray(at, at + n), xattrs: lists[i], release: once(release) } : null,
          );
          at += caps[i]!;
        }
      },
      () => {
        for (const w of waiters) w(null);
      },
    );
  }

  #takeSlab(): Buffer {
    const b = this.#free.pop();
    if (b) {
      this.stats.reused++;
      return b;
    }
    this.stats.allocated++;
    return Buffer.allocUnsafeSlow(SLAB_BYTES);
  }
}

/** `fn` the first time only: a file released twice must not free its batch early. */
function once(fn: () => void): () => void {
  let done = false;
  return () => {
    if (!done) {
      done = true;
      fn();
    }
  };
}
