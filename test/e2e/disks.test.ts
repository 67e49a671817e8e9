/**
 * A source server built from two real disk images (GPT: /boot ext4, / ext4, swap; MBR: /home
 * xfs) migrated file by file onto two blank target disks of other sizes, one of them
 * smaller (so /home is resized). Three ferry processes, driven through the CLI. Checks the
 * target disks with sfdisk, blkid, fsck and an entry-by-entry comparison of every file system.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServerView, TargetView } from '../../src/control/index.js';
import { freePort, stopProcess, waitFor } from '../../src/demo/processes.js';
import { ferryFs } from '../../src/native/index.js';
import { LoopDisks, mountsUnder, sh } from '../support/disks.js';
import { buildSampleTree, compareTrees } from '../support/trees.js';
import { ferry, spawnTestConsole, tempDir } from './support.js';

let dir: string;
let disks: LoopDisks;
const procs: ChildProcess[] = [];
let env: Record<string, string>;
const p = (...x: string[]) => path.join(dir, ...x);
let srcA: string;
let srcB: string;
let tgtA: string;
let tgtB: string;
const node = (dev: string, n: number) => `${dev}p${n}`;

async function cli(...args: string[]) {
  const r = await ferry(args, env);
  if (r.code !== 0) throw new Error(`ferry ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}
const show = async () => JSON.parse(await cli('servers', 'show', 'disk-src', '-o', 'json')) as ServerView;

function blkid(dev: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of sh('blkid', ['-p', '-o', 'export', dev]).split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}
const table = (dev: string) =>
  (JSON.parse(sh('sfdisk', ['-J', dev])) as { partitiontable: Record<string, unknown> }).partitiontable;

/** A v2 file capability: cap_net_bind_service, effective. */
const CAPABILITY = Buffer.from([1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

beforeAll(async () => {
  dir = tempDir('disks');
  disks = new LoopDisks(dir);
  srcA = disks.create('src-a', 1024);
  srcB = disks.create('src-b', 700);
  tgtA = disks.create('tgt-a', 1536);
  tgtB = disks.create('tgt-b', 400);
  disks.partition(
    srcA,
    'label: gpt\nsize=128MiB, type=L, name="boot"\nsize=400MiB, type=L, name="root"\nsize=64MiB, type=S, name="swap"\nsize=32MiB, type=U, name="EFI System"\n',
  );
  disks.partition(srcB, 'label: dos\nsize=600MiB, type=83, bootable\n');
  sh('mkfs.ext4', ['-q', '-L', 'boot', node(srcA, 1)]);
  sh('mkfs.ext4', ['-q', '-L', 'rootfs', node(srcA, 2)]);
  sh('mkswap', ['-L', 'swap0', node(srcA, 3)]);
  sh('mkfs.xfs', ['-q', '-L', 'home', node(srcB, 1)]);
  // an EFI system partition: FAT, which this kernel cannot mount; made and filled with mtools
  sh('mformat', [
    '-i',
    node(srcA, 4),
    '-N',
    '1234ABCD',
    '-v',
    'ESP',
    '-T',
    '65536',
    '-h',
    '64',
    '-s',
    '32',
    '::',
  ]);
  sh('mmd', ['-i', node(srcA, 4), '::/EFI', '::/EFI/BOOT']);
  fs.writeFileSync(path.join(dir, 'bootx64.efi'), Buffer.alloc(300_000, 0x4d));
  sh('mcopy', ['-i', node(srcA, 4), path.join(dir, 'bootx64.efi'), '::/EFI/BOOT/BOOTX64.EFI']);
  const root = p('source');
  fs.mkdirSync(root);
  sh('mount', [node(srcA, 2), root]);
  fs.mkdirSync(path.join(root, 'boot'));
  fs.mkdirSync(path.join(root, 'home'));
  sh('mount', [node(srcA, 1), path.join(root, 'boot')]);
  sh('mount', [node(srcB, 1), path.join(root, 'home')]);
  buildSampleTree(root, { sparseBytes: 64 * 1024 * 1024 }); // home/alice lands on the xfs /home
  fs.writeFileSync(path.join(root, 'boot/vmlinuz-6.1.0'), Buffer.alloc(5 * 1024 * 1024, 0x5a));
  fs.linkSync(path.join(root, 'boot/vmlinuz-6.1.0'), path.join(root, 'boot/vmlinuz'));
  fs.writeFileSync(path.join(root, 'etc/fstab'), 'LABEL=rootfs / ext4 defaults 0 1\n');
  fs.writeFileSync(path.join(root, 'usr/bin/ping'), Buffer.alloc(70_000, 3));
  ferryFs.setXattr(path.join(root, 'usr/bin/ping'), 'security.capability', CAPABILITY);
  fs.writeFileSync(path.join(root, 'home/alice/shared.txt'), 'acl\n');
  sh('setfacl', ['-m', 'u:1234:rw,g:5678:r', path.join(root, 'home/alice/shared.txt')]);
  sh('setfacl', ['-d', '-m', 'u:1234:rwx', path.join(root, 'home/alice')]);

  const c = await spawnTestConsole(dir);
  procs.push(c.proc);
  env = c.env;
  const dataPort = await freePort();
  procs.push(
    c.daemon('target', 'disk-tgt', [
      ...['--listen', `127.0.0.1:${dataPort}`, '--staging', p('staging')],
      ...['--disk', tgtA, tgtB], // last: --disk takes a list
    ]),
  );
  procs.push(c.daemon('agent', 'disk-src', ['--root', root]));
}, 120_000);

afterAll(async () => {
  await Promise.all(procs.map((c) => stopProcess(c)));
  disks?.cleanup();
  if (process.env.FERRY_KEEP_TEST_DIRS !== '1') fs.rmSync(dir, { recursive: true, force: true });
});

describe('file-level migration onto target disks', () => {
  it('reports the source layout and the target disks', async () => {
    const s = await waitFor('source layout', async () => {
      const v = await show();
      return v.connected && v.checks.length > 0 ? v : undefined;
    });
    const layout = (
      s.inventory as { layout: { disks: { path: string; table: string }[]; problems: unknown[] } }
    ).layout;
    expect(layout.problems).toEqual([]);
    expect(layout.disks.map((d) => [d.path, d.table])).toEqual([
      [srcA, 'gpt'],
      [srcB, 'dos'],
    ]);
    expect(s.checks.find((c) => c.id === 'block-devices')).toMatchObject({ passed: true });
    const t = await waitFor('target disks', async () => {
      const list = JSON.parse(await cli('targets', '-o', 'json')) as TargetView[];
      return list[0]?.connected ? list[0] : undefined;
    });
    expect((t.info as { disks: { path: string; sizeBytes: number }[] }).disks).toEqual([
      { path: tgtA, sizeBytes: 1536 * 1024 * 1024, sectorSize: 512 },
      { path: tgtB, sizeBytes: 400 * 1024 * 1024, sectorSize: 512 },
    ]);
  });

  it('refuses at configure time a layout that cannot fit, with the sizes', async () => {
    const base = ['configure', 'disk-src', '--target', 'disk-tgt', '--method', 'file'];
    const small = await ferry([...base], env);
    expect(small.code).toBe(1);
    expect(small.stderr).toContain('FERRY_LAYOUT_DOES_NOT_FIT');
    expect(small.stderr).toContain(
      `target disk ${tgtB} (400.0 MiB) is smaller than source disk ${srcB} (700.0 MiB)`,
    );
    const tooSmall = await ferry([...base, '--resize', '/home=200M'], env);
    expect(tooSmall.code).toBe(1);
    expect(tooSmall.stderr).toMatch(
      /--resize \/home=200\.0 MiB: \/home \(xfs\) holds .* needs at least 300\.0 MiB/,
    );
    const swapped = await ferry(
      [...base, '--disk-map', `${srcA}=${tgtB}`, '--disk-map', `${srcB}=${tgtA}`],
      env,
    );
    expect(swapped.code).toBe(1);
    expect(swapped.stderr).toContain(
      `target disk ${tgtB} (400.0 MiB) is smaller than source disk ${srcA} (1.0 GiB)`,
    );
    const unknown = await ferry([...base, '--resize', '/nowhere=1G'], env);
    expect(unknown.stderr).toContain('FERRY_BAD_REQUEST');
    expect((await show()).stage).toBe('feasibility-check');
  });

  it('re-creates the layout, copies every file system and leaves the disks clean', async () => {
    await cli(
      ...['configure', 'disk-src', '--target', 'disk-tgt', '--method', 'file', '--resize', '/home=340M'],
      ...['--disk-map', `${srcA}=${tgtA}`, '--disk-map', `${srcB}=${tgtB}`],
    );
    const configured = await show();
    expect(configured.diskPlan?.disks.map((d) => [d.source, d.target])).toEqual([
      [srcA, tgtA],
      [srcB, tgtB],
    ]);
    expect(await cli('servers', 'show', 'disk-src')).toContain(
      `${srcB} -> ${tgtB} (dos): 1: 340.0 MiB xfs /home`,
    );
    await cli('start', 'disk-src');
    await cli('wait', 'disk-src', '--stage', 'target-launch', '--status', 'completed', '--timeout', '300');
    expect((await show()).error).toBeNull();
    expect(mountsUnder(p('staging'))).toEqual([]); // unmounted at launch

    // partition tables: same label, ids, types, names, UUIDs; /home resized
    const [sa, ta, sb, tb] = [table(srcA), table(tgtA), table(srcB), table(tgtB)];
    expect(ta.label).toBe('gpt');
    expect(ta.id).toBe(sa.id);
    const strip = (parts: unknown) =>
      (parts as Record<string, unknown>[]).map(({ node: _n, ...rest }) => rest);
    expect(strip(ta.partitions)).toEqual(strip(sa.partitions));
    expect(tb).toMatchObject({ label: 'dos', id: sb.id });
    expect(strip(tb.partitions)).toEqual([
      { start: 2048, size: (340 * 1024 * 1024) / 512, type: '83', bootable: true },
    ]);

    // file systems and swap: same types, UUIDs, labels; fsck clean
    for (const [s, t] of [
      [node(srcA, 1), node(tgtA, 1)],
      [node(srcA, 2), node(tgtA, 2)],
      [node(srcA, 3), node(tgtA, 3)],
      [node(srcA, 4), node(tgtA, 4)],
      [node(srcB, 1), node(tgtB, 1)],
    ] as const) {
      const [bs, bt] = [blkid(s), blkid(t)];
      expect({ type: bt.TYPE, uuid: bt.UUID, label: bt.LABEL }).toEqual({
        type: bs.TYPE,
        uuid: bs.UUID,
        label: bs.LABEL,
      });
    }
    // the ESP was copied block for block: byte-identical, and its files read back with mtools
    expect(sh('cmp', [node(srcA, 4), node(tgtA, 4)])).toBe('');
    expect(sh('mtype', ['-i', node(tgtA, 4), '::/EFI/BOOT/BOOTX64.EFI']).length).toBe(300_000);
    sh('e2fsck', ['-fn', node(tgtA, 1)]);
    sh('e2fsck', ['-fn', node(tgtA, 2)]);
    sh('xfs_repair', ['-n', node(tgtB, 1)]);

    // every file system, entry by entry (content, owners, modes, times, xattrs incl.
    // security.capability and POSIX ACLs, hard links, sparse files)
    const check = p('check');
    fs.mkdirSync(check);
    sh('mount', ['-o', 'ro', node(tgtA, 2), check]);
    sh('mount', ['-o', 'ro', node(tgtA, 1), path.join(check, 'boot')]);
    sh('mount', ['-o', 'ro,nouuid', node(tgtB, 1), path.join(check, 'home')]);
    try {
      expect(compareTrees(p('source'), check)).toEqual([]);
      expect(ferryFs.getXattr(path.join(check, 'usr/bin/ping'), 'security.capability')).toEqual(CAPABILITY);
      expect(sh('getfacl', ['-cp', path.join(check, 'home/alice/shared.txt')])).toContain('user:1234:rw-');
      expect(sh('getfacl', ['-cp', path.join(check, 'home/alice')])).toContain('default:user:1234:rwx');
    } finally {
      for (const d of mountsUnder(check)) sh('umount', [d]);
    }
  }, 300_000);
});
