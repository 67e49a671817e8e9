import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { open, readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { DiskPlan, DiskPlanEntry, FsInfo, PartitionInfo } from '../control/index.js';
import { FerryError } from '../errors/index.js';
import { copiedAsBlocks, partitionNode, RECREATED_FS } from './plan.js';

/** Runs one Debian tool; a failure becomes FERRY_DISK_PREPARATION with the tool's own words. */
function sh(cmd: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const words = `${stderr}`.trim().split('\n').slice(-3).join(' / ') || err.message;
      reject(new FerryError('FERRY_DISK_PREPARATION', `${cmd} ${args.join(' ')}: ${words}`, { cause: err }));
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

const quiet = (p: Promise<unknown>) =>
  p.then(
    () => true,
    () => false,
  );

/** A stable name for a plan: preparation is redone only when the plan changed. */
export function planHash(plan: DiskPlan): string {
  return createHash('sha256').update(JSON.stringify(plan)).digest('hex').slice(0, 32);
}

/** Mount points (decoded) and their devices, from /proc/self/mountinfo. */
function mountTable(): { dir: string; source: string }[] {
  const decode = (s: string) =>
    s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const f = line.split(' ');
      const dash = f.indexOf('-');
      return { dir: decode(f[4]!), source: decode(f[dash + 2] ?? '') };
    });
}

function isPartitionOf(dev: string, disk: string): boolean {
  return dev === disk || new RegExp(`^${disk.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}p?[0-9]+$`).test(dev);
}

/**
 * Checks that a plan touches only disks this target was given, and that none of them is in
 * use (mounted outside the staging directory, or active swap).
 */
export function checkDisksFree(plan: DiskPlan, allowed: readonly string[], staging: string): void {
  const real = (p: string) => {
    try {
      return realpathSync(p);
    } catch {
      return p;
    }
  };
  const given = new Set(allowed.map(real));
  const swaps = readFileSync('/proc/swaps', 'utf8')
    .split('\n')
    .slice(1)
    .map((l) => l.split(/\s+/)[0] ?? '')
    .filter(Boolean);
  const mounts = mountTable();
  for (const d of plan.disks) {
    if (!given.has(real(d.target)))
      throw new FerryError(
        'FERRY_TARGET_DISK_BUSY',
        `the plan names ${d.target}, which is not one of this target's --disk devices (${allowed.join(', ')})`,
      );
    const busy = mounts.find(
      (m) => isPartitionOf(m.source, d.target) && m.dir !== staging && !m.dir.startsWith(`${staging}/`),
    );
    if (busy) throw new FerryError('FERRY_TARGET_DISK_BUSY', `${busy.source} is mounted on ${busy.dir}`);
    const swap = swaps.find((s) => isPartitionOf(s, d.target));
    if (swap) throw new FerryError('FERRY_TARGET_DISK_BUSY', `${swap} is in use as swap`);
  }
}

