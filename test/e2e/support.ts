/** Helpers for tests that run ferry programs for real (in-process or as processes). */

import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { type RunningConsole, startConsole } from '../../src/console/main.js';
import { ferryArgv, freePort, spawnFerry, waitFor } from '../../src/demo/processes.js';
import { ConsoleClient } from '../../src/transport/index.js';

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `ferry-${prefix}-`));
}

export const quietLogger = (file?: string) =>
  file ? pino({ level: 'debug' }, pino.destination({ dest: file, sync: true })) : pino({ level: 'silent' });

export interface TestConsole {
  readonly c: RunningConsole;
  readonly dataDir: string;
  readonly caFile: string;
  readonly caPem: string;
  readonly adminTokenFile: string;
  readonly registrationTokenFile: string;
  readonly admin: ConsoleClient;
}

export async function startTestConsole(
  dir: string,
  opts: { syncIntervalSeconds?: number; eventsRefreshMs?: number } = {},
): Promise<TestConsole> {
  const dataDir = path.join(dir, 'console-data');
  const c = await startConsole({
    listen: '127.0.0.1:0',
    dataDir,
    logger: quietLogger(path.join(dir, 'console.log')),
    version: 'test',
    syncIntervalSeconds: opts.syncIntervalSeconds ?? 3600,
    ...(opts.eventsRefreshMs ? { eventsRefreshMs: opts.eventsRefreshMs } : {}),
  });
  const caFile = path.join(dataDir, 'ca.pem');
  const caPem = fs.readFileSync(caFile, 'utf8');
  const adminTokenFile = path.join(dataDir, 'admin.token');
  const admin = new ConsoleClient({
    url: c.url,
    caPem,
    token: fs.readFileSync(adminTokenFile, 'utf8').trim(),
  });
  return {
    c,
    dataDir,
    caFile,
    caPem,
    adminTokenFile,
    registrationTokenFile: path.join(dataDir, 'registration.token'),
    admin,
  };
}

/** Runs the built `ferry` CLI; resolves with its exit code and output. */
export function ferry(args: string[], env: Record<string, string> = {}, timeoutMs = 60_000) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const p = spawn(process.execPath, ferryArgv(args), { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => {
      stdout += d;
    });
    p.stderr.on('data', (d) => {
      stderr += d;
    });
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * `ferry console` as a process on loopback, answering the CLI: its process, the
 * environment a CLI call needs, and the flags an agent or target registers with.
 */
export async function spawnTestConsole(dir: string): Promise<{
  proc: ChildProcess;
  env: Record<string, string>;
  reg: string[];
  /** Starts `ferry agent|target` registered with this console (state and log under dir). */
  daemon: (program: 'agent' | 'target', name: string, args: string[]) => ChildProcess;
}> {
  const port = await freePort();
  const data = path.join(dir, 'console-data');
  const proc = spawnFerry(
    ['console', '--listen', `127.0.0.1:${port}`, '--data-dir', data],
    path.join(dir, 'console.log'),
  );
  await waitFor('console data dir', async () =>
    fs.existsSync(path.join(data, 'admin.token')) ? true : undefined,
  );
  const env = {
    FERRY_CONSOLE_URL: `https://127.0.0.1:${port}`,
    FERRY_CA_FILE: path.join(data, 'ca.pem'),
    FERRY_TOKEN_FILE: path.join(data, 'admin.token'),
  };
  await waitFor('console API', async () => ((await ferry(['servers'], env)).code === 0 ? true : undefined));
  const reg = ['--console', env.FERRY_CONSOLE_URL, '--ca-file', env.FERRY_CA_FILE];
  reg.push('--registration-token-file', path.join(data, 'registration.token'));
  const daemon = (program: 'agent' | 'target', name: string, args: string[]) =>
    spawnFerry(
      [program, ...reg, '--name', name, '--state-dir', path.join(dir, `${program}-state`), ...args],
      path.join(dir, `${program}.log`),
    );
  return { proc, env, reg, daemon };
}
