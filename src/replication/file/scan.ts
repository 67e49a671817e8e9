import { constants as C, readdirSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { LstatField as F, ferryFs, LSTAT_FIELDS } from '../../native/index.js';
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

/** One entry of a directory's lstatDir() result, read on demand. */
class DirStat implements ScanStat {
  readonly #f: BigInt64Array;
  readonly #at: number;
  readonly #type: number;
  constructor(fields: BigInt64Array, index: number) {
    this.#f = fields;
    this.#at = index * LSTAT_FIELDS;
    this.#type = Number(fields[this.#at + F.mode]!) & C.S_IFMT;
  }
  #get(field: number): bigint {
    return this.#f[this.#at + field]!;
  }
  get mode() {
    return this.#get(F.mode);
  }
  get uid() {
    return this.#get(F.uid);
  }
  get gid() {
    return this.#get(F.gid);
  }
  get size() {
    return this.#get(F.size);
  }
  get blocks() {
    return this.#get(F.blocks);
  }
  get ino() {
    return this.#get(F.ino);
  }
  get dev() {
    return this.#get(F.dev);
  }
  get nlink() {
    return this.#get(F.nlink);
  }
  get rdev() {
    return this.#get(F.rdev);
  }
  get atimeNs() {
    return this.#get(F.atimeNs);
  }
  get mtimeNs() {
    return this.#get(F.mtimeNs);
  }
  get ctimeNs() {
    return this.#get(F.ctimeNs);
  }
  isDirectory() {
    return this.#type === C.S_IFDIR;
  }
  isFile() {
    return this.#type === C.S_IFREG;
  }
  isSymbolicLink() {
    return this.#type === C.S_IFLNK;
  }
  isFIFO() {
    return this.#type === C.S_IFIFO;
  }
  isCharacterDevice() {
    return this.#type === C.S_IFCHR;
  }
  isBlockDevice() {
    return this.#type === C.S_IFBLK;
  }
  isSocket() {
    return this.#type === C.S_IFSOCK;
  }
}

export interface ScannedEntry {
  /** Relative to the scanned root, `/`-separated, never empty. */
  readonly path: string;
  readonly abs: string;
  readonly kind: Exclude<EntryKind, 'hardlink'>;
  readonly stat: ScanStat;
}

const osErrno = osConstants.errno;
const ERRNO_NAMES = new Map(Object.entries(osErrno).map(([k, v]) => [v, k]));
const errnoName = (n: number) => ERRNO_NAMES.get(n) ?? `errno ${n}`;

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
 * Walks `root` depth-first, parents before children, names in byte order, without
 * following symlinks. `excludes` are skipped entirely; `emptyDirs` are sent as empty
 * directories (mount points of pseudo file systems such as /proc). Holds one directory
 * listing per level in memory, never the whole tree. States a whole directory in one
 * native call (lstatDir: one fstatat per name, no Stats object per entry; a warm scan of
 * 100,000 entries took 1.0 s with lstatSync, 0.5 s this way) and lets the event loop run
 * every 1,000 entries.
 */
export async function* scanTree(
  root: string,
  opts: {
    excludes?: readonly string[];
    emptyDirs?: readonly string[];
    /** Called for each name that is not valid UTF-8 (it is not migrated). */
    onUnsupportedName?: (rel: string) => void;
  } = {},
): AsyncGenerator<ScannedEntry> {
  const excludes = normalizeExcludes(opts.excludes ?? []);
  const emptyDirs = new Set(normalizeExcludes(opts.emptyDirs ?? []));
  const counter = { n: 0 };
  yield* walk(root, '', excludes, emptyDirs, counter, opts.onUnsupportedName);
}

async function* walk(
  root: string,
  relDir: string,
  excludes: readonly string[],
  emptyDirs: ReadonlySet<string>,
  counter: { n: number },
  onUnsupportedName?: (rel: string) => void,
): AsyncGenerator<ScannedEntry> {
  const absDir = relDir === '' ? root : path.join(root, relDir);
  let names: string[];
  try {
    names = [];
    for (const raw of readdirSync(absDir, { encoding: 'buffer' })) {
      const name = raw.toString('utf8');
      // Paths travel as UTF-8 strings: a name that is not valid UTF-8 cannot be carried
      // faithfully, so it is reported, never silently dropped.
      if (Buffer.byteLength(name) !== raw.length || !Buffer.from(name).equals(raw)) {
        onUnsupportedName?.(relDir === '' ? name : `${relDir}/${name}`);
        continue;
      }
      names.push(name);
    }
    names.sort();
  } catch (e) {
    if (relDir !== '' && (e as NodeJS.ErrnoException).code === 'ENOENT') return; // vanished while scanning
    throw e;
  }
  names = names.filter((name) => !isExcluded(relDir === '' ? name : `${relDir}/${name}`, excludes));
  let fields: BigInt64Array;
  try {
    fields = ferryFs.lstatDir(absDir, names);
  } catch (e) {
    if (relDir !== '' && (e as NodeJS.ErrnoException).code === 'ENOENT') return; // vanished while scanning
    throw e;
  }
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    const rel = relDir === '' ? name : `${relDir}/${name}`;
    const abs = path.join(root, rel);
    const mode = fields[i * LSTAT_FIELDS + F.mode]!;
    if (mode < 0n) {
      if (-mode === BigInt(osErrno.ENOENT)) continue; // vanished while scanning
      const err = new Error(`lstat ${abs}: ${errnoName(Number(-mode))}`) as NodeJS.ErrnoException;
      err.code = errnoName(Number(-mode));
      throw err;
    }
    const st = new DirStat(fields, i);
    const kind = kindOf(st);
    if (!kind) continue;
    if (++counter.n % 1000 === 0) await yieldToLoop();
    yield { path: rel, abs, kind, stat: st };
    if (kind === 'dir' && !emptyDirs.has(rel))
      yield* walk(root, rel, excludes, emptyDirs, counter, onUnsupportedName);
  }
}