function sfdiskScript(d: DiskPlanEntry): string {
  const safe = (s: string) => s.replace(/["\\\n\r]/g, '_');
  const lines = [`label: ${d.table}`];
  if (d.tableId) lines.push(`label-id: ${d.tableId}`);
  lines.push('unit: sectors', `sector-size: ${d.sectorSize}`);
  if (d.table === 'gpt') {
    const first = Math.min(2048, ...d.partitions.map((p) => p.start));
    lines.push(`first-lba: ${Math.max(34, first)}`);
  }
  lines.push('');
  for (const p of [...d.partitions].sort((a, b) => a.number - b.number)) {
    const f = [`start=${p.start}`, `size=${p.size}`, `type=${p.type}`];
    if (d.table === 'gpt') {
      if (p.uuid) f.push(`uuid=${p.uuid}`);
      if (p.name) f.push(`name="${safe(p.name)}"`);
      if (p.attrs) f.push(`attrs="${safe(p.attrs)}"`);
    } else if (p.bootable) f.push('bootable');
    lines.push(`${partitionNode(d.target, p.number)} : ${f.join(', ')}`);
  }
  return `${lines.join('\n')}\n`;
}

async function waitForNodes(nodes: string[], ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  for (;;) {
    if (nodes.every((n) => existsSync(n) && statSync(n).isBlockDevice())) return true;
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Makes the file system or swap area `fs` on `dev`, with the source's UUID and label. */
async function makeFs(dev: string, fs: FsInfo, log: Logger): Promise<void> {
  const label = fs.label ?? '';
  const uuid = fs.uuid;
  switch (fs.type) {
    case 'ext2':
    case 'ext3':
    case 'ext4':
      await sh(`mkfs.${fs.type}`, [
        '-F',
        '-q',
        ...(uuid ? ['-U', uuid] : []),
        ...(label ? ['-L', label.slice(0, 16)] : []),
        ...(fs.blockSize && fs.blockSize <= 65_536 ? ['-b', String(fs.blockSize)] : []),
        dev,
      ]);
      return;
    case 'xfs':
      await sh('mkfs.xfs', [
        '-f',
        '-q',
        ...(uuid ? ['-m', `uuid=${uuid}`] : []),
        ...(label ? ['-L', label.slice(0, 12)] : []),
        dev,
      ]);
      return;
    case 'btrfs':
      await sh('mkfs.btrfs', [
        '-f',
        '-q',
        ...(uuid ? ['-U', uuid] : []),
        ...(label ? ['-L', label.slice(0, 255)] : []),
        dev,
      ]);
      return;
    case 'swap':
      await sh('mkswap', [...(uuid ? ['-U', uuid] : []), ...(label ? ['-L', label.slice(0, 16)] : []), dev]);
      return;
    default:
      log.warn(
        { dev, type: fs.type },
        'this kind of partition content is not re-created; the partition is left blank',
      );
  }
}

async function writeDurably(file: string, text: string): Promise<void> {
  const tmp = `${file}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  const dir = await open(path.dirname(file), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** Creates `rel` under `base` one component at a time, refusing to follow a symbolic link. */
function safeMkdirs(base: string, rel: string): string {
  let cur = base;
  for (const part of rel.split('/').filter(Boolean)) {
    if (part === '..' || part === '.')
      throw new FerryError('FERRY_UNSAFE_PATH', `mount point ${rel} is not a plain path`);
    cur = path.join(cur, part);
    let st: ReturnType<typeof lstatSync> | null = null;
    try {
      st = lstatSync(cur);
    } catch {
      mkdirSync(cur, { mode: 0o755 });
      continue;
    }
    if (!st.isDirectory())
      throw new FerryError('FERRY_UNSAFE_PATH', `mount point ${rel}: ${cur} exists and is not a directory`);
  }
  return cur;
}

export interface PlannedMount {
  readonly device: string;
  readonly mountpoint: string;
  readonly type: string;
}

/** The file systems of a plan that are mounted, shallowest first ("/" before "/boot"). */
export function plannedMounts(plan: DiskPlan): PlannedMount[] {
  const out: PlannedMount[] = [];
  for (const d of plan.disks) {
    const fss: [string, FsInfo | null][] = d.table
      ? d.partitions.map((p: PartitionInfo) => [partitionNode(d.target, p.number), p.fs])
      : [[d.target, d.fs]];
    for (const [device, fs] of fss) {
      if (fs?.mountpoint && (RECREATED_FS as readonly string[]).includes(fs.type))
        out.push({ device, mountpoint: fs.mountpoint, type: fs.type });
    }
  }
  return out.sort(
    (a, b) => a.mountpoint.split('/').filter(Boolean).length - b.mountpoint.split('/').filter(Boolean).length,
  );
}

/** Mounts the plan's file systems under `staging` in the source's hierarchy; skips what is mounted already. */
export async function mountStaging(plan: DiskPlan, staging: string): Promise<void> {
  mkdirSync(staging, { recursive: true, mode: 0o700 });
  const mounted = new Set(mountTable().map((t) => t.dir));
  for (const m of plannedMounts(plan)) {
    const dir = m.mountpoint === '/' ? staging : safeMkdirs(staging, m.mountpoint);
    if (mounted.has(dir)) continue;
    // nouuid: xfs refuses a second file system with a UUID already mounted, which happens
    // when source and target share a host (tests, or a disk-to-disk copy on one machine).
    await sh('mount', ['-t', m.type, ...(m.type === 'xfs' ? ['-o', 'nouuid'] : []), m.device, dir]);
  }
}

/** Unmounts everything under `staging`, deepest first, and flushes the disks. */
export async function unmountStaging(staging: string): Promise<number> {
  const dirs = mountTable()
    .map((m) => m.dir)
    .filter((d) => d === staging || d.startsWith(`${staging}/`))
    .sort((a, b) => b.length - a.length);
  for (const d of dirs) await sh('umount', [d]);
  if (dirs.length > 0) await quiet(sh('sync', []));
  return dirs.length;
}

/**
 * Re-creates the source layout on the target disks and mounts it under `staging`:
 * partition table (sfdisk, same table id, partition types, names, UUIDs), partition nodes
 * (asks the kernel with partx and waits, as there may be no udev), file systems and swap
 * with the source's UUIDs and labels. Records the plan's hash durably in `recordFile`, so
 * that a restarted target only mounts again instead of erasing what was already written.
 */
export async function prepareDisks(o: {
  plan: DiskPlan;
  allowed: readonly string[];
  staging: string;
  recordFile: string;
  log: Logger;
}): Promise<{ prepared: boolean }> {
  const hash = planHash(o.plan);
  const record = await readFile(o.recordFile, 'utf8').then(
    (t) => (JSON.parse(t) as { planHash?: string }).planHash,
    () => null,
  );
  if (record === hash) {
    await mountStaging(o.plan, o.staging);
    return { prepared: false };
  }
  await unmountStaging(o.staging);
  checkDisksFree(o.plan, o.allowed, o.staging);
  for (const d of o.plan.disks) {
    const started = Date.now();
    await quiet(sh('partx', ['-d', d.target]));
    await sh('wipefs', ['-a', '-q', d.target]);
    if (d.table) {
      await sh(
        'sfdisk',
        [
          '-q',
          '--no-reread',
          '--no-tell-kernel',
          '--wipe',
          'always',
          '--wipe-partitions',
          'always',
          d.target,
        ],
        sfdiskScript(d),
      );
      const nodes = d.partitions.map((p) => partitionNode(d.target, p.number));
      await quiet(sh('partx', ['-a', d.target]));
      if (!(await waitForNodes(nodes, 5000))) {
        await quiet(sh('partx', ['-u', d.target]));
        if (!(await waitForNodes(nodes, 10_000)))
          throw new FerryError(
            'FERRY_DISK_PREPARATION',
            `the partition nodes of ${d.target} (${nodes.join(', ')}) did not appear after partx`,
          );
      }
      for (const p of d.partitions) {
        const node = partitionNode(d.target, p.number);
        if (copiedAsBlocks(p)) continue; // its blocks arrive from the source
        if (p.fs) await makeFs(node, p.fs, o.log);
        else await quiet(sh('wipefs', ['-a', '-q', node]));
      }
    } else if (d.fs) {
      await makeFs(d.target, d.fs, o.log);
    }
    o.log.info(
      {
        disk: d.target,
        source: d.source,
        table: d.table,
        partitions: d.partitions.length,
        ms: Date.now() - started,
      },
      'target disk prepared from the source layout',
    );
  }
  await mountStaging(o.plan, o.staging);
  await writeDurably(o.recordFile, JSON.stringify({ planHash: hash, at: new Date().toISOString() }));
  return { prepared: true };
}
