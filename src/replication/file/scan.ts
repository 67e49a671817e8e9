import { constants as C, realpathSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { FerryError } from '../../errors/index.js';
import {
  decodeName,
  errnoError,
  LstatField as F,
  ferryFs,
  hasEscapedBytes,
  LSTAT_FIELDS,
} from '../../native/index.js';
import type { EntryKind } from '../../protocol/index.js';

/** The lstat fields a scan reports (the subset of fs.BigIntStats that replication uses). */
export interface ScanStat {
  readonly mode: bigint;
  readonly uid: bigint;
  readonly gid: bigint;
  readonly size: bigint;
  readonly blocks: bigint;
  readonly ino: bigint;
  readonly dev: bigint;
  readonly nlink: bigint;
  readonly rdev: bigint;
  readonly atimeNs: bigint;
  readonly mtimeNs: bigint;
  readonly ctimeNs: bigint;
  isDirectory(): boolean;
  isFile(): boolean;
  isSymbolicLink(): boolean;
  isFIFO(): boolean;
  isCharacterDevice(): boolean;
  isBlockDevice(): boolean;
  isSocket(): boolean;
}

/** One entry of a directory's readDir() fields, read on demand. */
class DirStat {
  readonly f: BigInt64Array;
  readonly at: number;
  readonly type: number;
  constructor(fields: BigInt64Array, index: number) {
    this.f = fields;
    this.at = index * LSTAT_FIELDS;
    this.type = Number(fields[this.at + F.mode]!) & C.S_IFMT;
  }
}
// mode, uid, … ctimeNs: one getter per readDir field, each reading its slot
for (const [name, slot] of Object.entries(F))
  Object.defineProperty(DirStat.prototype, name, {
    get(this: DirStat) {
      return this.f[this.at + slot];
    },
  });
// isDirectory(), isFile(), …: one test per file type, as fs.Stats has them
const TYPE_TESTS: Record<Extract<keyof ScanStat, `is${string}`>, number> = {
  isDirectory: C.S_IFDIR,
  isFile: C.S_IFREG,
  isSymbolicLink: C.S_IFLNK,
  isFIFO: C.S_IFIFO,
  isCharacterDevice: C.S_IFCHR,
  isBlockDevice: C.S_IFBLK,
  isSocket: C.S_IFSOCK,
};
for (const [name, type] of Object.entries(TYPE_TESTS))
  Object.defineProperty(DirStat.prototype, name, {
    value(this: DirStat) {
      return this.type === type;
    },
  });
// every number field of ScanStat has a readDir slot (a type error here otherwise)
const slots: Record<Exclude<keyof ScanStat, `is${string}`>, number> = F;
void slots;
/** DirStat as the ScanStat its getters and type tests make it. */
const dirStat = (fields: BigInt64Array, index: number) => new DirStat(fields, index) as unknown as ScanStat;

export interface ScannedEntry {
  /** Relative to the scanned root, `/`-separated, never empty. */
  readonly path: string;
  readonly abs: string;
  readonly kind: Exclude<EntryKind, 'hardlink'>;
  readonly stat: ScanStat;
}

const osErrno = osConstants.errno;

export function kindOf(st: ScanStat): ScannedEntry['kind'] | null {
  if (st.isDirectory()) return 'dir';
  if (st.isFile()) return 'file';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isCharacterDevice()) return 'chardev';
  if (st.isBlockDevice()) return 'blockdev';
  if (st.isSocket()) return 'socket';
  return null;
}

/** `/var/cache/`, `var/cache` and `./var/cache` all become `var/cache`. */
export function normalizeExcludes(paths: readonly string[]): string[] {
  return paths
    .map((p) =>
      p
        .split('/')
        .filter((c) => c !== '' && c !== '.')
        .join('/'),
    )
    .filter((p) => p !== '');
}

export function isExcluded(rel: string, excludes: readonly string[]): boolean {
  return excludes.some((x) => rel === x || rel.startsWith(`${x}/`));
}

/**
 * Directories listed ahead of the walk, at most, and the next siblings kept listing. Four
 * siblings scanned 100,000 cold entries ~5% faster than three but raised the scan's peak
 * RSS from 82 to 92 MiB (more listing jobs at once): three keeps the agent's memory margin.
 */
