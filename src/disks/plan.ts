import type {
  DiskInfo,
  DiskMapping,
  DiskPlan,
  DiskPlanEntry,
  FsInfo,
  PartitionInfo,
  ResizeRequest,
  SourceLayout,
  TargetDisk,
} from '../control/index.js';
import { FerryError } from '../errors/index.js';

/** File systems ferry makes afresh on a target partition and fills file by file. */
export const RECREATED_FS = ['ext2', 'ext3', 'ext4', 'xfs', 'btrfs'] as const;

/** The smallest file system mkfs accepts (xfsprogs ≥ 5.19 refuses xfs under 300 MiB). */
const MIN_FS_BYTES: Record<string, number> = {
  ext2: 8 * MiB(),
  ext3: 16 * MiB(),
  ext4: 16 * MiB(),
  xfs: 300 * MiB(),
  btrfs: 128 * MiB(),
  swap: MiB(),
};

function MiB(): number {
  return 1024 * 1024;
}

/** Mounted file systems copied block for block instead (an EFI system partition at /boot/efi). */
const BLOCK_COPIED_MOUNTED = ['vfat', 'msdos'];

/** Partition types that hold something ferry cannot re-create on these hosts (LVM, RAID). */
const LVM_TYPES = new Set(['8e', 'e6d6d379-f507-44c2-a23c-238f2a3df928']);
const RAID_TYPES = new Set(['fd', 'a19d880f-05fc-4d3b-a006-743f0f84911e']);
const EXTENDED_TYPES = new Set(['5', '05', 'f', '0f', '85']);

/** "512M", "2G", "1.5GiB", "300MB", "1048576" → bytes (binary units: M = MiB). */
export function parseSize(text: string): number {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(i?B)?\s*$/i.exec(text);
  if (!m) throw new FerryError('FERRY_BAD_REQUEST', `"${text}" is not a size (e.g. 512M, 20G, 1.5T)`);
  const unit = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[m[2]!.toUpperCase()]!;
  const bytes = Math.round(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes) || bytes <= 0)
    throw new FerryError('FERRY_BAD_REQUEST', `"${text}" is not a usable size`);
  return bytes;
}

/** Bytes for people: "1.5 GiB", "300.0 MiB". */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** "sda" and "/dev/sda" name the same disk. */
function devPath(name: string): string {
  return name.startsWith('/dev/') ? name : `/dev/${name}`;
}

