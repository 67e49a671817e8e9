import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { denyOpens, removeDenyOpenProgram, stopDenyingOpens } from '../../../test/support/deny-open.js';
import { duplexPair } from '../../../test/support/duplex-pair.js';
import { ferryFs } from '../../native/index.js';
import { Session } from '../../protocol/index.js';
import { readBuffers } from './read-buffers.js';
import { receiveVerify, runVerifySend } from './verify.js';

let dir: string;
const p = (...x: string[]) => path.join(dir, ...x);

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-verify-'));
  fs.mkdirSync(p('src/etc/deep'), { recursive: true });
  fs.writeFileSync(p('src/etc/a'), 'alpha');
  fs.writeFileSync(p('src/etc/deep/b'), 'bravo');
  fs.symlinkSync('a', p('src/etc/link'));
  fs.mkdirSync(p('outside'));
  fs.writeFileSync(p('outside/b'), 'bravo');
  execFileSync('cp', ['-a', p('src'), p('dst')]);
});
afterEach(async () => {
  await stopDenyingOpens();
  fs.rmSync(dir, { recursive: true, force: true });
});
afterAll(removeDenyOpenProgram);

async function verify(
  mode: 'quick' | 'full',
  dst = p('dst'),
  ignore: string[] = [],
  onEntry?: (bytes: number) => void,
) {
  const [a, b] = duplexPair();
  const [sent, got] = await Promise.all([
    runVerifySend({
      session: new Session(a),
      root: p('src'),
      excludes: ignore,
      mode,
      ...(onEntry ? { onEntry } : {}),
    }),
    receiveVerify(new Session(b), dst, mode, { ignore }),
  ]);
  // the source side adds what it lost during its walk to the target's report
  expect(sent).toEqual({ ...got, changedOnSource: sent.changedOnSource });
  expect(sent.changedOnSource).toBeTypeOf('number');
  return sent;
}

/** An onEntry that runs `change` once, when the n-th CHECK has been sent. */
function changeAt(n: number, change: () => void): { onEntry: () => void; ran: () => boolean } {
  let calls = 0;
  return {
    onEntry: () => {
      if (++calls === n) change();
    },
    ran: () => calls >= n,
  };
}

