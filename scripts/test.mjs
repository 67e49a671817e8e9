#!/usr/bin/env node
// `npm test`: installs the Debian packages the tests need (as root, only when missing),
// builds the native addon and the TypeScript, then runs every test with vitest. The run
// ends with the line `N passed, N failed, N skipped` and exits non-zero on any failure.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

// Debian package → one command it provides (checked with `command -v`).
const NEEDED = {
  attr: 'setfattr',
  acl: 'setfacl',
  fdisk: 'sfdisk',
  gdisk: 'sgdisk',
  e2fsprogs: 'mkfs.ext4',
  xfsprogs: 'mkfs.xfs',
  'btrfs-progs': 'mkfs.btrfs',
  mtools: 'mcopy',
  iproute2: 'ip',
  'util-linux': 'partx', // also wipefs, blkid, lsblk, findmnt, mkswap, nsenter
  mount: 'losetup',
  diffutils: 'cmp',
  rsync: 'rsync',
  'netcat-openbsd': 'nc',
  gcc: 'cc', // tests build test/support/deny-openat2.c and deny-open.c
};

function has(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

const missing = Object.entries(NEEDED)
  .filter(([, cmd]) => !has(cmd))
  .map(([pkg]) => pkg);
if (missing.length) {
  if (process.getuid?.() === 0) {
    console.log(`installing Debian packages the tests need: ${missing.join(' ')}`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
    execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], {
      stdio: 'inherit',
      env,
    });
  } else {
    console.log(`not root: cannot install ${missing.join(' ')}; tests that need them will fail`);
  }
}

const run = (cmd, args) => {
  const r = spawnSync(cmd, args, { stdio: 'inherit' });
  if (r.status !== 0) {
    console.log(`\n0 passed, 1 failed\n(${cmd} ${args.join(' ')} failed)`);
    process.exit(1);
  }
};
if (!existsSync('native/build/Release/ferry_fs.node')) run('npm', ['run', '--silent', 'build:native']);
run('npm', ['run', '--silent', 'build']);
const r = spawnSync('npx', ['vitest', 'run', ...process.argv.slice(2)], { stdio: 'inherit' });
process.exit(r.status ?? 1);
