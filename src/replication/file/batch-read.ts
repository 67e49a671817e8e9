import {
  allocAligned,
  ferryFs,
  parseXattrBlob,
  readFilesLayout,
  type XattrList,
} from '../../native/index.js';

/** Files per thread-pool job, and bytes per job: small enough that several jobs overlap. */
const BATCH_FILES = 16;
const BATCH_BYTES = 2 << 20;

/** A small file read whole, with the extended attributes read from the same descriptor. */
export interface WholeFile {
  data: Buffer;
  xattrs: XattrList | undefined;
}

/** A file queued in a BatchReader: filled in when its batch has been read. */
export interface SmallRead {
  /** The batch has been read: `result` holds the content, or null. */
  ready: boolean;
  result: WholeFile | null;
  /** Settles (never rejects) when the batch has been read; shared by the files of a batch. */
  readonly done: Promise<void>;
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
  #paths: string[] = [];
  #caps: number[] = [];
  #slots: SmallRead[] = [];
  #bytes = 0;
  #done: Promise<void> | null = null;
  #settle: () => void = () => {};

  constructor(opts: { direct?: boolean } = {}) {
    this.#direct = opts.direct ?? true;
  }

  /** `size` is the scanned size: a file that grew since is read up to it (the next pass sees the change). */
  read(abs: string, size: number): SmallRead {
    this.#done ??= new Promise<void>((resolve) => {
      this.#settle = resolve;
    });
    const slot: SmallRead = { ready: false, result: null, done: this.#done };
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
    const slab = direct ? allocAligned(bytes) : Buffer.allocUnsafeSlow(bytes);
    this.#paths = [];
    this.#caps = [];
    this.#slots = [];
    this.#bytes = 0;
    this.#done = null;
    const finish = () => {
      for (const slot of slots) slot.ready = true;
      settle();
    };
    ferryFs.readFiles(paths, caps, slab, true, direct).then(
      ({ sizes, xattrs }) => {
        const lists = parseXattrBlob(xattrs!, slots.length);
        for (let i = 0; i < slots.length; i++) {
          const n = sizes[i]!;
          if (n >= 0) slots[i]!.result = { data: slab.subarray(at[i]!, at[i]! + n), xattrs: lists[i] };
        }
        finish();
      },
      finish, // every result stays null: each file takes the ordinary path
    );
  }
}
