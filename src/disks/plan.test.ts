import { describe, expect, it } from 'vitest';
import type { DiskInfo, SourceLayout, TargetDisk } from '../control/index.js';
import { isFerryError } from '../errors/index.js';
import { blockCopies, copiedAsBlocks, layoutProblems, parseSize, planDisks } from './plan.js';

const MiB = 1024 * 1024;
const LINUX = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';

function gptDisk(): DiskInfo {
  return {
    path: '/dev/sda',
    sizeBytes: 1024 * MiB,
    sectorSize: 512,
    table: 'gpt',
    tableId: 'A401CAF2-0497-0A46-BD6B-52E4DC6A0D4A',
    partitions: [
      {
        number: 1,
        start: 2048,
        size: 262_144,
        type: LINUX,
        name: 'boot',
        fs: { type: 'ext4', uuid: 'u1', label: 'boot', mountpoint: '/boot', usedBytes: 20 * MiB },
      },
      {
        number: 2,
        start: 264_192,
        size: 819_200,
        type: LINUX,
        fs: { type: 'ext4', uuid: 'u2', label: 'root', mountpoint: '/', usedBytes: 150 * MiB },
      },
      {
        number: 3,
        start: 1_083_392,
        size: 131_072,
        type: '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F',
        fs: { type: 'swap', uuid: 'u3', label: null, mountpoint: null, usedBytes: null },
      },
    ],
    fs: null,
  };
}

function dosDisk(): DiskInfo {
  return {
    path: '/dev/sdb',
    sizeBytes: 700 * MiB,
    sectorSize: 512,
    table: 'dos',
    tableId: '0x105412ae',
    partitions: [
      {
        number: 1,
        start: 2048,
        size: 1_228_800,
        type: '83',
        bootable: true,
        fs: { type: 'xfs', uuid: 'u4', label: 'home', mountpoint: '/home', usedBytes: 100 * MiB },
      },
    ],
    fs: null,
  };
}

const layout = (): SourceLayout => ({ disks: [dosDisk(), gptDisk()], problems: [] });
const tdisk = (path: string, mib: number): TargetDisk => ({ path, sizeBytes: mib * MiB, sectorSize: 512 });

function refusal(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (e) {
    if (isFerryError(e)) return { code: e.code, message: e.message };
    throw e;
  }
  throw new Error('expected a refusal');
}

