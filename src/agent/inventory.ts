import { access, readFile, statfs } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { type CheckItem, DEFAULT_EMPTY_DIRS, PSEUDO_FS_TYPES, type SourceLayout } from '../control/index.js';
import { describeSourceLayout, layoutProblems, listMounts, type MountRow, toolJson } from '../disks/index.js';
import { ferryFs } from '../native/index.js';

export { listMounts };

import { scanTree } from '../replication/file/index.js';

function osRelease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]!] = m[2]!.replace(/^"(.*)"$/, '$1');
  }
  return out;
}

/**
 * Directories under `root` whose contents are never migrated: the default pseudo
 * directories plus every mount point of a pseudo or network file system below the root.
 * Returned relative to the root.
 */
export function emptyDirsFor(root: string, mounts: readonly MountRow[]): string[] {
  const rootAbs = path.resolve(root);
  const rel = (p: string) => path.relative(rootAbs, p);
  const out = new Set<string>(DEFAULT_EMPTY_DIRS.map((d) => d.slice(1)));
  for (const m of mounts) {
    if (!(PSEUDO_FS_TYPES as readonly string[]).includes(m.fstype)) continue;
    const r = rel(m.target);
    if (r && !r.startsWith('..') && !path.isAbsolute(r)) out.add(r);
  }
  return [...out];
}

/** What the agent tells the console about its server; also what will be migrated, counted. */
export async function collectInventory(
  root: string,
  excludes: readonly string[],
  /** The tree totals of an earlier inventory, reused instead of walking the tree again. */
  previousMigrate?: unknown,
  /** The mount table, when the caller has just read it. */
  mounts?: readonly MountRow[],
): Promise<Record<string, unknown>> {
  mounts ??= await listMounts();
  const emptyDirs = emptyDirsFor(root, mounts);
  const migrate = previousMigrate ?? (await countTree(root, excludes, emptyDirs));
  const layout = await describeSourceLayout(root, mounts).catch((e: Error) => ({
    disks: [],
    problems: [
      { code: 'FERRY_LAYOUT_UNSUPPORTED', message: `the disk layout could not be read: ${e.message}` },
    ],
  }));
  return { ...(await describeHost(root, mounts)), migrate, layout };
}

/** What will be migrated, counted by walking the tree. */
async function countTree(root: string, excludes: readonly string[], emptyDirs: string[]) {
  let usedBytes = 0;
  let fileCount = 0;
  let entryCount = 0;
  const nonUtf8Names: string[] = [];
  let nonUtf8Count = 0;
  const onNonUtf8Name = (rel: string) => {
    nonUtf8Count++;
    if (nonUtf8Names.length < 5) nonUtf8Names.push(rel);
  };
  const unlistedDirs: string[] = [];
  let unlistedCount = 0;
  const onUnreadableDir = (rel: string, err: NodeJS.ErrnoException) => {
    unlistedCount++;
    if (unlistedDirs.length < 5) unlistedDirs.push(`${rel} (${err.code})`);
  };
  for await (const e of scanTree(root, { excludes, emptyDirs, onNonUtf8Name, onUnreadableDir })) {
    entryCount++;
    if (e.kind === 'file') {
      fileCount++;
      usedBytes += Number(e.stat.size);
    }
  }
  return {
    usedBytes,
    fileCount,
    entryCount,
    emptyDirs,
    excludes,
    nonUtf8Names,
    nonUtf8Count,
    unlistedDirs,
    unlistedCount,
  };
}

async function describeHost(root: string, mounts: readonly MountRow[]): Promise<Record<string, unknown>> {
  let release: Record<string, string> = {};
  try {
    release = osRelease(await readFile(path.join(root, 'etc/os-release'), 'utf8'));
  } catch {
    try {
      release = osRelease(await readFile('/etc/os-release', 'utf8'));
    } catch {
      /* none */
    }
  }
  const fs = await statfs(root).catch(() => null);
  const cpus = os.cpus();
  return {
    hostname: os.hostname(),
    os: {
      id: release.ID ?? 'unknown',
      name: release.PRETTY_NAME ?? release.NAME ?? 'unknown',
      version: release.VERSION_ID ?? '',
    },
    kernel: os.release(),
    arch: os.arch(),
    cpu: { model: cpus[0]?.model ?? 'unknown', count: cpus.length },
    memoryBytes: os.totalmem(),
    firmware: (await access('/sys/firmware/efi').then(
      () => true,
      () => false,
    ))
      ? 'UEFI'
      : 'BIOS',
    disks:
      (
        (await toolJson('lsblk', [
          '-J',
          '-b',
          '-o',
          'NAME,PATH,TYPE,SIZE,FSTYPE,MOUNTPOINT,LABEL,UUID,PTTYPE,PARTTYPE',
        ])) as {
          blockdevices?: unknown[];
        } | null
      )?.blockdevices ?? [],
    mounts: mounts.map((m) => ({ target: m.target, source: m.source, fstype: m.fstype, options: m.options })),
    nics: Object.entries(os.networkInterfaces()).map(([name, addrs]) => ({
      name,
      mac: addrs?.[0]?.mac ?? '',
      addresses: (addrs ?? []).map((a) => `${a.address}/${a.netmask}`),
    })),
    root: path.resolve(root),
    rootFs: fs ? { totalBytes: fs.blocks * fs.bsize, freeBytes: fs.bavail * fs.bsize } : null,
  };
}

