import { ferryFs, parseXattrBlob, type XattrList } from '../../native/index.js';

/** Files per thread-pool job, and bytes per job: small enough that several jobs overlap. */
const BATCH_FILES = 16;
const BATCH_BYTES = 2 << 20;

/** A small file read whole, with the extended attributes read from the same descriptor. */
export interface WholeFile {
  data: Buffer;
  xattrs: XattrList | undefined;
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
    const slab = Buffer.allocUnsafeSlow(this.#bytes);
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
          waiters[i]!(n >= 0 ? { data: slab.subarray(at, at + n), xattrs: lists[i] } : null);
          at += caps[i]!;
        }
      },
      () => {
        for (const w of waiters) w(null);
      },
    );
  }
}
