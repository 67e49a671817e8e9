import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ferryFs } from '../../native/index.js';
import { entryFromRecord, entryFromScan, readXattrs } from './entry.js';
import { toRecord } from './pass.js';
import { type ScannedEntry, STAT_SLICE, scanTree } from './scan.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-scan-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const TESTS = [
  'isDirectory',
  'isFile',
  'isSymbolicLink',
  'isFIFO',
  'isCharacterDevice',
  'isBlockDevice',
  'isSocket',
] as const;

describe('scanTree', () => {
  it('reports every file type and the lstat fields as fs.lstatSync does', async () => {
    const p = (n: string) => path.join(dir, n);
    fs.mkdirSync(p('d/deeper'), { recursive: true });
    fs.writeFileSync(p('d/file'), 'content');
    fs.symlinkSync('d/file', p('link'));
    execFileSync('mkfifo', [p('fifo')]);
    ferryFs.mknod(p('chr'), fs.constants.S_IFCHR | 0o600, 1, 3);
    ferryFs.mknod(p('blk'), fs.constants.S_IFBLK | 0o600, 7, 200);
    const server = net.createServer().listen(p('sock'));
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const seen: ScannedEntry[] = [];
      for await (const e of scanTree(dir)) seen.push(e);
      expect(seen.map((e) => `${e.path}:${e.kind}`)).toEqual([
        'blk:blockdev',
        'chr:chardev',
        'd:dir',
        'd/deeper:dir',
        'd/file:file',
        'fifo:fifo',
        'link:symlink',
        'sock:socket',
      ]);
      for (const e of seen) {
        const st = fs.lstatSync(e.abs, { bigint: true });
        for (const t of TESTS) expect(e.stat[t](), `${e.path} ${t}`).toBe(st[t]());
        for (const f of ['mode', 'uid', 'gid', 'size', 'ino', 'dev', 'nlink', 'rdev', 'mtimeNs'] as const)
          expect(e.stat[f], `${e.path} ${f}`).toBe(st[f]);
      }
    } finally {
      server.close();
    }
  });
});

describe('scanTree over a directory larger than one slice of names', () => {
  it('yields every entry once, in byte order, each with its own lstat fields; walks subdirectories found in later slices; skips exclusions', async () => {
    const count = STAT_SLICE * 2 + 500;
    const big = path.join(dir, 'spool');
    fs.mkdirSync(big);
    const name = (i: number) => `m${String(i).padStart(6, '0')}`;
    for (let i = 0; i < count; i++) fs.writeFileSync(path.join(big, name(i)), 'x'.repeat(i % 7));
    // subdirectories in the first, second and last slice, one of them excluded
    for (const i of [10, STAT_SLICE + 10, count - 1]) {
      fs.rmSync(path.join(big, name(i)));
      fs.mkdirSync(path.join(big, name(i)));
      fs.writeFileSync(path.join(big, name(i), 'inner'), 'in');
    }
    const seen: ScannedEntry[] = [];
    for await (const e of scanTree(dir, { excludes: [`/spool/${name(STAT_SLICE + 10)}`] })) seen.push(e);
    const want = ['spool'];
    for (let i = 0; i < count; i++) {
      if (i === STAT_SLICE + 10) continue;
      want.push(`spool/${name(i)}`);
      if (i === 10 || i === count - 1) want.push(`spool/${name(i)}/inner`);
    }
    expect(seen.map((e) => e.path)).toEqual(want);
    for (const e of [seen[1]!, seen[STAT_SLICE + 5]!, seen[seen.length - 3]!, seen[seen.length - 1]!]) {
      const st = fs.lstatSync(e.abs, { bigint: true });
      expect([e.stat.ino, e.stat.size, e.stat.mode], e.path).toEqual([st.ino, st.size, st.mode]);
    }
  });

  it('ends a directory that is removed between two slices of its names, as one removed before its listing', async () => {
    const big = path.join(dir, 'spool');
    fs.mkdirSync(big);
    for (let i = 0; i < STAT_SLICE * 3; i++)
      fs.writeFileSync(path.join(big, `f${String(i).padStart(6, '0')}`), '');
    let n = 0;
    for await (const e of scanTree(dir)) {
      n++;
      // inside the first slice: the second is being stated, the third not yet
      if (e.path === 'spool/f000100') fs.rmSync(big, { recursive: true });
    }
    expect(n).toBeGreaterThan(100);
    expect(n).toBeLessThan(STAT_SLICE * 3); // not every name: the rest went with the directory
  });
});

describe('entryFromRecord', () => {
  it('makes the ENTRY that entryFromScan makes of the same regular file', async () => {
    fs.writeFileSync(path.join(dir, 'f'), 'content');
    fs.chmodSync(path.join(dir, 'f'), 0o4751);
    fs.chownSync(path.join(dir, 'f'), 1234, 5678);
    ferryFs.setXattr(path.join(dir, 'f'), 'user.note', Buffer.from('kept'));
    let checked = 0;
    for await (const e of scanTree(dir)) {
      const xattrs = readXattrs(e.abs);
      expect(xattrs).toEqual([{ name: 'user.note', value: Buffer.from('kept').toString('base64') }]);
      expect(entryFromRecord(toRecord(e), 7, xattrs)).toEqual(await entryFromScan(e, 7));
      checked++;
    }
    expect(checked).toBe(1);
  });
});