/** Feasibility-check items: each passes or fails with a code and a reason. */
export async function runChecks(root: string, inventory: Record<string, unknown>): Promise<CheckItem[]> {
  const items: CheckItem[] = [];
  const isRoot = process.getuid?.() === 0;
  items.push({
    id: 'privileges',
    title: 'Agent runs as root',
    passed: isRoot,
    reason: isRoot
      ? 'the agent can read every file and keep owners'
      : 'run the agent as root so it can read every file',
    ...(isRoot ? {} : { code: 'FERRY_SOURCE_READ' }),
  });
  const readable = await access(root).then(
    () => true,
    () => false,
  );
  items.push({
    id: 'source-root',
    title: 'Source root is readable',
    passed: readable,
    reason: readable ? `${path.resolve(root)} is readable` : `${root} cannot be read`,
    ...(readable ? {} : { code: 'FERRY_SOURCE_READ' }),
  });
  items.push({
    id: 'os',
    title: 'Linux source',
    passed: process.platform === 'linux',
    reason:
      process.platform === 'linux'
        ? `kernel ${String(inventory.kernel)}`
        : 'only Linux sources are supported',
    ...(process.platform === 'linux' ? {} : { code: 'FERRY_UNSUPPORTED_METHOD' }),
  });
  const safeOpens = ferryFs.openSourceMode() === 'openat2';
  items.push({
    id: 'safe-opens',
    title: 'Source files are read through no symlink',
    passed: safeOpens,
    reason: safeOpens
      ? 'openat2 RESOLVE_NO_SYMLINKS: a file or directory swapped for a symlink during the migration is never followed'
      : 'openat2 is missing (Linux before 5.6) or refused by a seccomp filter (a container runtime): only the last component of each path is checked for symlinks; allow openat2 to the agent',
    ...(safeOpens ? {} : { code: 'FERRY_SOURCE_READ' }),
  });
  const migrate = (inventory.migrate ?? {}) as Partial<Awaited<ReturnType<typeof countTree>>>;
  const raw = migrate.nonUtf8Count ?? 0;
  items.push({
    id: 'file-names',
    title: 'Every file name can be carried',
    passed: true,
    reason:
      raw === 0
        ? 'every file name is valid UTF-8'
        : `${raw} name(s) are not valid UTF-8 (e.g. ${JSON.stringify(migrate.nonUtf8Names ?? [])}, each byte that is not shown as \\udcXX): they are migrated byte for byte`,
  });
  items.push({
    id: 'source-listable',
    title: 'Every source directory can be listed',
    passed: !migrate.unlistedCount,
    reason: !migrate.unlistedCount
      ? 'the scan listed every directory'
      : `${migrate.unlistedCount} director(ies) cannot be listed, e.g. ${(migrate.unlistedDirs ?? []).join(', ')}; replication goes on without their contents and tries them again each pass, and the launch waits until they can be read`,
    ...(!migrate.unlistedCount ? {} : { code: 'FERRY_SOURCE_READ' }),
  });
  const layout = inventory.layout as SourceLayout | undefined;
  const problems = layout ? layoutProblems(layout) : [];
  const lvm = problems.find((p) => p.code === 'FERRY_LVM_UNSUPPORTED');
  items.push({
    id: 'block-devices',
    title: 'Disk layout can be re-created on target disks',
    passed: problems.length === 0,
    reason:
      problems.length === 0
        ? `${layout?.disks.length ?? 0} disk(s): ${(layout?.disks ?? []).map((d) => `${d.path} (${d.table ?? 'no partition table'}, ${d.partitions.length} partitions)`).join(', ')}`
        : `${problems.map((p) => p.message).join('; ')}; a target started with --disk is refused, a target directory (--root) still receives every file`.slice(
            0,
            1000,
          ),
    ...(problems.length === 0 ? {} : { code: lvm ? 'FERRY_LVM_UNSUPPORTED' : 'FERRY_LAYOUT_UNSUPPORTED' }),
  });
  return items;
}