const AHEAD_DIRS = 16;
const AHEAD_PER_DIR = 3;

/**
 * Names a directory listing holds as strings, with their lstat fields, at once: a larger
 * directory (a mail spool, a cache of millions of files) keeps the rest of its names as the
 * bytes readDir listed (`rest`) and takes them a slice at a time as the walk reaches them,
 * stating each slice in the thread pool while the one before is walked. 1,000,000 names in
 * one directory: scan peak RSS 321 MiB when every name was a string with its fields (and
 * its own malloc in the listing job), 122 MiB this way (docs/performance.md, session 16).
 */
export const STAT_SLICE = 4096;

interface Listing {
  absDir: string;
  /** The slice of the directory's names being walked (excluded ones too: skipped), in byte order. */
  names: string[];
  /** Their lstat fields, LSTAT_FIELDS per name. */
  fields: BigInt64Array;
  /** The names after the slices taken so far, each followed by a NUL; null when there are none. */
  rest: Buffer | null;
  restAt: number;
  /** The next slice, being stated. */
  next: { names: string[]; fields: Promise<{ errno: number; fields: BigInt64Array }> } | null;
}

/**
 * Lists directories in the thread pool (native readDir: the names and an fstatat of each),
 * a few ahead of the walk, so that the next directories load from disk while the caller
 * works through the current one (in a sync pass: one sync-state lookup per entry).
 */
