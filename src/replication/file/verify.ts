import type { BigIntStats } from 'node:fs';
import path from 'node:path';
import type { VerifyDirectory, VerifyMode, VerifyReport } from '../../control/index.js';
import { FerryError, toFerryError } from '../../errors/index.js';
import { lstatSync, readdirSync, readlinkSync } from '../../native/fs-bytes.js';
import { type CheckMessage, type Session, validatePath } from '../../protocol/index.js';
import { BatchReader } from './batch-read.js';
import { wholeFileHash } from './content-hash.js';
import { changedAtRead, entryXattrs, isSparse, linkTargetOf, readXattrs, xattrsDigest } from './entry.js';
import { guardedSend } from './guarded-send.js';
import { readBuffers } from './read-buffers.js';
import { changedSinceScan, openScannedFile, readFileRegions } from './read-file.js';
import { canonicalRoot, isExcluded, kindOf, normalizeExcludes, scanTree } from './scan.js';

const MAX_DIRECTORIES = 1000;
const XATTRS_DIFFER = 'extended attributes differ';
/** A CHECK's hash while its file is still being hashed (never sent). */
const HASH_PENDING = 'pending';
/** CHECKs held behind one whose file is being hashed, at most. */
const MAX_WAITING = 4096;
const MAX_EXAMPLES = 100;

/** Files up to this size are read whole, in batches, ahead of their turn (as the pass does). */
const WHOLE_FILE_BYTES = 1 << 20;
/** Files and bytes read ahead of the one being compared. */
const AHEAD_FILES = 256;
const AHEAD_BYTES = 32 << 20;

/** The hash of a file that could not be read: never equal to a real one. */
const UNREADABLE = '0'.repeat(64);
/** A file gone, or no longer a regular file, between the walk's stat and its read. */
const GONE = 'gone';

/** What a full verify compares of a regular file: its content's hash and its xattrs' digest (hex). */
interface FileDigest {
  hash: string;
  xattrs: string;
}

/**
 * BLAKE3 of a large file's content, holes as zeros (only its data regions are read), and the
 * digest of its extended attributes from the same descriptor, through no symlink
 * (openScannedFile: `abs` must be canonical).
 */
async function hashLargeFile(abs: string, sparse: boolean, direct: boolean): Promise<FileDigest> {
  const file = openScannedFile(abs, { xattrs: true });
  const { regions, done } = await readFileRegions(file, sparse, { direct });
  for await (const r of regions) r.release(); // hashed before it was yielded
  return { hash: (await done()).hash, xattrs: xattrsDigest(file.xattrs) };
}

/**
 * Content hashes of files in the order asked, read ahead: small files whole, in batches of
 * one thread-pool job (BatchReader: open, read, close of 16 files at a time, several batches
 * in flight), large ones chunk by chunk with their next chunks reading (readFileRegions).
 * Hashing file by file with a read per call and a new 1 MiB buffer each took 10.7 s cold and
 * 24 s warm for 30,000 files of 1 GB (both sides in one process), the collector busy with the
 * buffers. Every open follows no symlink, on either side.
 */
class HashAhead {
  readonly #reader: BatchReader;
  readonly #direct: boolean;
  #queue: { size: number; hash: () => Promise<FileDigest> }[] = [];
  #bytes = 0;

  constructor(direct: boolean) {
    this.#direct = direct;
    this.#reader = new BatchReader({ direct }); // each file's xattrs read from its descriptor too
  }

  /** Whether the caller should take a result before queueing more. */
  get full(): boolean {
    return this.#queue.length >= AHEAD_FILES || this.#bytes >= AHEAD_BYTES;
  }

  /** Queues the hash of the regular file `abs` of `size` bytes (as stated just before). */
  add(abs: string, size: number, sparse: boolean): void {
    if (size > WHOLE_FILE_BYTES) {
      this.#queue.push({ size: 0, hash: () => hashLargeFile(abs, sparse, this.#direct) });
      return;
    }
    const slot = this.#reader.read(abs, size);
    this.#bytes += size;
    this.#queue.push({
      size,
      hash: async () => {
        if (!slot.ready) {
          this.#reader.flush();
          await slot.done;
        }
        if (!slot.result) return hashLargeFile(abs, false, this.#direct); // reports why
        const d = { hash: wholeFileHash(slot.result.data), xattrs: xattrsDigest(slot.result.xattrs) };
        slot.release();
        return d;
      },
    });
  }

  /**
   * The digests of the oldest file queued: UNREADABLE when it could not be read, GONE when
   * it was removed or replaced by another kind of entry since it was stated.
   */
  async next(): Promise<FileDigest | typeof GONE> {
    const item = this.#queue.shift();
    if (!item) throw new Error('HashAhead.next() with nothing queued');
    this.#bytes -= item.size;
    return item.hash().catch((e) => (changedSinceScan(e) ? GONE : { hash: UNREADABLE, xattrs: UNREADABLE }));
  }
}

