import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningAgent, startAgent } from '../../src/agent/index.js';
import type { ServerView } from '../../src/control/index.js';
import { freePort, waitFor } from '../../src/demo/processes.js';
import { type RunningTarget, startTarget } from '../../src/target/index.js';
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

afterAll(async () => {
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

  it('pauses and resumes continuous sync, then launches', async () => {
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
    await tc.admin.request('POST', '/api/v1/servers/src/launch');
    await until('completed', (v) => v.status === 'completed');
    expect(compareTrees(p('source'), p('target-root'))).toEqual([]);
  });
});
