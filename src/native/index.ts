/**
 * native: typed access to ferry's own N-API addon (native/ferry_fs.c): xattrs, sparse-file
 * data regions, mknod and nanosecond link times. The one place that loads it.
 */
import { constants as C, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { getSystemErrorName } from 'node:util';
import { FerryError } from '../errors/index.js';
import { decodeName, hasEscapedBytes, osPath } from '../protocol/paths.js';

export {
  badSurrogate,
  decodeName,
  encodePath,
  hasEscapedBytes,
  osPath,
  pathBytes,
  replaceEscapedBytes,
} from '../protocol/paths.js';

export interface FerryFs {
  /** Offset of the next data at or after `offset`, or -1 when only a hole follows. */
  seekData(fd: number, offset: number): number;
  /** Offset of the next hole at or after `offset` (the file size at the end). */
  seekHole(fd: number, offset: number): number;
  /**
   * The weak (rolling) sum of all of `buf` (native/rolling.c): what a changed-block
   * transfer's SUMS carry per block besides the strong one, so that the source finds a
   * block of the target's copy wherever it starts in its own file.
   */
  weakSum(buf: Buffer): number;
  /**
   * The first p in [start, end - blockSize] where the window buf[p, p + blockSize) has a
   * weak sum in the set (`sorted`: ascending u32s; `bits`: a bitset of a power-of-two
   * size indexed by a sum's top bits), or -1. See WeakSums in replication/file/delta.ts.
   */
  rollFind(buf: Buffer, start: number, end: number, blockSize: number, bits: Buffer, sorted: Buffer): number;
  /**
   * In the thread pool: the weak sum of each `blockSize` block of `buf` (the last may be
   * short) into `out`, big-endian u32s; resolves to the number of blocks. Leave both
   * buffers alone until it settles.
   */
  weakSums(buf: Buffer, blockSize: number, out: Buffer): Promise<number>;
  listXattr(path: string): string[];
  getXattr(path: string, name: string): Buffer;
  setXattr(path: string, name: string, value: Buffer): void;
  removeXattr(path: string, name: string): void;
  mknod(path: string, mode: number, major: number, minor: number): void;
  /**
   * The extended attributes of an open file, from its descriptor, as readFiles' blob for one
   * file (parseXattrBlob(blob, 1)[0]): the attributes of the very file whose content is read.
   */
  fdXattrs(fd: number): Buffer;
  /**
   * Opens a source file for reading (O_NONBLOCK, O_NOATIME where permitted) through no
   * symlink: neither its last component nor any directory above it (openat2
   * RESOLVE_NO_SYMLINKS; O_NOFOLLOW alone on a kernel without openat2). Throws ELOOP for a
   * symlink in the path, so give it canonical paths (scanTree's are). The caller checks
   * with fstat that it opened a regular file.
   */
  openSource(path: string): number;
  /**
   * A symlink's target as bytes, read with readlinkat in its parent directory opened
   * through no symlink (as openSource opens): ELOOP for a symlink above it, EINVAL when it
   * is no longer a symlink. Give it canonical paths.
   */
  readlinkSource(path: string): Buffer;
  /**
   * The extended attributes of an entry not opened for its content (a symlink, a device
   * node, a fifo, a socket), as fdXattrs gives them: read inside its parent directory opened
   * through no symlink (as openSource opens), never from what a final symlink points to.
   * ELOOP for a symlink above it. Give it canonical paths.
   */
  nodeXattrs(path: string): Buffer;
  /**
   * How openSource protects a path here: "openat2" (no symlink anywhere in it) or, where the
   * kernel lacks openat2 or a seccomp filter refuses it, "nofollow" (the last component only).
   */
  openSourceMode(): 'openat2' | 'nofollow';
  /** Sets atime and mtime with nanoseconds, never following a final symlink. */
  lutimes(path: string, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): void;
  /**
   * Lists a directory (no . and ..), opened through no symlink, sorts the names in byte order
   * and fstatat()s the first `statLimit` of them (all by default) without following symlinks,
   * in the thread pool. `names`: those first names (one that is not valid UTF-8 with its bytes
   * escaped, see protocol/paths.ts); `fields`: LSTAT_FIELDS values for each (see LstatField;
   * a name that cannot be stated has mode -errno); `rest`: the names after them as bytes, each
   * followed by a NUL, or null (statNames states them). `errno` is set when the directory
   * cannot be read.
   */
  readDir(
    dir: string,
    statLimit?: number,
  ): Promise<{ errno: number; names: string[]; fields: BigInt64Array; rest: Buffer | null }>;
  /**
   * fstatat()s `names` in `dir` (opened through no symlink) in the thread pool, as readDir
   * does: the rest of a large directory's names, a slice at a time.
   */
  statNames(dir: string, names: string[]): Promise<{ errno: number; fields: BigInt64Array }>;
  /**
   * Reads whole files in one thread-pool job (native/batch_io.c): file i into `slab` at
   * readFilesLayout(caps, direct).offsets[i], at most caps[i] bytes (a slab of its `bytes`;
   * with `direct`, allocAligned). sizes[i]: bytes read, or -errno. With `xattrs`, every file's
   * extended attributes too, read from the same descriptor (the blob is parsed by
   * parseXattrBlob). With `direct`, the files are read with O_DIRECT straight into aligned
   * slots, the rest of the batch buffered once the file system refuses it.
   */
  readFiles(
    paths: string[],
    caps: number[],
    slab: Buffer,
    xattrs: boolean,
    direct?: boolean,
  ): Promise<{ sizes: Int32Array; xattrs: Buffer | null }>;
  /**
   * Writes, owns, times and renames whole files in one thread-pool job; WRITE_RESULT_INTS
   * ints per item: [step, errno, xattrIndex, xattrErrno, inPlace] (step: see WriteStep;
   * inPlace 1: written at dst directly, see BatchWriteItem.inPlace).
   */
  writeFiles(items: BatchWriteItem[]): Promise<Int32Array>;
  /**
   * Writes, in the thread pool, the longest prefix of `data` whose length is a multiple of
   * DIRECT_ALIGN at `position` (a multiple of DIRECT_ALIGN) through `fd`, which was opened
   * with O_DIRECT (native/direct_io.c). Resolves to the bytes written (the caller writes the
   * rest), or to -errno when nothing was written. An array of up to DIRECT_MAX_BUFFERS
   * buffers is written as their concatenation, in one request when each is aligned and all
   * but the last are whole blocks long. `data` (and the array) must not change until the
   * promise settles.
   */
  writeDirect(fd: number, data: Buffer | readonly Buffer[], position: number): Promise<number>;
  /**
   * Reads up to buf.length bytes at `position` (a multiple of DIRECT_ALIGN) through `fd`,
   * opened with O_DIRECT, in the thread pool: resolves to the bytes placed in buf (fewer at
   * the end of the file), or to -errno when nothing was read.
   */
  readDirect(fd: number, buf: Buffer, position: number): Promise<number>;
  /**
   * Where in `buf` a frame must start for its payload, after `headerBytes`, to sit at an
   * address aligned to DIRECT_ALIGN (0 to DIRECT_ALIGN - 1): writeDirect then writes it
   * without its aligned buffer.
   */
  alignedOffset(buf: Buffer, headerBytes: number): number;
}

/** The alignment writeDirect keeps: address, offset and length, for every block size Linux uses. */
export const DIRECT_ALIGN = 4096;

const wholeBlocks = (n: number) => Math.ceil(n / DIRECT_ALIGN) * DIRECT_ALIGN;

/**
 * Where readFiles puts each file in its slab, and the slab's size (the layout
 * native/batch_io.c follows): one after the other, or with `direct` in slots of whole
 * blocks, so that in a slab from allocAligned each direct read lands in place, without a copy.
 */
export function readFilesLayout(
  caps: readonly number[],
  direct: boolean,
): { offsets: number[]; bytes: number } {
  const offsets: number[] = [];
  let bytes = 0;
  for (const c of caps) {
    offsets.push(bytes);
    bytes += direct ? wholeBlocks(c) : c;
  }
  return { offsets, bytes };
}

/**
 * `n` bytes at an address aligned to DIRECT_ALIGN (a view into a slightly larger buffer):
 * readDirect reads into such a buffer in place when `n` is whole blocks.
 */
export function allocAligned(n: number): Buffer {
  const b = Buffer.allocUnsafeSlow(n + DIRECT_ALIGN - 1);
  const at = ferryFs.alignedOffset(b, 0);
  return b.subarray(at, at + n);
}
/** Buffers one writeDirect takes at most. */
export const DIRECT_MAX_BUFFERS = 64;

/** The fields readDir returns per name, in order (native/batch_io.c). */
export const LstatField = {
  mode: 0,
  uid: 1,
  gid: 2,
  size: 3,
  blocks: 4,
  ino: 5,
  dev: 6,
  nlink: 7,
  rdev: 8,
  atimeNs: 9,
  mtimeNs: 10,
  ctimeNs: 11,
} as const;
export const LSTAT_FIELDS = 12;

export interface BatchWriteItem {
  tmp: string;
  dst: string;
  data: Buffer;
  uid: number;
  gid: number;
  mode: number;
  mtimeSec: number;
  mtimeNsec: number;
  /**
   * Try dst itself first (O_CREAT|O_EXCL|O_NOFOLLOW, permission bits 0000 until the end):
   * where nothing is there the file is written in place and not renamed; otherwise tmp as
   * usual. Not with mode 0, which is how an unfinished in-place file is recognised.
   */
  inPlace?: boolean;
  xattrNames?: (string | Buffer)[];
  xattrValues?: Buffer[];
}

/** Ints per item in what writeFiles resolves to. */
export const WRITE_RESULT_INTS = 5;

/** What writeFiles reports per item (native/batch_io.c). */
export const WriteStep = {
  ok: 0,
  open: 1,
  write: 2,
  chown: 3,
  chmod: 4,
  times: 5,
  close: 6,
  rename: 7,
  /** dst is a directory or a non-empty one: the temporary file is kept for the caller to place. */
  place: 8,
  /** not attempted: an earlier item of the batch failed. */
  skipped: 9,
} as const;

const require = createRequire(import.meta.url);
const addonPath = fileURLToPath(new URL('../../native/build/Release/ferry_fs.node', import.meta.url));

/** Everything FerryFs names: an addon built from older sources lacks some (see loadAddon). */
export const ADDON_FUNCTIONS = [
  'seekData',
  'seekHole',
  'listXattr',
  'getXattr',
  'setXattr',
  'removeXattr',
  'mknod',
  'lutimes',
  'openSource',
  'readlinkSource',
  'nodeXattrs',
  'openSourceMode',
  'fdXattrs',
  'readDir',
  'statNames',
  'readFiles',
  'writeFiles',
  'writeDirect',
  'readDirect',
  'alignedOffset',
  'weakSum',
  'rollFind',
  'weakSums',
] as const satisfies readonly (keyof FerryFs)[];

/** Loads the addon and checks it is the one these sources expect, not a stale build. */
function loadAddon(): FerryFs {
  const addon = require(addonPath) as Partial<FerryFs>;
  const missing = ADDON_FUNCTIONS.filter((f) => typeof addon[f] !== 'function');
  if (missing.length)
    throw new FerryError(
      'FERRY_CONFIG',
      `the native addon ${addonPath} is older than ferry's sources (no ${missing.join(', ')}): run npm run build:native`,
    );
  return withByteNames(addon as FerryFs);
}

/**
 * The addon with every path given as the bytes it stands for and every listed name read as
 * ferry carries it (see protocol/paths.ts): a name that is not valid UTF-8 is found, listed and
 * created as exactly its bytes.
 */
function withByteNames(a: FerryFs): FerryFs {
  const p = osPath as (path: string) => string; // the addon takes a Buffer where a string goes
  // the addon's functions are not enumerable: each is taken by name
  const own = Object.fromEntries(ADDON_FUNCTIONS.map((f) => [f, a[f]])) as unknown as FerryFs;
  return {
    ...own,
    // attribute names as paths are: one that is not valid UTF-8 travels with its bytes escaped
    listXattr: (path) =>
      (a.listXattr(p(path)) as (string | Buffer)[]).map((n) => (typeof n === 'string' ? n : decodeName(n))),
    getXattr: (path, name) => a.getXattr(p(path), p(name)),
    setXattr: (path, name, value) => a.setXattr(p(path), p(name), value),
    removeXattr: (path, name) => a.removeXattr(p(path), p(name)),
    mknod: (path, mode, major, minor) => a.mknod(p(path), mode, major, minor),
    lutimes: (path, as, an, ms, mn) => a.lutimes(p(path), as, an, ms, mn),
    openSource: (path) => a.openSource(p(path)),
    readlinkSource: (path) => a.readlinkSource(p(path)),
    nodeXattrs: (path) => a.nodeXattrs(p(path)),
    readDir: async (dir, statLimit) => {
      const got = await a.readDir(p(dir), statLimit); // undefined: every name stated
      const names = got.names as (string | Buffer)[];
      for (let i = 0; i < names.length; i++) {
        const n = names[i]!;
        if (typeof n !== 'string') names[i] = decodeName(n);
      }
      return got;
    },
    statNames: (dir, names) => a.statNames(p(dir), names.map(p)),
    // the rest as given: the addon counts its arguments (`direct` may be left out, not undefined)
    readFiles: (paths, ...rest) => a.readFiles(paths.map(p), ...rest),
    writeFiles: (items) =>
      a.writeFiles(
        items.some((i) => hasEscapedBytes(i.tmp) || hasEscapedBytes(i.dst))
          ? items.map((i) => ({ ...i, tmp: p(i.tmp), dst: p(i.dst) }))
          : items,
      ),
  };
}

export const ferryFs: FerryFs = loadAddon();

/**
 * A second descriptor of an open file with O_DIRECT, for readDirect / writeDirect, opened
 * through /proc/self/fd (no path lookup: nothing can be swapped in between). undefined where
 * the file system refuses direct I/O (ramfs; tmpfs before Linux 6.6) or /proc is not mounted: the caller
 * stays with the buffered descriptor.
 */
export function reopenDirect(fd: number, mode: 'read' | 'write'): number | undefined {
  try {
    return openSync(`/proc/self/fd/${fd}`, (mode === 'read' ? C.O_RDONLY : C.O_WRONLY) | C.O_DIRECT);
  } catch {
    return undefined;
  }
}

/** `--direct-io on|off` (agent and target), checked when the program starts. */
export function parseDirectIo(value: string | boolean | undefined): boolean {
  return parseOnOff('--direct-io', value);
}

/** A switch given as on or off (default on); anything else is FERRY_CONFIG naming the flag. */
export function parseOnOff(flag: string, value: string | boolean | undefined): boolean {
  if (value === undefined || value === true || value === 'on') return true;
  if (value === false || value === 'off') return false;
  throw new FerryError('FERRY_CONFIG', `${flag} must be on or off, not ${JSON.stringify(value)}`);
}

/** An errno a native call reported, as the error Node's fs would throw (code "ENOENT", …). */
export function errnoError(errno: number, what: string): NodeJS.ErrnoException {
  const name = getSystemErrorName(-errno);
  const err = new Error(`${what}: ${name}`) as NodeJS.ErrnoException;
  err.code = name;
  err.errno = -errno;
  return err;
}

/** Splits a nanosecond timestamp into the seconds and nanoseconds utimensat wants. */
export function splitNs(ns: bigint): [number, number] {
  let sec = ns / 1_000_000_000n;
  let nsec = ns % 1_000_000_000n;
  if (nsec < 0n) {
    nsec += 1_000_000_000n;
    sec -= 1n;
  }
  return [Number(sec), Number(nsec)];
}

/**
 * splitNs of a decimal string of nanoseconds (a wire mtime, possibly negative), without a
 * BigInt where it is the usual non-negative number of 10 to 19 digits.
 */
export function splitNsText(ns: string): [number, number] {
  if (ns.length > 9 && ns.length <= 19 && ns.charCodeAt(0) !== 45 /* - */)
    return [Number(ns.slice(0, -9)), Number(ns.slice(-9))];
  return splitNs(BigInt(ns));
}

/** One file's extended attributes as the protocol carries them: sorted by name, values in base64. */
export type XattrList = { name: string; value: string }[];

/** Puts a list in the protocol's order (by name), in place. */
export function sortXattrs(list: XattrList): XattrList {
  return list.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * Splits readFiles' xattr blob into one list per file (undefined: none), names sorted.
 * Throws when the blob does not hold exactly `files` records (a bug, not bad input).
 */
export function parseXattrBlob(blob: Buffer, files: number): (XattrList | undefined)[] {
  const out: (XattrList | undefined)[] = [];
  let at = 0;
  const u32 = () => {
    if (at + 4 > blob.length) throw new Error('xattr blob ends early');
    const v = blob.readUInt32LE(at);
    at += 4;
    return v;
  };
  const bytes = (n: number) => {
    if (at + n > blob.length) throw new Error('xattr blob ends early');
    const b = blob.subarray(at, at + n);
    at += n;
    return b;
  };
  for (let i = 0; i < files; i++) {
    const count = u32();
    if (count === 0) {
      out.push(undefined);
      continue;
    }
    const list: XattrList = [];
    for (let k = 0; k < count; k++) {
      const name = decodeName(bytes(u32())); // not valid UTF-8: its bytes escaped, as a path's
      list.push({ name, value: bytes(u32()).toString('base64') });
    }
    out.push(sortXattrs(list));
  }
  if (at !== blob.length) throw new Error('xattr blob holds more than its files');
  return out;
}
