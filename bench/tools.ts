/**
 * How each tool is run for one benchmark measurement: ferry (console, agent and target
 * as separate processes in their namespaces, driven through the API), an rsync daemon,
 * and tar piped through netcat.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { ServerView, TargetView } from '../src/control/index.js';
import { ferryArgv } from '../src/demo/processes.js';
import { ConsoleClient } from '../src/transport/index.js';
import {
  clientPort,
  DST_IP,
  DST_NS,
  MGMT_IP,
  onCleanup,
  SRC_IP,
  SRC_NS,
  sh,
  WORK,
  wireBytes,
} from './env.js';

export interface Measure {
  seconds: number;
  wireBytes: number;
  cpuSeconds: Record<string, number>;
  peakRssMiB: Record<string, number>;
}

const TICKS = 100;
/** Extra node flags for the ferry processes, e.g. FERRY_BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/p'. */
const NODE_ARGS = (process.env.FERRY_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);

function procStat(pid: number): { cpu: number; childCpu: number } {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const parts = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return {
      cpu: (Number(parts[11]) + Number(parts[12])) / TICKS,
      childCpu: (Number(parts[13]) + Number(parts[14])) / TICKS,
    };
  } catch {
    return { cpu: 0, childCpu: 0 };
  }
}

function peakRss(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

function spawnIn(ns: string, args: string[], log: string, env: Record<string, string> = {}): ChildProcess {
  const fd = fs.openSync(log, 'a');
  // nsenter --net switches only the network namespace (`ip netns exec` would also give the
  // process its own mount namespace, pinning the loop-device mounts the benchmark reformats).
  const p = spawn('nsenter', [`--net=/run/netns/${ns}`, ...args], {
    stdio: ['ignore', fd, fd],
    env: { ...process.env, ...env },
  });
  onCleanup(() => {
    if (p.exitCode === null) p.kill('SIGKILL');
  });
  return p;
}

async function stop(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const done = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 5000);
  await done;
  clearTimeout(t);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/**
 * Waits until the console's events stream for `name` shows a view for which `done` holds,
 * and returns it; throws when the task fails. The console sends a change of state at once
 * and progress twice a second, so ferry's time ends when its task does, at no cost to the
 * machine. (Asking every 50 ms cost the console and this process ~2 CPU s per 20-s copy of
 * `small`, a load only ferry's column paid; asking a quarter of the ETA apart, as until
 * session 15, ended ferry's time up to a few hundred ms late: measured 322 ms of a 3.8 s
 * copy of `mixed` between the target's last log line and the harness seeing it.)
 */
function watchServer(
  c: ConsoleClient,
  name: string,
  what: string,
  done: (v: ServerView) => boolean,
  timeoutMs: number,
): Promise<ServerView> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const finish = (err: Error | null, v?: ServerView) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      stream.close();
      if (err) reject(err);
      else resolve(v!);
    };
    const timer = setTimeout(() => finish(new Error(`timed out waiting for ${what}`)), timeoutMs);
    const stream = c.events(`/api/v1/servers/${encodeURIComponent(name)}/events`, (event, data) => {
      if (event === 'deleted') return finish(new Error(`the server was deleted while waiting for ${what}`));
      if (event !== 'server') return;
      const v = JSON.parse(data) as ServerView;
      if (v.status === 'failed') finish(new Error(`ferry failed: ${v.error?.code} ${v.error?.message}`));
      else if (done(v)) finish(null, v);
    });
    stream.done.then(
      () => finish(new Error(`the events stream ended while waiting for ${what}`)),
      (e: Error) => finish(e),
    );
  });
}

/** One console for the whole benchmark, in the source namespace. */
export class FerryBench {
  readonly #console: ChildProcess;
  readonly client: ConsoleClient;
  readonly dataDir: string;
  #n = 0;

  private constructor(p: ChildProcess, client: ConsoleClient, dataDir: string) {
    this.#console = p;
    this.client = client;
    this.dataDir = dataDir;
  }

  static async start(): Promise<FerryBench> {
    const dataDir = path.join(WORK, 'console-data');
    fs.rmSync(dataDir, { recursive: true, force: true });
    const p = spawnIn(
      SRC_NS,
      [
        process.execPath,
        ...ferryArgv([], NODE_ARGS),
        'console',
        '--listen',
        '0.0.0.0:7443',
        '--san',
        SRC_IP,
        '--san',
        MGMT_IP,
        '--data-dir',
        dataDir,
        '--sync-interval',
        '86400',
        '--log-file',
        path.join(WORK, 'console.log'),
      ],
      path.join(WORK, 'console.out'),
    );
    await until(
      'console data dir',
      async () => (fs.existsSync(path.join(dataDir, 'admin.token')) ? true : undefined),
      30_000,
    );
    await sleep(300);
    const client = new ConsoleClient({
      url: `https://${MGMT_IP}:7443`,
      caPem: fs.readFileSync(path.join(dataDir, 'ca.pem'), 'utf8'),
      token: fs.readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim(),
    });
    return new FerryBench(p, client, dataDir);
  }