describe('verify pass', () => {
  it('finds identical trees identical, in both modes', async () => {
    for (const mode of ['quick', 'full'] as const) {
      const r = await verify(mode);
      expect(r).toMatchObject({
        mode,
        identical: true,
        totals: { files: 5, different: 0, missing: 0, extra: 0 },
      });
    }
  });

  it('counts per directory what differs, is missing or is extra; full mode sees same-size-same-mtime changes', async () => {
    const st = fs.statSync(p('dst/etc/a'));
    fs.writeFileSync(p('dst/etc/a'), 'ALPHA');
    fs.utimesSync(p('dst/etc/a'), st.atime, st.mtime);
    execFileSync('touch', ['-r', p('src/etc/a'), p('dst/etc/a')]);
    fs.rmSync(p('dst/etc/deep/b'));
    fs.writeFileSync(p('dst/etc/deep/extra'), 'x');
    execFileSync('touch', ['-r', p('src/etc/deep'), p('dst/etc/deep')]);
    fs.unlinkSync(p('dst/etc/link'));
    fs.symlinkSync('elsewhere', p('dst/etc/link'));
    execFileSync('touch', ['-h', '-r', p('src/etc/link'), p('dst/etc/link')]);
    execFileSync('touch', ['-r', p('src/etc'), p('dst/etc')]);
    const quick = await verify('quick');
    expect(quick.totals).toEqual({ files: 5, different: 1, missing: 1, extra: 1 });
    expect(quick.directories.slice(0, 2)).toEqual([
      { path: '/etc', files: 3, different: 1, missing: 0, extra: 0 },
      { path: '/etc/deep', files: 1, different: 0, missing: 1, extra: 1 },
    ]);
    const full = await verify('full');
    expect(full.totals.different).toBe(2);
    expect(full.examples).toContainEqual({ path: '/etc/a', problem: 'content differs' });
  });

  it('compares the content of many small files read in batches and of large and sparse files, in scan order', async () => {
    // 600 small files (read whole, 16 to a batch, hundreds ahead), 3 MiB files read chunk by
    // chunk, and a sparse 64 MiB file of which only the data is read
    for (let d = 0; d < 6; d++) {
      fs.mkdirSync(p(`src/many/d${d}`), { recursive: true });
      for (let f = 0; f < 100; f++)
        fs.writeFileSync(p(`src/many/d${d}/f${f}`), `file ${d}/${f} `.repeat(f * 20 + 1));
    }
    fs.mkdirSync(p('src/big'));
    for (const name of ['x', 'y']) fs.writeFileSync(p(`src/big/${name}`), Buffer.alloc(3 << 20, name));
    const sparse = fs.openSync(p('src/big/sparse'), 'w');
    fs.writeSync(sparse, Buffer.alloc(4096, 's'), 0, 4096, 40 << 20);
    fs.ftruncateSync(sparse, 64 << 20);
    fs.closeSync(sparse);
    fs.rmSync(p('dst'), { recursive: true });
    execFileSync('cp', ['-a', '--sparse=always', p('src'), p('dst')]);
    expect((await verify('full')).identical).toBe(true);
    expect(readBuffers.keptBytes).toBe(0); // the read buffers are forgotten when the pass ends
    // same size and times, different content: only a full verify sees them, each one
    const changed = ['many/d1/f7', 'many/d4/f99', 'big/y', 'big/sparse'];
    for (const rel of changed) {
      const fd = fs.openSync(p(`dst/${rel}`), 'r+');
      fs.writeSync(fd, 'Z', rel === 'big/sparse' ? (40 << 20) + 9 : 3);
      fs.closeSync(fd);
      execFileSync('touch', ['-r', p(`src/${rel}`), p(`dst/${rel}`)]);
    }
    expect((await verify('quick')).identical).toBe(true);
    const full = await verify('full');
    expect(full.totals).toMatchObject({ different: 4, missing: 0, extra: 0 });
    expect(full.examples).toEqual(
      changed.sort().map((rel) => ({ path: `/${rel}`, problem: 'content differs' })),
    );
  });

  it('counts what only the target has in each directory, siblings sharing a prefix kept apart', async () => {
    for (const d of ['a/x', 'a b', 'ab', 'a-b']) {
      fs.mkdirSync(p(`src/${d}`), { recursive: true });
      fs.writeFileSync(p(`src/${d}/f`), d);
    }
    fs.rmSync(p('dst'), { recursive: true });
    execFileSync('cp', ['-a', p('src'), p('dst')]);
    const extras = ['a/only', 'a b/only', 'a/x/only', 'only', 'ab/f2'];
    for (const rel of extras) fs.writeFileSync(p(`dst/${rel}`), 'extra');
    for (const d of ['a', 'a/x', 'a b', 'ab']) execFileSync('touch', ['-r', p(`src/${d}`), p(`dst/${d}`)]);
    const r = await verify('quick');
    expect(r.totals).toEqual({ files: 14, different: 0, missing: 0, extra: 5 });
    expect(r.examples.map((e) => e.path).sort()).toEqual(extras.map((e) => `/${e}`).sort());
    expect(r.directories.find((d) => d.path === '/a')).toMatchObject({ files: 1, extra: 1 }); // x
    expect(r.directories.find((d) => d.path === '/ab')).toMatchObject({ files: 1, extra: 1 });
  });

  it('compares extended attributes in full mode (files small and large, directories), not in quick mode', async () => {
    fs.writeFileSync(p('src/etc/large'), Buffer.alloc(3 << 20, 'L'));
    for (const rel of ['etc/a', 'etc/large', 'etc/deep'])
      ferryFs.setXattr(p(`src/${rel}`), 'user.tag', Buffer.from('v1'));
    fs.rmSync(p('dst'), { recursive: true });
    execFileSync('cp', ['-a', p('src'), p('dst')]); // keeps the xattrs
    expect((await verify('full')).identical).toBe(true);
    // a capability lost, a value changed, an attribute added on the target
    ferryFs.removeXattr(p('dst/etc/a'), 'user.tag');
    ferryFs.setXattr(p('dst/etc/large'), 'user.tag', Buffer.from('v2'));
    ferryFs.setXattr(p('dst/etc/deep'), 'user.other', Buffer.from('x'));
    expect((await verify('quick')).identical).toBe(true);
    const full = await verify('full');
    expect(full.totals.different).toBe(3);
    expect(full.examples).toEqual(
      ['/etc/a', '/etc/deep', '/etc/large'].map((path) => ({ path, problem: 'extended attributes differ' })),
    );
  });

  it("compares a symlink's owner and time in both modes, and its own extended attributes (an SELinux label) in full mode", async () => {
    const label = Buffer.from('system_u:object_r:bin_t:s0\0');
    ferryFs.setXattr(p('src/etc/link'), 'security.selinux', label);
    ferryFs.setXattr(p('dst/etc/link'), 'security.selinux', label);
    execFileSync('mkfifo', [p('src/etc/fifo')]);
    ferryFs.setXattr(p('src/etc/fifo'), 'trusted.tag', Buffer.from('v1'));
    execFileSync('cp', ['-a', p('src/etc/fifo'), p('dst/etc/fifo')]);
    ferryFs.setXattr(p('dst/etc/fifo'), 'trusted.tag', Buffer.from('v1'));
    execFileSync('touch', ['-r', p('src/etc'), p('dst/etc')]);
    expect((await verify('full')).identical).toBe(true);
    // the label lost on the target's symlink (what a copy that skips symlinks leaves), the fifo's changed
    ferryFs.removeXattr(p('dst/etc/link'), 'security.selinux');
    ferryFs.setXattr(p('dst/etc/fifo'), 'trusted.tag', Buffer.from('v2'));
    expect((await verify('quick')).identical).toBe(true);
    expect((await verify('full')).examples).toEqual(
      ['/etc/fifo', '/etc/link'].map((path) => ({ path, problem: 'extended attributes differ' })),
    );
    // another owner, then another time: the link target alone no longer decides
    ferryFs.setXattr(p('dst/etc/link'), 'security.selinux', label);
    fs.lchownSync(p('dst/etc/link'), 4321, 4321);
    expect((await verify('quick')).examples).toEqual([
      { path: '/etc/link', problem: 'owner 4321:4321 != 0:0' },
    ]);
    fs.lchownSync(p('dst/etc/link'), 0, 0);
    ferryFs.lutimes(p('dst/etc/link'), 1_000_000, 0, 1_000_000, 0);
    expect((await verify('quick')).examples).toEqual([
      { path: '/etc/link', problem: 'modification time differs' },
    ]);
  });

  it("leaves the task's exclusions out on both sides: what only the target has there is not extra", async () => {
    fs.mkdirSync(p('src/var/cache'), { recursive: true });
    fs.writeFileSync(p('src/var/cache/on-source'), 'x');
    fs.mkdirSync(p('dst/var/cache'), { recursive: true });
    fs.writeFileSync(p('dst/var/cache/on-target'), 'y');
    fs.writeFileSync(p('dst/etc/deep/b-kept'), 'z'); // not under an exclusion: extra
    execFileSync('touch', ['-r', p('src/etc/deep'), p('dst/etc/deep')]);
    execFileSync('touch', ['-r', p('src/var'), p('dst/var')]);
    const r = await verify('full', p('dst'), ['/var/cache/', '/etc/deep/b-kept-elsewhere']);
    expect(r.totals).toEqual({ files: 6, different: 0, missing: 0, extra: 1 });
    expect(r.examples).toEqual([{ path: '/etc/deep/b-kept', problem: 'only on the target' }]);
    // without the exclusions both sides of var/cache count
    const all = await verify('quick');
    expect(all.totals).toMatchObject({ missing: 1, extra: 2 });
  });

  it('compares names that are not valid UTF-8 as their bytes, and finds what differs under them', async () => {
    const name = (root: string, ...b: number[]) =>
      Buffer.concat([Buffer.from(`${root}/etc/`), Buffer.from(b)]);
    fs.writeFileSync(name(p('src'), 0x61, 0xe9), 'latin-1');
    fs.writeFileSync(name(p('src'), 0x61, 0xe8), 'another');
    fs.symlinkSync(Buffer.from([0x61, 0xe9]), name(p('src'), 0x6c, 0xe9));
    fs.rmSync(p('dst'), { recursive: true });
    execFileSync('cp', ['-a', p('src'), p('dst')]);
    for (const mode of ['quick', 'full'] as const)
      expect((await verify(mode)).totals).toMatchObject({ files: 8, different: 0, missing: 0, extra: 0 });
    const st = fs.statSync(name(p('dst'), 0x61, 0xe9));
    fs.writeFileSync(name(p('dst'), 0x61, 0xe9), 'LATIN-1');
    fs.utimesSync(name(p('dst'), 0x61, 0xe9), st.atime, st.mtime);
    fs.rmSync(name(p('dst'), 0x61, 0xe8));
    fs.writeFileSync(name(p('dst'), 0x61, 0xe7), 'extra');
    execFileSync('touch', ['-r', p('src/etc'), p('dst/etc')]);
    const full = await verify('full');
    expect(full.totals).toMatchObject({ different: 1, missing: 1, extra: 1 });
    expect(full.examples.map((e) => e.path).sort()).toEqual(['/etc/a\udce7', '/etc/a\udce8', '/etc/a\udce9']);
  });

  it('counts what the target has in a directory the source has empty', async () => {
    fs.mkdirSync(p('src/empty'));
    fs.mkdirSync(p('dst/empty/sub'), { recursive: true });
    fs.writeFileSync(p('dst/empty/junk'), 'x');
    execFileSync('touch', ['-r', p('src/empty'), p('dst/empty')]);
    execFileSync('touch', ['-r', p('src'), p('dst')]);
    const r = await verify('quick');
    expect(r.totals).toMatchObject({ different: 0, missing: 0, extra: 2 });
    expect(r.directories[0]).toMatchObject({ path: '/empty', extra: 2 });
  });

  it('reports what the source cannot read as differing instead of failing: a file as different, a directory by its contents', async () => {
    const allow = await denyOpens([p('src/etc/a'), p('src/etc/deep')]);
    const full = await verify('full');
    await allow();
    // the file's content cannot be compared; the directory cannot be listed, so what the
    // target holds in it is extra
    expect(full.identical).toBe(false);
    expect(full.totals).toMatchObject({ different: 1, missing: 0, extra: 1 });
    expect(full.examples).toContainEqual({ path: '/etc/a', problem: 'cannot be read on the source' });
    // quick mode needs no read of the file, only the listing
    expect((await verify('quick')).totals).toMatchObject({ different: 0, missing: 0, extra: 0 });
  });

  it('refuses a CHECK for a directory the depth-first walk has left (its names are forgotten by then)', async () => {
    const [a, b] = duplexPair();
    const source = new Session(a);
    const got = receiveVerify(new Session(b), p('dst'), 'quick');
    const check = (path: string, kind: 'dir' | 'file') =>
      source.send({ type: 'check', body: { path, kind, mode: 0o755, uid: 0, gid: 0, mtimeNs: '0' } });
    await check('etc', 'dir');
    await check('etc/a', 'file');
    await check('outside', 'dir'); // leaves etc: its extras are counted, its names dropped
    await check('etc/late', 'file');
    await expect(got).rejects.toMatchObject({ code: 'FERRY_PROTOCOL_VIOLATION' });
  });

  it('reports entries a live source loses during the walk (removed, or replaced by another kind) instead of failing', async () => {
    // quick mode: the symlink is stated with its directory's listing, then removed before its
    // target is read (after the CHECK of /etc/a, the walk's second)
    const quick = changeAt(2, () => fs.rmSync(p('src/etc/link')));
    const q = await verify('quick', p('dst'), [], quick.onEntry);
    expect(quick.ran()).toBe(true);
    expect(q.changedOnSource).toBe(1);
    expect(q.totals).toMatchObject({ files: 4, different: 0, missing: 0, extra: 1 });
    expect(q.examples).toEqual([{ path: '/etc/link', problem: 'only on the target' }]);
    // full mode: a large file (opened only at its turn) is replaced by a symlink to a file
    // outside the tree, which is never read, and a small file is removed
    fs.symlinkSync('a', p('src/etc/link'));
    execFileSync('touch', ['-h', '-r', p('dst/etc/link'), p('src/etc/link')]);
    fs.writeFileSync(p('src/etc/big'), Buffer.alloc(3 << 20, 7));
    execFileSync('cp', ['-a', p('src/etc/big'), p('dst/etc/big')]);
    execFileSync('touch', ['-r', p('src/etc'), p('dst/etc')]);
    expect((await verify('full')).identical).toBe(true);
    const full = changeAt(2, () => {
      fs.rmSync(p('src/etc/big'));
      fs.symlinkSync(p('outside/b'), p('src/etc/big'));
    });
    const f = await verify('full', p('dst'), [], full.onEntry);
    expect(full.ran()).toBe(true);
    expect(f.changedOnSource).toBe(1);
    expect(f.totals).toMatchObject({ files: 5, different: 0, missing: 0, extra: 1 });
    expect(f.examples).toEqual([{ path: '/etc/big', problem: 'only on the target' }]);
    // the next check sees the source as it is now
    const next = await verify('full');
    expect(next.changedOnSource).toBe(0);
    expect(next.examples).toContainEqual({
      path: '/etc/big',
      problem: 'is a file on the target, a symlink on the source',
    });
  });

  it('takes a target root given through a symlink (hashing what it resolves to)', async () => {
    fs.symlinkSync(p('dst'), p('dst-link'));
    const r = await verify('full', p('dst-link'));
    expect(r.identical).toBe(true);
    expect(r.totals.files).toBe(5);
  });

  it('never reads through a symlinked parent on the target: such entries count as missing', async () => {
    fs.rmSync(p('dst/etc/deep'), { recursive: true });
    fs.symlinkSync(p('outside'), p('dst/etc/deep'));
    const r = await verify('full');
    expect(r.examples).toContainEqual({
      path: '/etc/deep',
      problem: 'is a symlink on the target, a dir on the source',
    });
    expect(r.examples).toContainEqual({ path: '/etc/deep/b', problem: 'missing' });
    expect(r.identical).toBe(false);
  });
});
