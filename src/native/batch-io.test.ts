import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { encodePath, hasEscapedBytes } from '../protocol/paths.js';
import {
  ADDON_FUNCTIONS,
  type BatchWriteItem,
  ferryFs,
  LSTAT_FIELDS,
  LstatField,
  parseXattrBlob,
  WRITE_RESULT_INTS,
  WriteStep,
} from './index.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-batch-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const ENOENT = os.constants.errno.ENOENT;

describe('nodeXattrs', () => {
  it("reads an entry's own attributes inside its parent opened through no symlink: never what a symlink points to, never through a swapped parent", () => {
    const real = fs.realpathSync(dir);
    fs.mkdirSync(path.join(real, 'secret'));
    fs.mkdirSync(path.join(real, 'home'));
    fs.writeFileSync(path.join(real, 'home/file'), 'x');
    ferryFs.setXattr(path.join(real, 'home/file'), 'user.file', Buffer.from('of the file'));
    fs.symlinkSync('file', path.join(real, 'home/link'));
    ferryFs.setXattr(path.join(real, 'home/link'), 'trusted.link', Buffer.from('of the link'));
    fs.symlinkSync('file', path.join(real, 'secret/link'));
    ferryFs.setXattr(path.join(real, 'secret/link'), 'trusted.link', Buffer.from('secret'));
    const list = (p: string) => parseXattrBlob(ferryFs.nodeXattrs(path.join(real, p)), 1)[0];
    expect(list('home/link')).toEqual([
      { name: 'trusted.link', value: Buffer.from('of the link').toString('base64') },
    ]);
    expect(list('home/file')).toEqual([
      { name: 'user.file', value: Buffer.from('of the file').toString('base64') },
    ]);
    expect(list('home/gone')).toBeUndefined(); // removed since the scan: nothing to read
    // home swapped for a symlink to secret: refused, not secret/link's attributes (the
    // parent itself a symlink: ENOTDIR; one further up: ELOOP)
    fs.mkdirSync(path.join(real, 'secret/sub'));
    fs.symlinkSync('file', path.join(real, 'secret/sub/link'));
    ferryFs.setXattr(path.join(real, 'secret/sub/link'), 'trusted.link', Buffer.from('secret'));
    fs.renameSync(path.join(real, 'home'), path.join(real, 'home-moved'));
    fs.symlinkSync(path.join(real, 'secret'), path.join(real, 'home'));
    expect(() => ferryFs.nodeXattrs(path.join(real, 'home/link'))).toThrow(
      expect.objectContaining({ code: 'ENOTDIR' }),
    );
    expect(() => ferryFs.nodeXattrs(path.join(real, 'home/sub/link'))).toThrow(
      expect.objectContaining({ code: 'ELOOP' }),
    );
    expect(() => ferryFs.nodeXattrs('relative')).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(list('home-moved/link')).toHaveLength(1);
  });
});

