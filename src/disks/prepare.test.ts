import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DiskPlan } from '../control/index.js';
import { checkDisksFree } from './prepare.js';

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' }).trim();
let dir: string;
let loop = '';

const planFor = (target: string): DiskPlan => ({
  disks: [
    { source: '/dev/sda', target, sectorSize: 512, table: null, tableId: null, partitions: [], fs: null },
  ],
});

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-prepare-'));
  fs.writeFileSync(path.join(dir, 'disk.img'), '');
  fs.truncateSync(path.join(dir, 'disk.img'), 64 * 1024 * 1024);
  loop = sh('losetup', ['-f', '--show', path.join(dir, 'disk.img')]);
  sh('mkfs.ext4', ['-q', loop]);
});
afterAll(() => {
  try {
    execFileSync('umount', [path.join(dir, 'mnt')], { stdio: 'ignore' });
  } catch {
    /* not mounted */
  }
  if (loop) execFileSync('losetup', ['-d', loop]);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('checkDisksFree: the target touches only what it was given, and nothing in use', () => {
  it('refuses a plan naming a disk that is not one of --disk', () => {
    expect(() => checkDisksFree(planFor('/dev/sda'), [loop], path.join(dir, 'staging'))).toThrow(
      expect.objectContaining({
        code: 'FERRY_TARGET_DISK_BUSY',
        message: expect.stringContaining('not one of'),
      }),
    );
  });

  it('accepts a given disk that is free, refuses it while mounted outside the staging directory', () => {
    const staging = path.join(dir, 'staging');
    expect(() => checkDisksFree(planFor(loop), [loop], staging)).not.toThrow();
    fs.mkdirSync(path.join(dir, 'mnt'));
    sh('mount', [loop, path.join(dir, 'mnt')]);
    expect(() => checkDisksFree(planFor(loop), [loop], staging)).toThrow(
      expect.objectContaining({
        code: 'FERRY_TARGET_DISK_BUSY',
        message: expect.stringContaining('is mounted on'),
      }),
    );
    // mounted by ferry itself under its staging directory (a restart): not busy
    expect(() => checkDisksFree(planFor(loop), [loop], path.join(dir, 'mnt'))).not.toThrow();
  });
});