/**
 * The source side of a verify pass: describes every entry (with its content hash in full
 * mode) and returns the report the target computes.
 */
export function runVerifySend(opts: VerifySendOptions): Promise<VerifyReport> {
  // the read buffers kept for reuse go when the pass ends, as after a replication pass
  return verifySend(opts).finally(() => readBuffers.trim());
}

interface VerifySendOptions {
  session: Session;
  root: string;
  excludes: readonly string[];
  emptyDirs?: readonly string[];
  mode: VerifyMode;
  signal?: AbortSignal;
  onEntry?: (bytes: number) => void;
  /** Read files past the page cache where the file system allows it (default on, as the pass). */
  direct?: boolean;
}

async function verifySend(opts: VerifySendOptions): Promise<VerifyReport> {
  const { session } = opts;
  let report: VerifyReport | null = null;
  const reader = (async () => {
    for await (const msg of session.messages()) {
      if (msg.type === 'report') {
        report = msg.body;
        session.close();
      } else if (msg.type === 'error')
        throw new FerryError('FERRY_TARGET_WRITE', `target: ${msg.body.message}`);
    }
  })();
  const send = guardedSend(session, reader);
  // CHECKs whose file is being hashed wait here, in scan order, while the scan goes on
  const hashes = new HashAhead(opts.direct ?? true);
  const waiting: CheckMessage[] = [];
  // entries lost between the walk's stat and their read: not described, so the target
  // counts what it has of them as extra (the source no longer has them), and the report says how many
  let changed = 0;
  const sendOldest = async () => {
    const c = waiting.shift()!;
    if (c.hash === HASH_PENDING) {
      const d = await hashes.next();
      if (d === GONE) {
        changed++;
        return;
      }
      c.hash = d.hash;
      c.xattrs = d.xattrs;
    }
    await send({ type: 'check', body: c });
    opts.onEntry?.(c.size ?? 0);
  };
  const scanOpts = {
    excludes: opts.excludes,
    emptyDirs: opts.emptyDirs ?? [],
    // a directory the source cannot list: what the target has under it counts as extra,
    // so the report shows the difference instead of the verification failing
    onUnreadableDir: () => {},
  };
  for await (const e of scanTree(opts.root, scanOpts)) {
    if (opts.signal?.aborted) throw new FerryError('FERRY_CONNECTION_LOST', 'the verification was stopped');
    const c: CheckMessage = {
      path: e.path,
      kind: e.kind,
      mode: Number(e.stat.mode & 0o7777n),
      uid: Number(e.stat.uid),
      gid: Number(e.stat.gid),
      mtimeNs: e.stat.mtimeNs.toString(),
    };
    if (e.kind === 'file') {
      c.size = Number(e.stat.size);
      if (opts.mode === 'full') {
        while (hashes.full) await sendOldest();
        hashes.add(e.abs, c.size, isSparse(e));
        c.hash = HASH_PENDING;
      }
    }
    // read as a pass reads them: through no symlink a swap since the scan could put there
    if (e.kind === 'symlink') {
      const link = unlessGone(() => linkTargetOf(e.abs));
      if (link === GONE) {
        changed++;
        continue;
      }
      c.linkTarget = link;
    }
    if (opts.mode === 'full' && e.kind !== 'file') {
      const xattrs = unlessGone(() => entryXattrs(e));
      if (xattrs === GONE) {
        changed++;
        // a directory is still described (what the walk finds in it is, too); anything else is dropped
        if (e.kind !== 'dir') continue;
      } else c.xattrs = xattrsDigest(xattrs);
    }
    while (waiting.length >= MAX_WAITING) await sendOldest();
    waiting.push(c);
    while (waiting.length > 0 && waiting[0]!.hash !== HASH_PENDING) await sendOldest();
  }
  while (waiting.length > 0) await sendOldest();
  await send({ type: 'commit', body: { seq: 0 } });
  await reader;
  if (!report)
    throw new FerryError('FERRY_CONNECTION_LOST', 'the target closed the connection before its report');
  return { ...(report as VerifyReport), changedOnSource: changed };
}

/** `read()`, or GONE when what it reads changed since the walk stated it (changedAtRead). */
function unlessGone<T>(read: () => T): T | typeof GONE {
  try {
    return read();
  } catch (err) {
    if (changedAtRead(err)) return GONE;
    throw err;
  }
}

interface DirTally extends VerifyDirectory {
  /** The names the source has here; null once the directory has been counted (finish). */
  seen: Set<string> | null;
  isDir: boolean;
}