class DirLoader {
  readonly #ahead = new Map<string, ReturnType<typeof ferryFs.readDir>>();
  load(absDir: string) {
    const p = this.#ahead.get(absDir);
    if (p) {
      this.#ahead.delete(absDir);
      return p;
    }
    return ferryFs.readDir(absDir, STAT_SLICE);
  }
  prefetch(absDirs: string[]): void {
    for (const d of absDirs) {
      if (this.#ahead.size >= AHEAD_DIRS) return;
      if (this.#ahead.has(d)) continue;
      const p = ferryFs.readDir(d, STAT_SLICE);
      p.catch(() => {});
      this.#ahead.set(d, p);
    }
  }
}

/** `root` with every symlink in it resolved; as given when it cannot be (the walk then reports why). */
export function canonicalRoot(root: string): string {
  try {
    return realpathSync(root);
  } catch {
    return root;
  }
}

/**
 * Walks `root` depth-first, parents before children, names in byte order, without
 * following symlinks. `excludes` are skipped entirely; `emptyDirs` are sent as empty
 * directories (mount points of pseudo file systems such as /proc). Holds one directory
 * listing per level (and a few listed ahead) in memory, never the whole tree, and of a
 * large directory one slice of names at a time (STAT_SLICE). Each directory is listed,
 * sorted and stated by one native thread-pool job (no Stats object per entry: a warm scan
 * of 100,000 entries took 1.0 s with lstatSync, 0.5 s this way), the next ones while the
 * current one is consumed; the event loop runs every 1,000 entries.
 */
export async function* scanTree(
  root: string,
  opts: {
    excludes?: readonly string[];
    emptyDirs?: readonly string[];
    /** Called for each name that is not valid UTF-8 (migrated byte for byte all the same). */
    onNonUtf8Name?: (rel: string) => void;
    /**
     * Called for a directory below the root that is there but cannot be listed (see
     * unreadableCode): the walk goes on without its contents. Without it, the walk fails.
     */
    onUnreadableDir?: (rel: string, err: NodeJS.ErrnoException) => void;
  } = {},
): AsyncGenerator<ScannedEntry> {
  const excludes = normalizeExcludes(opts.excludes ?? []);
  const emptyDirs = new Set(normalizeExcludes(opts.emptyDirs ?? []));
  // Canonical, so that every entry's `abs` holds no symlink: files are opened through none
  // (openSource), and a symlink above the root (a root given as /srv → /data/srv) is resolved once here.
  root = canonicalRoot(root);
  const ctx = {
    // names from readDir hold no '/' and are never . or ..: a relative path joins as is
    prefix: path.join(root, '/'),
    loader: new DirLoader(),
    excludes,
    emptyDirs,
    onNonUtf8Name: opts.onNonUtf8Name,
    onUnreadableDir: opts.onUnreadableDir,
  };
  // One generator for the whole walk, with an explicit stack of the directories being
  // walked: a generator per level (yield*) passed every entry up through each level.
  const stack: Walking[] = [];
  const absOf = (rel: string) => ctx.prefix + rel;
  /** Notes the subdirectories among the names just stated, for listing ahead. */
  const noteSubdirs = (w: Walking) => {
    const { names, fields } = w.listing;
    for (let at = 0; at < names.length; at++) {
      const mode = Number(fields[at * LSTAT_FIELDS + F.mode]!);
      if (mode <= 0 || (mode & C.S_IFMT) !== C.S_IFDIR) continue;
      const name = names[at]!;
      const rel = w.relDir === '' ? name : `${w.relDir}/${name}`;
      if (!emptyDirs.has(rel) && !isExcluded(rel, excludes)) w.subdirs.push(absOf(rel));
    }
  };
  const enter = async (relDir: string) => {
    const listing = await list(root, relDir, ctx);
    if (!listing) return;
    const w: Walking = { relDir, listing, subdirs: [], next: 0, nextSub: 0 };
    noteSubdirs(w);
    // the next AHEAD_PER_DIR subdirectories are always being listed: a window that slides as
    // the walk enters each one (on a cold disk, listing only the first few left the walk
    // waiting for every later sibling)
    ctx.loader.prefetch(w.subdirs.slice(0, AHEAD_PER_DIR));
    stack.push(w);
  };
  await enter('');
  let n = 0;
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    const listing = top.listing;
    if (top.next >= listing.names.length) {
      if (await nextSlice(listing, top.relDir, ctx)) {
        // a large directory's next slice of names; the subdirectories entered are forgotten
        top.next = 0;
        top.subdirs = top.subdirs.slice(top.nextSub);
        top.nextSub = 0;
        noteSubdirs(top);
      } else stack.pop();
      continue;
    }
    const at = top.next++;
    const name = listing.names[at]!;
    const rel = top.relDir === '' ? name : `${top.relDir}/${name}`;
    // a name that is not valid UTF-8 comes with its bytes escaped, and is carried as such
    // (protocol/paths.ts): noted for the inventory, migrated like any other
    if (ctx.onNonUtf8Name && hasEscapedBytes(name)) ctx.onNonUtf8Name(rel);
    if (isExcluded(rel, excludes)) continue;
    const abs = absOf(rel);
    const mode = listing.fields[at * LSTAT_FIELDS + F.mode]!;
    if (mode < 0n) {
      if (-mode === BigInt(osErrno.ENOENT)) continue; // vanished while scanning
      throw errnoError(Number(-mode), `lstat ${abs}`);
    }
    const st = dirStat(listing.fields, at);
    const kind = kindOf(st);
    if (!kind) continue;
    if (++n % 1000 === 0) await yieldToLoop();
    yield { path: rel, abs, kind, stat: st };
    if (kind === 'dir' && !emptyDirs.has(rel)) {
      top.nextSub++;
      ctx.loader.prefetch(top.subdirs.slice(top.nextSub, top.nextSub + AHEAD_PER_DIR));
      await enter(rel);
    }
  }
}

/** A directory of the walk: its listing, the next entry to yield, its subdirectories. */
interface Walking {
  relDir: string;
  listing: Listing;
  subdirs: string[];
  next: number;
  nextSub: number;
}

interface WalkContext {
  /** The root with one trailing '/'. */
  prefix: string;
  loader: DirLoader;
  excludes: readonly string[];
  emptyDirs: ReadonlySet<string>;
  onNonUtf8Name: ((rel: string) => void) | undefined;
  onUnreadableDir: ((rel: string, err: NodeJS.ErrnoException) => void) | undefined;
}

/**
 * Whether a call on a scanned path failed because the path no longer names what the scan
 * saw: removed, or a directory on the way gone or swapped for a symlink (never followed,
 * ELOOP). Not a read failure: the walk skips it, the pass drops the target's copy.
 */
export function goneSinceScan(code: string | undefined): boolean {
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP';
}

/**
 * errno codes of a source entry that is there but cannot be read now: refused by an
 * on-access scanner or a security module (EPERM, EACCES), a bad sector (EIO), a network or
 * FUSE file system that is away (ESTALE, ENXIO, ENODEV, EREMOTEIO, ETIMEDOUT), a lease
 * (EAGAIN). A pass leaves such an entry as the target has it and goes on; anything else
 * (out of descriptors or memory, say) fails the pass.
 */
const UNREADABLE_CODES = new Set([
  'EPERM',
  'EACCES',
  'EIO',
  'ESTALE',
  'ENXIO',
  'ENODEV',
  'EREMOTEIO',
  'ETIMEDOUT',
  'EAGAIN',
]);

/** The errno code of `e`, or of its cause, when it says the entry is there but cannot be read now (see UNREADABLE_CODES). */
export function unreadableCode(e: unknown): string | undefined {
  const own = (e as NodeJS.ErrnoException | undefined)?.code;
  // a FerryError only when it is a source read's (a lost connection's ETIMEDOUT is not this)
  const code =
    e instanceof FerryError
      ? e.code === 'FERRY_SOURCE_READ'
        ? (e.cause as NodeJS.ErrnoException | undefined)?.code
        : undefined
      : own;
  return code !== undefined && UNREADABLE_CODES.has(code) ? code : undefined;
}

/**
 * A directory below the root that could not be listed or stated (`errno`): the walk goes on
 * without (the rest of) it when it vanished while scanning, or was swapped for a symlink
 * (never listed through) or a file, or is there but unreadable and the caller takes that
 * (onUnreadableDir). Throws otherwise.
 */
function skipUnlistable(errno: number, absDir: string, relDir: string, ctx: WalkContext): void {
  const err = errnoError(errno, `cannot list ${absDir}`);
  if (relDir !== '' && goneSinceScan(err.code)) return;
  if (relDir !== '' && ctx.onUnreadableDir && unreadableCode(err)) {
    ctx.onUnreadableDir(relDir, err);
    return;
  }
  throw err;
}

/** The listing of one directory, or null when the walk goes on without it (skipUnlistable). */
async function list(root: string, relDir: string, ctx: WalkContext): Promise<Listing | null> {
  const absDir = relDir === '' ? root : ctx.prefix + relDir; // as the walk names them (the prefetch keys)
  const got = await ctx.loader.load(absDir);
  if (got.errno) {
    skipUnlistable(got.errno, absDir, relDir, ctx);
    return null;
  }
  const listing: Listing = {
    absDir,
    names: got.names,
    fields: got.fields,
    rest: got.rest,
    restAt: 0,
    next: null,
  };
  stateAhead(listing);
  return listing;
}

/** Starts stating the slice after the current one, unless it is being stated or there is none. */
function stateAhead(l: Listing): void {
  if (l.next || !l.rest) return;
  const names: string[] = [];
  const rest = l.rest;
  while (names.length < STAT_SLICE && l.restAt < rest.length) {
    const end = rest.indexOf(0, l.restAt);
    names.push(decodeName(rest.subarray(l.restAt, end)));
    l.restAt = end + 1;
  }
  if (l.restAt >= rest.length) l.rest = null;
  const fields = ferryFs.statNames(l.absDir, names);
  fields.catch(() => {}); // awaited when the walk gets there; a walk that stops early never does
  l.next = { names, fields };
}

/**
 * Moves the listing on to its next slice of names, stated, and starts stating the one after.
 * False when there is none, or the directory cannot be stated any more (skipUnlistable).
 */
async function nextSlice(l: Listing, relDir: string, ctx: WalkContext): Promise<boolean> {
  const next = l.next;
  if (!next) return false;
  l.next = null;
  const got = await next.fields;
  if (got.errno) {
    skipUnlistable(got.errno, l.absDir, relDir, ctx);
    return false;
  }
  l.names = next.names;
  l.fields = got.fields;
  stateAhead(l);
  return true;
}
