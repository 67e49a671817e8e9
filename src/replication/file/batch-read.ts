import { ferryFs, parseXattrBlob, readFilesLayout, type XattrList } from '../../native/index.js';
import { type ReadBuffers, readBuffers } from './read-buffers.js';

/** Files per thread-pool job, and bytes per job: small enough that several jobs overlap. */
const BATCH_FILES = 16;
const BATCH_BYTES = 2 << 20;

/** A small file read whole, with the extended attributes read from the same descriptor. */
export interface WholeFile {
  data: Buffer;
  xattrs: XattrList | undefined;
}

/** The buffer a batch was read into, reused once every file read into it is released. */
class Slab {
  #users = 0;
  #release: () => void = () => {};

  /** Holds the buffer until `users` files have released it, then releases it. */
  hold(release: () => void, users: number): void {
    this.#release = release;
    this.#users = users;
    if (users === 0) release();
  }

  releaseOne(): void {
    if (--this.#users === 0) this.#release();
  }
}

/** A file queued in a BatchReader: filled in when its batch has been read. */
export class SmallRead {
  /** The batch has been read: `result` holds the content, or null. */
  ready = false;
  result: WholeFile | null = null;
  readonly #slab: Slab;
  #released = false;

  /** `done` settles (never rejects) when the batch has been read; shared by the files of a batch. */
  constructor(
    readonly done: Promise<void>,
    slab: Slab,
  ) {
    this.#slab = slab;
  }

  /**
   * Nothing reads `result.data` any more (it has been written to the connection): its
   * buffer may be read into again once the other files of its batch are released too.
   * Call once `result` is no longer needed; a file never released only keeps the buffer
   * from being reused. Once is what counts: later calls do nothing.
   */
  release(): void {
    if (this.#released || !this.result) return;
    this.#released = true;
    this.#slab.releaseOne();
  }
}

/**
 * Reads whole small files many at a time (native readFiles: open, fstat, read, the
 * extended attributes and close of a batch in one thread-pool job, into one buffer; with
 * direct reads each file in an aligned slot of whole blocks, which the read fills in place).
 * `read()` queues a file and returns its slot, whose result is the content, or null when it
 * cannot be read that way (the caller then takes the ordinary path, which reports the
 * error). A batch starts when it is full or when `flush()` is called; call flush() before
 * waiting for a file that may still be queued. One promise per batch, none per file. With
 * `direct` (the default), the files are read with O_DIRECT where the file system allows it:
 * a cold tree costs the source server no page cache.
 */
export class BatchReader {
  readonly #direct: boolean;
  readonly #buffers: ReadBuffers;
  #paths: string[] = [];
  #caps: number[] = [];
  #slots: SmallRead[] = [];
  #bytes = 0;
  #done: Promise<void> | null = null;
  #slab = new Slab();
  #settle: () => void = () => {};

  constructor(opts: { direct?: boolean; buffers?: ReadBuffers } = {}) {
    this.#direct = opts.direct ?? true;
    this.#buffers = opts.buffers ?? readBuffers;
  }

  /** `size` is the scanned size: a file that grew since is read up to it (the next pass sees the change). */
  read(abs: string, size: number): SmallRead {
    this.#done ??= new Promise<void>((resolve) => {
      this.#settle = resolve;
    });
    const slot = new SmallRead(this.#done, this.#slab);
    this.#slots.push(slot);
    this.#paths.push(abs);
    this.#caps.push(size);
    this.#bytes += size;
    if (this.#paths.length >= BATCH_FILES || this.#bytes >= BATCH_BYTES) this.flush();
    return slot;
  }

  flush(): void {
    if (this.#paths.length === 0) return;
    const paths = this.#paths;
    const caps = this.#caps;
    const slots = this.#slots;
    const settle = this.#settle;
    const direct = this.#direct;
    const { offsets: at, bytes } = readFilesLayout(caps, direct);
    const { buf: slab, release } = this.#buffers.take(bytes);
    const held = this.#slab;
    this.#paths = [];
    this.#caps = [];
    this.#slots = [];
    this.#bytes = 0;
    this.#done = null;
    this.#slab = new Slab();
    const finish = (users: number) => {
      held.hold(release, users);
      for (const slot of slots) slot.ready = true;
      settle();
    };
    ferryFs.readFiles(paths, caps, slab, true, direct).then(
      ({ sizes, xattrs }) => {
        const lists = parseXattrBlob(xattrs!, slots.length);
        let users = 0;
        for (let i = 0; i < slots.length; i++) {
          const n = sizes[i]!;
          if (n < 0) continue;
          slots[i]!.result = { data: slab.subarray(at[i]!, at[i]! + n), xattrs: lists[i] };
          users++;
        }
        finish(users);
      },
      () => finish(0), // every result stays null: each file takes the ordinary path
    );
  }
}