describe('planDisks', () => {
  it('pairs source disks in device order with target disks in --disk order and keeps the layout exactly', () => {
    const plan = planDisks(layout(), [tdisk('/dev/vdb', 2048), tdisk('/dev/vdc', 700)], [], []);
    expect(plan.disks.map((d) => [d.source, d.target])).toEqual([
      ['/dev/sda', '/dev/vdb'],
      ['/dev/sdb', '/dev/vdc'],
    ]);
    expect(plan.disks[0]!.partitions).toEqual(gptDisk().partitions);
    expect(plan.disks[0]).toMatchObject({ table: 'gpt', tableId: gptDisk().tableId });
  });

  it('refuses a smaller target disk without --resize, with both sizes', () => {
    const r = refusal(() => planDisks(layout(), [tdisk('/dev/vdb', 2048), tdisk('/dev/vdc', 400)], [], []));
    expect(r.code).toBe('FERRY_LAYOUT_DOES_NOT_FIT');
    expect(r.message).toContain(
      'target disk /dev/vdc (400.0 MiB) is smaller than source disk /dev/sdb (700.0 MiB)',
    );
  });

  it('refuses too few target disks', () => {
    const r = refusal(() => planDisks(layout(), [tdisk('/dev/vdb', 4096)], [], []));
    expect(r).toMatchObject({ code: 'FERRY_LAYOUT_DOES_NOT_FIT' });
    expect(r.message).toContain('the source has 2 disks (/dev/sda, /dev/sdb) but the target has 1');
  });

  it('resizes a partition by mount point and moves the partitions after it, 1 MiB aligned', () => {
    const plan = planDisks(
      layout(),
      [tdisk('/dev/vdb', 900), tdisk('/dev/vdc', 700)],
      [],
      [
        { partition: '/boot', sizeBytes: 200 * MiB + 1000 },
        { partition: '/dev/sda2', sizeBytes: 300 * MiB },
      ],
    );
    const parts = plan.disks[0]!.partitions;
    expect(parts.map((p) => [p.number, p.start, p.size])).toEqual([
      [1, 2048, 409_600],
      [2, 411_648, 614_400],
      [3, 1_026_048, 131_072],
    ]);
    expect(parts[0]!.fs?.uuid).toBe('u1'); // file systems keep their identity
  });

  it('refuses a resize below what the file system holds or mkfs accepts, and one that does not fit', () => {
    const tooSmall = refusal(() =>
      planDisks(
        layout(),
        [tdisk('/dev/vdb', 2048), tdisk('/dev/vdc', 400)],
        [],
        [{ partition: '/home', sizeBytes: 200 * MiB }],
      ),
    );
    expect(tooSmall.message).toMatch(
      /--resize \/home=200\.0 MiB: \/home \(xfs\) holds 100\.0 MiB and needs at least 300\.0 MiB/,
    );
    const big = refusal(() =>
      planDisks(
        layout(),
        [tdisk('/dev/vdb', 2048), tdisk('/dev/vdc', 400)],
        [],
        [{ partition: '/home', sizeBytes: 500 * MiB }],
      ),
    );
    expect(big.message).toContain(
      'the resized layout of /dev/sdb needs 501.0 MiB but target disk /dev/vdc has 400.0 MiB',
    );
    const root = refusal(() =>
      planDisks(
        layout(),
        [tdisk('/dev/vdb', 2048), tdisk('/dev/vdc', 700)],
        [],
        [{ partition: '/', sizeBytes: 100 * MiB }],
      ),
    );
    expect(root.message).toContain('/ (ext4) holds 150.0 MiB and needs at least 181.0 MiB');
  });

  it('follows --disk-map and rejects unknown, doubled or missing disks', () => {
    const targets = [tdisk('/dev/vdb', 800), tdisk('/dev/vdc', 2048)];
    const plan = planDisks(
      layout(),
      targets,
      [
        { source: 'sda', target: '/dev/vdc' },
        { source: '/dev/sdb', target: 'vdb' },
      ],
      [],
    );
    expect(plan.disks.map((d) => d.target)).toEqual(['/dev/vdc', '/dev/vdb']);
    expect(refusal(() => planDisks(layout(), targets, [{ source: 'sdz', target: 'vdb' }], [])).code).toBe(
      'FERRY_BAD_REQUEST',
    );
    expect(
      refusal(() =>
        planDisks(
          layout(),
          targets,
          [
            { source: 'sda', target: 'vdc' },
            { source: 'sdb', target: 'vdc' },
          ],
          [],
        ),
      ).message,
    ).toContain('mapped twice');
    expect(
      refusal(() => planDisks(layout(), targets, [{ source: 'sda', target: 'vdc' }], [])).message,
    ).toContain('source disk /dev/sdb is not mapped');
  });

  it('refuses LVM and RAID sources, and mounted file systems it cannot make', () => {
    const lvm = layout();
    lvm.disks[1]!.partitions[1]!.type = 'E6D6D379-F507-44C2-A23C-238F2A3DF928';
    expect(
      refusal(() => planDisks(lvm, [tdisk('/dev/vdb', 4096), tdisk('/dev/vdc', 4096)], [], [])),
    ).toMatchObject({
      code: 'FERRY_LVM_UNSUPPORTED',
      message: expect.stringContaining('/dev/sda2 is an LVM physical volume'),
    });
    const mapped: SourceLayout = {
      disks: [],
      problems: [
        { code: 'FERRY_LVM_UNSUPPORTED', message: '/ is on the device-mapper volume /dev/mapper/vg-root' },
      ],
    };
    expect(refusal(() => planDisks(mapped, [tdisk('/dev/vdb', 4096)], [], [])).code).toBe(
      'FERRY_LVM_UNSUPPORTED',
    );
    const zfs = layout();
    zfs.disks[0]!.partitions[0]!.fs!.type = 'zfs_member';
    expect(layoutProblems(zfs)[0]!.message).toContain('/home is zfs_member');
  });

  it('keeps a whole-disk file system (no partition table)', () => {
    const whole: SourceLayout = {
      disks: [
        {
          path: '/dev/vda',
          sizeBytes: 100 * MiB,
          sectorSize: 512,
          table: null,
          tableId: null,
          partitions: [],
          fs: { type: 'ext4', uuid: 'u9', label: null, mountpoint: '/', usedBytes: MiB },
        },
      ],
      problems: [],
    };
    expect(planDisks(whole, [tdisk('/dev/vdb', 100)], [], []).disks[0]).toMatchObject({
      table: null,
      fs: { uuid: 'u9' },
    });
  });
});

