import { type BigIntStats, lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { Blake3Hasher } from '@napi-rs/blake-hash';
import type { VerifyDirectory, VerifyMode, VerifyReport } from '../../control/index.js';
import { FerryError, toFerryError } from '../../errors/index.js';
import { type CheckMessage, type Session, validatePath } from '../../protocol/index.js';
import { guardedSend } from './guarded-send.js';
import { kindOf, scanTree } from './scan.js';

const MAX_DIRECTORIES = 1000;
const MAX_EXAMPLES = 100;

/** BLAKE3 of a file's content, read in 1 MiB steps (O_NOFOLLOW: never through a symlink). */
export async function hashFile(abs: string): Promise<string> {
  const fh = await open(abs, 'r');
  try {
    const h = new Blake3Hasher();
    const buf = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      h.update(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead));
    }
    return h.digest('hex');
  } finally {
    await fh.close();
  }
}

/**
 * The source side of a verify pass: describes every entry (with its content hash in full
 * mode) and returns the report the target computes.
 */
export async function runVerifySend(opts: {
  session: Session;
  root: string;
  excludes: readonly string[];
  emptyDirs?: readonly string[];
  mode: VerifyMode;
  signal?: AbortSignal;
  onEntry?: (bytes: number) => void;
}): Promise<VerifyReport> {
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
  for await (const e of scanTree(opts.root, { excludes: opts.excludes, emptyDirs: opts.emptyDirs ?? [] })) {
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
      if (opts.mode === 'full') c.hash = await hashFile(e.abs).catch(() => '0'.repeat(64));
    }
    if (e.kind === 'symlink') c.linkTarget = readlinkSync(e.abs);
    await send({ type: 'check', body: c });
    opts.onEntry?.(c.size ?? 0);
  }
  await send({ type: 'commit', body: { seq: 0 } });
  await reader;
  if (!report)
    throw new FerryError('FERRY_CONNECTION_LOST', 'the target closed the connection before its report');
  return report;
}

interface DirTally extends VerifyDirectory {
  seen: Set<string>;
  isDir: boolean;
}

function parentOf(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i < 0 ? '' : rel.slice(0, i);
}

/**
 * The target side of a verify pass: compares each described entry with the tree under
 * `root` (read only; a path under a symlinked parent counts as missing, nothing outside the
 * root is read), then lists every directory for entries only the target has, and sends the
 * report.
 */
export async function receiveVerify(session: Session, root: string, mode: VerifyMode): Promise<VerifyReport> {
  const started = Date.now();
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

  const compare = async (c: CheckMessage): Promise<string | null> => {
    const abs = path.join(root, c.path);
    const st: BigIntStats = lstatSync(abs, { bigint: true });
    const kind = kindOf(st) ?? 'other';
    const wantKind = c.kind === 'hardlink' ? 'file' : c.kind;
    if (kind !== wantKind) return `is a ${kind} on the target, a ${wantKind} on the source`;
    if (c.kind === 'symlink') {
      const link = readlinkSync(abs);
      return link === c.linkTarget ? null : `symlink points to ${link}, not ${c.linkTarget}`;
    }
    if (Number(st.mode & 0o7777n) !== c.mode)
      return `mode ${(Number(st.mode) & 0o7777).toString(8)} != ${c.mode.toString(8)}`;
    if (Number(st.uid) !== c.uid || Number(st.gid) !== c.gid)
      return `owner ${st.uid}:${st.gid} != ${c.uid}:${c.gid}`;
    if (c.kind === 'file' && Number(st.size) !== c.size) return `size ${st.size} != ${c.size}`;
    if (st.mtimeNs.toString() !== c.mtimeNs) return 'modification time differs';
    if (c.kind === 'file' && mode === 'full' && c.hash) {
      const h = await hashFile(abs);
      if (h !== c.hash) return 'content differs';
    }
    return null;
  };

  try {
    for await (const msg of session.messages()) {
      if (msg.type === 'commit') break;
      if (msg.type !== 'check')
        throw new FerryError('FERRY_PROTOCOL_VIOLATION', `unexpected ${msg.type} frame during verification`);
      const c = msg.body;
      const why = validatePath(c.path);
      if (why) throw new FerryError('FERRY_UNSAFE_PATH', `refused ${JSON.stringify(c.path)}: ${why}`);
      const t = tally(parentOf(c.path));
      t.files++;
      t.seen.add(path.posix.basename(c.path));
      if (c.kind === 'dir') tally(c.path).isDir = true;
      let problem: string | null;
      if (!parentIsReal(c.path)) problem = 'missing';
      else {
        try {
          problem = await compare(c);
        } catch (e) {
          problem =
            (e as NodeJS.ErrnoException).code === 'ENOENT'
              ? 'missing'
              : `cannot be read: ${(e as Error).message}`;
        }
      }
      if (problem === 'missing') t.missing++;
      else if (problem) t.different++;
      if (problem) note(c.path, problem);
    }
    for (const [rel, t] of dirs) {
      if (!t.isDir || !parentIsReal(`${rel}/x`)) continue;
      let names: string[] = [];
      try {
        names = readdirSync(path.join(root, rel));
      } catch {
        continue; // missing: counted where its parent lists it
      }
      for (const name of names) {
        if (t.seen.has(name)) continue;
        t.extra++;
        note(rel ? `${rel}/${name}` : name, 'only on the target');
      }
    }
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
