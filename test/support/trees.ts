/**
 * Test support: builds a source tree holding every kind of entry ferry must carry, and
 * compares two trees entry by entry (type, content, mode, owner, mtime, link target,
 * hard-link groups, sparseness, xattrs).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import type { BigIntStats } from 'node:fs';
import fs from 'node:fs';
import path from 'node:path';
import { ferryFs } from '../../src/native/index.js';

export const LONG_NAME = `${'é'.repeat(90)}${'x'.repeat(20)}`; // 200 bytes in UTF-8

export function buildSampleTree(root: string, opts: { sparseBytes?: number } = {}): void {
  const p = (rel: string) => path.join(root, rel);
  fs.mkdirSync(root, { recursive: true });
  for (const d of ['etc', 'usr/bin', 'home/alice/empty dir', 'var/log', 'srv/data', 'opt/ünïcödé', 'srv/nodes']) {
    fs.mkdirSync(p(d), { recursive: true });
  }
  fs.writeFileSync(p('etc/hostname'), 'source-host\n');
  fs.writeFileSync(p('etc/empty'), '');
  fs.writeFileSync(p('home/alice/notes with spaces.txt'), 'hello world\n'.repeat(1000));
  fs.writeFileSync(p(`opt/ünïcödé/${LONG_NAME}`), 'long name\n');
  fs.writeFileSync(p('usr/bin/tool'), Buffer.alloc(300_000, 7));
  fs.chmodSync(p('usr/bin/tool'), 0o4755);
  fs.writeFileSync(p('usr/bin/sgid-tool'), '#!/bin/sh\n');
  fs.chmodSync(p('usr/bin/sgid-tool'), 0o2711);
  fs.mkdirSync(p('srv/sticky'), { mode: 0o1777 });
  fs.chmodSync(p('srv/sticky'), 0o1777);
  const rnd = Buffer.alloc(3 * 1024 * 1024 + 123);
  for (let i = 0; i < rnd.length; i++) rnd[i] = (i * 2654435761) >>> 24;
  fs.writeFileSync(p('srv/data/blob.bin'), rnd);
  fs.writeFileSync(p('home/alice/owned'), 'alice\n');
  fs.chownSync(p('home/alice/owned'), 1234, 5678);
  fs.chownSync(p('home/alice'), 1234, 5678);
  fs.writeFileSync(p('var/log/app.log'), 'line\n'.repeat(5000));
  fs.linkSync(p('var/log/app.log'), p('var/log/app.log.hardlink'));
  fs.linkSync(p('var/log/app.log'), p('srv/data/third-link'));
  fs.symlinkSync('../etc/hostname', p('srv/data/relative-link'));
  fs.symlinkSync('/etc/passwd', p('srv/data/absolute-link'));
  fs.symlinkSync('does/not/exist', p('srv/data/dangling-link'));
  execFileSync('mkfifo', [p('srv/data/fifo')]);
  ferryFs.mknod(p('srv/nodes/null-copy'), fs.constants.S_IFCHR | 0o666, 1, 3);
  ferryFs.setXattr(p('etc/hostname'), 'user.origin', Buffer.from('source'));
  ferryFs.setXattr(p('srv/data'), 'user.dir-attr', Buffer.from([0, 1, 2, 255]));
  const sparse = opts.sparseBytes ?? 256 * 1024 * 1024;
  const fd = fs.openSync(p('srv/data/sparse.img'), 'w');
  fs.writeSync(fd, Buffer.from('head'), 0, 4, 0);
  fs.writeSync(fd, Buffer.alloc(8192, 1), 0, 8192, Math.floor(sparse / 2));
  fs.writeSync(fd, Buffer.from('tail'), 0, 4, sparse - 4);
  fs.closeSync(fd);
  const t = new Date('2021-03-04T05:06:07.123Z');
  fs.utimesSync(p('etc/hostname'), t, t);
  ferryFs.lutimes(p('srv/data/relative-link'), 1_600_000_000, 5, 1_600_000_000, 123_456_789);
  fs.utimesSync(p('home/alice/empty dir'), t, t);
}

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
    for (const name of fs.readdirSync(abs).sort()) {
      const r = rel === '' ? name : `${rel}/${name}`;
      if (ignore(r)) continue;
      const a = path.join(root, r);
      const st = fs.lstatSync(a, { bigint: true });
      const info: Info = { st, xattrs: {} };
      if (st.isFile()) info.hash = createHash('sha256').update(fs.readFileSync(a)).digest('hex');
      if (st.isSymbolicLink()) info.link = fs.readlinkSync(a);
      else for (const x of ferryFs.listXattr(a)) info.xattrs[x] = ferryFs.getXattr(a, x).toString('hex');
      out.set(r, info);
      if (st.isDirectory()) visit(r);
    }
  };
  visit('');
  return out;
}

function kind(st: BigIntStats): string {
  if (st.isDirectory()) return 'dir';
  if (st.isFile()) return 'file';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isCharacterDevice()) return 'chardev';
  if (st.isBlockDevice()) return 'blockdev';
  return 'socket';
}

/** Every difference between two trees, as readable lines; empty means identical. */
export function compareTrees(a: string, b: string, ignore: (rel: string) => boolean = () => false): string[] {
  const A = walk(a, ignore);
  const B = walk(b, ignore);
  const diffs: string[] = [];
  for (const rel of A.keys()) if (!B.has(rel)) diffs.push(`missing on target: ${rel}`);
  for (const rel of B.keys()) if (!A.has(rel)) diffs.push(`extra on target: ${rel}`);
  const groupsA = new Map<bigint, string[]>();
  const groupsB = new Map<bigint, string[]>();
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
      if (x.st.nlink > 1n) groupsA.set(x.st.ino, [...(groupsA.get(x.st.ino) ?? []), rel]);
      if (y.st.nlink > 1n) groupsB.set(y.st.ino, [...(groupsB.get(y.st.ino) ?? []), rel]);
    }
    if (x.st.isCharacterDevice() || x.st.isBlockDevice()) d('rdev', x.st.rdev, y.st.rdev);
  }
  const norm = (g: Map<bigint, string[]>) => [...g.values()].map((v) => v.sort().join('|')).sort();
  const ga = norm(groupsA);
  const gb = norm(groupsB);
  if (JSON.stringify(ga) !== JSON.stringify(gb)) diffs.push(`hard-link groups differ: ${ga.join(', ')} != ${gb.join(', ')}`);
  return diffs;
}