  async stop(): Promise<void> {
    this.client.close();
    await stop(this.#console);
  }

  /**
   * Full copy of `srcRoot` into `dstRoot`; then `after` (optional) runs more steps with the
   * migration in continuous sync. Returns the measure of the part `measure` names.
   */
  async run(
    srcRoot: string,
    dstRoot: string,
    opts: {
      continuous: boolean;
      rateLimitMbit?: number;
      compression?: 'zstd';
      beforeMeasure?: () => void;
      between?: () => void;
      /**
       * After `between`, measure `ferry verify --full` (a no-change sync, then the full
       * comparison) instead of a sync; the report must say identical.
       */
      verifyFull?: boolean;
      /** Extra environment per program (a variant compared with plain ferry). */
      env?: { agent?: Record<string, string>; target?: Record<string, string> };
    },
  ): Promise<{ full: Measure; sync?: Measure }> {
    const n = ++this.#n;
    const names = { src: `src-${n}`, tgt: `tgt-${n}` };
    const common = [
      '--console',
      `https://${SRC_IP}:7443`,
      '--ca-file',
      path.join(this.dataDir, 'ca.pem'),
      '--registration-token-file',
      path.join(this.dataDir, 'registration.token'),
      '--log-file',
    ];
    const targetEnv = opts.env?.target ?? {};
    const agentEnv = opts.env?.agent ?? {};
    // FERRY_BENCH_NODE_ARGS in a variant's environment: Node flags for that run (after
    // ferry's own, so that they win), e.g. a heap size for one program only
    const nodeArgs = (env: Record<string, string>) => [
      ...NODE_ARGS,
      ...(env.FERRY_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean),
    ];
    const target = spawnIn(
      DST_NS,
      [
        process.execPath,
        ...ferryArgv([], nodeArgs(targetEnv)),
        'target',
        ...common,
        path.join(WORK, `target-${n}.log`),
        '--listen',
        `${DST_IP}:7444`,
        '--advertise',
        `${DST_IP}:${clientPort.ferry}`,
        '--name',
        names.tgt,
        '--root',
        dstRoot,
        '--state-dir',
        path.join(WORK, `target-state-${n}`),
      ],
      path.join(WORK, `target-${n}.out`),
      targetEnv,
    );
    const agent = spawnIn(
      SRC_NS,
      [
        process.execPath,
        ...ferryArgv([], nodeArgs(agentEnv)),
        'agent',
        ...common,
        path.join(WORK, `agent-${n}.log`),
        '--name',
        names.src,
        '--root',
        srcRoot,
        '--state-dir',
        path.join(WORK, `agent-state-${n}`),
      ],
      path.join(WORK, `agent-${n}.out`),
      agentEnv,
    );
    const c = this.client;
    const show = () => c.request<ServerView>('GET', `/api/v1/servers/${names.src}`);
    try {
      await until('agent inventory', async () => ((await show()).checks.length ? true : undefined), 600_000);
      await until(
        'target',
        async () =>
          (await c.request<TargetView>('GET', `/api/v1/targets/${names.tgt}`)).connected ? true : undefined,
        60_000,
      );
      await c.request('POST', `/api/v1/servers/${names.src}/configure`, {
        target: names.tgt,
        method: 'file',
        continuousSync: opts.continuous,
        ...(opts.rateLimitMbit ? { rateLimit: { mbps: opts.rateLimitMbit, windows: [] } } : {}),
        ...(opts.compression ? { compression: opts.compression } : {}),
      });
      opts.beforeMeasure?.();
      // Follows the console's events stream until `done` (see watchServer).
      const waitFor = (what: string, done: (v: ServerView) => boolean) =>
        watchServer(c, names.src, what, done, 3_600_000);
      const full = await this.#measure([agent, target], async () => {
        await c.request('POST', `/api/v1/servers/${names.src}/start`);
        await waitFor('full replication', (s) =>
          opts.continuous ? s.stage === 'continuous-sync' : s.status === 'completed',
        );
      });
      let sync: Measure | undefined;
      if (opts.between && opts.verifyFull) {
        opts.between();
        let view: ServerView | undefined;
        sync = await this.#measure([agent, target], async () => {
          await c.request('POST', `/api/v1/servers/${names.src}/verify`, { mode: 'full' });
          view = await waitFor(
            'verify --full',
            (s) => (s.verification as { request?: number } | null)?.request === 1,
          );
        });
        const verification = view?.verification as {
          report?: { identical?: boolean; totals?: unknown };
        } | null;
        const report = verification?.report;
        if (!report?.identical)
          throw new Error(`ferry verify --full found differences: ${JSON.stringify(report?.totals)}`);
      } else if (opts.between) {
        opts.between();
        sync = await this.#measure([agent, target], async () => {
          await c.request('POST', `/api/v1/servers/${names.src}/sync`);
          await waitFor('sync', (s) => (s.lastSync as { syncRequest?: number } | null)?.syncRequest === 1);
        });
      }
      await c.request('DELETE', `/api/v1/servers/${names.src}`).catch(() => {});
      return sync ? { full, sync } : { full };
    } finally {
      await stop(agent);
      await stop(target);
    }
  }

  async #measure(procs: ChildProcess[], body: () => Promise<void>): Promise<Measure> {
    const [agent, target] = procs as [ChildProcess, ChildProcess];
    const cpu0 = procs.map((p) => procStat(p.pid!).cpu);
    const wire0 = wireBytes();
    const t0 = performance.now();
    await body();
    const seconds = (performance.now() - t0) / 1000;
    const cpu1 = procs.map((p) => procStat(p.pid!).cpu);
    return {
      seconds,
      wireBytes: wireBytes() - wire0,
      cpuSeconds: { agent: cpu1[0]! - cpu0[0]!, target: cpu1[1]! - cpu0[1]! },
      peakRssMiB: { agent: peakRss(agent.pid!), target: peakRss(target.pid!) },
    };
  }
}

