import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServerView, TargetView } from '../../src/control/index.js';
import { freePort, stopProcess, waitFor } from '../../src/demo/processes.js';
import { ferryFs } from '../../src/native/index.js';
import { threadNices } from '../support/threads.js';
import { addSmallFiles, buildSampleTree, compareTrees, contentBytes } from '../support/trees.js';
import { ferry, spawnTestConsole, tempDir } from './support.js';

let dir: string;
const procs: ChildProcess[] = [];
let env: Record<string, string>;
const timings: Record<string, number> = {};
const p = (...x: string[]) => path.join(dir, ...x);
const source = () => p('source');
const targetRoot = () => p('target-root');

async function cli(...args: string[]) {
  const r = await ferry(args, env);
  if (r.code !== 0) throw new Error(`ferry ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}
const show = async () => JSON.parse(await cli('servers', 'show', 'src-1', '-o', 'json')) as ServerView;

beforeAll(async () => {
  dir = tempDir('e2e');
  buildSampleTree(source()); // includes a 256 MiB sparse file
  addSmallFiles(source(), 500);
  // a database dump, synced later with bytes inserted near its start
  const dump = Buffer.alloc(8 * 1024 * 1024);
  for (let i = 0; i < dump.length; i += 4) dump.writeUInt32LE((i * 2654435761) >>> 0, i);
  fs.mkdirSync(path.join(source(), 'var/backups'), { recursive: true });
  fs.writeFileSync(path.join(source(), 'var/backups/dump.sql'), dump);
  const c = await spawnTestConsole(dir);
  procs.push(c.proc);
  env = c.env;
  const dataPort = await freePort();
  procs.push(
    c.daemon('target', 'tgt-1', [
      '--listen',
      `127.0.0.1:${dataPort}`,
      '--root',
      targetRoot(),
      '--pool-nice',
      '3',
    ]),
  );
  procs.push(c.daemon('agent', 'src-1', ['--root', source()]));
}, 120_000);

afterAll(async () => {
  await Promise.all(procs.map((c) => stopProcess(c)));
  if (process.env.FERRY_KEEP_TEST_DIRS !== '1') fs.rmSync(dir, { recursive: true, force: true });
  process.stdout.write(`\ne2e timings (ms): ${JSON.stringify(timings)}\n`);
});

describe('three programs, one migration, through the CLI', () => {
  it('registers the source with its inventory and checks, and the target unlocked', async () => {
    const s = await waitFor('source inventory', async () => {
      const v = await show();
      return v.connected && v.checks.length > 0 ? v : undefined;
    });
    expect(s).toMatchObject({
      name: 'src-1',
      stage: 'feasibility-check',
      status: 'pending-target-configuration',
      target: null,
    });
    expect(s.inventory).toMatchObject({
      kernel: expect.any(String),
      firmware: expect.stringMatching(/BIOS|UEFI/),
    });
    expect((s.inventory as { migrate: { fileCount: number } }).migrate.fileCount).toBeGreaterThan(500);
    const targets = await waitFor('target registration', async () => {
      const list = JSON.parse(await cli('targets', '-o', 'json')) as TargetView[];
      return list.length && list[0]!.connected ? list : undefined;
    });
    expect(targets[0]).toMatchObject({ name: 'tgt-1', locked: false });
    expect(await cli('servers')).toMatch(/src-1\s+yes\s+feasibility-check/);
  });

  it('replicates the whole tree, identical entry by entry, and locks the target', async () => {
    await cli(
      ...['configure', 'src-1', '--target', 'tgt-1', '--method', 'file', '--continuous-sync', 'yes'],
      ...['--sync-interval', '3600', '--rate-limit', '0', '--rate-window', '01:00-01:01=1000'],
      ...['--sync-exclude', '/srv/sticky', '--verify', 'quick', '--compression', 'zstd'],
    );
    const configured = await show();
    expect(configured).toMatchObject({
      stage: 'full-replication',
      status: 'ready',
      syncIntervalSeconds: 3600,
      syncExcludes: ['/srv/sticky'],
      rateLimit: { mbps: 0, windows: [{ start: '01:00', end: '01:01', mbps: 1000 }] },
    });
    const t0 = Date.now();
    await cli('start', 'src-1');
    await cli('wait', 'src-1', '--stage', 'continuous-sync', '--status', 'running', '--timeout', '300');
    timings.fullReplication = Date.now() - t0;
    const s = await show();
    expect(s).toMatchObject({ method: 'file', continuousSync: true, target: 'tgt-1', error: null });
    expect(s.progress).toMatchObject({ percent: 100, bytesDone: s.progress.bytesTotal });
    expect(s.progress.bytesTotal).toBe(contentBytes(source()));
    expect(s.progress.bytesTotal).toBeGreaterThan(256 * 1024 * 1024);
    for (const k of ['rateBytesPerSecond', 'etaSeconds'] as const) expect(s.progress).toHaveProperty(k);
    const targets = JSON.parse(await cli('targets', '-o', 'json')) as TargetView[];
    expect(targets[0]).toMatchObject({ locked: true, lockedBy: 'src-1' });
    // configure --compression zstd: the compressible files took fewer bytes on the wire
    const stats = s.lastSync as { bytesSent: number; bytesOnWire: number };
    expect(s.compression).toBe('zstd');
    expect(stats.bytesOnWire).toBeGreaterThan(0);
    expect(stats.bytesOnWire).toBeLessThan(stats.bytesSent * 0.95);
    // configure --verify quick: checked right after the full replication
    expect(s.verifyAfterReplication).toBe('quick');
    expect(s.verification).toMatchObject({ request: 0, report: { mode: 'quick', identical: true } });
    expect(s.verification!.report.totals.files).toBeGreaterThan(500);
    const t1 = Date.now();
    expect(compareTrees(source(), targetRoot())).toEqual([]);
    timings.compare = Date.now() - t1;
    // target --pool-nice 3: the threads that wrote the files run at nice 3, its event loop at 0;
    // the agent (default 0) leaves every thread as it was
    const target = threadNices(procs[1]!.pid!);
    expect(target.main).toBe(0);
    expect(target.all).toContain(3);
    expect(threadNices(procs[2]!.pid!).all.every((n) => n === 0)).toBe(true);
    // the target read the data connection into its reused buffer (--reuse-read-buffer, default on)
    const passes = fs
      .readFileSync(p('target.log'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('"pass received"'))
      .map((l) => JSON.parse(l) as { readBuffer?: string });
    expect(passes.length).toBeGreaterThan(0);
    expect(passes.map((x) => x.readBuffer)).toEqual(passes.map(() => 'reused'));
  });

  it('syncs changes, appends, deletions and renames on demand', async () => {
    const src = source();
    fs.appendFileSync(path.join(src, 'var/log/app.log'), 'appended line\n');
    fs.writeFileSync(path.join(src, 'etc/hostname'), 'changed-host\n');
    fs.writeFileSync(path.join(src, 'etc/brand-new'), 'new file\n');
    fs.rmSync(path.join(src, 'home/alice/owned'));
    fs.renameSync(path.join(src, 'srv/data/blob.bin'), path.join(src, 'srv/data/blob-moved.bin'));
    fs.renameSync(path.join(src, 'usr/lib/pkg-1'), path.join(src, 'usr/lib/pkg-one'));
    fs.chmodSync(path.join(src, 'usr/bin/sgid-tool'), 0o755);
    fs.chownSync(path.join(src, 'etc/empty'), 4321, 4321);
    const dump = path.join(src, 'var/backups/dump.sql');
    const old = fs.readFileSync(dump);
    fs.writeFileSync(
      dump,
      Buffer.concat([
        old.subarray(0, 300_000),
        Buffer.from('-- a new row\n'.repeat(40)),
        old.subarray(300_000),
      ]),
    );
    const t0 = Date.now();
    await cli('sync', 'src-1');
    const s = await waitFor(
      'the requested sync',
      async () => {
        const v = await show();
        return (v.lastSync as { syncRequest?: number } | null)?.syncRequest === 1 ? v : undefined;
      },
      120_000,
    );
    timings.sync = Date.now() - t0;
    expect(s.lastSync).toMatchObject({ deleted: expect.any(Number), entriesSent: expect.any(Number) });
    expect((s.lastSync as { deleted: number }).deleted).toBeGreaterThan(0);
    // the dump's 8 MiB after the insertion were found in the target's copy, shifted, not resent
    // and the log's 25,000 bytes before its new line were the target's copy's: only the line went
    const last = s.lastSync as { bytesSent: number; bytesMatched?: number; appended?: number };
    expect(last.bytesSent).toBeLessThan(512 * 1024);
    expect(last.bytesMatched).toBeGreaterThan(7.5 * 1024 * 1024);
    expect(last.appended).toBe(1);
    expect(await cli('servers', 'show', 'src-1')).toMatch(
      /last pass: .* of content sent, [\d.]+ MiB found in the target's copies \(1 file sent as appended bytes\)/,
    );
    expect(compareTrees(source(), targetRoot())).toEqual([]);
  });

  it('verifies on demand: identical, then the tampering it finds, per directory', async () => {
    // the sync-only exclusion is left out on both sides: neither what the source added there
    // since the full copy nor what only the target has there is a difference
    const sticky = (root: string, name = '') => path.join(root, 'srv/sticky', name);
    const mtimes = [source(), targetRoot()].map((r) => fs.statSync(sticky(r), { bigint: true }).mtimeNs);
    fs.writeFileSync(sticky(source(), 'new-on-source'), 'not kept in step\n');
    fs.writeFileSync(sticky(targetRoot(), 'only-on-target'), 'left alone\n');
    const identical = await ferry(['verify', 'src-1'], env);
    expect(identical.code).toBe(0);
    expect(identical.stdout).toMatch(/^identical \(quick check/);
    fs.rmSync(sticky(source(), 'new-on-source'));
    fs.rmSync(sticky(targetRoot(), 'only-on-target'));
    [source(), targetRoot()].forEach((r, i) => {
      const ns = mtimes[i]!;
      const [sec, nsec] = [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];
      ferryFs.lutimes(sticky(r), sec, nsec, sec, nsec);
    });
    // tamper with the target: same size and mtime (only a full check sees it), one file
    // gone, one file only on the target (which also changes the mtime of /etc)
    const tgt = (rel: string) => path.join(targetRoot(), rel);
    const st = fs.statSync(tgt('etc/hostname'), { bigint: true });
    fs.writeFileSync(tgt('etc/hostname'), 'X'.repeat(Number(st.size)));
    const sec = Number(st.mtimeNs / 1_000_000_000n);
    const nsec = Number(st.mtimeNs % 1_000_000_000n);
    ferryFs.lutimes(tgt('etc/hostname'), sec, nsec, sec, nsec);
    fs.rmSync(tgt('etc/brand-new'));
    fs.writeFileSync(tgt('etc/intruder'), 'not on the source\n');
    const quick = await ferry(['verify', 'src-1'], env);
    expect(quick.code).toBe(1);
    expect(quick.stdout).toMatch(
      /DIFFERENT \(quick check.*1 different, 1 missing on target, 1 extra on target/,
    );
    expect(quick.stdout).toMatch(/\/etc\s+\d+\s+0\s+1\s+1/);
    expect(quick.stdout).toContain('/etc: modification time differs');
    const full = await ferry(['verify', 'src-1', '--full', '-o', 'json'], env);
    expect(full.code).toBe(1);
    const report = JSON.parse(full.stdout) as {
      mode: string;
      totals: Record<string, number>;
      examples: unknown[];
    };
    expect(report).toMatchObject({ mode: 'full', totals: { different: 2, missing: 1, extra: 1 } });
    expect(report.examples).toEqual(
      expect.arrayContaining([
        { path: '/etc/hostname', problem: 'content differs' },
        { path: '/etc/brand-new', problem: 'missing' },
        { path: '/etc/intruder', problem: 'only on the target' },
      ]),
    );
    expect((await show()).verification).toMatchObject({
      request: 3,
      report: { mode: 'full', identical: false },
    });
    // put the target right again for the launch check
    fs.rmSync(tgt('etc/intruder'));
    for (const rel of ['etc/hostname', 'etc/brand-new'])
      execFileSync('cp', ['-a', path.join(source(), rel), tgt(rel)]);
    execFileSync('touch', ['-r', path.join(source(), 'etc'), tgt('etc')]);
    expect((await ferry(['verify', 'src-1', '--full'], env)).code).toBe(0);
  });

  it('launches: final sync, completed, target unlocked', async () => {
    fs.writeFileSync(path.join(source(), 'etc/last-minute'), 'written just before launch\n');
    const t0 = Date.now();
    await cli('launch', 'src-1');
    await cli('wait', 'src-1', '--stage', 'target-launch', '--status', 'completed', '--timeout', '120');
    timings.launch = Date.now() - t0;
    expect(compareTrees(source(), targetRoot())).toEqual([]);
    const targets = JSON.parse(await cli('targets', '-o', 'json')) as TargetView[];
    expect(targets[0]!.locked).toBe(false);
    expect((await show()).progress.percent).toBe(100);
  });

  it('exits 124 when a wait times out, 2 on a usage error, 1 on a refused command', async () => {
    expect(
      (
        await ferry(
          ['wait', 'src-1', '--stage', 'full-replication', '--status', 'ready', '--timeout', '1'],
          env,
        )
      ).code,
    ).toBe(124);
    expect((await ferry(['configure'], env)).code).toBe(2);
    const badWindow = await ferry(['rate-limit', 'src-1', '10', '--window', '9-17=5'], env);
    expect(badWindow.code).toBe(2);
    expect(badWindow.stderr).toContain('FERRY_CONFIG');
    const changed = await ferry(['rate-limit', 'src-1', '50', '-o', 'json'], env);
    expect(changed.code).toBe(0);
    expect(JSON.parse(changed.stdout).rateLimit).toEqual({ mbps: 50, windows: [] });
    expect((await ferry(['no-such-command'], env)).code).toBe(2);
    const lateVerify = await ferry(['verify', 'src-1'], env);
    expect(lateVerify.code).toBe(1);
    expect(lateVerify.stderr).toContain('FERRY_ILLEGAL_TRANSITION');
    const refused = await ferry(['start', 'src-1'], env);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toContain('FERRY_ILLEGAL_TRANSITION');
    const missing = await ferry(['servers', 'show', 'nobody'], env);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/FERRY_NOT_FOUND[\s\S]*advice:/);
  });
  it('deleting the source stops its agent with FERRY_REGISTRATION_REVOKED', async () => {
    const agent = procs[2]!;
    await cli('delete', 'src-1');
    const code = await new Promise<number | null>((resolve) => {
      if (agent.exitCode !== null) resolve(agent.exitCode);
      agent.once('exit', (c) => resolve(c));
    });
    expect(code).toBe(1);
    expect(fs.readFileSync(p('agent.log'), 'utf8')).toContain('FERRY_REGISTRATION_REVOKED');
    expect(fs.existsSync(p('agent-state/agent.json'))).toBe(false);
    expect((await ferry(['servers', 'show', 'src-1'], env)).code).toBe(1);
  });
});
