/**
 * Compares two trees entry by entry: type, content (SHA-256), mode, owner, mtime (ns),
 * symlink target, device numbers, xattrs, hard-link groups and sparseness. Returns every
 * difference as a readable line; an empty list means identical. Reads whole files: for
 * tests, the demo and small trees.
 */
import { createHash } from 'node:crypto';
import type { BigIntStats } from 'node:fs';
import fs from 'node:fs';
import path from 'node:path';
import { lstatSync, readdirSync, readlinkSync } from '../native/fs-bytes.js';
import { ferryFs, osPath } from '../native/index.js';
import { kindOf } from '../replication/file/index.js';

interface Info {
  st: BigIntStats;
  hash?: string;
  link?: string;
  xattrs: Record<string, string>;
}

function walk(root: string, ignore: (rel: string) => boolean): Map<string, Info> {
  const out = new Map<string, Info>();
  const visit = (rel: string) => {
    const abs = rel === '' ? root : path.join(root, rel);
    // names byte for byte: one that is not valid UTF-8 is compared as its bytes (protocol/paths.ts)
    for (const name of readdirSync(abs).sort()) {
      const r = rel === '' ? name : `${rel}/${name}`;
      if (ignore(r)) continue;
      const a = path.join(root, r);
      const st = lstatSync(a, { bigint: true });
      const info: Info = { st, xattrs: {} };
      if (st.isFile())
        info.hash = createHash('sha256')
          .update(fs.readFileSync(osPath(a)))
          .digest('hex');
      if (st.isSymbolicLink()) info.link = readlinkSync(a);
      // a symlink's own (l*xattr): an SELinux label, say
      for (const x of ferryFs.listXattr(a)) info.xattrs[x] = ferryFs.getXattr(a, x).toString('hex');
      out.set(r, info);
      if (st.isDirectory()) visit(r);
    }
  };
  visit('');
  return out;
}

function kind(st: BigIntStats): string {
  return kindOf(st) ?? 'other';
}

/** Every difference between two trees, as readable lines; empty means identical. */
export function compareTrees(a: string, b: string, ignore: (rel: string) => boolean = () => false): string[] {
  const A = walk(a, ignore);
  const B = walk(b, ignore);
  const diffs: string[] = [];
  for (const rel of A.keys()) if (!B.has(rel)) diffs.push(`missing on target: ${rel}`);
  for (const rel of B.keys()) if (!A.has(rel)) diffs.push(`extra on target: ${rel}`);
  const groupsA = new Map<string, string[]>();
  const groupsB = new Map<string, string[]>();
  for (const [rel, x] of A) {
    const y = B.get(rel);
    if (!y) continue;
    const d = (what: string, u: unknown, v: unknown) => {
      if (u !== v) diffs.push(`${rel}: ${what} ${String(u)} != ${String(v)}`);
    };
    d('type', kind(x.st), kind(y.st));
    if (kind(x.st) !== kind(y.st)) continue;
    d('mode', (x.st.mode & 0o7777n).toString(8), (y.st.mode & 0o7777n).toString(8));
    d('uid', x.st.uid, y.st.uid);
    d('gid', x.st.gid, y.st.gid);
    d('mtime', x.st.mtimeNs, y.st.mtimeNs);
    d('link', x.link, y.link);
    d('xattrs', JSON.stringify(x.xattrs), JSON.stringify(y.xattrs));
    if (x.st.isFile()) {
      d('size', x.st.size, y.st.size);
      d('content', x.hash, y.hash);
      const sparseA = x.st.blocks * 512n < x.st.size;
      const sparseB = y.st.blocks * 512n < y.st.size;
      d('sparse', sparseA, sparseB);
      if (x.st.nlink > 1n)
        groupsA.set(`${x.st.dev}:${x.st.ino}`, [...(groupsA.get(`${x.st.dev}:${x.st.ino}`) ?? []), rel]);
      if (y.st.nlink > 1n)
        groupsB.set(`${y.st.dev}:${y.st.ino}`, [...(groupsB.get(`${y.st.dev}:${y.st.ino}`) ?? []), rel]);
    }
    if (x.st.isCharacterDevice() || x.st.isBlockDevice()) d('rdev', x.st.rdev, y.st.rdev);
  }
  const norm = (g: Map<string, string[]>) => [...g.values()].map((v) => v.sort().join('|')).sort();
  const ga = norm(groupsA);
  const gb = norm(groupsB);
  if (JSON.stringify(ga) !== JSON.stringify(gb))
    diffs.push(`hard-link groups differ: ${ga.join(', ')} != ${gb.join(', ')}`);
  return diffs;
}