function naturalCompare(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/** The device node of partition `n` of `disk` (/dev/sda → /dev/sda2, /dev/loop3 → /dev/loop3p2). */
export function partitionNode(disk: string, n: number): string {
  return /[0-9]$/.test(disk) ? `${disk}p${n}` : `${disk}${n}`;
}

/** What stops a layout from being re-created on target disks (empty when nothing does). */
export function layoutProblems(layout: SourceLayout): { code: string; message: string }[] {
  const out = [...layout.problems];
  for (const d of layout.disks) {
    for (const p of d.partitions) {
      const t = p.type.toLowerCase();
      const fsType = p.fs?.type ?? '';
      if (LVM_TYPES.has(t) || fsType === 'LVM2_member')
        out.push({
          code: 'FERRY_LVM_UNSUPPORTED',
          message: `${partitionNode(d.path, p.number)} is an LVM physical volume`,
        });
      else if (RAID_TYPES.has(t) || fsType === 'linux_raid_member')
        out.push({
          code: 'FERRY_LAYOUT_UNSUPPORTED',
          message: `${partitionNode(d.path, p.number)} is a software RAID member`,
        });
    }
    const mounted = [...d.partitions.map((p) => p.fs), d.fs].filter(
      (f): f is FsInfo =>
        !!f?.mountpoint &&
        !(RECREATED_FS as readonly string[]).includes(f.type) &&
        !BLOCK_COPIED_MOUNTED.includes(f.type),
    );
    for (const f of mounted)
      out.push({
        code: 'FERRY_LAYOUT_UNSUPPORTED',
        message: `${f.mountpoint} is ${f.type}; ferry re-creates ${RECREATED_FS.join(', ')} file systems`,
      });
  }
  if (layout.disks.length === 0 && out.length === 0)
    out.push({
      code: 'FERRY_LAYOUT_UNSUPPORTED',
      message: 'no disk holds a file system mounted at or under the agent root',
    });
  return out;
}

interface ResolvedResize {
  disk: DiskInfo;
  part: PartitionInfo;
  sizeBytes: number;
  asked: string;
}

function findPartition(layout: SourceLayout, name: string): { disk: DiskInfo; part: PartitionInfo } | null {
  const mount = name.length > 1 ? name.replace(/\/+$/, '') : name;
  for (const disk of layout.disks) {
    for (const part of disk.partitions) {
      if (partitionNode(disk.path, part.number) === devPath(name) || part.fs?.mountpoint === mount)
        return { disk, part };
    }
  }
  return null;
}

/**
 * Whether a partition's content is copied block for block: everything that is neither a
 * mounted file system ferry re-creates and fills file by file, nor swap, nor an MBR
 * extended-partition container — an EFI system partition (FAT, which this kernel cannot
 * mount), a BIOS boot partition, an unmounted file system.
 */
export function copiedAsBlocks(p: PartitionInfo): boolean {
  if (EXTENDED_TYPES.has(p.type.toLowerCase())) return false;
  if (!p.fs) return true;
  if (p.fs.type === 'swap') return false;
  return !(p.fs.mountpoint && (RECREATED_FS as readonly string[]).includes(p.fs.type));
}

/** One partition copied block for block: where it is read on the source and written on the target. */
export interface BlockCopy {
  readonly source: string;
  readonly target: string;
  readonly sizeBytes: number;
  /** Where it is mounted on the source (a FAT ESP at /boot/efi), if it is. */
  readonly mountpoint?: string;
}

/** The partitions of a plan copied block for block, in plan order (agent and target derive the same list). */
export function blockCopies(plan: DiskPlan): BlockCopy[] {
  const out: BlockCopy[] = [];
  for (const d of plan.disks) {
    for (const p of [...d.partitions].sort((a, b) => a.number - b.number)) {
      if (!copiedAsBlocks(p)) continue;
      out.push({
        source: partitionNode(d.source, p.number),
        target: partitionNode(d.target, p.number),
        sizeBytes: p.size * d.sectorSize,
        ...(p.fs?.mountpoint ? { mountpoint: p.fs.mountpoint } : {}),
      });
    }
  }
  return out;
}

/** Space a file system needs to hold what the source holds: the data plus a tenth, at least mkfs's minimum. */
export function bytesNeeded(fs: FsInfo | null): number {
  const used = fs?.usedBytes ?? 0;
  return Math.max(MIN_FS_BYTES[fs?.type ?? ''] ?? 0, Math.ceil(used * 1.1) + 16 * MiB());
}

/**
 * Decides how the source disks are made on the target disks: which target disk receives
 * which source disk (`map`, by default in order), and where each partition goes. Without
 * `resize`, partitions keep their exact starts and sizes and each target disk must be at
 * least as large as its source disk; with `resize`, the named partitions take the new size
 * and those after them move (1 MiB aligned). Throws a FerryError that carries the numbers
 * when the layout cannot work. Pure: the console runs it at configure time.
 */
export function planDisks(
  layout: SourceLayout,
  targets: readonly TargetDisk[],
  map: readonly DiskMapping[],
  resize: readonly ResizeRequest[],
): DiskPlan {
  const problems = layoutProblems(layout);
  if (problems.length > 0) {
    const lvm = problems.find((p) => p.code === 'FERRY_LVM_UNSUPPORTED');
    const first = lvm ?? problems[0]!;
    throw new FerryError(
      lvm ? 'FERRY_LVM_UNSUPPORTED' : 'FERRY_LAYOUT_UNSUPPORTED',
      `the source layout cannot be re-created on target disks: ${first.message}${
        problems.length > 1
          ? ` (and ${problems.length - 1} more: ${problems
              .slice(1)
              .map((p) => p.message)
              .join('; ')})`
          : ''
      }`,
    );
  }
  if (targets.length === 0)
    throw new FerryError(
      'FERRY_LAYOUT_DOES_NOT_FIT',
      'the target was started without --disk; it can only receive files into its --root',
    );

  const sources = [...layout.disks].sort((a, b) => naturalCompare(a.path, b.path));
  const pairs = new Map<string, TargetDisk>();
  if (map.length === 0) {
    if (targets.length < sources.length)
      throw new FerryError(
        'FERRY_LAYOUT_DOES_NOT_FIT',
        `the source has ${sources.length} disks (${sources.map((d) => d.path).join(', ')}) but the target has ${targets.length} (${targets.map((d) => d.path).join(', ')})`,
      );
    for (const [i, s] of sources.entries()) pairs.set(s.path, targets[i]!);
  } else {
    const bad = (message: string) =>
      new FerryError('FERRY_BAD_REQUEST', `disk map: ${message}`, { context: { field: 'body.diskMap' } });
    /** The disk of `list` named `name` ("sda" or "/dev/sda"), or a refusal naming those there are. */
    const find = <D extends { path: string }>(list: readonly D[], name: string, side: string): D => {
      const d = list.find((x) => x.path === devPath(name));
      if (!d) throw bad(`the ${side} has no disk ${name} (it has ${list.map((x) => x.path).join(', ')})`);
      return d;
    };
    const used = new Set<string>();
    for (const m of map) {
      const s = find(sources, m.source, 'source');
      const t = find(targets, m.target, 'target');
      if (used.has(t.path) || pairs.has(s.path)) throw bad(`${m.source} or ${m.target} is mapped twice`);
      used.add(t.path);
      pairs.set(s.path, t);
    }
    const missing = sources.filter((s) => !pairs.has(s.path));
    if (missing.length > 0)
      throw bad(`source disk ${missing.map((d) => d.path).join(', ')} is not mapped to a target disk`);
  }

  const resized: ResolvedResize[] = resize.map((r) => {
    const found = findPartition(layout, r.partition);
    if (!found)
      throw new FerryError(
        'FERRY_BAD_REQUEST',
        `--resize ${r.partition}: no source partition or mount point of that name`,
        { context: { field: 'body.resize' } },
      );
    return { ...found, sizeBytes: r.sizeBytes, asked: r.partition };
  });

  const disks: DiskPlanEntry[] = sources.map((src) => {
    const tgt = pairs.get(src.path)!;
    if (tgt.sectorSize !== src.sectorSize)
      throw new FerryError(
        'FERRY_LAYOUT_DOES_NOT_FIT',
        `target disk ${tgt.path} has ${tgt.sectorSize}-byte sectors, source disk ${src.path} has ${src.sectorSize}-byte sectors`,
      );
    const mine = resized.filter((r) => r.disk === src);
    const targetSectors = Math.floor(tgt.sizeBytes / src.sectorSize);
    const tail = src.table === 'gpt' ? 34 : 0; // the backup GPT header and entries
    if (mine.length === 0) {
      if (tgt.sizeBytes < src.sizeBytes)
        throw new FerryError(
          'FERRY_LAYOUT_DOES_NOT_FIT',
          `target disk ${tgt.path} (${formatBytes(tgt.sizeBytes)}) is smaller than source disk ${src.path} (${formatBytes(src.sizeBytes)}); map a disk of at least ${formatBytes(src.sizeBytes)}, or shrink partitions with --resize PARTITION=SIZE`,
        );
      return entry(src, tgt, src.partitions);
    }
    if (src.partitions.some((p) => EXTENDED_TYPES.has(p.type.toLowerCase())))
      throw new FerryError(
        'FERRY_LAYOUT_DOES_NOT_FIT',
        `${src.path} has logical partitions in an extended partition; ferry resizes only primary MBR and GPT partitions`,
      );
    const align = Math.max(1, MiB() / src.sectorSize);
    const ordered = [...src.partitions].sort((a, b) => a.start - b.start);
    const out: PartitionInfo[] = [];
    let cursor = 0;
    for (const p of ordered) {
      const r = mine.find((x) => x.part === p);
      let size = p.size;
      if (r) {
        size = Math.floor(r.sizeBytes / src.sectorSize / align) * align;
        const node = partitionNode(src.path, p.number);
        if (!p.fs || !([...RECREATED_FS, 'swap'] as string[]).includes(p.fs.type)) {
          if (size < p.size)
            throw new FerryError(
              'FERRY_LAYOUT_DOES_NOT_FIT',
              `--resize ${r.asked}: ${node} holds ${p.fs?.type ?? 'no file system ferry knows'}; it can grow but not shrink below ${formatBytes(p.size * src.sectorSize)}`,
            );
        } else {
          const need = bytesNeeded(p.fs);
          if (size * src.sectorSize < need)
            throw new FerryError(
              'FERRY_LAYOUT_DOES_NOT_FIT',
              `--resize ${r.asked}=${formatBytes(r.sizeBytes)}: ${p.fs.mountpoint ?? node} (${p.fs.type}) holds ${formatBytes(p.fs.usedBytes ?? 0)} and needs at least ${formatBytes(need)}`,
            );
        }
      }
      const start = out.length === 0 ? p.start : Math.max(Math.ceil(cursor / align) * align, cursor);
      out.push({ ...p, start, size });
      cursor = start + size;
    }
    const needSectors = cursor + tail;
    if (needSectors > targetSectors)
      throw new FerryError(
        'FERRY_LAYOUT_DOES_NOT_FIT',
        `the resized layout of ${src.path} needs ${formatBytes(needSectors * src.sectorSize)} but target disk ${tgt.path} has ${formatBytes(tgt.sizeBytes)}; shrink partitions further with --resize or map a larger disk`,
      );
    return entry(src, tgt, out);
  });
  return { disks };
}

function entry(src: DiskInfo, tgt: TargetDisk, partitions: PartitionInfo[]): DiskPlanEntry {
  return {
    source: src.path,
    target: tgt.path,
    sectorSize: src.sectorSize,
    table: src.table,
    tableId: src.tableId,
    partitions,
    fs: src.fs,
  };
}
