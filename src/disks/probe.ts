import { execFile } from 'node:child_process';
import { statfs } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import {
  type DiskInfo,
  type FsInfo,
  type LayoutProblem,
  type PartitionInfo,
  PSEUDO_FS_TYPES,
  type SourceLayout,
} from '../control/index.js';

const run = promisify(execFile);

async function tool(cmd: string, args: string[]): Promise<string | null> {
  try {
    const { stdout } = await run(cmd, args, { maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch {
    return null;
  }
}

/** A tool's JSON output (findmnt -J, lsblk -J, sfdisk -J), or null when it failed. */
export async function toolJson(cmd: string, args: string[]): Promise<unknown> {
  const out = await tool(cmd, args);
  try {
    return out === null ? null : JSON.parse(out);
  } catch {
    return null;
  }
}

/** One mounted file system, as findmnt lists it. */
export interface MountRow {
  target: string;
  source: string;
  fstype: string;
  options?: string;
  children?: MountRow[];
}

/** Every mounted file system, parents before children (findmnt -J, flattened). */
export async function listMounts(): Promise<MountRow[]> {
  const found = (await toolJson('findmnt', ['-J', '-o', 'TARGET,SOURCE,FSTYPE,OPTIONS'])) as {
    filesystems?: MountRow[];
  } | null;
  return flatten(found?.filesystems);
}

interface BlockRow {
  name: string;
  path: string;
  type: string;
  size: number;
  pkname: string | null;
  'log-sec': number;
  children?: BlockRow[];
}

interface SfdiskTable {
  partitiontable: {
    label: string;
    id?: string;
    sectorsize?: number;
    partitions?: {
      node: string;
      start: number;
      size: number;
      type: string;
      uuid?: string;
      name?: string;
      attrs?: string;
      bootable?: boolean;
    }[];
  };
}

function flatten<T extends { children?: T[] }>(rows: T[] | undefined, out: T[] = []): T[] {
  for (const r of rows ?? []) {
    out.push(r);
    flatten(r.children, out);
  }
  return out;
}

/** `blkid -p` (low-level probing: works without udev) as key/value pairs. */
export async function probeDevice(dev: string): Promise<Record<string, string>> {
  const text = (await tool('blkid', ['-p', '-o', 'export', dev])) ?? '';
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

function fsFrom(probe: Record<string, string>): Omit<FsInfo, 'mountpoint' | 'usedBytes'> | null {
  if (!probe.TYPE) return null;
  const blockSize = Number(probe.BLOCK_SIZE);
  return {
    type: probe.TYPE,
    uuid: probe.UUID && /^[A-Za-z0-9-]{1,64}$/.test(probe.UUID) ? probe.UUID : null,
    label: probe.LABEL ?? null,
    ...(Number.isInteger(blockSize) && blockSize >= 512 && blockSize <= 65_536 ? { blockSize } : {}),
  };
}

/**
 * Finds the source server's disk layout: the file systems mounted at and under `root`
 * (pseudo and network file systems left out), the disks that hold them and every
 * partition on those disks, with table type and ids, partition types, names and UUIDs,
 * file-system types, labels and UUIDs, and how much each mounted file system uses.
 * Reads with findmnt, lsblk, sfdisk and blkid -p, so it needs no udev.
 */
export async function describeSourceLayout(
  root: string,
  mountTable?: readonly MountRow[],
): Promise<SourceLayout> {
  const rootAbs = path.resolve(root);
  const problems: LayoutProblem[] = [];
  const all = mountTable ?? (await listMounts());
  // the file system holding the root: the deepest mount at or above it (the last one
  // listed when several are stacked on the same directory)
  const above = (t: string) => t === '/' || t === rootAbs || rootAbs.startsWith(`${t}/`);
  const containing = all.reduce<MountRow | undefined>(
    (best, m) => (above(m.target) && m.target.length >= (best?.target.length ?? 0) ? m : best),
    undefined,
  );
  const under = (t: string) => t === rootAbs || rootAbs === '/' || t.startsWith(`${rootAbs}/`);
  const mounts = all.filter((m) => under(m.target));
  if (containing && !mounts.some((m) => m.target === containing.target)) mounts.unshift(containing);
  mounts.sort((a, b) => a.target.length - b.target.length);

  /** Source device → where it is mounted, as the migrated server will see it. */
  const mountOf = new Map<string, { mountpoint: string; dir: string }>();
  for (const m of mounts) {
    if ((PSEUDO_FS_TYPES as readonly string[]).includes(m.fstype)) continue;
    const dev = m.source.replace(/\[.*\]$/, ''); // a bind mount shows as /dev/sda1[/sub]
    const rel = path.relative(rootAbs, m.target);
    const mountpoint = m.target === containing?.target && rel.startsWith('..') ? '/' : `/${rel}`;
    if (!dev.startsWith('/dev/')) {
      problems.push({
        code: 'FERRY_LAYOUT_UNSUPPORTED',
        message: `${mountpoint} is ${m.fstype} from ${m.source}, not a file system on a disk`,
      });
      continue;
    }
    if (/^\/dev\/(mapper\/|dm-)/.test(dev)) {
      problems.push({
        code: 'FERRY_LVM_UNSUPPORTED',
        message: `${mountpoint} is on the device-mapper volume ${dev} (LVM or dm-crypt)`,
      });
      continue;
    }
    if (/^\/dev\/md/.test(dev)) {
      problems.push({
        code: 'FERRY_LAYOUT_UNSUPPORTED',
        message: `${mountpoint} is on the software RAID ${dev}`,
      });
      continue;
    }
    if (!mountOf.has(dev))
      mountOf.set(dev, { mountpoint: mountpoint === '/.' ? '/' : mountpoint, dir: m.target });
  }

  const blocks = flatten(
    (
      (await toolJson('lsblk', ['-J', '-b', '-o', 'NAME,PATH,TYPE,SIZE,PKNAME,LOG-SEC'])) as {
        blockdevices?: BlockRow[];
      } | null
    )?.blockdevices,
  );
  const byPath = new Map(blocks.map((b) => [b.path, b]));
  const diskPaths: string[] = [];
  for (const dev of mountOf.keys()) {
    const b = byPath.get(dev);
    if (!b) {
      problems.push({
        code: 'FERRY_LAYOUT_UNSUPPORTED',
        message: `${dev} is not a block device lsblk lists`,
      });
      continue;
    }
    const disk = b.type === 'part' && b.pkname ? `/dev/${b.pkname}` : b.path;
    if (!diskPaths.includes(disk)) diskPaths.push(disk);
  }

  const used = async (dir: string) => {
    const s = await statfs(dir).catch(() => null);
    return s ? (s.blocks - s.bfree) * s.bsize : null;
  };
  const fsWithMount = async (dev: string): Promise<FsInfo | null> => {
    const base = fsFrom(await probeDevice(dev));
    if (!base) return null;
    const m = mountOf.get(dev);
    return { ...base, mountpoint: m?.mountpoint ?? null, usedBytes: m ? await used(m.dir) : null };
  };

  const disks: DiskInfo[] = [];
  for (const disk of diskPaths) {
    const b = byPath.get(disk)!;
    const sectorSize = b['log-sec'] || 512;
    const table = ((await toolJson('sfdisk', ['-J', disk])) as SfdiskTable | null)?.partitiontable ?? null;
    const partitions: PartitionInfo[] = [];
    for (const p of table?.partitions ?? []) {
      const number = Number(/([0-9]+)$/.exec(p.node)?.[1]);
      partitions.push({
        number,
        start: p.start,
        size: p.size,
        type: p.type,
        ...(p.uuid ? { uuid: p.uuid } : {}),
        ...(p.name ? { name: p.name } : {}),
        ...(p.bootable ? { bootable: true } : {}),
        ...(p.attrs ? { attrs: p.attrs } : {}),
        fs: await fsWithMount(p.node),
      });
    }
    const label = table?.label === 'gpt' || table?.label === 'dos' ? table.label : null;
    if (table && !label)
      problems.push({
        code: 'FERRY_LAYOUT_UNSUPPORTED',
        message: `${disk} has a ${table.label} partition table`,
      });
    disks.push({
      path: disk,
      sizeBytes: b.size,
      sectorSize: table?.sectorsize ?? sectorSize,
      table: label,
      tableId: table?.id ?? null,
      partitions,
      fs: table ? null : await fsWithMount(disk),
    });
  }
  return { disks, problems };
}

/** A target disk's size and sector size, for `ferry target --disk`. */
export async function describeTargetDisk(
  dev: string,
): Promise<{ path: string; sizeBytes: number; sectorSize: number }> {
  const row = (
    (await toolJson('lsblk', ['-J', '-b', '-d', '-o', 'PATH,TYPE,SIZE,LOG-SEC', dev])) as {
      blockdevices?: BlockRow[];
    } | null
  )?.blockdevices?.[0];
  if (!row) throw new Error(`${dev} is not a block device`);
  if (row.type === 'part') throw new Error(`${dev} is a partition; give whole disks`);
  return { path: row.path, sizeBytes: row.size, sectorSize: row['log-sec'] || 512 };
}
