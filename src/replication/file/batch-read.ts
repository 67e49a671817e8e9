import { ferryFs } from '../../native/index.js';

/** Files per thread-pool job, and bytes per job: small enough that several jobs overlap. */
const BATCH_FILES = 16;
const BATCH_BYTES = 2 << 20;

/**
 * Reads whole small files many at a time (native readFiles: open, fstat, read and close of
 * a batch in one thread-pool job, into one buffer). `read()` queues a file and returns
 * its content, or null when it cannot be read that way (the caller then takes the
 * ordinary path, which reports the error). A batch starts when it is full or when
 * `flush()` is called; call flush() before awaiting a file that may still be queued.
 */
export class BatchReader {
  #paths: string[] = [];
  #caps: number[] = [];
  #waiters: ((b: Buffer | null) => void)[] = [];
  #bytes = 0;

  /** `size` is the scanned size: a file that grew since is read up to it (the next pass sees the change). */
  read(abs: string, size: number): Promise<Buffer | null> {
    const p = new Promise<Buffer | null>((resolve) => this.#waiters.push(resolve));
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
    ferryFs.readFiles(paths, caps, slab).then(
      (got) => {
        let at = 0;
        for (let i = 0; i < waiters.length; i++) {
          const n = got[i]!;
          waiters[i]!(n >= 0 ? slab.subarray(at, at + n) : null);
          at += caps[i]!;
        }
      },
      () => {
        for (const w of waiters) w(null);
      },
    );
  }
}
