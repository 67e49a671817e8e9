/**
 * A sample source tree holding every kind of entry a file-level migration must carry:
 * names with spaces, non-ASCII, not UTF-8 at all (Latin-1, from an old server) and 200 bytes
 * long, set-id binaries, a sticky directory,
 * files owned by other users, hard links, symlinks (relative, absolute, dangling), a fifo,
 * a device node, user xattrs, fixed mtimes and a sparse file. Used by the demo and tests.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ferryFs } from '../native/index.js';

export const LONG_NAME = `${'é'.repeat(90)}${'x'.repeat(20)}`; // 200 bytes in UTF-8

export function buildSampleTree(root: string, opts: { sparseBytes?: number } = {}): void {
  const p = (rel: string) => path.join(root, rel);
  fs.mkdirSync(root, { recursive: true });
  for (const d of [
    'etc',
    'usr/bin',
    'home/alice/empty dir',
    'var/log',
    'srv/data',
    'opt/ünïcödé',
    'srv/nodes',
  ]) {
    fs.mkdirSync(p(d), { recursive: true });
  }
  fs.writeFileSync(p('etc/hostname'), 'source-host\n');
  fs.writeFileSync(p('etc/empty'), '');
  fs.writeFileSync(p('home/alice/notes with spaces.txt'), 'hello world\n'.repeat(1000));
  fs.writeFileSync(p(`opt/ünïcödé/${LONG_NAME}`), 'long name\n');
  // "résumé/café.txt" in Latin-1: bytes a UTF-8 decoder refuses, and a symlink to the file
  const latin1 = (rel: string) => Buffer.concat([Buffer.from(`${root}/`), Buffer.from(rel, 'latin1')]);
  fs.mkdirSync(latin1('home/alice/résumé'));
  fs.writeFileSync(latin1('home/alice/résumé/café.txt'), 'latin-1 name\n');
  fs.symlinkSync(Buffer.from('café.txt', 'latin1'), latin1('home/alice/résumé/link-to-café'));
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
  try {
    // a symlink's own attribute, as SELinux labels every symlink (root only; a host whose
    // SELinux refuses this label goes without)
    ferryFs.setXattr(
      p('srv/data/relative-link'),
      'security.selinux',
      Buffer.from('system_u:object_r:etc_t:s0\0'),
    );
  } catch {
    /* not root, or refused */
  }
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

/** Adds `count` small files in a system-like layout (deterministic content, ~1 in 3 compressible). */
export function addSmallFiles(root: string, count: number): void {
  for (let i = 0; i < count; i++) {
    const dir = path.join(root, 'usr/lib', `pkg-${Math.floor(i / 100)}`);
    if (i % 100 === 0) fs.mkdirSync(dir, { recursive: true });
    const size = 512 + ((i * 7919) % 60_000);
    const buf = Buffer.alloc(size);
    for (let j = 0; j < size; j++)
      buf[j] = i % 3 === 0 ? 97 + (j % 26) : ((i + 1) * (j + 13) * 2654435761) >>> 24;
    fs.writeFileSync(path.join(dir, `lib${i}.so`), buf);
  }
}
