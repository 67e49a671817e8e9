import fs from 'node:fs';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { type RunningAgent, startAgent } from '../../src/agent/index.js';
import type { ServerView } from '../../src/control/index.js';
import { waitFor } from '../../src/demo/processes.js';
import { type RunningTarget, startTarget } from '../../src/target/index.js';
import { quietLogger, startTestConsole, type TestConsole, tempDir } from './support.js';

let dir: string;
let tc: TestConsole | undefined;
let agent: RunningAgent | undefined;
let target: RunningTarget | undefined;

afterAll(async () => {
  await agent?.stop();
  await target?.stop();
  tc?.admin.close();
  await tc?.c.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

// Heartbeats every 30 s: only the long polls can carry start, the replication's end and
// the launch's finalize to the daemons before the first heartbeat would. And an events
// stream that looks for progress once a minute: only the console's own change notices can
// bring its watcher (`ferry wait`, `status --watch`) each state as it comes.
it('carries commands to agent and target, and each state to a watcher, without waiting for a heartbeat or a refresh', async () => {
  dir = tempDir('long-poll');
  fs.mkdirSync(path.join(dir, 'src/etc'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'src/etc/x'), 'x');
  tc = await startTestConsole(dir, { eventsRefreshMs: 60_000 });
  const base = {
    consoleUrl: tc.c.url,
    caFile: tc.caFile,
    registrationTokenFile: tc.registrationTokenFile,
    heartbeatMs: 30_000,
  };
  target = await startTarget({
    ...base,
    name: 't',
    listen: '127.0.0.1:0',
    root: path.join(dir, 'root'),
    stateDir: path.join(dir, 'target-state'),
    logger: quietLogger(),
  });
  agent = await startAgent({
    ...base,
    name: 's',
    root: path.join(dir, 'src'),
    stateDir: path.join(dir, 'agent-state'),
    logger: quietLogger(),
  });
  const admin = tc.admin;
  await waitFor('inventory', async () =>
    (await admin.request<ServerView>('GET', '/api/v1/servers/s')).checks.length ? true : undefined,
  );
  await admin.request('POST', '/api/v1/servers/s/configure', { target: 't', method: 'file' });
  const seen: string[] = [];
  const watch = admin.events('/api/v1/servers/s/events', (event, data) => {
    if (event !== 'server') return;
    const v = JSON.parse(data) as ServerView;
    seen.push(`${v.stage}/${v.status}`);
    if (v.status === 'completed') watch.close();
  });
  await waitFor('the stream', async () => (seen.length > 0 ? true : undefined));
  const started = Date.now();
  await admin.request('POST', '/api/v1/servers/s/start');
  await waitFor(
    'completed',
    async () =>
      (await admin.request<ServerView>('GET', '/api/v1/servers/s')).status === 'completed' ? true : undefined,
    25_000,
  );
  expect(Date.now() - started).toBeLessThan(25_000);
  // the watcher saw the run start and complete, long before its first refresh
  await watch.done;
  expect(seen[0]).toBe('full-replication/ready');
  expect(seen).toContain('full-replication/running');
  expect(seen[seen.length - 1]).toBe('target-launch/completed');
  expect(fs.readFileSync(path.join(dir, 'root/etc/x'), 'utf8')).toBe('x');
}, 60_000);
