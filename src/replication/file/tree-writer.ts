import { execFile } from 'node:child_process';
import {
  constants as C,
  closeSync,
  fchmodSync,
  fchownSync,
  fdatasync,
  fstatSync,
  ftruncateSync,
  read,
  readFileSync,
  write,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { getSystemErrorName, promisify } from 'node:util';
import { FerryError } from '../../errors/index.js';
import {
  chmodSync,
  lchownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  realpathSync,
  renameSync,
  rmSync,
  symlinkSync,
  unlinkSync,
} from '../../native/fs-bytes.js';
import {
  type BatchWriteItem,
  DIRECT_ALIGN,
  DIRECT_MAX_BUFFERS,
  errnoError,
  ferryFs,
  osPath,
  reopenDirect,
  splitNs,
  splitNsText,
  WRITE_RESULT_INTS,
  WriteStep,
} from '../../native/index.js';
import {
  type CommitMessage,
  type CopyMessage,
  type EntryMessage,
  type ResumableFile,
  type SumsMessage,
  validatePath,
  type WholeFileMessage,
} from '../../protocol/index.js';
import { BLOCK_SUM_BYTES, blockSum } from './block-sum.js';
import { type ContentHash, contentHash, feedBeforeChunk, feedEnd, wholeFileHash } from './content-hash.js';
import { WEAK_SUM_BYTES } from './delta.js';
import { type ReadBuffer, ReadBuffers } from './read-buffers.js';

const run = promisify(execFile);
const TYPE_BITS = { fifo: C.S_IFIFO, chardev: C.S_IFCHR, blockdev: C.S_IFBLK, socket: C.S_IFSOCK } as const;
const INFLIGHT_MIN_BYTES = 4096 + 16;
const WRITE_BEHIND_FROM = 1 << 20;
const FLUSH_EVERY_BYTES = 256 << 20;
const WRITE_BEHIND_BYTES = 8 << 20;
/** Files from this size are checkpointed (fsync'd and journaled) as they arrive, every CHECKPOINT_BYTES. */
const CHECKPOINT_FROM = 8 << 20;
const CHECKPOINT_BYTES = 4 << 20;
/** Files from this size are written with O_DIRECT where the file system takes it (see writeChunks). */
const DIRECT_FROM = 8 << 20;
const { EINVAL } = osConstants.errno;
const JOURNAL_BLOCK = 8192;
const fdatasyncAsync = promisify(fdatasync);

/** A partly written file kept for resuming: its temporary file holds `offset` verified-written bytes. */
interface Partial extends ResumableFile {
  tmp: string;
}

/** How much of the previous copy one read takes when it is copied into the new file. */
const COPY_PIECE_BYTES = 1 << 20;
/** How much of the previous copy one read takes when it is summed for a changed-block transfer. */
const SUM_READ_BYTES = 4 << 20;

/** One positioned read in the thread pool: re-reading a kept or previous copy of a large
 * file must not hold up the event loop (heartbeats, other frames) for seconds. */
function readAt(fd: number, buf: Buffer, at: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) =>
    read(fd, buf, at, length, position, (err, n) => (err ? reject(err) : resolve(n))),
  );
}

function writeAll(fd: number, data: Buffer, offset: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number) => {
      if (done >= data.length) return resolve();
      write(fd, data, done, data.length - done, offset + done, (err, n) =>
        err ? reject(err) : step(done + n),
      );
    };
    step(0);
  });
}

/**
 * Writes one chunk of a large file. With a direct descriptor and an aligned offset, the
 * aligned part goes past the page cache (native/direct_io.c: the file system's writeback
 * no longer copies and walks every page, and nothing on the target reads the bytes back);
 * the rest, the file's last partial block, is written buffered. A file system that refuses
 * the direct write (EINVAL) gets buffered writes from then on.
 */
async function writeChunks(f: OpenFile, chunks: readonly Buffer[], offset: number): Promise<void> {
  let done = 0;
  const total = chunks.reduce((n, c) => n + c.length, 0);
  if (f.direct !== undefined && offset % DIRECT_ALIGN === 0 && total >= DIRECT_ALIGN) {
    const n = await ferryFs.writeDirect(f.direct, chunks, offset);
    if (n === -EINVAL) closeDirect(f);
    else if (n < 0) throw errnoError(-n, `write ${f.rel}`);
    else done = n;
  }
  // what the direct write left (a tail that is not a whole block), buffered
  let at = 0;
  for (const c of chunks) {
    const skip = Math.max(0, done - at);
    if (skip < c.length) await writeAll(f.fd, c.subarray(skip), offset + at + skip);
    at += c.length;
  }
}

/**
 * Large-file chunks waiting for the one write in flight per file; when it completes, the
 * next write takes all of them that follow each other, up to COALESCE_BYTES, in one request.
 */
interface QueuedChunk {
  data: Buffer;
  offset: number;
  settle: { resolve: () => void; reject: (e: unknown) => void };
}
const COALESCE_BYTES = 4 << 20;

function closeDirect(f: OpenFile): void {
  if (f.direct === undefined) return;
  try {
    closeSync(f.direct);
  } catch {
    /* closed */
  }
  f.direct = undefined;
}

/** Closes both descriptors of a file being written. */
function closeFile(f: OpenFile): void {
  closeDirect(f);
  closeSync(f.fd);
}

export interface WriterLog {
  warn(obj: object, msg: string): void;
}

interface OpenFile {
  entry: EntryMessage;
  rel: string;
  tmp: string;
  fd: number;
  /** The same file opened with O_DIRECT (large files, where the file system allows it). */
  direct?: number;
  /** Writes queued in the thread pool (large files only), oldest first. */
  writes: { done: Promise<void>; bytes: number }[];
  queuedBytes: number;
  /** Chunks not yet handed to a write, and whether one is in flight (see #pump). */
  waiting: QueuedChunk[];
  writing: boolean;
  /** The first write that failed: every later chunk of the file fails with it. */
  writeFailed?: unknown;
  hasher: ContentHash;
  hashedTo: number;
  /** The hash covers the DATA as sent, not the holes (ENTRY `holesUnhashed`, see feedBeforeChunk). */
  holesUnhashed: boolean;
  /**
   * Changed-block transfer, or a file sent as its appended bytes in frames of its own: the
   * target's previous copy, whose bytes fill what DATA skips.
   */
  old?: { fd: number; size: number };
  /** ENTRY appendFrom, but the target's copy is not the one appended to: why (REJECTed at FILE_END). */
  staleAppend?: string;
  /** End of the last DATA written, and whether the file continues a kept partial copy. */
  written: number;
  resumed: boolean;
  /** Bytes [0, checkpointed) are on disk (fdatasync'd) and named in the journal. */
  checkpointed: number;
  nextCheckpoint: number;
}

/** A file sent as bytes appended to a copy the target does not hold as it was (`why`): REJECTed, sent whole next pass. */
function staleAppend(rel: string, why: string): FerryError {
  return new FerryError(
    'FERRY_STALE_ENTRY',
    `the target's copy of ${rel} is not the one the source appended to: ${why}`,
  );
}
/** Why a copy of `size` bytes is not the one of `want` bytes that appended bytes continue. */
const notAppendedLength = (size: number, want: number) =>
  size > want ? `it holds more than ${want} bytes` : `it holds ${size} bytes, not ${want}`;

/** Bytes of the target's copies read at once for files sent as their appended bytes (#appendedTo). */
const APPEND_READ_BYTES = 16 << 20;
/** Whole small files per native write job, bytes per job, and jobs in flight at once. */
const BATCH_FILES = 32;
const BATCH_BYTES = 4 << 20;
const BATCHES_IN_FLIGHT = 4;
const STEP_NAMES = Object.fromEntries(Object.entries(WriteStep).map(([k, v]) => [v, k])) as Record<
  number,
  string