/** Runs `cmd` under /usr/bin/time inside a namespace; returns seconds, CPU and peak RSS. */
function timed(ns: string, cmd: string): { seconds: number; cpu: number; rssMiB: number } {
  const out = sh(
    `nsenter --net=/run/netns/${ns} /usr/bin/time -f 'TIME %e %U %S %M' bash -c ${JSON.stringify(cmd)} 2>&1 >/dev/null | grep '^TIME' | tail -1`,
  );
  const [, e, u, s, m] = out.trim().split(' ');
  return { seconds: Number(e), cpu: Number(u) + Number(s), rssMiB: Number(m) / 1024 };
}

export class RsyncBench {
  readonly #daemon: ChildProcess;
  readonly #dstRoot: string;

  private constructor(d: ChildProcess, dstRoot: string) {
    this.#daemon = d;
    this.#dstRoot = dstRoot;
  }

  static async start(dstRoot: string): Promise<RsyncBench> {
    const conf = path.join(WORK, 'rsyncd.conf');
    fs.writeFileSync(
      conf,
      `uid = root\ngid = root\nuse chroot = no\nmunge symlinks = no\nnumeric ids = yes\n[bench]\n  path = ${dstRoot}\n  read only = false\n`,
    );
    const d = spawnIn(
      DST_NS,
      ['rsync', '--daemon', `--config=${conf}`, `--address=${DST_IP}`, '--port=8730', '--no-detach'],
      path.join(WORK, 'rsyncd.out'),
    );
    await sleep(500);
    return new RsyncBench(d, dstRoot);
  }

  copy(srcRoot: string, extra = ''): Measure {
    const d0 = procStat(this.#daemon.pid!).childCpu;
    const wire0 = wireBytes();
    // data on the target's disk is what is timed: the sync is part of the measure
    const r = timed(
      SRC_NS,
      `rsync -aHAXS --numeric-ids ${extra} ${srcRoot}/ rsync://${DST_IP}:${clientPort.rsync}/bench/ && sync -f ${this.#dstRoot}`,
    );
    return {
      seconds: r.seconds,
      wireBytes: wireBytes() - wire0,
      cpuSeconds: { client: r.cpu, daemon: procStat(this.#daemon.pid!).childCpu - d0 },
      peakRssMiB: { client: r.rssMiB },
    };
  }

  async stop(): Promise<void> {
    await stop(this.#daemon);
  }
}

export async function tarNc(srcRoot: string, dstRoot: string): Promise<Measure> {
  const wire0 = wireBytes();
  const t0 = performance.now();
  const recv = spawn(
    'nsenter',
    [
      `--net=/run/netns/${DST_NS}`,
      'bash',
      '-c',
      `nc -l ${DST_IP} 9000 | tar --numeric-owner --xattrs --xattrs-include='*' --acls -xpSf - -C ${dstRoot} && sync -f ${dstRoot}`,
    ],
    { stdio: 'ignore' },
  );
  onCleanup(() => {
    if (recv.exitCode === null) recv.kill('SIGKILL');
  });
  await sleep(300);
  const send = timed(
    SRC_NS,
    `tar --xattrs --xattrs-include='*' --acls -S -cpf - -C ${srcRoot} . | nc -N ${DST_IP} ${clientPort.nc}`,
  );
  await new Promise((r) => (recv.exitCode === null ? recv.once('exit', r) : r(null)));
  return {
    seconds: (performance.now() - t0) / 1000 - 0.3,
    wireBytes: wireBytes() - wire0,
    cpuSeconds: { sender: send.cpu },
    peakRssMiB: { sender: send.rssMiB },
  };
}
