import type { BigIntStats, Dirent } from 'node:fs';
import { lstat, opendir } from 'node:fs/promises';
import path from 'node:path';
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
    .map((p) => p.split('/').filter((c) => c !== '' && c !== '.').join('/'))
    .filter((p) => p !== '');
}

export function isExcluded(rel: string, excludes: readonly string[]): boolean {
  return excludes.some((x) => rel === x || rel.startsWith(`${x}/`));
}

/**
 * Walks `root` depth-first, parents before children, names in byte order, without
 * following symlinks. `excludes` are skipped entirely; `emptyDirs` are sent as empty
 * directories (mount points of pseudo file systems such as /proc). Holds one directory
 * listing per level in memory, never the whole tree.
 */
export async function* scanTree(
  root: string,
  opts: { excludes?: readonly string[]; emptyDirs?: readonly string[] } = {},
): AsyncGenerator<ScannedEntry> {
  const excludes = normalizeExcludes(opts.excludes ?? []);
  const emptyDirs = new Set(normalizeExcludes(opts.emptyDirs ?? []));
  yield* walk(root, '', excludes, emptyDirs);
}

async function* walk(
  root: string,
  relDir: string,
  excludes: readonly string[],
  emptyDirs: ReadonlySet<string>,
): AsyncGenerator<ScannedEntry> {
  const absDir = relDir === '' ? root : path.join(root, relDir);
  const names: string[] = [];
  const dir = await opendir(absDir, { bufferSize: 256 });
  for await (const d of dir as AsyncIterable<Dirent>) names.push(d.name);
  names.sort();
  for (const name of names) {
    const rel = relDir === '' ? name : `${relDir}/${name}`;
    if (isExcluded(rel, excludes)) continue;
    const abs = path.join(root, rel);
    let st: BigIntStats;
    try {
      st = await lstat(abs, { bigint: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // vanished while scanning
      throw e;
    }
    const kind = kindOf(st);
    if (!kind) continue;
    yield { path: rel, abs, kind, stat: st };
    if (kind === 'dir' && !emptyDirs.has(rel)) yield* walk(root, rel, excludes, emptyDirs);
  }
}
