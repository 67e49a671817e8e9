import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type RunningAgent, startAgent } from '../../src/agent/index.js';
import { serverDetails, statusLine } from '../../src/cli/format.js';
import type { ServerView } from '../../src/control/index.js';
import { freePort, waitFor } from '../../src/demo/processes.js';
import { type RunningTarget, startTarget } from '../../src/target/index.js';
import { denyOpens, removeDenyOpenProgram, stopDenyingOpens } from '../support/deny-open.js';
import { addSmallFiles, buildSampleTree, compareTrees } from '../support/trees.js';
import { quietLogger, startTestConsole, type TestConsole, tempDir } from './support.js';

let dir: string;
let tc: TestConsole;
let agent: RunningAgent;
let target: RunningTarget | undefined;
let dataPort: number;
const p = (...x: string[]) => path.join(dir, ...x);

const show = () => tc.admin.request<ServerView>('GET', '/api/v1/servers/src');
const until = (what: string, pred: (s: ServerView) => boolean, ms = 60_000) =>
  waitFor(
    what,
    async () => {
      const s = await show();
      return pred(s) ? s : undefined;
    },
    ms,
  );

async function bootTarget() {
  target = await startTarget({
    consoleUrl: tc.c.url,
    caFile: tc.caFile,
    registrationTokenFile: tc.registrationTokenFile,
    name: 'tgt',
    listen: `127.0.0.1:${dataPort}`,
    root: p('target-root'),
    stateDir: p('target-state'),
    logger: quietLogger(p('target.log')),
    heartbeatMs: 200,
  });
}

beforeAll(async () => {
  dir = tempDir('resume');
  buildSampleTree(p('source'), { sparseBytes: 16 * 1024 * 1024 });
  addSmallFiles(p('source'), 300);
  tc = await startTestConsole(dir);
  dataPort = await freePort();
  await bootTarget();
  agent = await startAgent({
    consoleUrl: tc.c.url,
    caFile: tc.caFile,
    registrationTokenFile: tc.registrationTokenFile,
    name: 'src',
    root: p('source'),
    stateDir: p('agent-state'),
    logger: quietLogger(p('agent.log')),
    heartbeatMs: 200,
    retryDeadlineMs: 1500,
  });
  await until('agent inventory', (s) => s.checks.length > 0);
  await waitFor('target connected', async () =>
    (await tc.admin.request<{ connected: boolean }[]>('GET', '/api/v1/targets'))[0]?.connected
      ? true
      : undefined,
  );
}, 60_000);

afterEach(stopDenyingOpens);

afterAll(async () => {
  removeDenyOpenProgram();
  await agent?.stop();
  await target?.stop();
  tc?.admin.close();
  await tc?.c.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('failure and resume', () => {
  it('fails with a coded error when the target stays away past the retry deadline', async () => {
    await tc.admin.request('POST', '/api/v1/servers/src/configure', {
      target: 'tgt',
      method: 'file',
      continuousSync: true,
      syncIntervalSeconds: 1,
    });
    await target!.stop(); // the target goes away; the console still counts it connected for 5 s
    target = undefined;
    await tc.admin.request('POST', '/api/v1/servers/src/start');
    let s = await show();
    expect(s.status).toBe('running');
    s = await until('the task to fail', (v) => v.status === 'failed', 30_000);
    expect(s.stage).toBe('full-replication');
    expect(s.error).toMatchObject({
      code: expect.stringMatching(/^FERRY_(CONNECTION_LOST|TIMEOUT|TLS)$/),
      advice: expect.any(String),
    });
  });

  it('resumes from failed when started again, and completes identical', async () => {
    await bootTarget();
    await waitFor('target back', async () =>
      (await tc.admin.request<{ connected: boolean }[]>('GET', '/api/v1/targets'))[0]?.connected
        ? true
        : undefined,
    );
    await tc.admin.request('POST', '/api/v1/servers/src/start');
    const s = await until('continuous sync', (v) => v.stage === 'continuous-sync' && v.status === 'running');
    expect(s.error).toBeNull();
    expect(compareTrees(p('source'), p('target-root'))).toEqual([]);
  });

  it('pauses and resumes continuous sync', async () => {
    const paused = await tc.admin.request<ServerView>('POST', '/api/v1/servers/src/pause');
    expect(`${paused.stage}/${paused.status}`).toBe('continuous-sync/paused');
    fs.writeFileSync(p('source/etc/while-paused'), 'x');
    await new Promise((r) => setTimeout(r, 600));
    expect(fs.existsSync(p('target-root/etc/while-paused'))).toBe(false);
    const resumed = await tc.admin.request<ServerView>('POST', '/api/v1/servers/src/start');
    expect(resumed.status).toBe('running');
    expect(resumed.syncIntervalSeconds).toBe(1);
    // no `ferry sync`: the 1-second interval alone carries the change over
    await waitFor(
      'the interval sync',
      async () => (fs.existsSync(p('target-root/etc/while-paused')) ? true : undefined),
      15_000,
    );
  });

  it('syncs the rest while the source refuses a file, says which, and launches only once it can read it', async () => {
    fs.writeFileSync(p('source/etc/refused'), 'read me');
    fs.writeFileSync(p('source/etc/beside-refused'), 'readable');
    const allow = await denyOpens([p('source/etc/refused')]);
    // no `ferry sync`: the 1-second interval's next pass meets it
    let s = await until(
      'a sync that met the refused file',
      (v) => (v.lastSync as { unreadable?: number } | null)?.unreadable === 1,
    );
    expect(fs.readFileSync(p('target-root/etc/beside-refused'), 'utf8')).toBe('readable');
    expect(s.status).toBe('running');
    expect(s.error).toBeNull();
    expect(s.lastSync).toMatchObject({
      unreadable: 1,
      unreadableEntries: [{ path: 'etc/refused', code: 'EPERM' }],
    });
    expect(fs.existsSync(p('target-root/etc/refused'))).toBe(false);
    expect(statusLine(s)).toContain('(1 unreadable on the source)');
    expect(serverDetails(s)).toContain('etc/refused (EPERM)');

    // the final sync does not hand over a target without it: the launch fails, naming it
    await tc.admin.request('POST', '/api/v1/servers/src/launch');
    s = await until('the launch to fail', (v) => v.status === 'failed', 30_000);
    expect(s.stage).toBe('target-launch');
    expect(s.error?.code).toBe('FERRY_SOURCE_READ');
    expect(s.error?.message).toContain('etc/refused (EPERM)');
    await allow();
    // readable again: `ferry start` runs the final sync again, and the launch completes
    await tc.admin.request('POST', '/api/v1/servers/src/start');
    await until('completed', (v) => v.status === 'completed');
    expect(fs.readFileSync(p('target-root/etc/refused'), 'utf8')).toBe('read me');
    expect(compareTrees(p('source'), p('target-root'))).toEqual([]);
  });
});