/** Whether `rel` is the directory `dir` or inside it ('' is the root). */
function within(dir: string, rel: string): boolean {
  return dir === '' || rel === dir || (rel.startsWith(dir) && rel.charCodeAt(dir.length) === 47) /* / */;
}

function parentOf(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i < 0 ? '' : rel.slice(0, i);
}

/**
 * The target side of a verify pass: compares each described entry with the tree under
 * `root` (read only; a path under a symlinked parent counts as missing, nothing outside the
 * root is read), lists each directory once the walk has left it for entries only the target
 * has (leaving out the paths in `ignore`, the task's exclusions), and sends the report.
 */
export function receiveVerify(
  session: Session,
  root: string,
  mode: VerifyMode,
  opts: { direct?: boolean; ignore?: readonly string[] } = {},
): Promise<VerifyReport> {
  return verifyReceive(session, root, mode, opts).finally(() => readBuffers.trim());
}

async function verifyReceive(
  session: Session,
  given: string,
  mode: VerifyMode,
  opts: { direct?: boolean; ignore?: readonly string[] },
): Promise<VerifyReport> {
  // the task's exclusions: the source describes nothing there, and what the target has there is not extra
  const ignore = normalizeExcludes(opts.ignore ?? []);
  const started = Date.now();
  // canonical: files are hashed through no symlink (HashAhead), the root's own path included
  const root = canonicalRoot(given);
  const hashes = new HashAhead(opts.direct ?? true);
  const dirs = new Map<string, DirTally>();
  const examples: VerifyReport['examples'] = [];
  const realDirs = new Set<string>(['']);
  const tally = (dir: string): DirTally => {
    let t = dirs.get(dir);
    if (!t) {
      t = { path: `/${dir}`, files: 0, different: 0, missing: 0, extra: 0, seen: new Set(), isDir: false };
      dirs.set(dir, t);
    }
    return t;
  };
  tally('').isDir = true;
  const note = (p: string, problem: string) => {
    if (examples.length < MAX_EXAMPLES) examples.push({ path: `/${p}`, problem: problem.slice(0, 300) });
  };
  /** Whether every parent of rel is a real directory (not a symlink) on the target. */
  const parentIsReal = (rel: string): boolean => {
    const parent = parentOf(rel);
    if (realDirs.has(parent)) return true;
    let cur = '';
    for (const part of parent.split('/')) {
      cur = cur === '' ? part : `${cur}/${part}`;
      if (realDirs.has(cur)) continue;
      try {
        const st = lstatSync(path.join(root, cur));
        if (!st.isDirectory()) return false;
      } catch {
        return false;
      }
      realDirs.add(cur);
    }
    return true;
  };

  /** What differs in kind and metadata; HASH_PENDING when only the content is left to compare (queued). */
  const compare = (c: CheckMessage): string | null => {
    const abs = path.join(root, c.path);
    const st: BigIntStats = lstatSync(abs, { bigint: true });
    const kind = kindOf(st) ?? 'other';
    const wantKind = c.kind === 'hardlink' ? 'file' : c.kind;
    if (kind !== wantKind) return `is a ${kind} on the target, a ${wantKind} on the source`;
    if (c.kind === 'symlink') {
      const link = readlinkSync(abs);
      if (link !== c.linkTarget) return `symlink points to ${link}, not ${c.linkTarget}`;
    } else if (Number(st.mode & 0o7777n) !== c.mode)
      return `mode ${(Number(st.mode) & 0o7777).toString(8)} != ${c.mode.toString(8)}`;
    if (Number(st.uid) !== c.uid || Number(st.gid) !== c.gid)
      return `owner ${st.uid}:${st.gid} != ${c.uid}:${c.gid}`;
    if (c.kind === 'file' && Number(st.size) !== c.size) return `size ${st.size} != ${c.size}`;
    if (st.mtimeNs.toString() !== c.mtimeNs) return 'modification time differs';
    if (c.kind === 'file' && mode === 'full' && c.hash) {
      hashes.add(abs, Number(st.size), st.blocks * 512n < st.size);
      return HASH_PENDING;
    }
    if (mode === 'full' && c.xattrs !== undefined && xattrsDigest(readXattrs(abs)) !== c.xattrs)
      return XATTRS_DIFFER;
    return null;
  };
  /**
   * Counts what only the target has in the directory `rel`, once every name the source has
   * there has been seen; then forgets those names, so that memory holds the names of the
   * directories being walked, not of the whole tree.
   */
  const finish = (rel: string) => {
    const t = dirs.get(rel);
    if (!t) return;
    const seen = t.seen;
    t.seen = null;
    if (!seen || !t.isDir || !parentIsReal(`${rel}/x`)) return;
    let names: string[] = [];
    try {
      names = readdirSync(path.join(root, rel));
    } catch {
      return; // missing: counted where its parent lists it
    }
    for (const name of names) {
      if (seen.has(name) || (ignore.length > 0 && isExcluded(rel ? `${rel}/${name}` : name, ignore)))
        continue;
      t.extra++;
      note(rel ? `${rel}/${name}` : name, 'only on the target');
    }
  };
  /** The directories whose names may still come: the parents of the last entry, root first. */
  const open: string[] = [''];
  // compared entries in order, those whose content is being hashed among them
  const queue: { c: CheckMessage; t: DirTally; problem: string | null }[] = [];
  const settleOldest = async () => {
    const o = queue.shift()!;
    if (o.problem === HASH_PENDING) {
      const d = await hashes.next();
      o.problem =
        d === GONE
          ? 'missing'
          : d.hash === UNREADABLE
            ? 'cannot be read'
            : o.c.hash === UNREADABLE
              ? 'cannot be read on the source'
              : d.hash !== o.c.hash
                ? 'content differs'
                : o.c.xattrs !== undefined && d.xattrs !== o.c.xattrs
                  ? XATTRS_DIFFER
                  : null;
    }
    if (o.problem === 'missing') o.t.missing++;
    else if (o.problem) o.t.different++;
    if (o.problem) note(o.c.path, o.problem);
  };

  try {
    for await (const msg of session.messages()) {
      if (msg.type === 'commit') break;
      if (msg.type !== 'check')
        throw new FerryError('FERRY_PROTOCOL_VIOLATION', `unexpected ${msg.type} frame during verification`);
      const c = msg.body;
      const why = validatePath(c.path);
      if (why) throw new FerryError('FERRY_UNSAFE_PATH', `refused ${JSON.stringify(c.path)}: ${why}`);
      const parent = parentOf(c.path);
      // entries come depth first: a directory this one is not inside has all its names
      while (!within(open[open.length - 1]!, parent)) finish(open.pop()!);
      if (open[open.length - 1] !== parent) open.push(parent);
      const t = tally(parent);
      t.files++;
      if (!t.seen)
        throw new FerryError(
          'FERRY_PROTOCOL_VIOLATION',
          `CHECK for ${c.path} after its directory was complete`,
        );
      t.seen.add(path.posix.basename(c.path));
      if (c.kind === 'dir') {
        tally(c.path).isDir = true;
        // open from its own CHECK, not from its first child's: a directory the source has
        // empty (or cannot list) is finished too, and what the target has in it is extra
        open.push(c.path);
      }
      let problem: string | null;
      if (!parentIsReal(c.path)) problem = 'missing';
      else {
        while (hashes.full) await settleOldest(); // before compare() may queue one more
        try {
          problem = compare(c);
        } catch (e) {
          problem =
            (e as NodeJS.ErrnoException).code === 'ENOENT'
              ? 'missing'
              : `cannot be read: ${(e as Error).message}`;
        }
      }
      queue.push({ c, t, problem });
      while (queue.length > 0 && (queue[0]!.problem !== HASH_PENDING || queue.length > MAX_WAITING))
        await settleOldest();
    }
    while (open.length > 0) finish(open.pop()!);
    while (queue.length > 0) await settleOldest();
    const all = [...dirs.values()].filter((d) => d.isDir);
    const totals = { files: 0, different: 0, missing: 0, extra: 0 };
    for (const d of all) {
      totals.files += d.files;
      totals.different += d.different;
      totals.missing += d.missing;
      totals.extra += d.extra;
    }
    const bad = (d: DirTally) => d.different + d.missing + d.extra > 0;
    const ordered = [...all.filter(bad), ...all.filter((d) => !bad(d))];
    const report: VerifyReport = {
      mode,
      identical: totals.different + totals.missing + totals.extra === 0,
      totals,
      directories: ordered.slice(0, MAX_DIRECTORIES).map(({ path: p, files, different, missing, extra }) => ({
        path: p,
        files,
        different,
        missing,
        extra,
      })),
      examples,
      truncated: ordered.length > MAX_DIRECTORIES,
      seconds: (Date.now() - started) / 1000,
      finishedAt: new Date().toISOString(),
    };
    // one frame holds at most 1 MiB: leave out clean directories, then examples, until it fits
    while (Buffer.byteLength(JSON.stringify(report)) > 900_000 && report.directories.length > 0) {
      report.directories = report.directories.slice(0, Math.floor(report.directories.length / 2));
      report.truncated = true;
    }
    await session.send({ type: 'report', body: report });
    session.close();
    return report;
  } catch (e) {
    const err = toFerryError(e, 'FERRY_TARGET_WRITE');
    session.fail(err);
    throw err;
  }
}
