/**
 * Disk images for tests: sparse image files on loop devices, partitioned with sfdisk,
 * their partition nodes made with partx (this kernel does not scan partition tables and
 * there is no udev). `cleanup()` unmounts, removes the nodes and detaches, also after a
 * failure; call it from afterAll.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export const sh = (cmd: string, args: string[], input?: string): string =>
  execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], ...(input ? { input } : {}) });

export function tryRun(cmd: string, args: string[]): void {
  try {
    sh(cmd, args);
  } catch {
    /* best effort */
  }
}

/** Every mount at or under `dir`, deepest first. */
export function mountsUnder(dir: string): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' ')[4]!.replace(/\\040/g, ' '))
    .filter((d) => d === dir || d.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

export class LoopDisks {
  readonly devices: string[] = [];
  constructor(readonly dir: string) {}

  /** A blank sparse image of `mib` MiB on a loop device. */
  create(name: string, mib: number): string {
    const file = path.join(this.dir, `${name}.img`);
    fs.writeFileSync(file, '');
    fs.truncateSync(file, mib * 1024 * 1024);
    const dev = sh('losetup', ['-f', '--show', file]).trim();
    this.devices.push(dev);
    return dev;
  }

  /** Writes a partition table (an sfdisk script) and makes the partition nodes appear. */
  partition(dev: string, script: string): void {
    sh('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', dev], script);
    tryRun('partx', ['-a', dev]);
    const deadline = Date.now() + 10_000;
    const want = (script.match(/^(?!label|unit|label-id)[^\n]*size=/gm) ?? []).length;
    while (fs.readdirSync('/dev').filter((n) => n.startsWith(`${path.basename(dev)}p`)).length < want) {
      if (Date.now() > deadline) throw new Error(`partition nodes of ${dev} did not appear`);
      execFileSync('sleep', ['0.1']);
    }
  }

  cleanup(): void {
    for (const d of mountsUnder(this.dir)) tryRun('umount', ['-l', d]);
    for (const dev of this.devices) {
      tryRun('partx', ['-d', dev]);
      tryRun('losetup', ['-d', dev]);
    }
    this.devices.length = 0;
  }
}