>;

/**
 * The files of one FILE or FILES frame: its buffer is given back once the writer no longer
 * needs any of them (each written, failed or never queued).
 */
class FrameFiles {
  #left: number;
  readonly #release: () => void;

  constructor(files: number, release: () => void) {
    this.#left = files;
    this.#release = release;
    if (files === 0) release();
  }

  done(files: number): void {
    if (this.#left <= 0) return;
    this.#left -= files;
    if (this.#left <= 0) this.#release();
  }
}

/** Whole small files written together by one native job (see queueFiles). */
interface Batch {
  items: BatchWriteItem[];
  rels: string[];
  /** Per file: the frame whose buffer holds its content. */
  frames: FrameFiles[];
  bytes: number;
  /** Its lines of the in-flight record (made once, when it starts). */
  inflight: string;
  /** Settles when every file of the batch is in place; rejects with the first that is not. */
  placed: Promise<void>;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * What queueFiles did with a frame's files, in their order: a run of files queued one after
 * another (up to `lastSeq`), or a file not written because its content's hash differs
 * (FERRY_CHECKSUM_MISMATCH) or because it was sent as bytes appended to a copy the target
 * does not hold (FERRY_STALE_ENTRY).
 */
export type QueuedFiles =
  | { placed: Promise<void>; lastSeq: number; count: number }
  | { seq: number; mismatch: FerryError };

/** Where an entry is prepared before it is renamed into place (`.ferry-tmp-*` in its directory). */
function tmpPath(parentAbs: string, seq: number): string {
  const name = `.ferry-tmp-${seq}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  return parentAbs.endsWith('/') ? parentAbs + name : `${parentAbs}/${name}`;
}

/**
 * One line of the in-flight record: a temporary file to remove after a crash, or (`+`) a
 * file being written in place, removed only if still unfinished (permission bits 0000).
 * JSON-quoted, as names may hold newlines.
 */
function inflightLine(abs: string, inPlace: boolean): string {
  return `${inPlace ? '+' : ''}${JSON.stringify(abs)}`;
}

function parseInflightLine(line: string): { path: string; inPlace: boolean } | null {
  const text = line.trim();
  if (!text) return null;
  const inPlace = text.startsWith('+');
  const quoted = inPlace ? text.slice(1) : text;
  if (!quoted.startsWith('"')) return inPlace ? null : { path: text, inPlace: false }; // an older writer's raw line
  try {
    const p: unknown = JSON.parse(quoted);
    return typeof p === 'string' ? { path: p, inPlace } : null;
  } catch {
    return null; // torn
  }
}

/** The refusal of content whose hash differs from the one the source sent. */
function checksumMismatch(rel: string): FerryError {
  return new FerryError(
    'FERRY_CHECKSUM_MISMATCH',
    `content hash of ${rel} does not match what the source sent`,
    {
      context: { path: rel },
    },
  );
}

function depth(rel: string): number {
  return rel.split('/').length;
}

function parentOf(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i < 0 ? '' : rel.slice(0, i);
}

/** A failed system call of the batch writer as the error the pass reports. */
function toWriteError(e: unknown, step: string, rel: string): FerryError {
  const c = code(e) ?? (e as Error).message;
  const why = c === 'ENOSPC' ? 'ENOSPC: no space left on the target file system' : c;
  return new FerryError('FERRY_TARGET_WRITE', `cannot write ${rel} (${step}): ${why}`, {
    cause: e,
    context: { path: rel },
  });
}

function code(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException).code;
}

/**
 * Applies replication entries under one root directory and never outside it.
 *
 * Contract: every path is checked again here (relative, canonical); every existing
 * parent component must be a real directory, never a symlink (a symlink in a parent is
 * refused with FERRY_UNSAFE_PATH and nothing is written); new content goes to a temporary
 * file opened O_EXCL|O_NOFOLLOW in the final directory and is renamed into place only
 * after its BLAKE3 hash matches (FERRY_CHECKSUM_MISMATCH otherwise); directory metadata
 * and the mtimes of directories the writer disturbed are applied at commit().
 *
 * Whole small files (queueFiles) are written in batches by one native thread-pool job each,
 * several at once; everything else uses synchronous system calls, in order, after the
 * queued files are done (drain()): a thread-pool round trip per call costs more than the
 * call, and one job per batch keeps the event loop free for decoding (docs/performance.md).
 */
export class TreeWriter {
  readonly root: string;
  readonly #log: WriterLog;
  readonly #safeDirs = new Set<string>(['']);
  readonly #dirMeta = new Map<string, EntryMessage>();
  readonly #touched = new Map<string, { atimeNs: bigint; mtimeNs: bigint }>();
  #file: OpenFile | null = null;
  #xattrWarned = new Set<string>();
  /** Bytes written since the last background flush, and the flush running now. */
  #unflushed = 0;
  #flushing: Promise<unknown> | null = null;
  readonly #inflightFile: string | undefined;
  #inflightFd: number | null = null;
  readonly #journalFile: string | undefined;
  #journalFd: number | null = null;
  /** The kept partial file this writer may continue (from the journal), if any. */
  #partial: Partial | null = null;
  #checkpointing: Promise<void> | null = null;
  /** Whole small files waiting for their batch to start, and the batches running. */
  #batch: Batch | null = null;
  /** The batches being written, by the promise that settles when each is done. */
  readonly #running = new Map<Promise<void>, Batch>();
  /** Whole small files written: in place (nothing was at their path) or through a temporary file renamed over what was. */
  readonly smallWrites = { inPlace: 0, renamed: 0 };
  /** Bytes of large files' holes hashed as zeros, and left out of the hash (holesUnhashed). */
  readonly holeBytes = { hashed: 0, skipped: 0 };
  /** Large files' writes: requests made, DATA chunks they wrote, the most chunks in one. */
  readonly largeWrites = { requests: 0, chunks: 0, mostChunks: 0 };
  /**
   * What a changed-block transfer reads its previous copy into to rebuild the new file
   * (#copyFromOld): used again once each piece is written, so that a rebuild of GiBs does
   * not allocate a new MiB each time (V8 runs a full collection for every ~64 MiB of new
   * memory outside its heap; see ReadBuffers), and aligned, so direct writes need no copy.
   */
  readonly rebuildBuffers = new ReadBuffers(16 << 20);
  #dispatchScheduled = false;
  #inflightLength = 0;
  readonly #directIo: boolean;

  private constructor(
    root: string,
    log: WriterLog,
    inflightFile: string | undefined,
    journalFile: string | undefined,
    directIo: boolean,
  ) {
    this.root = root;
    this.#log = log;
    this.#inflightFile = inflightFile;
    this.#journalFile = journalFile;
    this.#directIo = directIo;
  }

  /**
   * `inflightFile` (in the target's state directory) names the temporary entry being
   * written, so that one left behind by a crash or kill is removed when the next writer
   * opens: the migrated tree never keeps a `.ferry-tmp-*` file. `directIo` (default on):
   * files of DIRECT_FROM bytes and more are written past the page cache where the file
   * system allows it (see writeChunks).
   */
  static async open(
    root: string,
    log: WriterLog,
    opts: { inflightFile?: string; journalFile?: string; directIo?: boolean } = {},
  ): Promise<TreeWriter> {
    const real = realpathSync(root);
    if (!lstatSync(real).isDirectory()) {
      throw new FerryError('FERRY_CONFIG', `target root ${root} is not a directory`);
    }
    const w = new TreeWriter(real, log, opts.inflightFile, opts.journalFile, opts.directIo ?? true);
    w.#loadJournal();
    w.#removeLeftover();
    return w;
  }

  /**
   * `journalFile` (in the target's state directory) names the large file being received
   * and how far it is written and fsync'd. A partial file it names survives a lost
   * connection or a crash, and the source continues it from there (see resumable()).
   */
  #loadJournal(): void {
    if (!this.#journalFile) return;
    let j: Partial | null = null;
    try {
      const text = readFileSync(this.#journalFile, 'utf8').trim();
      j = text ? (JSON.parse(text) as Partial) : null;
    } catch {
      j = null; // a torn or missing journal: nothing to resume
    }
    this.#journalFd = openSync(this.#journalFile, C.O_RDWR | C.O_CREAT, 0o600);
    if (!j || typeof j.tmp !== 'string' || typeof j.path !== 'string' || validatePath(j.path)) return;
    const inside =
      path.dirname(j.tmp) === path.dirname(this.#abs(j.path)) &&
      path.basename(j.tmp).startsWith('.ferry-tmp-');
    try {
      if (inside && lstatSync(j.tmp).isFile() && Number.isSafeInteger(j.offset) && j.offset > 0)
        this.#partial = j;
    } catch {
      /* the partial file is gone */
    }
    if (!this.#partial) this.#writeJournal(null);
  }

  /** The partly received file the source may continue, if one was kept. */
  resumable(): ResumableFile | undefined {
    const p = this.#partial;
    return p ? { path: p.path, offset: p.offset, size: p.size, mtimeNs: p.mtimeNs } : undefined;
  }

  /** Writes the journal's one record (in place, padded); the caller makes it durable where it must be. */
  #writeJournal(j: Partial | null): void {
    if (this.#journalFd === null) return;
    const block = Buffer.alloc(JOURNAL_BLOCK, 0x20);
    if (j) block.write(`${JSON.stringify(j)}\n`, 0, 'utf8');
    writeSync(this.#journalFd, block, 0, block.length, 0);
  }

  /** Drops the kept partial file (the source did not continue it). */
  #dropPartial(): void {
    const p = this.#partial;
    if (!p) return;
    this.#partial = null;
    try {
      unlinkSync(p.tmp);
    } catch {
      /* already gone */
    }
    this.#writeJournal(null);
  }

  #removeLeftover(): void {
    if (!this.#inflightFile) return;
    let lines: string[] = [];
    try {
      lines = readFileSync(this.#inflightFile, 'utf8').split('\n');
    } catch {
      /* first writer for this task */
    }
    for (const line of lines) {
      const named = parseInflightLine(line);
      if (!named) continue;
      const left = named.path;
      const inside = left.startsWith(`${this.root}/`) && path.normalize(left) === left;
      if (!inside || left === this.#partial?.tmp || !this.#reallyInside(path.dirname(left))) continue;
      if (named.inPlace) {
        // written in place: unfinished only while its permission bits are still 0000
        const st = lstatSync(left, { throwIfNoEntry: false });
        if (!st?.isFile() || (st.mode & 0o7777) !== 0) continue;
      } else if (!path.basename(left).startsWith('.ferry-tmp-')) continue;
      try {
        unlinkSync(left);
        this.#log.warn({ path: left }, 'removed a file left unfinished by an interrupted transfer');
      } catch {
        /* it was renamed into place or never created */
      }
    }
    writeFileSync(this.#inflightFile, '');
    this.#inflightFd = openSync(this.#inflightFile, 'r+');
  }

  /**
   * Names the temporary entries about to be created (see open()), one per line: the one
   * entry being written, or every file of the batches running. Written over the previous
   * list and padded to its length: truncating and rewriting a file per entry makes ext4
   * flush it each time (auto_da_alloc), which cost ~160 µs per file.
   */
  #noteInflight(lines: readonly string[]): void {
    if (this.#inflightFd === null) return;
    const text = Buffer.from(`${lines.join('\n')}\n`, 'utf8');
    const len = Math.max(text.length, this.#inflightLength, INFLIGHT_MIN_BYTES);
    const block = Buffer.alloc(len, 0x20);
    text.copy(block);
    writeSync(this.#inflightFd, block, 0, len, 0);
    this.#inflightLength = len;
  }

  /** Releases the in-flight record and the journal; call when the writer is done. */
  close(): void {
    if (this.#inflightFd !== null) closeSync(this.#inflightFd);
    this.#inflightFd = null;
    if (this.#journalFd !== null) closeSync(this.#journalFd);
    this.#journalFd = null;
  }

  /** `dir` exists and is itself, not reached through a symlink, under the root (or is the root). */
  #reallyInside(dir: string): boolean {
    try {
      const real = realpathSync(dir);
      return (
        real === dir && (real === this.root || real.startsWith(this.root === '/' ? '/' : `${this.root}/`))
      );
    } catch {
      return false;
    }
  }

  /** `rel` is canonical (checked by validatePath, or a parent of such a path): joined as is. */
  #abs(rel: string): string {
    if (rel === '') return this.root;
    return this.root === '/' ? `/${rel}` : `${this.root}/${rel}`;
  }

  #unsafe(rel: string, why: string): FerryError {
    return new FerryError('FERRY_UNSAFE_PATH', `refused ${JSON.stringify(rel)}: ${why}`, {
      context: { path: rel },
    });
  }

  /** Verifies (and with `create`, makes) every directory above `rel`; returns the parent's absolute path. */
  #parent(rel: string, create: boolean): string | null {
    const why = validatePath(rel);
    if (why) throw this.#unsafe(rel, why);
    const parent = parentOf(rel);
    if (this.#safeDirs.has(parent)) return this.#abs(parent);
    let cur = '';
    for (const part of parent.split('/')) {
      cur = cur === '' ? part : `${cur}/${part}`;
      if (this.#safeDirs.has(cur)) continue;
      const abs = this.#abs(cur);
      try {
        const st = lstatSync(abs);
        if (st.isSymbolicLink()) {
          if (!create) return null;
          throw this.#unsafe(rel, `parent ${JSON.stringify(cur)} is a symbolic link`);
        }
        if (!st.isDirectory()) {
          if (!create) return null;
          throw this.#unsafe(rel, `parent ${JSON.stringify(cur)} is not a directory`);
        }
      } catch (e) {
        if (code(e) !== 'ENOENT') throw e;
        if (!create) return null;
        this.#touch(parentOf(cur));
        mkdirSync(abs, { mode: 0o700 });
      }
      this.#safeDirs.add(cur);
    }
    return this.#abs(parent);
  }

  /** Remembers a directory's times before the writer first changes its contents. */
  #touch(relDir: string): void {
    if (this.#touched.has(relDir) || this.#dirMeta.has(relDir)) return;
    try {
      const st = lstatSync(this.#abs(relDir), { bigint: true });
      this.#touched.set(relDir, { atimeNs: st.atimeNs, mtimeNs: st.mtimeNs });
    } catch {
      /* created later in this pass */
    }
  }

  /** A fresh temporary name in the entry's directory, noted as in flight. */
  #tmpName(parentAbs: string, seq: number): string {
    const tmp = tmpPath(parentAbs, seq);
    this.#noteInflight([inflightLine(tmp, false)]);
    return tmp;
  }

  /** Puts a prepared temporary entry at `rel`, replacing whatever is there (a directory included). */
  #place(tmp: string, rel: string): void {
    this.#touch(parentOf(rel));
    const abs = this.#abs(rel);
    try {
      renameSync(tmp, abs);
    } catch (e) {
      if (!['EISDIR', 'ENOTEMPTY', 'EEXIST', 'ENOTDIR'].includes(code(e) ?? '')) throw e;
      rmSync(abs, { recursive: true, force: true });
      this.#forgetDirs(rel);
      renameSync(tmp, abs);
    }
  }

  #forgetDirs(rel: string): void {
    for (const d of [...this.#safeDirs]) if (d === rel || d.startsWith(`${rel}/`)) this.#safeDirs.delete(d);
    for (const d of [...this.#dirMeta.keys()])
      if (d === rel || d.startsWith(`${rel}/`)) this.#dirMeta.delete(d);
  }

  #setXattrs(abs: string, xattrs: EntryMessage['xattrs'], replaceExisting: boolean): void {
    const want = new Map((xattrs ?? []).map((x) => [x.name, Buffer.from(x.value, 'base64')]));
    if (replaceExisting) {
      for (const name of ferryFs.listXattr(abs)) if (!want.has(name)) this.#tryXattr(abs, name, null);
    }
    for (const [name, value] of want) this.#tryXattr(abs, name, value);
  }

  #tryXattr(abs: string, name: string, value: Buffer | null): void {
    try {
      if (value) ferryFs.setXattr(abs, name, value);
      else ferryFs.removeXattr(abs, name);
    } catch (e) {
      this.#warnXattr(name, code(e));
    }
  }

  #warnXattr(name: string, err: string | undefined): void {
    const key = `${name}:${err}`;
    if (this.#xattrWarned.has(key)) return;
    this.#xattrWarned.add(key);
    this.#log.warn({ xattr: name, err }, 'cannot set extended attribute on the target file system');
  }

  #setTimes(abs: string, mtimeNs: bigint, atimeNs = mtimeNs): void {
    const [as, ans] = splitNs(atimeNs);
    const [ms, mns] = splitNs(mtimeNs);
    ferryFs.lutimes(abs, as, ans, ms, mns);
  }

  /**
   * Queues the whole small files of one FILE or FILES frame, in order. Each file's hash is
   * checked now: one that differs is not written and comes back as a `mismatch` (the source
   * sends it again next pass). The others have their parents made safe and are batched with
   * the files around them into one native job in the thread pool per batch (temporary file
   * O_EXCL|O_NOFOLLOW, content, owner, mode, xattrs, times, rename). The result lists, in
   * order, each run of files queued one after another (`placed` settles when all of them are
   * in place, or rejects with why one is not) and each mismatch between them. Resolves when
   * every file is accepted, which waits while BATCHES_IN_FLIGHT jobs are running. `release`
   * is called once no file needs the frame's buffer any more (written, failed or not
   * queued). Every other operation first waits for the queued files (drain()), so order holds.
   *
   * A file sent as its appended bytes (`appendFrom`) is completed from the copy the target
   * holds (#appendedTo: one read job for the next such files of the frame, up to
   * APPEND_READ_BYTES of them) before its hash is checked; where that copy is not there or
   * not exactly appendFrom bytes long, it comes back as a mismatch.
   */
  async queueFiles(
    files: readonly { body: WholeFileMessage; data: Buffer }[],
    release: () => void = () => {},
  ): Promise<QueuedFiles[]> {
    const frame = new FrameFiles(files.length, release);
    const out: QueuedFiles[] = [];
    let run: { batches: Batch[]; lastSeq: number; count: number } | null = null;
    const endRun = () => {
      if (!run) return;
      const { batches, lastSeq, count } = run;
      const all = batches.length === 1 ? batches[0]!.placed : Promise.all(batches.map((b) => b.placed));
      const placed = all.then(() => {});
      placed.catch(() => {}); // the caller observes it; a pass that stops early may not
      out.push({ placed, lastSeq, count });
      run = null;
    };
    let handed = 0; // files given to a batch or dropped: the frame no longer waits for them here
    try {
      if (this.#file) throw new FerryError('FERRY_PROTOCOL_VIOLATION', 'FILE before the previous file ended');
      let bases = new Map<number, Buffer | string>();
      let basesTo = 0; // the files before this one had their copies read
      for (const [i, { body: e, data: sent }] of files.entries()) {
        let data = sent;
        if (e.appendFrom !== undefined && i >= basesTo)
          ({ bases, to: basesTo } = await this.#appendedTo(files, i));
        const base = e.appendFrom !== undefined ? bases.get(i) : undefined;
        if (typeof base === 'string') {
          endRun();
          out.push({ seq: e.seq, mismatch: staleAppend(e.path, base) });
          handed++;
          frame.done(1);
          continue;
        }
        if (base) data = Buffer.concat([base, sent]);
        if (wholeFileHash(data) !== e.hash) {
          endRun();
          out.push({ seq: e.seq, mismatch: checksumMismatch(e.path) });
          handed++;
          frame.done(1);
          continue;
        }
        const item = this.#prepareWholeFile(e, data);
        const b = this.#batch ?? this.#newBatch();
        b.items.push(item);
        b.rels.push(e.path);
        b.frames.push(frame);
        b.bytes += data.length;
        handed++; // the batch gives the frame its file back once its job has finished
        run ??= { batches: [], lastSeq: 0, count: 0 };
        if (run.batches[run.batches.length - 1] !== b) run.batches.push(b);
        run.lastSeq = e.seq;
        run.count++;
        if (b.items.length >= BATCH_FILES || b.bytes >= BATCH_BYTES) await this.#dispatch();
      }
      endRun();
      if (this.#batch && this.#running.size === 0 && !this.#dispatchScheduled) {
        // nothing is being written: start this batch once the frames already received are queued
        this.#dispatchScheduled = true;
        setImmediate(() => {
          this.#dispatchScheduled = false;
          if (this.#running.size < BATCHES_IN_FLIGHT) void this.#dispatch();
        });
      }
      return out;
    } finally {
      if (handed < files.length) frame.done(files.length - handed);
    }
  }

  /**
   * The copies that files of a frame sent as appended bytes continue, read in one job in the
   * thread pool, from file `from` on and for at most APPEND_READ_BYTES of them (at least one):
   * for each file i with `appendFrom`, the first appendFrom bytes of the regular file the
   * target holds at its path (opened through no symlink, under directories checked as for
   * any write), or why there is no such copy of exactly that length. `to`: the first file
   * not looked at.
   */
  async #appendedTo(
    files: readonly { body: WholeFileMessage }[],
    from: number,
  ): Promise<{ bases: Map<number, Buffer | string>; to: number }> {
    const out = new Map<number, Buffer | string>();
    const which: number[] = [];
    const paths: string[] = [];
    const caps: number[] = [];
    let bytes = 0;
    let to = from;
    for (; to < files.length; to++) {
      const e = files[to]!.body;
      if (e.appendFrom === undefined) continue;
      if (bytes > 0 && bytes + e.appendFrom > APPEND_READ_BYTES) break;
      if (!this.#parent(e.path, false)) out.set(to, 'its directory is not there');
      else {
        which.push(to);
        paths.push(this.#abs(e.path));
        caps.push(e.appendFrom + 1); // one byte more: a longer copy reads as longer
        bytes += e.appendFrom + 1;
      }
    }
    if (paths.length === 0) return { bases: out, to };
    const slab = Buffer.allocUnsafe(caps.reduce((a, b) => a + b, 0));
    const { sizes } = await ferryFs.readFiles(paths, caps, slab, false);
    let at = 0;
    for (const [k, i] of which.entries()) {
      const want = caps[k]! - 1;
      const n = sizes[k]!;
      if (n === want) out.set(i, slab.subarray(at, at + want));
      else if (n < 0) out.set(i, `it cannot be read (${errnoError(-n, 'read').code})`);
      else out.set(i, notAppendedLength(n, want));
      at += caps[k]!;
    }
    return { bases: out, to };
  }

  /** A whole small file's native write, its parents made safe (FERRY_UNSAFE_PATH otherwise). */
  #prepareWholeFile(e: WholeFileMessage, data: Buffer): BatchWriteItem {
    if (this.#partial?.path === e.path) this.#dropPartial();
    const parentAbs = this.#parent(e.path, true)!;
    this.#touch(parentOf(e.path));
    this.#countWritten(data.length);
    const [mtimeSec, mtimeNsec] = splitNsText(e.mtimeNs);
    const item: BatchWriteItem = {
      tmp: tmpPath(parentAbs, e.seq), // noted as in flight when its batch starts
      dst: this.#abs(e.path),
      data,
      uid: e.uid,
      gid: e.gid,
      mode: e.mode,
      mtimeSec,
      mtimeNsec,
      // where nothing is at its path yet (a first copy), written there directly: no rename
      inPlace: e.mode !== 0,
    };
    if (e.xattrs?.length) {
      item.xattrNames = e.xattrs.map((x) => osPath(x.name)); // a name that is not UTF-8 as its bytes
      item.xattrValues = e.xattrs.map((x) => Buffer.from(x.value, 'base64'));
    }
    return item;
  }

  #newBatch(): Batch {
    let resolve!: () => void;
    let reject!: (e: unknown) => void;
    const placed = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    placed.catch(() => {}); // its files' callers observe it; a pass that stops early may not
    this.#batch = { items: [], rels: [], frames: [], bytes: 0, inflight: '', placed, resolve, reject };
    return this.#batch;
  }

  /** Starts the batch being filled (waiting for room first). */
  async #dispatch(): Promise<void> {
    while (this.#running.size >= BATCHES_IN_FLIGHT) await this.#running.keys().next().value;
    const b = this.#batch;
    if (!b) return;
    this.#batch = null;
    // named before the job can create any of them
    let lines = '';
    for (const i of b.items)
      lines += i.inPlace
        ? `${inflightLine(i.tmp, false)}\n${inflightLine(i.dst, true)}\n`
        : `${inflightLine(i.tmp, false)}\n`;
    b.inflight = lines.slice(0, -1);
    this.#noteInflight([...this.#running.values()].map((r) => r.inflight).concat(b.inflight));
    const job: Promise<void> = ferryFs
      .writeFiles(b.items)
      .then(
        (res) => this.#settleBatch(b, res),
        (err) => {
          for (const f of b.frames) f.done(1);
          b.reject(toWriteError(err, 'write', ''));
        },
      )
      .finally(() => {
        this.#running.delete(job);
        // keep the disk busy: a batch that filled up while this one ran starts now
        if (this.#batch && this.#running.size < BATCHES_IN_FLIGHT) void this.#dispatch();
      });
    this.#running.set(job, b);
  }

  #settleBatch(b: Batch, res: Int32Array): void {
    let failure: unknown;
    for (let i = 0; i < b.items.length; i++) {
      b.frames[i]!.done(1); // the job is done with its content
      const at = i * WRITE_RESULT_INTS;
      const step = res[at]!;
      const errno = res[at + 1]!;
      const xattrIndex = res[at + 2]!;
      const xattrErrno = res[at + 3]!;
      if (step === WriteStep.ok) {
        if (res[at + 4] === 1) this.smallWrites.inPlace++;
        else this.smallWrites.renamed++;
      }
      const it = b.items[i]!;
      const rel = b.rels[i]!;
      if (xattrIndex >= 0)
        this.#warnXattr(it.xattrNames?.[xattrIndex]?.toString() ?? '?', getSystemErrorName(-xattrErrno));
      try {
        if (step === WriteStep.place)
          this.#place(it.tmp, rel); // a directory is in the way
        else if (step !== WriteStep.ok)
          throw toWriteError(errnoError(errno, rel), STEP_NAMES[step] ?? `step ${step}`, rel);
      } catch (err) {
        failure ??= err; // the first failure is the batch's; the files after it are still placed
      }
    }
    if (failure === undefined) b.resolve();
    else b.reject(failure);
  }

  /** Waits until every queued whole file is written (or has failed). */
  async drain(): Promise<void> {
    while (this.#batch || this.#running.size) {
      if (this.#batch) await this.#dispatch();
      await Promise.allSettled(this.#running.keys());
    }
  }

  #countWritten(n: number): void {
    this.#unflushed += n;
    if (this.#unflushed >= FLUSH_EVERY_BYTES && !this.#flushing) {
      // Start writeback while data keeps arriving, so that the COMMIT's sync has little left.
      this.#unflushed = 0;
      this.#flushing = run('sync', ['-f', this.root])
        .catch(() => {})
        .finally(() => {
          this.#flushing = null;
        });
    }
  }

  /**
   * Applies an ENTRY. A file stays open until fileEnd(); everything else is done on return.
   * For a changed-block transfer (deltaBlockSize) it returns the SUMS of the copy it holds.
   */
  async entry(e: EntryMessage): Promise<SumsMessage | undefined> {
    if (this.#file) throw new FerryError('FERRY_PROTOCOL_VIOLATION', 'ENTRY before the previous file ended');
    if (e.kind !== 'dir') await this.drain(); // queued files first: a link or a replacement may need them
    const parentAbs = this.#parent(e.path, true)!;
    const abs = this.#abs(e.path);
    this.#touch(parentOf(e.path)); // before the temporary entry changes the parent's mtime
    switch (e.kind) {
      case 'dir': {
        let st: ReturnType<typeof lstatSync> | null = null;
        try {
          st = lstatSync(abs);
        } catch (err) {
          if (code(err) !== 'ENOENT') throw err;
        }
        if (st && !st.isDirectory()) {
          unlinkSync(abs);
          st = null;
        }
        if (!st) mkdirSync(abs, { mode: 0o700 });
        this.#safeDirs.add(e.path);
        this.#dirMeta.set(e.path, e);
        return;
      }
      case 'file': {
        if (e.resumeFrom !== undefined) {
          const f = await this.#continuePartial(e, parentAbs);
          this.#file = f;
          if (!e.deltaBlockSize) return;
          // a changed-block transfer continued: the old copy is still in place (the new file
          // is the kept partial, renamed over it only at FILE_END)
          const delta = await this.#openOld(abs, e.deltaBlockSize, e.seq);
          if (delta.old) f.old = delta.old;
          return delta.sums;
        }
        if (this.#partial?.path === e.path) this.#dropPartial(); // sent afresh: the kept copy is stale
        const delta = e.deltaBlockSize ? await this.#openOld(abs, e.deltaBlockSize, e.seq) : undefined;
        const base = e.appendFrom !== undefined ? this.#openAppended(abs, e.appendFrom) : undefined;
        const old = delta?.old ?? (typeof base === 'object' ? base : undefined);
        const tmp = this.#tmpName(parentAbs, e.seq);
        const fd = openSync(tmp, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
        this.#file = {
          entry: e,
          rel: e.path,
          tmp,
          fd,
          ...this.#directFor(fd, e),
          hasher: contentHash(e.size ?? 0),
          hashedTo: 0,
          holesUnhashed: e.holesUnhashed === true,
          writes: [],
          queuedBytes: 0,
          waiting: [],
          writing: false,
          checkpointed: 0,
          written: 0,
          resumed: false,
          ...(old ? { old } : {}),
          ...(typeof base === 'string' ? { staleAppend: base } : {}),
          nextCheckpoint: (e.size ?? 0) >= CHECKPOINT_FROM ? CHECKPOINT_BYTES : Number.POSITIVE_INFINITY,
        };
        return delta?.sums;
      }
      case 'symlink': {
        const tmp = this.#tmpName(parentAbs, e.seq);
        symlinkSync(e.linkTarget!, tmp);
        this.#finishNode(tmp, e, false);
        this.#place(tmp, e.path);
        return;
      }
      case 'hardlink': {
        if (e.renamed) {
          // the old copy of a renamed file: only a regular file still under a real directory
          const ok =
            this.#parent(e.linkTo!, false) &&
            lstatSync(this.#abs(e.linkTo!), { throwIfNoEntry: false })?.isFile();
          if (!ok)
            throw new FerryError(
              'FERRY_STALE_ENTRY',
              `the target no longer holds ${e.linkTo} (renamed to ${e.path})`,
            );
        }
        const fromParent = this.#parent(e.linkTo!, false);
        if (!fromParent)
          throw this.#unsafe(e.linkTo!, 'hard-link source is not inside a real directory of the root');
        const from = this.#abs(e.linkTo!);
        if (lstatSync(from).isDirectory()) throw this.#unsafe(e.linkTo!, 'hard-link source is a directory');
        const tmp = this.#tmpName(parentAbs, e.seq);
        linkSync(from, tmp);
        this.#place(tmp, e.path);
        return;
      }
      default: {
        const tmp = this.#tmpName(parentAbs, e.seq);
        ferryFs.mknod(tmp, TYPE_BITS[e.kind] | 0o600, e.rdevMajor ?? 0, e.rdevMinor ?? 0);
        this.#finishNode(tmp, e, true);
        this.#place(tmp, e.path);
      }
    }
  }

  /**
   * Opens the copy the target holds at a path (a regular file only; the parent was checked
   * already) and sums it in blocks for a changed-block transfer. No copy: empty sums.
   */
  async #openOld(
    abs: string,
    blockSize: number,
    seq: number,
  ): Promise<{ old?: { fd: number; size: number }; sums: SumsMessage }> {
    const none = { sums: { seq, blockSize, size: 0, hashes: '' } };
    let fd: number;
    try {
      fd = openSync(abs, C.O_RDONLY | C.O_NOFOLLOW);
    } catch {
      return none;
    }
    const st = fstatSync(fd);
    if (!st.isFile()) {
      closeSync(fd);
      return none;
    }
    const out = Buffer.allocUnsafe(Math.ceil(st.size / blockSize) * BLOCK_SUM_BYTES);
    const weak = Buffer.allocUnsafe(Math.ceil(st.size / blockSize) * WEAK_SUM_BYTES);
    // read in chunks of whole blocks, the next one reading while this one is summed: a cold
    // disk serves a few large requests far faster than one per 64 KiB block
    const chunk = Math.max(1, Math.floor(SUM_READ_BYTES / blockSize)) * blockSize;
    const bufs = [Buffer.allocUnsafe(Math.min(chunk, st.size)), Buffer.allocUnsafe(Math.min(chunk, st.size))];
    const readChunk = async (buf: Buffer, at: number): Promise<number> => {
      let n = 0;
      while (n < buf.length && at + n < st.size) {
        const r = await readAt(fd, buf, n, Math.min(buf.length, st.size - at) - n, at + n);
        if (r <= 0) break; // shorter than it was stated: sum what is there
        n += r;
      }
      return n;
    };
    let blocks = 0;
    let next = readChunk(bufs[0]!, 0);
    try {
      for (let at = 0, k = 0; at < st.size; at += chunk, k++) {
        const buf = bufs[k % 2]!;
        const n = await next;
        next =
          at + chunk < st.size && n === chunk
            ? readChunk(bufs[(k + 1) % 2]!, at + chunk)
            : Promise.resolve(0);
        // the weak sums in the thread pool while the strong ones are taken here: the source
        // waits for both, with nothing else to do
        const count = Math.ceil(n / blockSize);
        const weakDone = ferryFs.weakSums(
          buf.subarray(0, n),
          blockSize,
          weak.subarray(blocks * WEAK_SUM_BYTES, (blocks + count) * WEAK_SUM_BYTES),
        );
        for (let b = 0, i = blocks; b < n; b += blockSize, i++)
          blockSum(buf.subarray(b, Math.min(n, b + blockSize))).copy(out, i * BLOCK_SUM_BYTES);
        await weakDone;
        blocks += count;
        if (n < chunk) break;
      }
      await next;
    } catch (e) {
      await next.catch(() => {});
      closeSync(fd); // a copy that cannot be read fails the entry; nothing stays open
      throw e;
    }
    return {
      old: { fd, size: st.size },
      sums: {
        seq,
        blockSize,
        size: st.size,
        hashes: out.subarray(0, blocks * BLOCK_SUM_BYTES).toString('base64'),
        weak: weak.subarray(0, blocks * WEAK_SUM_BYTES).toString('base64'),
      },
    };
  }

  /**
   * The copy a file sent as its appended bytes in frames of its own continues (ENTRY
   * appendFrom; the agent's session sends a whole file so when it compresses DATA): the
   * regular file the target holds at that path, exactly `length` bytes long; or, when there
   * is none such, why not (the file is then REJECTed at its FILE_END and sent whole next pass).
   */
  #openAppended(abs: string, length: number): { fd: number; size: number } | string {
    let fd: number;
    try {
      fd = openSync(abs, C.O_RDONLY | C.O_NOFOLLOW);
    } catch (e) {
      return `it cannot be opened (${code(e)})`;
    }
    const st = fstatSync(fd);
    if (st.isFile() && st.size === length) return { fd, size: length };
    closeSync(fd);
    return st.isFile() ? notAppendedLength(st.size, length) : 'it is not a regular file';
  }

  /** The O_DIRECT descriptor a large file is written through, when direct I/O is on and the file system takes it. */
  #directFor(fd: number, e: EntryMessage): { direct?: number } {
    if (!this.#directIo || (e.size ?? 0) < DIRECT_FROM) return {};
    const direct = reopenDirect(fd, 'write');
    return direct === undefined ? {} : { direct };
  }

  /** Changed-block transfer: copies the previous copy's bytes [f.hashedTo, to) into the new file, in place. */
  async #fillFromOld(f: OpenFile, to: number): Promise<void> {
    if (f.old) await this.#copyFromOld(f, f.hashedTo, Math.min(to, f.old.size) - f.hashedTo);
  }

  /**
   * Changed-block transfer: appends the previous copy's bytes [from, from + length) to the
   * new file (at f.hashedTo), 1 MiB at a time, the next MiB reading while this one is
   * hashed. The pieces are taken as DATA is (#append: written in the thread pool, joined,
   * past the page cache where they are whole blocks at aligned offsets), so the rebuild
   * neither blocks the event loop nor leaves the whole file dirty for the COMMIT's sync;
   * piece ends fall on the new file's MiB boundaries, so all but the first are aligned. They
   * are read into rebuildBuffers, used again once written.
   */
  async #copyFromOld(f: OpenFile, from: number, length: number): Promise<void> {
    const old = f.old;
    if (!old || length <= 0) return;
    const end = from + length;
    const readPiece = async (at: number, to: number): Promise<ReadBuffer> => {
      const want = Math.min(end - at, COPY_PIECE_BYTES - (to % COPY_PIECE_BYTES));
      const piece = this.rebuildBuffers.take(want);
      try {
        const n = await readAt(old.fd, piece.buf, 0, want, at);
        if (n <= 0)
          throw new FerryError('FERRY_TARGET_WRITE', `the previous copy of ${f.rel} is shorter than it was`);
        return n === want ? piece : { buf: piece.buf.subarray(0, n), release: piece.release };
      } catch (e) {
        piece.release();
        throw e;
      }
    };
    let next: Promise<ReadBuffer> | null = readPiece(from, f.hashedTo);
    for (let at = from; next; ) {
      const piece: ReadBuffer = await next;
      at += piece.buf.length;
      next = at < end ? readPiece(at, f.hashedTo + piece.buf.length) : null;
      try {
        await this.#append(f, piece.buf, f.hashedTo, piece.release);
      } catch (e) {
        await next?.then(
          (p) => p.release(),
          () => {},
        ); // no read left running into a buffer
        throw e;
      }
    }
  }

  /**
   * Changed-block transfer: a COPY frame. What lies between the last chunk and `offset`
   * comes from the same offsets of the previous copy (as before DATA); then bytes [from,
   * from + length) of that copy go at `offset`. Frames come in file order and stay inside
   * both files: anything else is refused.
   */
  async copy(c: CopyMessage): Promise<void> {
    const f = this.#file;
    if (!f?.old || !f.entry.deltaBlockSize)
      throw new FerryError(
        'FERRY_PROTOCOL_VIOLATION',
        'COPY outside a changed-block transfer of a file with a previous copy',
      );
    const size = f.entry.size ?? 0;
    if (c.offset < f.hashedTo || c.offset + c.length > size || c.from + c.length > f.old.size)
      throw new FerryError(
        'FERRY_PROTOCOL_VIOLATION',
        `COPY of ${c.from}+${c.length} to ${c.offset} outside ${f.rel} (size ${size}, previous copy ${f.old.size})`,
      );
    this.#checkpoint(f);
    await this.#fillFromOld(f, c.offset);
    if (f.hashedTo !== c.offset)
      throw new FerryError(
        'FERRY_PROTOCOL_VIOLATION',
        `COPY to ${c.offset} beyond the previous copy of ${f.rel}`,
      );
    await this.#copyFromOld(f, c.from, c.length); // beside the queued writes, as the fill is: other offsets
  }

  /**
   * Reopens the kept partial file for an ENTRY with resumeFrom, after checking that it is
   * the same file at the same offset, and hashes what it holds so the end-to-end hash
   * still covers the whole file.
   */
  async #continuePartial(e: EntryMessage, parentAbs: string): Promise<OpenFile> {
    const p = this.#partial;
    if (!p || p.path !== e.path || p.size !== e.size || p.mtimeNs !== e.mtimeNs || p.offset !== e.resumeFrom)
      throw new FerryError(
        'FERRY_PROTOCOL_VIOLATION',
        `resumeFrom for ${e.path} does not match the kept partial file`,
      );
    if (path.dirname(p.tmp) !== parentAbs)
      throw this.#unsafe(e.path, 'the kept partial file is not in the entry directory');
    this.#partial = null;
    const fd = openSync(p.tmp, C.O_RDWR | C.O_NOFOLLOW);
    try {
      if (!fstatSync(fd).isFile()) throw this.#unsafe(e.path, 'the kept partial file is not a regular file');
      this.#noteInflight([inflightLine(p.tmp, false)]);
      ftruncateSync(fd, p.offset);
      const hasher = contentHash(e.size ?? 0);
      const buf = Buffer.allocUnsafe(1 << 20);
      for (let at = 0; at < p.offset; ) {
        const n = await readAt(fd, buf, 0, Math.min(buf.length, p.offset - at), at);
        if (n <= 0) throw new FerryError('FERRY_TARGET_WRITE', `the kept partial file of ${e.path} is short`);
        await hasher.update(n === buf.length ? buf : buf.subarray(0, n));
        at += n;
      }
      this.#log.warn({ path: e.path, offset: p.offset }, 'continuing a partly received file');
      return {
        entry: e,
        rel: e.path,
        tmp: p.tmp,
        fd,
        ...this.#directFor(fd, e),
        hasher,
        hashedTo: p.offset,
        holesUnhashed: false,
        writes: [],
        queuedBytes: 0,
        waiting: [],
        writing: false,
        checkpointed: p.offset,
        written: p.offset,
        resumed: true,
        nextCheckpoint: p.offset + CHECKPOINT_BYTES,
      };
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /**
   * Makes [0, hashedTo) of a large file durable and names it in the journal, in the
   * background: the writes queued so far settle, the file is fdatasync'd, then the journal
   * block is written and fdatasync'd. At most one checkpoint runs at a time.
   */
  #checkpoint(f: OpenFile): void {
    if (this.#journalFd === null || this.#checkpointing || f.hashedTo < f.nextCheckpoint) return;
    const upTo = f.hashedTo;
    f.nextCheckpoint = upTo + CHECKPOINT_BYTES;
    const queued = f.writes.map((w) => w.done);
    this.#checkpointing = (async () => {
      await Promise.all(queued);
      await fdatasyncAsync(f.fd);
      const e = f.entry;
      const journal = this.#journalFd;
      if (journal === null) return;
      this.#writeJournal({ path: f.rel, tmp: f.tmp, offset: upTo, size: e.size ?? 0, mtimeNs: e.mtimeNs });
      // in the thread pool: on the event loop this flush took 4.3 ms a checkpoint, ~1 s of a
      // 4 GiB copy during which nothing was received (docs/performance.md, session 13)
      await fdatasyncAsync(journal);
      f.checkpointed = upTo;
    })()
      .catch(() => {})
      .finally(() => {
        this.#checkpointing = null;
      });
  }

  /**
   * Owner, then mode (chown clears set-id bits), xattrs (a symlink's too: its SELinux label),
   * times: on a node not yet in place.
   */
  #finishNode(tmp: string, e: EntryMessage, withMode: boolean): void {
    lchownSync(tmp, e.uid, e.gid);
    if (withMode) chmodSync(tmp, e.mode);
    this.#setXattrs(tmp, e.xattrs, false);
    this.#setTimes(tmp, BigInt(e.mtimeNs));
  }

  /**
   * Writes one DATA chunk. `release` is called once nothing reads `data` any more: at once
   * for a small file or a refused chunk, when its write completes for a large one.
   */
  async data(offset: number, data: Buffer, release: () => void = () => {}): Promise<void> {
    let handedOff = false;
    try {
      const f = this.#file;
      if (!f) throw new FerryError('FERRY_PROTOCOL_VIOLATION', 'DATA outside a file');
      const size = f.entry.size ?? 0;
      this.#checkpoint(f);
      if (f.old && offset >= f.hashedTo) await this.#fillFromOld(f, offset);
      if (offset < f.hashedTo || offset + data.length > size) {
        throw new FerryError(
          'FERRY_PROTOCOL_VIOLATION',
          `DATA at ${offset}+${data.length} outside ${f.rel} (size ${size})`,
        );
      }
      this.#countHole(f, offset);
      await feedBeforeChunk(f.hasher, f.hashedTo, offset, data.length, f.holesUnhashed);
      handedOff = true;
      await this.#append(f, data, offset, release);
    } finally {
      if (!handedOff) release();
    }
  }

  /**
   * Takes a chunk that continues the file at `offset` (f.hashedTo, holes before it already
   * accounted for): hashes it, then writes it, at once for a small file, through the write
   * queue for a large one. `release` is called once nothing reads `data` any more, also when
   * this fails.
   */
  async #append(f: OpenFile, data: Buffer, offset: number, release: () => void): Promise<void> {
    let queued = false;
    try {
      await f.hasher.update(data);
      f.hashedTo = offset + data.length;
      f.written = f.hashedTo;
      this.#countWritten(data.length);
      if ((f.entry.size ?? 0) <= WRITE_BEHIND_FROM) {
        let done = 0;
        while (done < data.length) done += writeSync(f.fd, data, done, data.length - done, offset + done);
        return;
      }
      // Large file: the write goes to the thread pool while the next frame is decoded and
      // hashed; at most WRITE_BEHIND_BYTES stay queued. One write per file at a time:
      // several would only queue on the inode's lock in the kernel, spinning (2.6% of the
      // target's CPU on large files), and hold thread-pool threads. The chunks that arrive
      // meanwhile go out together in the next one (#pump).
      const done = new Promise<void>((resolve, reject) =>
        f.waiting.push({ data, offset, settle: { resolve, reject } }),
      );
      done.catch(() => {}); // surfaces in #settleOldest
      this.#pump(f);
      f.writes.push({ done, bytes: data.length });
      f.queuedBytes += data.length;
      // data is released when its own write has completed (a failure surfaces in #settleOldest)
      void done.then(release, release);
      queued = true;
      while (f.queuedBytes > WRITE_BEHIND_BYTES) await this.#settleOldest(f);
    } finally {
      if (!queued) release();
    }
  }

  /**
   * Starts the next write of a large file unless one is in flight: every waiting chunk that
   * continues the one before it, up to COALESCE_BYTES. On a device where each request
   * costs a few milliseconds (a network disk, the benchmark's virtual disk), one request of
   * several MiB writes at more than twice the rate of 1 MiB ones.
   */
  #pump(f: OpenFile): void {
    if (f.writing || f.waiting.length === 0) return;
    const group = [f.waiting.shift()!];
    let bytes = group[0]!.data.length;
    while (f.waiting.length && group.length < DIRECT_MAX_BUFFERS) {
      const last = group[group.length - 1]!;
      const next = f.waiting[0]!;
      if (next.offset !== last.offset + last.data.length || last.data.length % DIRECT_ALIGN) break;
      if (bytes + next.data.length > COALESCE_BYTES) break;
      group.push(f.waiting.shift()!);
      bytes += next.data.length;
    }
    if (f.writeFailed !== undefined) {
      for (const c of group) c.settle.reject(f.writeFailed);
      this.#pump(f);
      return;
    }
    f.writing = true;
    this.largeWrites.requests++;
    this.largeWrites.chunks += group.length;
    this.largeWrites.mostChunks = Math.max(this.largeWrites.mostChunks, group.length);
    const chunks = group.map((c) => c.data);
    void writeChunks(f, chunks, group[0]!.offset).then(
      () => this.#wrote(f, group, undefined),
      (e: unknown) => this.#wrote(f, group, e),
    );
  }

  /** A write of `group` has ended (`failure` when it failed): settles its chunks, starts the next. */
  #wrote(f: OpenFile, group: QueuedChunk[], failure: unknown): void {
    f.writing = false;
    if (failure !== undefined) f.writeFailed = failure;
    for (const c of group) {
      if (failure === undefined) c.settle.resolve();
      else c.settle.reject(failure);
    }
    this.#pump(f);
  }

  async #settleOldest(f: OpenFile): Promise<void> {
    const w = f.writes.shift();
    if (!w) return;
    f.queuedBytes -= w.bytes;
    await w.done;
  }

  async #settleAll(f: OpenFile): Promise<void> {
    while (f.writes.length) await this.#settleOldest(f);
  }

  /** Counts the hole from what the file's hash covers up to `to` as hashed or skipped. */
  #countHole(f: OpenFile, to: number): void {
    if (f.holesUnhashed) this.holeBytes.skipped += to - f.hashedTo;
    else this.holeBytes.hashed += to - f.hashedTo;
  }

  /** Verifies the whole file's hash, then gives it its metadata and puts it in place. */
  async fileEnd(hash: string): Promise<void> {
    const f = await this.#endFile('FILE_END');
    const e = f.entry;
    try {
      if (f.staleAppend) throw staleAppend(f.rel, f.staleAppend);
      await this.#fillFromOld(f, e.size ?? 0);
      await this.#settleAll(f);
      this.#closeOld(f);
      this.#countHole(f, e.size ?? 0);
      await feedEnd(f.hasher, f.hashedTo, e.size ?? 0, f.holesUnhashed);
      const got = await f.hasher.digest();
      if (got !== hash) throw checksumMismatch(f.rel);
      // only a file that ends in a hole (or was continued) needs its length set: one system
      // call fewer per small file
      if (f.resumed || f.written < (e.size ?? 0)) ftruncateSync(f.fd, e.size ?? 0);
      fchownSync(f.fd, e.uid, e.gid);
      fchmodSync(f.fd, e.mode);
      closeFile(f);
    } catch (err) {
      await Promise.allSettled(f.writes.map((w) => w.done));
      this.#discard(f);
      throw err;
    }
    this.#setXattrs(f.tmp, e.xattrs, false);
    this.#setTimes(f.tmp, BigInt(e.mtimeNs));
    this.#place(f.tmp, f.rel);
  }

  /**
   * The source could not read the current file to its end (FILE_ABORT): what arrived of it
   * is dropped, its resume checkpoint with it, and the copy the target had stays in place.
   */
  async abandonFile(): Promise<void> {
    const f = await this.#endFile('FILE_ABORT');
    await Promise.allSettled(f.writes.map((w) => w.done));
    this.#discard(f);
  }

  /**
   * The current file, which `frame` (FILE_END or FILE_ABORT) ends: no longer current, and
   * no longer named in the journal for resuming (it completes, or it is dropped).
   */
  async #endFile(frame: string): Promise<OpenFile> {
    const f = this.#file;
    if (!f) throw new FerryError('FERRY_PROTOCOL_VIOLATION', `${frame} outside a file`);
    this.#file = null;
    await this.#checkpointing;
    if (f.checkpointed > 0) this.#writeJournal(null);
    return f;
  }

  /** Removes `rel` (recursively for a directory). A path that is already gone is fine. */
  async delete(rel: string): Promise<void> {
    await this.drain();
    const parentAbs = this.#parent(rel, false);
    if (!parentAbs) return;
    const abs = this.#abs(rel);
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(abs);
    } catch (e) {
      if (code(e) === 'ENOENT') return;
      throw e;
    }
    this.#touch(parentOf(rel));
    if (st.isDirectory()) {
      rmSync(abs, { recursive: true, force: true });
      this.#forgetDirs(rel);
    } else {
      unlinkSync(abs);
    }
  }

  /**
   * Applies directory metadata deepest first, restores disturbed directory times, gives
   * the root the source root's metadata (COMMIT `root`, when sent), syncs.
   */
  async commit(root?: CommitMessage['root']): Promise<void> {
    await this.drain();
    const dirs = [...this.#dirMeta.entries()].sort((a, b) => depth(b[0]) - depth(a[0]));
    for (const [rel, e] of dirs) {
      const abs = this.#abs(rel);
      lchownSync(abs, e.uid, e.gid);
      chmodSync(abs, e.mode);
      this.#setXattrs(abs, e.xattrs, true);
      this.#setTimes(abs, BigInt(e.mtimeNs));
    }
    for (const [rel, t] of this.#touched) {
      if (this.#dirMeta.has(rel)) continue;
      try {
        this.#setTimes(this.#abs(rel), t.mtimeNs, t.atimeNs);
      } catch {
        /* removed later in the pass */
      }
    }
    if (root) {
      // the source root's own metadata, last: nothing written after it disturbs its time
      lchownSync(this.root, root.uid, root.gid);
      chmodSync(this.root, root.mode);
      this.#setXattrs(this.root, root.xattrs, true);
      this.#setTimes(this.root, BigInt(root.mtimeNs));
    }
    this.#dirMeta.clear();
    this.#touched.clear();
    this.#dropPartial(); // the source did not continue it in this pass
    await this.#flushing;
    await run('sync', ['-f', this.root]);
    this.#unflushed = 0;
  }

  /**
   * Ends a half-written file (connection lost); safe to call at any time. A large file
   * whose beginning was checkpointed is kept for resuming; anything else is removed.
   */
  async abort(): Promise<void> {
    await this.drain().catch(() => {});
    const f = this.#file;
    this.#file = null;
    if (!f) return;
    f.hasher.discard();
    await Promise.allSettled(f.writes.map((w) => w.done));
    await this.#checkpointing;
    this.#closeOld(f);
    if (f.checkpointed > 0) {
      closeFile(f);
      const e = f.entry;
      this.#partial = {
        path: f.rel,
        tmp: f.tmp,
        offset: f.checkpointed,
        size: e.size ?? 0,
        mtimeNs: e.mtimeNs,
      };
      return;
    }
    this.#discard(f);
  }

  #closeOld(f: OpenFile): void {
    if (!f.old) return;
    try {
      closeSync(f.old.fd);
    } catch {
      /* closed */
    }
    f.old = undefined;
  }

  #discard(f: OpenFile): void {
    f.hasher.discard();
    this.#closeOld(f);
    try {
      closeFile(f);
    } catch {
      /* already closed */
    }
    try {
      unlinkSync(f.tmp);
    } catch {
      /* never created */
    }
  }
}
