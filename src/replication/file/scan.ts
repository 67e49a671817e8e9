import { type BigIntStats, lstatSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { EntryKind } from '../../protocol/index.js';

export interface ScannedEntry {
  /** Relative to the scanned root, `/`-separated, never empty. */
  readonly path: string;
  readonly abs: string;
  readonly kind: Exclude<EntryKind, 'hardlink'>;
  readonly stat: BigIntStats;
}

export function kindOf(st: BigIntStats): ScannedEntry['kind'] | null {
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
 * listing per level in memory, never the whole tree. Uses direct system calls (a thread
 * pool round trip per lstat was most of the scan time) and lets the event loop run every
 * 1,000 entries.
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
  for (const name of names) {
    const rel = relDir === '' ? name : `${relDir}/${name}`;
    if (isExcluded(rel, excludes)) continue;
    const abs = path.join(root, rel);
    let st: BigIntStats;
    try {
      st = lstatSync(abs, { bigint: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // vanished while scanning
      throw e;
    }
    const kind = kindOf(st);
    if (!kind) continue;
    if (++counter.n % 1000 === 0) await yieldToLoop();
    yield { path: rel, abs, kind, stat: st };
    if (kind === 'dir' && !emptyDirs.has(rel))
      yield* walk(root, rel, excludes, emptyDirs, counter, onUnsupportedName);
  }
}