describe('readFiles', () => {
  it('reads each file into its place in the slab, cut at its cap, and reports what it could not read', async () => {
    const a = path.join(dir, 'a');
    const b = path.join(dir, 'b');
    const link = path.join(dir, 'link');
    fs.writeFileSync(a, 'hello');
    fs.writeFileSync(b, Buffer.alloc(70_000, 7));
    fs.symlinkSync(a, link);
    fs.mkdirSync(path.join(dir, 'sub'));
    execFileSync('mkfifo', [path.join(dir, 'fifo')]); // opened without waiting for a writer
    const paths = [a, b, path.join(dir, 'missing'), link, path.join(dir, 'sub'), path.join(dir, 'fifo'), b];
    const caps = [5, 70_000, 10, 5, 0, 0, 100]; // the last: a file that grew beyond its scanned size
    const slab = Buffer.alloc(
      caps.reduce((x, y) => x + y, 0),
      0xee,
    );
    const got = await ferryFs.readFiles(paths, caps, slab, false);
    expect(got.xattrs).toBeNull();
    expect(Array.from(got.sizes)).toEqual([
      5,
      70_000,
      -ENOENT,
      -os.constants.errno.ELOOP,
      -os.constants.errno.EINVAL,
      -os.constants.errno.EINVAL,
      100,
    ]);
    expect(slab.subarray(0, 5).toString()).toBe('hello');
    expect(slab.subarray(5, 70_005).equals(Buffer.alloc(70_000, 7))).toBe(true);
    expect(slab.subarray(70_005 + 15, 70_005 + 15 + 100).equals(Buffer.alloc(100, 7))).toBe(true);
  });

  it('follows no symlink anywhere in a path: not the last component, not a directory above it', async () => {
    const real = fs.realpathSync(dir);
    fs.mkdirSync(path.join(real, 'secret'));
    fs.writeFileSync(path.join(real, 'secret/shadow'), 'SECRET');
    fs.mkdirSync(path.join(real, 'home'));
    fs.writeFileSync(path.join(real, 'home/plain'), 'plain');
    // a directory swapped for a symlink after the scan, and a file swapped for one
    fs.symlinkSync(path.join(real, 'secret'), path.join(real, 'home/dir'));
    fs.symlinkSync(path.join(real, 'secret/shadow'), path.join(real, 'home/file'));
    const paths = ['home/plain', 'home/dir/shadow', 'home/file'].map((p) => path.join(real, p));
    const slab = Buffer.alloc(30, 0xee);
    const got = await ferryFs.readFiles(paths, [10, 10, 10], slab, true);
    const ELOOP = os.constants.errno.ELOOP;
    expect(Array.from(got.sizes)).toEqual([5, -ELOOP, -ELOOP]);
    expect(slab.includes('SECRET')).toBe(false);
    // the synchronous open the large-file reader uses refuses the same two
    const fd = ferryFs.openSource(paths[0]!);
    expect(fs.readFileSync(fd, 'utf8')).toBe('plain');
    fs.closeSync(fd);
    for (const p of paths.slice(1))
      expect(() => ferryFs.openSource(p)).toThrow(expect.objectContaining({ code: 'ELOOP' }));
    expect(() => ferryFs.openSource(path.join(real, 'home/none'))).toThrow(
      expect.objectContaining({ code: 'ENOENT' }),
    );
  });

  it('falls back to O_NOFOLLOW where a seccomp filter refuses openat2 with EPERM, instead of refusing every file', () => {
    const real = fs.realpathSync(dir);
    const wrapper = path.join(real, 'deny-openat2');
    const source = fileURLToPath(new URL('../../test/support/deny-openat2.c', import.meta.url));
    execFileSync('cc', ['-O2', '-o', wrapper, source]);
    fs.writeFileSync(path.join(real, 'plain'), 'plain');
    fs.symlinkSync(path.join(real, 'plain'), path.join(real, 'link'));
    const addon = fileURLToPath(new URL('../../native/build/Release/ferry_fs.node', import.meta.url));
    const script = `
      const fs = require('node:fs');
      const a = require(${JSON.stringify(addon)});
      const open = (p) => { try { const fd = a.openSource(p); const t = fs.readFileSync(fd, 'utf8'); fs.closeSync(fd); return t; } catch (e) { return e.code; } };
      const slab = Buffer.alloc(10);
      a.readFiles([${JSON.stringify(path.join(real, 'plain'))}], [5], slab, false).then((r) => {
        console.log(JSON.stringify({
          batch: r.sizes[0], plain: open(${JSON.stringify(path.join(real, 'plain'))}),
          link: open(${JSON.stringify(path.join(real, 'link'))}), mode: a.openSourceMode(),
        }));
      });`;
    const out = execFileSync(wrapper, [process.execPath, '-e', script], { encoding: 'utf8' });
    // the files open (openat2 refused, so a plain open), a final symlink is still refused,
    // and the mode the agent's feasibility check reports says so
    expect(JSON.parse(out)).toEqual({ batch: 5, plain: 'plain', link: 'ELOOP', mode: 'nofollow' });
    expect(ferryFs.openSourceMode()).toBe('openat2'); // this process: no filter
  });

  it('leaves the access time of what it reads alone', async () => {
    const a = path.join(dir, 'a');
    fs.writeFileSync(a, 'x');
    fs.utimesSync(a, 1000, 2000); // atime before mtime: relatime would update it on a read
    await ferryFs.readFiles([a], [1], Buffer.alloc(1), true);
    expect(fs.statSync(a).atimeMs).toBe(1_000_000);
  });

  it('refuses arguments that do not line up', () => {
    expect(() => ferryFs.readFiles([dir], [1, 2], Buffer.alloc(3), false)).toThrow(TypeError);
    expect(() => ferryFs.readFiles([dir], [10], Buffer.alloc(3), false)).toThrow(/slab/);
    expect(() => (ferryFs.readFiles as (...a: unknown[]) => unknown)([dir], [1], Buffer.alloc(1))).toThrow(
      TypeError,
    );
  });

  it('reads the extended attributes of each file from the same descriptor, names sorted', async () => {
    const a = path.join(dir, 'a');
    const b = path.join(dir, 'b');
    const big = Buffer.alloc(3000, 0x5a); // ext4 holds at most one block of attributes per file
    fs.writeFileSync(a, 'aa');
    fs.writeFileSync(b, 'b');
    ferryFs.setXattr(a, 'user.zeta', Buffer.from('last'));
    ferryFs.setXattr(a, 'user.alpha', Buffer.from([0, 1, 2, 255]));
    ferryFs.setXattr(a, 'user.big', big);
    ferryFs.setXattr(a, 'user.empty', Buffer.alloc(0));
    const paths = [a, path.join(dir, 'missing'), b, a];
    const caps = [2, 1, 1, 2];
    const got = await ferryFs.readFiles(paths, caps, Buffer.alloc(6), true);
    expect(Array.from(got.sizes)).toEqual([2, -ENOENT, 1, 2]);
    const lists = parseXattrBlob(got.xattrs!, 4);
    const wantA = [
      { name: 'user.alpha', value: Buffer.from([0, 1, 2, 255]).toString('base64') },
      { name: 'user.big', value: big.toString('base64') },
      { name: 'user.empty', value: '' },
      { name: 'user.zeta', value: Buffer.from('last').toString('base64') },
    ];
    expect(lists).toEqual([wantA, undefined, undefined, wantA]);
    // a blob that does not hold exactly the files asked for is refused
    expect(() => parseXattrBlob(got.xattrs!, 5)).toThrow(/ends early/);
    expect(() => parseXattrBlob(got.xattrs!, 3)).toThrow(/more than/);
  });
});

