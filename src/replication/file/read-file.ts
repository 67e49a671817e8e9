import { closeSync, fstatSync, read, readSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { FerryError } from '../../errors/index.js';
import {
  DIRECT_ALIGN,
  errnoError,
  ferryFs,
  parseXattrBlob,
  reopenDirect,
  type XattrList,
} from '../../native/index.js';
import { contentHash, feedBeforeChunk, feedEnd } from './content-hash.js';
import { type ReadBuffer, type ReadBuffers, readBuffers } from './read-buffers.js';
import { goneSinceScan } from './scan.js';

/** Waits for reads nobody will use (a file that shrank, or a stop) and gives their buffers back. */
async function settleAbandoned(reads: readonly Promise<{ taken: ReadBuffer }>[]): Promise<void> {
  for (const r of await Promise.allSettled(reads)) if (r.status === 'fulfilled') r.value.taken.release();
}

/**
 * Whether readFileRegions failed because the scanned file is gone or is no longer a regular
 * file (not a read failure: the pass drops the target's copy and the next pass sees what is
 * there now).
 */
export function changedSinceScan(e: unknown): boolean {
  return e instanceof FerryError && e.context.changedSinceScan === true;
}

/** A scanned regular file, open for reading: what is read is the file as it is now. */
export interface ScannedFile {
  abs: string;
  fd: number;
  /** Its size when opened (a log written to since the scan has grown). */
  size: number;
  /** Its extended attributes, from the descriptor (with `xattrs: true`; see xattrsOf). */
  xattrs?: XattrList | undefined;
}

/**
 * Opens a file the scan found regular, for reading, through no symlink (ferryFs.openSource;
 * `abs` from scanTree, whose paths are canonical): its descriptor, current size and, with
 * `xattrs`, its extended attributes read from that descriptor. FERRY_SOURCE_READ when it
 * cannot be opened, with changedSinceScan(e) true where the path no longer names a regular file.
 */
export function openScannedFile(abs: string, opts: { xattrs?: boolean } = {}): ScannedFile {
  let fd = -1;
  try {
    fd = ferryFs.openSource(abs);
    const st = fstatSync(fd);
    if (!st.isFile()) throw Object.assign(new Error('no longer a regular file'), { code: 'EFTYPE' });
    return { abs, fd, size: st.size, ...(opts.xattrs ? { xattrs: xattrsOf(fd) } : {}) };
  } catch (e) {
    if (fd >= 0) closeSync(fd);
    // gone, a symlink swapped in, or something other than a regular file now (EFTYPE, above)
    const code = (e as NodeJS.ErrnoException).code;
    const changed = goneSinceScan(code) || code === 'EFTYPE';
    throw new FerryError('FERRY_SOURCE_READ', `cannot open ${abs}: ${(e as Error).message}`, {
      cause: e,
      ...(changed ? { context: { changedSinceScan: true } } : {}),
    });
  }
}

/**
 * The extended attributes of an open file, read from its descriptor: those of the file whose
 * content is sent, never of whatever a path names by then (a parent directory swapped for a
 * symlink could otherwise lend a file another's `security.capability` or ACL).
 */
export function xattrsOf(fd: number): XattrList | undefined {
  return parseXattrBlob(ferryFs.fdXattrs(fd), 1)[0];
}

/** A data region of a file; `release()` once `data` has been sent lets its buffer be read into again. */
export interface FileRegion {
  offset: number;
  data: Buffer;
  release: () => void;
}

const CHUNK = 1 << 20;
/** Chunks read ahead in the thread pool while the current one is hashed and sent. */
const AHEAD = 4;
/** Files from this size are read with O_DIRECT where the file system allows it (see readFileRegions; smaller ones are read in batches, also directly). */
const DIRECT_READ_FROM = 1 << 20;
const { EINVAL } = osConstants.errno;

/**
 * Positioned reads of an open file past the page cache where its file system allows it
 * (O_DIRECT, native/direct_io.c: a migration does not push the source server's own working
 * set out of its cache), through the cache where not. A read at a block-aligned offset goes
 * by the direct descriptor (the device reads whole blocks; what lies beyond `buf` is
 * dropped), any other through the plain one; the first EINVAL (no direct reads on this file
 * system) sends every later read through the cache. Reads may overlap; close() once none is
 * in flight closes the direct descriptor (the plain one stays the caller's).
 */
export class DirectReads {
  readonly #fd: number;
  readonly #abs: string;
  readonly #directFd: number | undefined;
  #refused = false;

  constructor(fd: number, abs: string, direct: boolean) {
    this.#fd = fd;
    this.#abs = abs;
    this.#directFd = direct ? reopenDirect(fd, 'read') : undefined;
  }

  /** Whether reads still go past the cache. */
  get direct(): boolean {
    return this.#directFd !== undefined && !this.#refused;
  }

  async read(buf: Buffer, at: number): Promise<number> {
    if (this.direct && at % DIRECT_ALIGN === 0) {
      const n = await ferryFs.readDirect(this.#directFd!, buf, at);
      if (n >= 0) return n;
      if (n !== -EINVAL) throw errnoError(-n, `read ${this.#abs}`);
      this.#refused = true; // this file system takes no direct reads: through the cache from now on
    }
    return new Promise<number>((resolve, reject) =>
      read(this.#fd, buf, 0, buf.length, at, (err, n) => (err ? reject(err) : resolve(n))),
    );
  }

  close(): void {
    if (this.#directFd !== undefined) closeSync(this.#directFd);
  }
}

/**
 * Yields the data regions of a file (a path, or a file openScannedFile opened, whose
 * descriptor it then owns) in order, `{offset, data, release}` of at most 1 MiB each
 * (in buffers of `readBuffers`, reused once released),
 * skipping holes when the file is sparse (found with SEEK_DATA/SEEK_HOLE, so a huge sparse
 * file costs only its data). `done()` then gives the BLAKE3 hash of the whole logical
 * content (holes read as zeros) and the file's size; with `hashHoles: false` (a sparse file
 * sent whole), the hash of the regions as yielded instead, holes left out (feedBeforeChunk:
 * the caller must send each region exactly as yielded). Hashing runs where content-hash.ts is
 * configured (a worker thread or the event loop); the generator waits when the hashing
 * thread falls behind.
 *
 * With `direct` (the default), a file of DIRECT_READ_FROM bytes and more is read past the
 * page cache (O_DIRECT, native/direct_io.c): a migration does not push the source server's
 * own working set out of its cache, and a cold file costs one copy instead of readahead
 * into the cache and a copy out of it. A file system that refuses it is read buffered.
 */
export async function readFileRegions(
  file: string | ScannedFile,
  sparse: boolean,
  opts: { direct?: boolean; buffers?: ReadBuffers; hashHoles?: boolean } = {},
): Promise<{
  regions: AsyncGenerator<FileRegion>;
  done: () => Promise<{ hash: string; size: number }>;
}> {
  // an open file is the reader's from here: closed when the regions end
  const { abs, fd, size: end } = typeof file === 'string' ? openScannedFile(file) : file;
  // closed only once no read is in flight
  const reads = new DirectReads(fd, abs, (opts.direct ?? true) && end >= DIRECT_READ_FROM);
  const buffers = opts.buffers ?? readBuffers;
  const hasher = contentHash(end);
  let hashedTo = 0;
  let complete = false;
  const holesUnhashed = opts.hashHoles === false;
  // The reads in flight, oldest first: awaited before the descriptor is closed.
  let pending: Promise<{ taken: ReadBuffer; n: number }>[] = [];
  async function* regions(): AsyncGenerator<FileRegion> {
    try {
      let pos = 0;
      while (pos < end) {
        let dataStart = pos;
        let dataEnd = end;
        if (sparse) {
          dataStart = ferryFs.seekData(fd, pos);
          if (dataStart < 0) break;
          dataEnd = Math.min(ferryFs.seekHole(fd, dataStart), end);
        }
        // A region of one chunk is read directly; longer ones keep the next AHEAD chunks
        // reading in the thread pool while the caller sends the current one (disk and
        // network overlap, and the disk sees several requests at once).
        const ahead = dataEnd - dataStart > CHUNK;
        pending = [];
        let nextRead = dataStart;
        const readAt = async (at: number) => {
          const want = Math.min(CHUNK, dataEnd - at);
          // aligned, a whole chunk is read straight into it (see readDirect)
          const taken = buffers.take(want);
          return { taken, n: await reads.read(taken.buf, at) };
        };
        for (let off = dataStart; off < dataEnd; ) {
          let taken: ReadBuffer;
          let bytesRead: number;
          if (ahead) {
            while (pending.length < AHEAD && nextRead < dataEnd) {
              const r = readAt(nextRead);
              // a read ahead that fails while an earlier one is awaited is not unhandled:
              // its error comes out of the await below when its turn comes
              r.catch(() => {});
              pending.push(r);
              nextRead += Math.min(CHUNK, dataEnd - nextRead);
            }
            ({ taken, n: bytesRead } = await pending.shift()!);
            if (bytesRead < taken.buf.length) {
              // short read (the file shrank): drop what was read beyond and go on from here
              await settleAbandoned(pending);
              pending = [];
              nextRead = off + bytesRead;
            }
          } else {
            taken = buffers.take(Math.min(CHUNK, dataEnd - off));
            bytesRead = readSync(fd, taken.buf, 0, taken.buf.length, off);
          }
          const buf = taken.buf;
          if (bytesRead === 0) {
            taken.release();
            dataEnd = off; // truncated while reading
            break;
          }
          const data = bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
          await feedBeforeChunk(hasher, hashedTo, off, data.length, holesUnhashed);
          await hasher.update(data);
          hashedTo = off + bytesRead;
          yield { offset: off, data, release: taken.release };
          off += bytesRead;
        }
        pos = dataEnd;
      }
      await feedEnd(hasher, hashedTo, end, holesUnhashed);
      complete = true;
    } catch (e) {
      if (e instanceof FerryError) throw e;
      throw new FerryError('FERRY_SOURCE_READ', `cannot read ${abs}: ${(e as Error).message}`, { cause: e });
    } finally {
      if (!complete) hasher.discard(); // stopped early: no digest will be asked for
      await settleAbandoned(pending);
      reads.close();
      closeSync(fd);
    }
  }
  return { regions: regions(), done: async () => ({ hash: await hasher.digest(), size: end }) };
}
