import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { watch } from '../cli/client-commands.js';
import { bytes, statusLine } from '../cli/format.js';
import type { ServerView, TargetView } from '../control/index.js';
import { ConsoleClient } from '../transport/index.js';
import { compareTrees } from './compare-trees.js';
import { freePort, spawnFerry, stopProcess, waitFor } from './processes.js';
import { addSmallFiles, buildSampleTree } from './sample-tree.js';

type Out = { write(s: string): void };

/**
 * `ferry demo`: a whole migration on loopback with three separate processes. Returns
 * true when the target ended identical to the source.
 */
export async function runDemo(o: { keepRunning: boolean; dir?: string; out: Out }): Promise<boolean> {
  const say = (s: string) => o.out.write(`${s}\n`);
  const dir = o.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-demo-'));
  fs.mkdirSync(dir, { recursive: true });
  const p = (...x: string[]) => path.join(dir, ...x);
  const procs: ChildProcess[] = [];
  let client: ConsoleClient | undefined;
  const stopAll = async () => {
    client?.close();
    await Promise.all(procs.map((c) => stopProcess(c)));
  };
  try {
    say(`ferry demo — working in ${dir}`);
    say('1. making a sample source server tree (every file kind, a 256 MiB sparse file, 3,000 small files)');
    const source = p('source');
    buildSampleTree(source);
    addSmallFiles(source, 3000);

    const port = await freePort();
    const url = `https://127.0.0.1:${port}`;
    const data = p('console-data');
    say(`2. starting ferry console on ${url} (data dir ${data})`);
    procs.push(
      spawnFerry(
        ['console', '--listen', `127.0.0.1:${port}`, '--data-dir', data, '--sync-interval', '3600'],
        p('console.log'),
      ),
    );
    await waitFor('the console to create its data dir', async () =>
      fs.existsSync(path.join(data, 'admin.token')) ? true : undefined,
    );
    const ca = path.join(data, 'ca.pem');
    const regToken = path.join(data, 'registration.token');
    client = new ConsoleClient({
      url,
      caPem: fs.readFileSync(ca, 'utf8'),
      token: fs.readFileSync(path.join(data, 'admin.token'), 'utf8').trim(),
    });
    const c = client;
    await waitFor('the console to answer', () => c.request('GET', '/api/v1/servers'));

    const dataPort = await freePort();
    say(
      `3. starting ferry target (data port ${dataPort}, root ${p('target-root')}) and ferry agent (root ${source})`,
    );
    const common = ['--console', url, '--ca-file', ca];
    procs.push(
      spawnFerry(
        [
          'target',
          ...common,
          '--registration-token-file',
          regToken,
          '--listen',
          `127.0.0.1:${dataPort}`,
          '--name',
          'demo-target',
          '--root',
          p('target-root'),
          '--state-dir',
          p('target-state'),
        ],
        p('target.log'),
      ),
    );
    procs.push(
      spawnFerry(
        [
          'agent',
          ...common,
          '--registration-token-file',
          regToken,
          '--name',
          'demo-source',
          '--root',
          source,
          '--state-dir',
          p('agent-state'),
        ],
        p('agent.log'),
      ),
    );
    const show = () => c.request<ServerView>('GET', '/api/v1/servers/demo-source');
    await waitFor('the agent to report its inventory', async () =>
      (await show()).checks.length ? true : undefined,
    );
    await waitFor('the target to register', async () =>
      (await c.request<TargetView[]>('GET', '/api/v1/targets')).some(
        (t) => t.name === 'demo-target' && t.connected,
      )
        ? true
        : undefined,
    );
    const checks = (await show()).checks;
    say(`   feasibility check: ${checks.map((x) => `${x.title}: ${x.passed ? 'pass' : 'FAIL'}`).join('; ')}`);

    say('4. configuring the migration (file-level, continuous sync on) and starting the full replication');
    await c.request('POST', '/api/v1/servers/demo-source/configure', {
      target: 'demo-target',
      method: 'file',
      continuousSync: true,
    });
    const t0 = Date.now();
    await c.request('POST', '/api/v1/servers/demo-source/start');
    const flags = { console: url, caFile: ca, tokenFile: '', output: 'table' as const };
    let s = await waitFor(
      'full replication to finish',
      async () => {
        const v = await show();
        if (v.status === 'failed') throw new Error(`migration failed: ${v.error?.code}: ${v.error?.message}`);
        if (v.stage === 'continuous-sync') return v;
        await watch(
          c,
          'demo-source',
          flags,
          o.out,
          (x) => x.stage !== 'full-replication' || x.status !== 'running',
        ).catch(() => null);
        return undefined;
      },
      300_000,
    );
    say(`   full replication done in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${statusLine(s)}`);
    const first = compareTrees(source, p('target-root'));
    say(`   target vs source: ${first.length === 0 ? 'identical' : `${first.length} differences`}`);

    say(
      '5. changing the source while it keeps serving: append, modify, add, delete, rename; then `ferry sync`',
    );
    fs.appendFileSync(path.join(source, 'var/log/app.log'), 'a new log line\n');
    fs.writeFileSync(path.join(source, 'etc/hostname'), 'source-host-renamed\n');
    fs.writeFileSync(path.join(source, 'etc/new-config.conf'), 'key = value\n');
    fs.rmSync(path.join(source, 'home/alice/owned'));
    fs.renameSync(path.join(source, 'usr/lib/pkg-0'), path.join(source, 'usr/lib/pkg-zero'));
    await c.request('POST', '/api/v1/servers/demo-source/sync');
    s = await waitFor(
      'the sync to finish',
      async () => {
        const v = await show();
        return (v.lastSync as { syncRequest?: number } | null)?.syncRequest === 1 ? v : undefined;
      },
      120_000,
    );
    const ls = s.lastSync as { entriesSent?: number; deleted?: number; bytesSent?: number; seconds?: number };
    say(
      `   synced: ${ls.entriesSent} entries sent, ${ls.deleted} deleted, ${bytes(ls.bytesSent ?? 0)} in ${ls.seconds?.toFixed(2)} s`,
    );
    const second = compareTrees(source, p('target-root'));
    say(`   target vs source: ${second.length === 0 ? 'identical' : `${second.length} differences`}`);

    say('6. launching the target (final sync, then cutover)');
    await c.request('POST', '/api/v1/servers/demo-source/launch');
    s = await waitFor(
      'the launch to complete',
      async () => {
        const v = await show();
        if (v.status === 'failed') throw new Error(`launch failed: ${v.error?.code}: ${v.error?.message}`);
        return v.status === 'completed' ? v : undefined;
      },
      120_000,
    );
    const targets = await c.request<TargetView[]>('GET', '/api/v1/targets');
    const last = compareTrees(source, p('target-root'));
    say(
      `   ${s.stage}/${s.status}; target locked: ${targets.find((t) => t.name === 'demo-target')?.locked ? 'yes' : 'no'}`,
    );
    say(
      last.length === 0
        ? '7. verified: the target holds exactly the source tree'
        : `7. DIFFERENCES:\n   ${last.slice(0, 20).join('\n   ')}`,
    );
    say('');
    say(`console:     ${url}`);
    say(`CA file:     ${ca}`);
    say(`admin token: ${path.join(data, 'admin.token')} (mode 0600; the token itself is never printed)`);
    say(
      `try:         FERRY_CONSOLE_URL=${url} FERRY_CA_FILE=${ca} FERRY_TOKEN_FILE=${path.join(data, 'admin.token')} npx ferry servers`,
    );
    say(`logs:        ${p('console.log')}, ${p('agent.log')}, ${p('target.log')}`);
    const ok = last.length === 0;
    await Promise.all(procs.slice(1).map((x) => stopProcess(x)));
    if (o.keepRunning) {
      say('the console keeps running; press Ctrl-C to stop it');
      await new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      });
    }
    return ok;
  } finally {
    await stopAll();
    if (!o.dir) fs.rmSync(dir, { recursive: true, force: true });
  }
}