describe('thread-pool jobs', () => {
  it('run at the nice value FERRY_POOL_NICE gives their threads, the event loop unchanged', () => {
    // a process of its own: each pool thread reads the variable once, at its first job
    const script = `
      import { ferryFs } from ${JSON.stringify(new URL('./index.js', import.meta.url).href)};
      import { threadNices } from ${JSON.stringify(new URL('../../test/support/threads.js', import.meta.url).href)};
      await ferryFs.readDir('/');
      console.log(JSON.stringify(threadNices(process.pid)));`;
    const run = (env: Record<string, string>) =>
      JSON.parse(
        execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
          env: { ...process.env, ...env },
          encoding: 'utf8',
        }),
      ) as { main: number; all: number[] };
    const seven = run({ FERRY_POOL_NICE: '7' });
    expect(seven.main).toBe(0);
    expect(seven.all).toContain(7);
    expect(run({ FERRY_POOL_NICE: '0' }).all.every((n) => n === 0)).toBe(true);
    expect(run({ FERRY_POOL_NICE: '99' }).all.every((n) => n === 0)).toBe(true); // out of range: unchanged
  });
});

describe('writeFiles', () => {
  const item = (name: string, data: string, extra: Partial<BatchWriteItem> = {}): BatchWriteItem => ({
    tmp: path.join(dir, `.ferry-tmp-${name}`),
    dst: path.join(dir, name),
    data: Buffer.from(data),
    uid: 1234,
    gid: 5678,
    mode: 0o4750,
    mtimeSec: 1_600_000_000,
    mtimeNsec: 123_456_789,
    ...extra,
  });
  const N = WRITE_RESULT_INTS;
  const steps = (r: Int32Array) => Array.from({ length: r.length / N }, (_, i) => r[i * N]);
  const inPlace = (r: Int32Array) => Array.from({ length: r.length / N }, (_, i) => r[i * N + 4]);

  it('takes inPlace and xattrNames as absent when they are undefined', async () => {
    const r = await ferryFs.writeFiles([
      { ...item('u', 'plain'), inPlace: undefined, xattrNames: undefined },
    ]);
    expect(steps(r)).toEqual([WriteStep.ok]);
    expect(inPlace(r)).toEqual([0]); // through a temporary file, as without inPlace
    expect(fs.readFileSync(path.join(dir, 'u'), 'utf8')).toBe('plain');
  });

  it('writes, owns, modes, times and renames every file, xattrs included', async () => {
    fs.writeFileSync(path.join(dir, 'old'), 'previous content');
    const r = await ferryFs.writeFiles([
      item('one', 'first', { xattrNames: ['user.note'], xattrValues: [Buffer.from('kept')] }),
      item('old', 'replaced'),
      item('empty', ''),
    ]);
    expect(steps(r)).toEqual([WriteStep.ok, WriteStep.ok, WriteStep.ok]);
    const st = fs.statSync(path.join(dir, 'one'), { bigint: true });
    expect(fs.readFileSync(path.join(dir, 'one'), 'utf8')).toBe('first');
    expect([st.uid, st.gid, st.mode & 0o7777n]).toEqual([1234n, 5678n, 0o4750n]); // set-id kept: mode after owner
    expect(st.mtimeNs).toBe(1_600_000_000_123_456_789n);
    expect(ferryFs.getXattr(path.join(dir, 'one'), 'user.note').toString()).toBe('kept');
    expect(fs.readFileSync(path.join(dir, 'old'), 'utf8')).toBe('replaced');
    expect(fs.statSync(path.join(dir, 'empty')).size).toBe(0);
    expect(fs.readdirSync(dir).filter((n) => n.startsWith('.ferry-tmp-'))).toEqual([]);
  });

  it('stops at the first failure, removes its temporary file and attempts nothing after it', async () => {
    const r = await ferryFs.writeFiles([
      item('a', 'ok'),
      item('b', 'lost', { tmp: path.join(dir, 'no-such-dir', '.ferry-tmp-b') }),
      item('c', 'never'),
    ]);
    expect(steps(r)).toEqual([WriteStep.ok, WriteStep.open, WriteStep.skipped]);
    expect(r[N + 1]).toBe(ENOENT);
    expect(fs.existsSync(path.join(dir, 'c'))).toBe(false);
    expect(fs.readdirSync(dir).sort()).toEqual(['a']);
  });

  it('never writes through an existing temporary name (O_EXCL|O_NOFOLLOW)', async () => {
    fs.symlinkSync('/etc/passwd', path.join(dir, '.ferry-tmp-x'));
    const r = await ferryFs.writeFiles([item('x', 'evil')]);
    expect(steps(r)).toEqual([WriteStep.open]);
    expect(fs.lstatSync(path.join(dir, '.ferry-tmp-x')).isSymbolicLink()).toBe(true);
  });

  it('leaves a file whose place is taken by a non-empty directory for the caller, and goes on', async () => {
    fs.mkdirSync(path.join(dir, 'taken'));
    fs.writeFileSync(path.join(dir, 'taken', 'inside'), '');
    const r = await ferryFs.writeFiles([item('taken', 'file now'), item('next', 'after')]);
    expect(steps(r)).toEqual([WriteStep.place, WriteStep.ok]);
    expect(fs.readFileSync(path.join(dir, '.ferry-tmp-taken'), 'utf8')).toBe('file now');
    expect(fs.readFileSync(path.join(dir, 'next'), 'utf8')).toBe('after');
  });

  it('reports an xattr it cannot set without failing the file', async () => {
    const r = await ferryFs.writeFiles([
      item('y', 'data', { xattrNames: ['bogus.name'], xattrValues: [Buffer.from('v')] }),
    ]);
    expect(Array.from(r)).toEqual([WriteStep.ok, 0, 0, os.constants.errno.EOPNOTSUPP, 0]);
    expect(fs.readFileSync(path.join(dir, 'y'), 'utf8')).toBe('data');
  });

  it('writes a new file in place (no temporary file, no rename) and takes the temporary file where something is there', async () => {
    fs.writeFileSync(path.join(dir, 'old'), 'previous content');
    fs.symlinkSync('/etc/hostname', path.join(dir, 'link'));
    const before = fs.readFileSync('/etc/hostname');
    const r = await ferryFs.writeFiles([
      item('fresh', 'new', { inPlace: true, xattrNames: ['user.k'], xattrValues: [Buffer.from('v')] }),
      item('old', 'replaced', { inPlace: true }),
      item('link', 'not through the link', { inPlace: true }),
      item('mine', 'as root', { inPlace: true, uid: 0, gid: 0, mode: 0o644 }),
    ]);
    expect(steps(r)).toEqual([WriteStep.ok, WriteStep.ok, WriteStep.ok, WriteStep.ok]);
    expect(inPlace(r)).toEqual([1, 0, 0, 1]);
    const st = fs.statSync(path.join(dir, 'fresh'), { bigint: true });
    expect([st.uid, st.gid, st.mode & 0o7777n, st.mtimeNs]).toEqual([
      1234n,
      5678n,
      0o4750n,
      1_600_000_000_123_456_789n,
    ]);
    expect(ferryFs.getXattr(path.join(dir, 'fresh'), 'user.k').toString()).toBe('v');
    expect(fs.readFileSync(path.join(dir, 'old'), 'utf8')).toBe('replaced');
    expect(fs.lstatSync(path.join(dir, 'link')).isFile()).toBe(true); // the link replaced, not followed
    expect(fs.readFileSync('/etc/hostname')).toEqual(before);
    const mine = fs.statSync(path.join(dir, 'mine'));
    expect([mine.uid, mine.gid, mine.mode & 0o7777]).toEqual([0, 0, 0o644]);
    expect(fs.readdirSync(dir).filter((n) => n.startsWith('.ferry-tmp-'))).toEqual([]);
  });

  it('removes an in-place file it could not finish (ENOSPC on a full file system)', async () => {
    const small = path.join(dir, 'small');
    fs.mkdirSync(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'ferry-test', small]);
    try {
      const big = { tmp: path.join(small, '.ferry-tmp-big'), dst: path.join(small, 'big') };
      const r = await ferryFs.writeFiles([
        item('ok', 'fits', {
          inPlace: true,
          tmp: path.join(small, '.ferry-tmp-ok'),
          dst: path.join(small, 'ok'),
        }),
        item('big', '', { inPlace: true, ...big, data: Buffer.alloc(1 << 20, 1) }),
      ]);
      expect(steps(r)).toEqual([WriteStep.ok, WriteStep.write]);
      expect(r[N + 1]).toBe(os.constants.errno.ENOSPC);
      expect(fs.readdirSync(small)).toEqual(['ok']);
    } finally {
      execFileSync('umount', [small]);
    }
  });

  it('refuses malformed items before touching the disk', () => {
    expect(() => ferryFs.writeFiles([{ ...item('z', 'd'), mode: 0, inPlace: true }])).toThrow(
      /mode other than 0/,
    );
    expect(() => ferryFs.writeFiles([{ ...item('z', 'd'), mode: 0o170000 }])).toThrow(/out of range/);
    expect(() => ferryFs.writeFiles([{ ...item('z', 'd'), tmp: 'a\0b' }])).toThrow(/tmp/);
    const bad = (extra: Record<string, unknown>) => [{ ...item('z', 'd'), ...extra }] as BatchWriteItem[];
    expect(() => ferryFs.writeFiles(bad({ inPlace: 'yes' }))).toThrow(/inPlace must be a boolean/);
    expect(() => ferryFs.writeFiles(bad({ uid: undefined }))).toThrow(/must be numbers/);
    expect(() => ferryFs.writeFiles(bad({ dst: 7 }))).toThrow(/dst must be a path/);
    expect(() => ferryFs.writeFiles(bad({ data: 'text' }))).toThrow(/data must be a Buffer/);
    expect(() => ferryFs.writeFiles(bad({ xattrNames: ['user.a'] }))).toThrow(/xattrNames and xattrValues/);
    expect(() => ferryFs.writeFiles(bad({ xattrNames: ['user.a'], xattrValues: [] }))).toThrow(
      /xattrNames and xattrValues/,
    );
    expect(fs.existsSync(path.join(dir, 'z'))).toBe(false);
  });
});

