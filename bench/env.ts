/**
 * The benchmark's hosts and disks: two network namespaces joined by a veth pair (shaped
 * with `tc tbf` when asked), an ext4 loop device per side, and a registry of everything
 * made so that teardown runs even on Ctrl-C or a crash. Only addresses inside our own
 * namespaces (10.77.0.0/24) are used.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export const SRC_NS = 'ferrybench-src';
export const DST_NS = 'ferrybench-dst';
export const SRC_IP = '10.77.0.1';
export const DST_IP = '10.77.0.2';
export const WORK = '/var/tmp/ferrybench';
/** The orchestrator (root namespace) reaches the console over a separate management link. */
export const MGMT_IP = '10.77.1.2';

export function sh(cmd: string, opts: { quiet?: boolean } = {}): string {
  try {
    return execFileSync('bash', ['-c', cmd], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', opts.quiet ? 'ignore' : 'pipe'],
    });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`command failed: ${cmd}\n${err.stderr ?? err.message}`);
  }
}

export function trySh(cmd: string): void {
  try {
    execFileSync('bash', ['-c', cmd], { stdio: 'ignore' });
  } catch {
    /* best effort */
  }
}

const cleanups: (() => void)[] = [];
export function onCleanup(fn: () => void): void {
  cleanups.push(fn);
}
export function teardown(): void {
  while (cleanups.length) {
    const fn = cleanups.pop()!;
    try {
      fn();
    } catch {
      /* keep going */
    }
  }
}

/** Where each tool's client connects in the target namespace: the real ports, or relays in front of them. */
export const clientPort = { ferry: 7444, rsync: 8730, nc: 9000 };

/**
 * Puts a delay/loss relay (bench/relay.mjs, run in the target namespace) in front of each
 * tool's port, and points the clients at it: every tool crosses the same impaired link.
 */
export function impairLink(delayMs: number, loss: number): void {
  const relay = new URL('./relay.mjs', import.meta.url).pathname;
  for (const key of ['ferry', 'rsync', 'nc'] as const) {
    const real = clientPort[key];
    const front = real + 10_000;
    const p = spawn(
      'nsenter',
      [
        `--net=/run/netns/${DST_NS}`,
        process.execPath,
        relay,
        DST_IP,
        String(front),
        DST_IP,
        String(real),
        String(delayMs),
        String(loss),
      ],
      { stdio: 'ignore' },
    );
    onCleanup(() => {
      if (p.exitCode === null) p.kill('SIGKILL');
    });
    clientPort[key] = front;
  }
  execFileSync('sleep', ['0.5']); // the relays listen
}

/** Removes what an earlier, killed run may have left. */
export function sweepLeftovers(): void {
  trySh(
    `pkill -f 'bin/ferry.js .*ferrybench' ; pkill -f 'rsync --daemon --config=${WORK}' ; pkill -f 'nc -l -N ${DST_IP}'`,
  );
  for (const line of fs.existsSync('/proc/mounts')
    ? fs.readFileSync('/proc/mounts', 'utf8').split('\n')
    : []) {
    const mnt = line.split(' ')[1];
    if (mnt?.startsWith(WORK)) trySh(`umount -l ${mnt}`);
  }
  for (const line of sh('losetup -a', { quiet: true }).split('\n')) {
    if (line.includes(WORK)) {
      const dev = line.split(':')[0]!;
      trySh(`partx -d ${dev}; losetup -d ${dev}`);
    }
  }
  trySh(`ip netns del ${SRC_NS}`);
  trySh(`ip netns del ${DST_NS}`);
  trySh('ip link del fb-mgmt0');
}

/** Sets (rate) or removes (null) the tbf shaping on both ends of the link. */
export function shape(rate: string | null): void {
  for (const [ns, dev] of [
    [SRC_NS, 'fb-src'],
    [DST_NS, 'fb-dst'],
  ] as const) {
    trySh(`ip netns exec ${ns} tc qdisc del dev ${dev} root`);
    if (rate)
      sh(`ip netns exec ${ns} tc qdisc add dev ${dev} root tbf rate ${rate} burst 256kb latency 50ms`);
  }
}