describe('parseSize', () => {
  it('reads binary units', () => {
    expect(parseSize('512M')).toBe(512 * MiB);
    expect(parseSize('1.5GiB')).toBe(1.5 * 1024 * MiB);
    expect(parseSize('2g')).toBe(2 * 1024 * MiB);
    expect(parseSize('4096')).toBe(4096);
    expect(() => parseSize('lots')).toThrow(/not a size/);
    expect(() => parseSize('0')).toThrow(/not a usable size/);
  });
});

describe('blockCopies', () => {
  it('copies block for block what is neither a mounted file system ferry makes nor swap', () => {
    const disk = gptDisk();
    disk.partitions.push(
      {
        number: 4,
        start: 1_214_464,
        size: 65_536,
        type: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
        fs: { type: 'vfat', uuid: '1234-ABCD', label: 'ESP', mountpoint: null, usedBytes: null },
      },
      { number: 5, start: 1_280_000, size: 2048, type: '21686148-6449-6E6F-744E-656564454649', fs: null },
      {
        number: 6,
        start: 1_282_048,
        size: 20_480,
        type: LINUX,
        fs: { type: 'ext4', uuid: 'u6', label: null, mountpoint: null, usedBytes: null },
      },
    );
    expect(disk.partitions.map((p) => copiedAsBlocks(p))).toEqual([false, false, false, true, true, true]);
    const plan = planDisks({ disks: [disk], problems: [] }, [tdisk('/dev/vdb', 2048)], [], []);
    expect(blockCopies(plan)).toEqual([
      { source: '/dev/sda4', target: '/dev/vdb4', sizeBytes: 65_536 * 512 },
      { source: '/dev/sda5', target: '/dev/vdb5', sizeBytes: 2048 * 512 },
      { source: '/dev/sda6', target: '/dev/vdb6', sizeBytes: 20_480 * 512 },
    ]);
  });

  it('accepts an EFI system partition mounted at /boot/efi and names its mount point (sent as an empty directory)', () => {
    const disk = gptDisk();
    disk.partitions.push({
      number: 4,
      start: 1_214_464,
      size: 65_536,
      type: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
      fs: { type: 'vfat', uuid: '1234-ABCD', label: null, mountpoint: '/boot/efi', usedBytes: 5_000_000 },
    });
    const layout: SourceLayout = { disks: [disk], problems: [] };
    expect(layoutProblems(layout)).toEqual([]);
    const plan = planDisks(layout, [tdisk('/dev/vdb', 2048)], [], []);
    expect(blockCopies(plan)).toEqual([
      { source: '/dev/sda4', target: '/dev/vdb4', sizeBytes: 65_536 * 512, mountpoint: '/boot/efi' },
    ]);
  });
});