describe('readDir', () => {
  it('sorts the names in byte order and states only the first statLimit; statNames states the rest', async () => {
    const names = ['b', 'a', 'c', 'd', 'e'];
    for (const n of names) fs.writeFileSync(path.join(dir, n), n.repeat(3));
    const latin1 = Buffer.from([0x7a, 0xe9]); // "zé" in Latin-1: after every ASCII name, as its bytes say
    fs.writeFileSync(Buffer.concat([Buffer.from(`${dir}/`), latin1]), 'l');
    fs.writeFileSync(path.join(dir, 'z\u00e9'), 'u'); // its UTF-8 twin: 0x7a 0xc3 0xa9, before it
    const got = await ferryFs.readDir(dir, 2);
    expect(got.errno).toBe(0);
    expect(got.names).toEqual(['a', 'b']);
    expect(got.fields.length).toBe(2 * LSTAT_FIELDS);
    expect(got.fields[LSTAT_FIELDS + LstatField.size]).toBe(3n);
    // the rest as bytes, each name followed by a NUL, in byte order
    const rest = got.rest!;
    const parts: Buffer[] = [];
    for (let at = 0; at < rest.length; ) {
      const end = rest.indexOf(0, at);
      parts.push(rest.subarray(at, end));
      at = end + 1;
    }
    expect(parts).toEqual(['c', 'd', 'e', 'z\u00e9'].map((n) => Buffer.from(n)).concat([latin1]));
    // stated by name, as readDir states them; one removed meanwhile has mode -ENOENT
    fs.rmSync(path.join(dir, 'd'));
    const more = await ferryFs.statNames(dir, ['c', 'd', 'z\udce9']);
    expect(more.errno).toBe(0);
    expect(more.fields.length).toBe(3 * LSTAT_FIELDS);
    expect(more.fields[LstatField.ino]).toBe(fs.lstatSync(path.join(dir, 'c'), { bigint: true }).ino);
    expect(more.fields[LSTAT_FIELDS + LstatField.mode]).toBe(BigInt(-ENOENT));
    expect(more.fields[2 * LSTAT_FIELDS + LstatField.size]).toBe(1n);
    // a whole listing has no rest; a directory that is gone or swapped for a symlink is an errno
    const all = await ferryFs.readDir(dir);
    expect(all.rest).toBeNull();
    expect(all.names).toHaveLength(6);
    expect((await ferryFs.statNames(path.join(dir, 'missing'), ['a'])).errno).toBe(ENOENT);
    fs.symlinkSync(dir, path.join(dir, 'self'));
    expect((await ferryFs.statNames(path.join(dir, 'self'), ['a'])).errno).not.toBe(0);
    expect(() => ferryFs.statNames(dir, ['a/b'])).toThrow(/without '\/'/);
  });

  it('lists and states every name of a directory without following symlinks, as lstat does', async () => {
    fs.writeFileSync(path.join(dir, 'file'), 'abc');
    fs.symlinkSync('file', path.join(dir, 'link'));
    fs.mkdirSync(path.join(dir, 'sub'));
    fs.writeFileSync(Buffer.concat([Buffer.from(`${dir}/`), Buffer.from([0x6e, 0xff])]), ''); // not UTF-8
    fs.utimesSync(path.join(dir, 'file'), 1000.5, 2000.25);
    const got = await ferryFs.readDir(dir);
    expect(got.errno).toBe(0);
    expect(got.fields.length).toBe(got.names.length * LSTAT_FIELDS);
    const names = got.names;
    // the name that is not UTF-8 comes with its byte escaped (protocol/paths.ts), and opens as itself
    expect([...names].sort()).toEqual(['file', 'link', 'n\udcff', 'sub'].sort());
    const fd = ferryFs.openSource(path.join(dir, 'n\udcff'));
    expect(fs.fstatSync(fd).size).toBe(0);
    fs.closeSync(fd);
    for (const name of ['file', 'link', 'sub']) {
      const st = fs.lstatSync(path.join(dir, name), { bigint: true });
      const at = names.indexOf(name) * LSTAT_FIELDS;
      expect(got.fields[at + LstatField.mode]).toBe(st.mode);
      expect(got.fields[at + LstatField.size]).toBe(st.size);
      expect(got.fields[at + LstatField.ino]).toBe(st.ino);
      expect(got.fields[at + LstatField.dev]).toBe(st.dev);
      expect(got.fields[at + LstatField.nlink]).toBe(st.nlink);
      expect(got.fields[at + LstatField.blocks]).toBe(st.blocks);
      expect(got.fields[at + LstatField.mtimeNs]).toBe(st.mtimeNs);
      expect(got.fields[at + LstatField.ctimeNs]).toBe(st.ctimeNs);
      expect([got.fields[at + LstatField.uid], got.fields[at + LstatField.gid]]).toEqual([st.uid, st.gid]);
    }
    expect(got.fields[names.indexOf('file') * LSTAT_FIELDS + LstatField.mtimeNs]).toBe(2_000_250_000_000n);
  });

  it('gives every name back as its exact bytes, escaping none that is well-formed UTF-8 (as a decoder round trip says)', async () => {
    const sub = path.join(dir, 'utf8');
    fs.mkdirSync(sub);
    const names = [
      [0x61], // a
      [0xc3, 0xa9], // é
      [0xe2, 0x82, 0xac], // €
      [0xef, 0xbf, 0xbd], // U+FFFD itself, valid
      [0xf0, 0x9f, 0x98, 0x80], // U+1F600
      [0xf4, 0x8f, 0xbf, 0xbf], // U+10FFFF, the last
      [0xc0, 0xaf], // overlong '/'
      [0xc1, 0xbf], // overlong
      [0xe0, 0x80, 0xaf], // overlong, three bytes
      [0xf0, 0x80, 0x80, 0xaf], // overlong, four bytes
      [0xed, 0xa0, 0x80], // a surrogate
      [0xed, 0xbf, 0xbf], // the last surrogate
      [0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
      [0xf5, 0x80, 0x80, 0x80], // no such lead byte
      [0xe2, 0x82], // cut short
      [0x61, 0xe2], // cut short at the end
      [0x80], // a lone continuation byte
      [0xc3, 0x28], // a lead byte without its continuation
      [0xff],
    ].map((b) => Buffer.from(b));
    for (const n of names) fs.writeFileSync(Buffer.concat([Buffer.from(`${sub}/`), n]), '');
    const got = await ferryFs.readDir(sub);
    expect(got.names.length).toBe(names.length);
    // every name gives back exactly its bytes; those that are valid UTF-8 are plain text
    expect(got.names.map((n) => encodePath(n).toString('hex')).sort()).toEqual(
      names.map((b) => b.toString('hex')).sort(),
    );
    for (const n of got.names) {
      const bytes = encodePath(n);
      const roundTrips = Buffer.from(bytes.toString('utf8')).equals(bytes);
      expect([bytes.toString('hex'), hasEscapedBytes(n)]).toEqual([bytes.toString('hex'), !roundTrips]);
    }
    expect(got.names.filter((n) => !hasEscapedBytes(n)).length).toBe(6);
  });

  it('reports a directory it cannot read instead of listing it, and never follows a symlink to one', async () => {
    expect((await ferryFs.readDir(path.join(dir, 'missing'))).errno).toBe(ENOENT);
    fs.symlinkSync('/etc', path.join(dir, 'etc-link'));
    const got = await ferryFs.readDir(path.join(dir, 'etc-link'));
    expect(got.errno).toBe(os.constants.errno.ENOTDIR); // O_NOFOLLOW|O_DIRECTORY on a symlink
    expect(got.names).toEqual([]);
    // nor through a symlink above it (a parent swapped after it was scanned)
    const real = fs.realpathSync(dir);
    fs.mkdirSync(path.join(real, 'real/inner'), { recursive: true });
    fs.symlinkSync(path.join(real, 'real'), path.join(real, 'real-link'));
    expect((await ferryFs.readDir(path.join(real, 'real-link/inner'))).errno).toBe(os.constants.errno.ELOOP);
    expect((await ferryFs.readDir(path.join(real, 'real/inner'))).errno).toBe(0);
  });
});

describe('the addon', () => {
  it('offers exactly the functions the sources check for when loading it (a stale build is refused)', () => {
    const functions = Object.getOwnPropertyNames(ferryFs)
      .filter((k) => typeof (ferryFs as unknown as Record<string, unknown>)[k] === 'function')
      .sort();
    expect(functions).toEqual([...ADDON_FUNCTIONS].sort());
  });
});