export function ensurePackages(): void {
  const need: Record<string, string> = {
    rsync: 'rsync',
    'netcat-openbsd': 'nc',
    iproute2: 'ip',
    e2fsprogs: 'mkfs.ext4',
    time: '/usr/bin/time',
  };
  const missing = Object.entries(need)
    .filter(([, cmd]) => {
      try {
        execFileSync('bash', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
        return false;
      } catch {
        return true;
      }
    })
    .map(([pkg]) => pkg);
  if (missing.length === 0) return;
  console.log(`installing ${missing.join(' ')} with apt`);
  sh(
    `DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${missing.join(' ')}`,
  );
}

/** Two namespaces and a veth pair; `rate` (e.g. "200mbit") shapes both directions with tbf. */
export function makeLink(rate?: string): void {
  sh(`ip netns add ${SRC_NS} && ip netns add ${DST_NS}`);
  onCleanup(() => {
    trySh(`ip netns del ${SRC_NS}`);
    trySh(`ip netns del ${DST_NS}`);
  });
  sh(`ip link add fb-src type veth peer name fb-dst`);
  sh(`ip link set fb-src netns ${SRC_NS} && ip link set fb-dst netns ${DST_NS}`);
  sh(`ip -n ${SRC_NS} addr add ${SRC_IP}/24 dev fb-src && ip -n ${DST_NS} addr add ${DST_IP}/24 dev fb-dst`);
  sh(`ip -n ${SRC_NS} link set fb-src up && ip -n ${DST_NS} link set fb-dst up`);
  sh(`ip -n ${SRC_NS} link set lo up && ip -n ${DST_NS} link set lo up`);
  sh(`ip link add fb-mgmt0 type veth peer name fb-mgmt1 && ip link set fb-mgmt1 netns ${SRC_NS}`);
  onCleanup(() => trySh('ip link del fb-mgmt0'));
  sh(`ip addr add 10.77.1.1/24 dev fb-mgmt0 && ip link set fb-mgmt0 up`);
  sh(`ip -n ${SRC_NS} addr add ${MGMT_IP}/24 dev fb-mgmt1 && ip -n ${SRC_NS} link set fb-mgmt1 up`);
  if (rate) shape(rate);
}

/** Bytes sent by the source side of the link so far. */
export function wireBytes(): number {
  const tx = Number(sh(`ip netns exec ${SRC_NS} cat /sys/class/net/fb-src/statistics/tx_bytes`).trim());
  const rx = Number(sh(`ip netns exec ${SRC_NS} cat /sys/class/net/fb-src/statistics/rx_bytes`).trim());
  return tx + rx;
}

/**
 * A sparse image file formatted ext4, on a loop device, mounted at WORK/<name>. Unless
 * `cache`, the loop device does direct I/O on its image (`losetup --direct-io=on`): like a
 * real disk, nothing beneath the file system caches or writes back a second time. With the
 * image's writes cached by the host, writing the 100,000-file `small` tree with four
 * threads took 8.7-13.5 CPU seconds of the machine's kernel; direct, 4.9-5.0 (see
 * docs/performance.md). Falls back to the cached model where the image's file system
 * refuses direct I/O.
 */
export function makeDisk(
  name: string,
  sizeGiB: number,
  opts: { cache?: boolean } = {},
): { dev: string; mnt: string; cached: boolean; reformat(): void } {
  const img = path.join(WORK, `${name}.img`);
  const mnt = path.join(WORK, name);
  fs.mkdirSync(mnt, { recursive: true });
  trySh(`rm -f ${img}`);
  sh(`truncate -s ${sizeGiB}G ${img}`);
  const dev = sh(`losetup -f --show ${img}`).trim();
  if (!opts.cache) trySh(`losetup --direct-io=on ${dev}`);
  const cached = fs.readFileSync(`/sys/block/${path.basename(dev)}/loop/dio`, 'utf8').trim() !== '1';
  if (cached && !opts.cache) console.log(`   ${dev}: the image's file system refuses direct I/O; cached`);
  onCleanup(() => {
    trySh(`umount ${mnt}`);
    trySh(`losetup -d ${dev}`);
    trySh(`rm -f ${img}`);
  });
  const format = () => {
    trySh(`umount ${mnt}`);
    sh(`mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 ${dev}`);
    sh(`mount ${dev} ${mnt}`);
  };
  format();
  return { dev, mnt, cached, reformat: format };
}

export function dropCaches(): void {
  sh('sync && echo 3 > /proc/sys/vm/drop_caches');
}
