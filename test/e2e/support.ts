/** Helpers for tests that run ferry programs for real (in-process or as processes). */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { type RunningConsole, startConsole } from '../../src/console/main.js';
import { FERRY_BIN } from '../../src/demo/processes.js';
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
  opts: { syncIntervalSeconds?: number } = {},
): Promise<TestConsole> {
  const dataDir = path.join(dir, 'console-data');
  const c = await startConsole({
    listen: '127.0.0.1:0',
    dataDir,
    logger: quietLogger(path.join(dir, 'console.log')),
    version: 'test',
    syncIntervalSeconds: opts.syncIntervalSeconds ?? 3600,
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
    const p = spawn(process.execPath, [FERRY_BIN, ...args], { env: { ...process.env, ...env } });
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
